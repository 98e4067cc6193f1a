"""A randomly initialised Llama small enough for fast text-generation tests, with SmolLM2's tokenizer.

Its output is nonsense but deterministic: the same seed gives the same weights, and greedy decoding the
same tokens. What the tests of a generation runtime need from it is the architecture (grouped-query
attention: 4 query heads share 2 KV heads), a real tokenizer with a chat template and EOS, and speed.
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_llama(dest: Path, tokenizer_dir: Path, *, seed: int = 0, context: int = 512) -> Path:
    """Save a 2-layer LlamaForCausalLM (hidden 64) and the tokenizer of `tokenizer_dir` into `dest`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=len(tokenizer),
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # as in SmolLM2; an untied output layer would double the weights (the vocabulary is most of them)
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest
