"""Tiny randomly initialised causal language models of many architectures, with SmolLM2's tokenizer, for
the conformance test of the built-in engine (test_conformance.py).

Each is 2 to 4 layers of hidden size 64. Two settings make them able to show a wrong attention: weights
drawn with a standard deviation of 0.2 instead of transformers' 0.02 (attention near uniform barely
moves when a mask is wrong, so a wrong window could go unseen), and, for Gemma, untied embeddings (tied
ones at that scale repeat one token forever). The windowed ones have a window of 16 tokens, which the
test's prompts exceed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WINDOW = 16
_INIT = 0.2


def _configs(vocab: int, special: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """name -> (config class, model class, config fields)."""
    common = {"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
              "initializer_range": _INIT, **special}  # fmt: skip
    gemma = {**common, "head_dim": 16, "sliding_window": WINDOW, "tie_word_embeddings": False}
    return {
        "llama": ("LlamaConfig", "LlamaForCausalLM", common),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", common),
        # layer 0 full, layer 1 sliding: Qwen2's own hybrid
        "qwen2-window": ("Qwen2Config", "Qwen2ForCausalLM",
                         {**common, "use_sliding_window": True, "sliding_window": WINDOW,
                          "max_window_layers": 1}),
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**common, "head_dim": 16}),
        "phi3": ("Phi3Config", "Phi3ForCausalLM", common),
        "opt": ("OPTConfig", "OPTForCausalLM",
                {"vocab_size": vocab, "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "max_position_embeddings": 512, "word_embed_proj_dim": 64,
                 "init_std": _INIT, **special}),
        "gpt-neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM",
                     {"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128,
                      "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 512,
                      "initializer_range": _INIT, **special}),
        "gpt2": ("GPT2Config", "GPT2LMHeadModel",
                 {"vocab_size": vocab, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512,
                  "initializer_range": _INIT, **special}),
        "mistral-window": ("MistralConfig", "MistralForCausalLM", {**common, "sliding_window": WINDOW}),
        # alternating sliding and full layers, logits soft-capped (small, so that it matters)
        "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
                   {**gemma, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 30.0,
                    "query_pre_attn_scalar": 16}),
        "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
                   {**gemma, "num_hidden_layers": 4,
                    "layer_types": ["sliding_attention", "full_attention"] * 2}),
    }  # fmt: skip


ARCHITECTURES = tuple(_configs(0, {}))


def build_tiny_model(name: str, dest: Path, tokenizer_dir: Path, *, seed: int = 0) -> Path:
    """Save the tiny `name` model and the tokenizer of `tokenizer_dir` into `dest`."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    config_class, model_class, fields = _configs(len(tokenizer), special)[name]
    config = getattr(transformers, config_class)(**fields)
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config).to(torch.float32).eval()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest
