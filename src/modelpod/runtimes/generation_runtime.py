"""Causal language models from a transformers directory, for text generation.

`TextGenerator` is the model, its tokenizer and three primitives that the server's scheduler
(server/scheduling/generation.py) drives one step at a time on the model's thread:

    prefill(prompts)   new sequences join the running batch; returns their next-token logits
    decode(tokens)     one token for every running sequence; returns the next-token logits of each
    remove(row)        a finished sequence leaves; the last row moves into its place

and `sample`, which picks each row's next token (greedy, or temperature and top-p with the sequence's
own random generator). The keys and values live in `RowCache` (runtimes/_kv_rows.py).

As a plain runtime (signature `prompt` -> `text`), `predict` generates greedily for each prompt on its
own; `modelpod predict` uses that. The server never calls it: it schedules every request through the
engine, /predict included.

Options (`model.options`): `task: text-generation` (detected from the config's *ForCausalLM
architecture), `device` ("cpu" by default, "cuda" for a GPU), `dtype` (default the config's, float32 on
a CPU).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelpod.errors import ModelLoadError
from modelpod.runtimes.base import BaseRuntime, Batch, reconcile, require
from modelpod.signature import Signature, TensorSpec
from modelpod.specfile.resolved import ResolvedModel

SIGNATURE = Signature(
    inputs=(TensorSpec(name="prompt", dtype="string", shape=()),),
    outputs=(TensorSpec(name="text", dtype="string", shape=()),),
)
# tokens `predict` generates for one prompt; the server's requests say their own
PREDICT_MAX_TOKENS = 64


@dataclass(frozen=True)
class Sampling:
    """How one sequence picks its tokens. temperature 0 is greedy; `generator` is its own random stream."""

    temperature: float = 0.0
    top_p: float = 1.0
    generator: Any = None


class TextGenerator(BaseRuntime):
    def __init__(
        self, torch: Any, model: Any, tokenizer: Any, signature: Signature, *, max_context: int
    ) -> None:
        super().__init__(signature)
        self._torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.max_context = max_context
        self.device = model.device
        self.eos_token_ids = _eos_ids(model, tokenizer)
        config = model.config.get_text_config(decoder=True)
        self._heads = int(config.num_attention_heads)
        self._kv_heads = int(getattr(config, "num_key_value_heads", None) or self._heads)
        self._head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self._heads)
        self._layers = int(config.num_hidden_layers)
        # transformers 5.24 renamed the forward's `past_key_values` to `cache`
        self._cache_kwarg = "cache" if "cache" in _parameters(model.forward) else "past_key_values"
        self._cache: Any = None

    # --- prompts and text ---------------------------------------------------------------------------

    def chat_prompt(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """Token ids of a chat with the tokenizer's chat template and the assistant's turn opened."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template; use /v1/completions with a prompt")
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return self.text_prompt(str(text), special=False)

    def text_prompt(self, text: str, *, special: bool = True) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return [int(i) for i in ids]

    # --- the engine's primitives (model thread only) ----------------------------------------------------

    def start_batch(self, max_rows: int) -> None:
        """A new, empty running batch of up to `max_rows` sequences; buffers grow as sequences need."""
        from modelpod.runtimes._kv_rows import RowCache

        self._cache = RowCache(
            layers=self._layers,
            kv_heads=self._kv_heads,
            head_dim=self._head_dim,
            max_rows=max_rows,
            max_columns=self.max_context * 2 + 1,  # a row's own length plus another's left padding
            dtype=self.model.dtype,
            device=self.device,
        )

    @property
    def rows(self) -> int:
        return 0 if self._cache is None else int(self._cache.rows)

    def prefill(self, prompts: Sequence[Sequence[int]]) -> Any:
        """Add `prompts` as rows `[rows, rows + len(prompts))`; their next-token logits, one row each."""
        cache = self._cache
        longest = max(len(p) for p in prompts)
        ids = self._torch.zeros((len(prompts), longest), dtype=self._torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, longest - len(prompt) :] = self._torch.tensor(list(prompt), dtype=self._torch.long)
        try:
            inputs = cache.prepare_prefill([len(p) for p in prompts])
            return self._forward(ids, inputs)
        except BaseException:
            for row in reversed(range(cache.rows - len(prompts), cache.rows)):
                cache.remove(row)
            raise

    def decode(self, tokens: Sequence[int]) -> Any:
        """One token for every running row, in row order; the next-token logits of each row."""
        cache = self._cache
        ids = self._torch.tensor([[t] for t in tokens], dtype=self._torch.long)
        logits = self._forward(ids, cache.prepare_decode())
        cache.advance()
        return logits

    def remove(self, row: int) -> int | None:
        """Free `row`; returns the row that moved into its place (the former last row), or None."""
        moved: int | None = self._cache.remove(row)
        return moved

    def clear(self) -> None:
        """Drop every row (after a failed step)."""
        if self._cache is not None:
            self._cache.clear()

    @property
    def kv_tokens_used(self) -> int:
        return 0 if self._cache is None else int(self._cache.used_tokens)

    def sample(self, logits: Any, sampling: Sequence[Sampling]) -> list[int]:
        """The next token of each row: argmax for greedy rows, else a draw from the temperature-scaled,
        top-p-truncated distribution with the row's own generator."""
        torch = self._torch
        chosen: list[int] = logits.argmax(dim=-1).tolist()
        for row, how in enumerate(sampling):
            if how.temperature <= 0:
                continue
            probs = torch.softmax(logits[row].float() / how.temperature, dim=-1)
            if how.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                # keep the smallest set whose mass reaches top_p (the first token always stays)
                outside = sorted_probs.cumsum(0) - sorted_probs >= how.top_p
                sorted_probs[outside] = 0.0
                pick = torch.multinomial(sorted_probs, 1, generator=how.generator)
                chosen[row] = int(order[pick])
            else:
                chosen[row] = int(torch.multinomial(probs, 1, generator=how.generator))
        return chosen

    def sampling(self, temperature: float, top_p: float, seed: int | None) -> Sampling:
        """How a sequence samples; a sampled one gets a random generator of its own (seeded if asked)."""
        if temperature <= 0:
            return Sampling()
        generator = self._torch.Generator(device="cpu")
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return Sampling(temperature, top_p, generator)

    def _forward(self, ids: Any, inputs: Any) -> Any:
        torch = self._torch
        with torch.inference_mode():
            output = self.model(
                input_ids=ids.to(self.device),
                position_ids=inputs.position_ids,
                attention_mask=inputs.attention_mask,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kwarg: self._cache},
            )
            return output.logits[:, -1, :].float().cpu()

    # --- the plain runtime protocol -------------------------------------------------------------------

    def predict(self, batch: Batch) -> Batch:
        texts = [self.generate(self.text_prompt(str(p)), PREDICT_MAX_TOKENS) for p in batch["prompt"]]
        return {"text": np.asarray(texts, dtype=object)}

    def generate(self, prompt: Sequence[int], max_tokens: int) -> str:
        """Greedy generation of one sequence, outside the server (`modelpod predict`, warm-up)."""
        self.start_batch(1)
        tokens: list[int] = []
        try:
            logits = self.prefill([prompt])
            while True:
                token = self.sample(logits, [Sampling()])[0]
                if token in self.eos_token_ids:
                    break
                tokens.append(token)
                if len(tokens) >= max_tokens or len(prompt) + len(tokens) >= self.max_context:
                    break
                logits = self.decode([token])
        finally:
            self.clear()
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def warmup(self) -> None:
        self.generate(self.text_prompt("warm-up"), 2)


def _parameters(function: Any) -> set[str]:
    import inspect

    return set(inspect.signature(function).parameters)


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return frozenset(ids)


def load_generator(torch: Any, model: ResolvedModel, device: str) -> TextGenerator:
    transformers = require("transformers", runtime="transformers", extra="transformers")
    path = model.path
    assert path is not None  # the transformers runtime checked it is a directory
    dtype_name = model.options.get("dtype")
    dtype = getattr(torch, str(dtype_name)) if dtype_name else (torch.float32 if device == "cpu" else "auto")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    causal = transformers.AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, dtype=dtype, attn_implementation="sdpa"
    )
    causal.to(device).eval()
    context = int(getattr(causal.config.get_text_config(decoder=True), "max_position_embeddings", 0) or 0)
    if context <= 0:
        raise ModelLoadError(
            f"{path.name}'s config gives no max_position_embeddings",
            hint="set generation.max_context_tokens in modelpod.yaml",
        )
    signature = reconcile(model.signature, SIGNATURE, fmt="text-generation")
    return TextGenerator(torch, causal, tokenizer, signature, max_context=context)
