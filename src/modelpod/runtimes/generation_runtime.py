"""Causal language models from a transformers directory, for text generation.

`TextGenerator` is the model, its tokenizer and the primitives that the server's scheduler
(server/scheduling/generation.py) drives one step at a time on the model's thread:

    start_engine(pool_tokens)   allocate the KV pool: the spec's whole budget, resident from then on
    open_sequence(prompt, n)    a slab of n tokens for a new sequence, a cached prefix copied in (or None)
    forward(pieces)             one packed pass: decode tokens and prompt chunks of many sequences
    close_sequence(kv, tokens)  a sequence ended; its tokens stay as a cached prefix (prefix caching)
    sample(logits, ...)         each row's next token (runtimes/_sampling.py)

The keys and values live in a fixed pool (runtimes/_kv_slabs.py), shared out by runtimes/_kv_store.py,
and the model runs with modelpod's own attention over it: sliding windows, hybrid local/global layers and
logit soft-capping are computed as transformers computes them. A model whose attention does not run
through transformers' attention interface, or needs what modelpod's attention does not implement
(attention sinks, layers that are not attention), is refused at load with the reason, never served wrong.

As a plain runtime (signature `prompt` -> `text`), `predict` generates greedily for each prompt on its
own; `modelpod predict` uses that. The server never calls it: it schedules every request through the
engine, /predict included.

Options (`model.options`): `task: text-generation` (detected from the config's *ForCausalLM or
*LMHeadModel architecture), `device` ("cpu" by default, "cuda" for a GPU), `dtype` (default the
config's, float32 on a CPU).
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
# the kinds of layers modelpod's attention serves (config.layer_types)
_ATTENTION_LAYERS = frozenset({"full_attention", "sliding_attention"})


@dataclass(frozen=True)
class Piece:
    """One sequence's tokens in a packed pass, at `position` onwards; `logits`: its last token's next-token
    logits are wanted (a decode token, or the last chunk of a prompt)."""

    kv: Any  # the SequenceKV `open` gave
    position: int
    tokens: Sequence[int]
    logits: bool


class TextGenerator(BaseRuntime):
    task = "text-generation"

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
        heads = int(config.num_attention_heads)
        self._kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        self._head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        self._layers = int(config.num_hidden_layers)
        # transformers 5.24 renamed the forward's `past_key_values` to `cache`
        self._cache_kwarg = "cache" if "cache" in _parameters(model.forward) else "past_key_values"
        self.store: Any = None  # the engine's KVStore, made by start_engine

    @property
    def kv_bytes_per_token(self) -> int:
        element = self._torch.empty((), dtype=self.model.dtype).element_size()
        return 2 * self._layers * self._kv_heads * self._head_dim * int(element)

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

    def start_engine(self, pool_tokens: int, *, prefix_caching: bool) -> None:
        """Allocate the KV pool of `pool_tokens` tokens for the engine."""
        self.store = self._new_store(pool_tokens, prefix_caching=prefix_caching)

    def open_sequence(self, prompt: Sequence[int], reservation: int) -> Any:
        """A slab of `reservation` tokens for a new sequence (its `reused` prompt tokens already hold their
        keys and values), or None while the running sequences leave no room."""
        return self.store.open(prompt, reservation)

    def close_sequence(self, kv: Any, tokens: Sequence[int]) -> None:
        """A sequence ended; `tokens` are those whose keys and values its slab holds."""
        self.store.close(kv, tokens)

    def forward(self, pieces: Sequence[Piece]) -> Any:
        """One packed pass; the next-token logits [n, vocabulary] of the pieces that want them, in order."""
        return _forward(self._torch, self.model, self.store.cache, pieces, self._cache_kwarg)

    def clear(self) -> None:
        """Free every slab (after a failed step)."""
        if self.store is not None:
            self.store.clear()

    @property
    def kv_capacity(self) -> int:
        return 0 if self.store is None else int(self.store.capacity)

    @property
    def kv_reserved(self) -> int:
        return 0 if self.store is None else int(self.store.reserved)

    def sample(self, logits: Any, sampling: Sequence[Any], histories: Sequence[Any]) -> list[int]:
        from modelpod.runtimes._sampling import sample

        return sample(logits, sampling, histories)

    def sampling(self, **settings: Any) -> Any:
        """How a sequence samples (runtimes/_sampling.py `new_sampling`'s keywords)."""
        from modelpod.runtimes._sampling import new_sampling

        return new_sampling(**settings)

    # --- the plain runtime protocol -------------------------------------------------------------------

    def predict(self, batch: Batch) -> Batch:
        texts = [self.generate(self.text_prompt(str(p)), PREDICT_MAX_TOKENS) for p in batch["prompt"]]
        return {"text": np.asarray(texts, dtype=object)}

    def generate(self, prompt: Sequence[int], max_tokens: int) -> str:
        """Greedy generation of one sequence, outside the server (`modelpod predict`, warm-up), in a pool
        of its own."""
        max_tokens = max(1, min(max_tokens, self.max_context - len(prompt)))
        store = self._new_store(len(prompt) + max_tokens, prefix_caching=False)
        kv = store.open(prompt, len(prompt) + max_tokens)
        tokens: list[int] = []
        piece = Piece(kv, 0, list(prompt), logits=True)
        while True:
            logits = _forward(self._torch, self.model, store.cache, [piece], self._cache_kwarg)
            _check_attention(store.cache, self._layers)
            token = int(logits[0].argmax())
            if token in self.eos_token_ids:
                break
            tokens.append(token)
            if len(tokens) >= max_tokens:
                break
            piece = Piece(kv, len(prompt) + len(tokens) - 1, [token], logits=True)
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def warmup(self) -> None:
        self.generate(self.text_prompt("warm-up"), 2)

    def _new_store(self, pool_tokens: int, *, prefix_caching: bool) -> Any:
        from modelpod.runtimes._kv_slabs import SlabCache
        from modelpod.runtimes._kv_store import KVStore

        cache = SlabCache(
            layers=self._layers,
            kv_heads=self._kv_heads,
            head_dim=self._head_dim,
            pool_tokens=pool_tokens,
            dtype=self.model.dtype,
            device=self.device,
        )
        return KVStore(cache, prefix_caching=prefix_caching)


def _forward(torch: Any, model: Any, cache: Any, pieces: Sequence[Piece], cache_kwarg: str) -> Any:
    from modelpod.runtimes._kv_slabs import STEP_KWARG, Segment, Step

    ids: list[int] = []
    positions: list[int] = []
    segments = []
    wanted = []
    for piece in pieces:
        segments.append(Segment(len(ids), len(piece.tokens), piece.position, piece.kv.slab))
        ids.extend(piece.tokens)
        positions.extend(range(piece.position, piece.position + len(piece.tokens)))
        if piece.logits:
            wanted.append(len(ids) - 1)
    cache.step = Step.of(segments)
    device = model.device
    try:
        with torch.inference_mode():
            output = model(
                input_ids=torch.tensor([ids], dtype=torch.long, device=device),
                position_ids=torch.tensor([positions], dtype=torch.long, device=device),
                use_cache=True,
                logits_to_keep=torch.tensor(wanted, dtype=torch.long, device=device),
                **{cache_kwarg: cache, STEP_KWARG: cache},
            )
            return output.logits[0].float().cpu()
    finally:
        cache.step = None


def _check_attention(cache: Any, layers: int) -> None:
    """Every layer's attention must have run through modelpod's; one that computed its own would have
    attended to nothing but the pass's own tokens."""
    if cache.attention_calls != layers:
        raise ModelLoadError(
            f"the model computed the attention of {layers - cache.attention_calls} of its {layers} layers "
            "outside transformers' attention interface, which modelpod's engine needs in order to keep "
            "their keys and values",
            hint="serve this model with another engine, or use an architecture transformers implements "
            "with its attention interface",
        )


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


def unsupported_attention(config: Any) -> str | None:
    """Why modelpod's attention cannot serve a model with `config` exactly, or None when it can."""
    kinds = set(getattr(config, "layer_types", None) or ())
    if kinds - _ATTENTION_LAYERS:
        return f"its layers include {', '.join(sorted(kinds - _ATTENTION_LAYERS))}, which are not attention"
    if getattr(config, "is_encoder_decoder", False):
        return "it is an encoder-decoder model, not a causal language model"
    if any(getattr(config, name, None) for name in ("attention_chunk_size", "use_attention_sinks")):
        return "it uses chunked attention or attention sinks"
    head_dim = getattr(config, "head_dim", None)
    value_dim = getattr(config, "v_head_dim", None)
    if value_dim is not None and head_dim is not None and value_dim != head_dim:
        return "its values have another head size than its keys"
    return None


def load_generator(torch: Any, model: ResolvedModel, device: str) -> TextGenerator:
    transformers = require("transformers", runtime="transformers", extra="transformers")
    from modelpod.runtimes._kv_slabs import ATTENTION, register_attention

    path = model.path
    assert path is not None  # the transformers runtime checked it is a directory
    if model.options.get("attn_implementation"):
        raise ModelLoadError(
            "model.options.attn_implementation does not apply to text generation: modelpod's engine "
            "computes the attention itself (sliding windows and soft-capping included)",
            hint="remove model.options.attn_implementation",
        )
    dtype_name = model.options.get("dtype")
    dtype = getattr(torch, str(dtype_name)) if dtype_name else (torch.float32 if device == "cpu" else "auto")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    why = unsupported_attention(config.get_text_config(decoder=True))
    if why is not None:
        raise ModelLoadError(
            f"modelpod's engine cannot serve {path.name} exactly: {why}",
            hint="serve it with another engine (docs/formats.md)",
        )
    register_attention()
    causal = transformers.AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, dtype=dtype, attn_implementation=ATTENTION
    )
    causal.to(device).eval()
    context = int(getattr(causal.config.get_text_config(decoder=True), "max_position_embeddings", 0) or 0)
    if context <= 0:
        context = int(getattr(causal.config, "n_positions", 0) or 0)
    if context <= 0:
        raise ModelLoadError(
            f"{path.name}'s config gives no max_position_embeddings",
            hint="set generation.max_context_tokens in modelpod.yaml",
        )
    signature = reconcile(model.signature, SIGNATURE, fmt="text-generation")
    return TextGenerator(torch, causal, tokenizer, signature, max_context=context)
