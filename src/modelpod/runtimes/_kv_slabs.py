"""The KV cache of continuous batching: a fixed pool per layer, one contiguous slab per sequence.

Memory is the point. Each layer's keys and values live in one buffer `[kv_heads, pool_tokens, head_dim]`,
allocated (and zeroed, so resident) once at start-up: the process holds exactly the spec's KV budget
(`generation.kv_cache_tokens`) whatever the mix of prompt lengths, which is what `render` sizes the pod
by. A running sequence owns a slab `[start, start + length)` of the pool, as long as its reservation
(prompt + max_tokens), handed out first-fit by `SlabAllocator` and given back when it ends.

One forward pass runs a *packed* batch: `input_ids [1, T]` holding, one after the other, a decode token of
every running sequence and chunks of prompts being prefilled (chunked prefill), with each token's own
position. No row is padded. The pieces of one sequence in the pass are its `Segment`. The model is an
ordinary transformers model with two things swapped in:
- `SlabCache.update` writes the pass's new keys and values into their slabs (one `index_copy_` per layer)
  and returns them unchanged;
- the attention is `slab_attention`, registered in transformers' `AttentionInterface` as "modelpod": per
  segment, its queries attend to a view of its slab (no copy), with the causal mask within a chunk, the
  layer's sliding window (a query at p sees keys p - W < k <= p, transformers' own rule) and Gemma 2's
  logit soft-capping. The model builds no mask (the mask function returns None). Transformers hands the
  step to the attention function through a keyword argument of the forward call (`modelpod_step`), which
  every model passes down to its attention.

A chunk of a prompt attends with an explicit mask (SDPA's `is_causal` is aligned to the top left, right
only for a chunk that starts at position 0). Decode queries attend to a slice of their slab and need none.
Per sequence one SDPA call per layer: for 16 sequences a decode step took about 8% longer than one padded
batch in a prototype (30 layers, 300 tokens each), the price of no padding, no per-step copies and
memory that does not depend on the longest sequence.

Imported only by the text-generation runtime, inside its `load()`: it imports torch and transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as functional
from transformers import AttentionInterface
from transformers.cache_utils import Cache
from transformers.masking_utils import AttentionMaskInterface

ATTENTION = "modelpod"
STEP_KWARG = "modelpod_step"  # the forward call's keyword that carries the step to `slab_attention`


@dataclass(eq=False)
class Slab:
    """A sequence's part of the pool. `start` moves when the allocator compacts the pool."""

    start: int
    length: int


class SlabAllocator:
    """First-fit over token rows `[0, capacity)`; free ranges kept sorted and merged."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.free: list[tuple[int, int]] = [(0, capacity)]  # (start, length)

    def allocate(self, length: int) -> Slab | None:
        for i, (start, size) in enumerate(self.free):
            if size >= length:
                if size == length:
                    del self.free[i]
                else:
                    self.free[i] = (start + length, size - length)
                return Slab(start, length)
        return None

    def release(self, slab: Slab) -> None:
        ranges = sorted([*self.free, (slab.start, slab.length)])
        merged: list[tuple[int, int]] = []
        for start, size in ranges:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((start, size))
        self.free = merged

    @property
    def free_tokens(self) -> int:
        return sum(size for _, size in self.free)

    def compacted(self, live: Sequence[Slab]) -> list[tuple[Slab, int]]:
        """Lay `live` out from row 0 in their order, leaving one free range at the end; returns each moved
        slab with its old start (the caller moves the data, lowest first, so no slab overwrites another)."""
        moves = []
        row = 0
        for slab in sorted(live, key=lambda s: s.start):
            if slab.start != row:
                moves.append((slab, slab.start))
                slab.start = row
            row += slab.length
        self.free = [(row, self.capacity - row)] if row < self.capacity else []
        return moves


@dataclass
class Segment:
    """One sequence's tokens in a packed pass: `count` tokens from `offset` in the pass, at positions
    `position .. position + count - 1` of the sequence, whose slab starts at pool row `slab.start`."""

    offset: int
    count: int
    position: int
    slab: Slab
    _masks: dict[tuple[int, int | None], Any] = field(default_factory=dict, repr=False)

    def mask(self, lowest: int, window: int | None) -> Any:
        """[count, keys] True where a query may attend, for keys from position `lowest` (shared by layers)."""
        key = (lowest, window)
        mask = self._masks.get(key)
        if mask is None:
            queries = torch.arange(self.position, self.position + self.count)[:, None]
            keys = torch.arange(lowest, self.position + self.count)[None, :]
            mask = keys <= queries
            if window is not None:
                mask &= keys > queries - window
            self._masks[key] = mask
        return mask


@dataclass
class Step:
    """The segments of one packed pass and the pool row each of its tokens is written to."""

    segments: list[Segment]
    rows: Any  # [T] int64

    @classmethod
    def of(cls, segments: list[Segment]) -> Step:
        rows = torch.cat(
            [torch.arange(s.slab.start + s.position, s.slab.start + s.position + s.count) for s in segments]
        )
        return cls(segments, rows)


class SlabCache(Cache):
    """The pools, and the step being run. To the model it is a `Cache` that stores what it is given."""

    def __init__(
        self, *, layers: int, kv_heads: int, head_dim: int, pool_tokens: int, dtype: Any, device: Any
    ) -> None:
        # no layer objects: their questions (sliding? linear?) concern masks, which the model does not build
        super().__init__(layers=[])
        self.pool_tokens = pool_tokens

        def pool() -> Any:
            # zeros, not empty: the memory is resident from the start, as the pod is sized
            return torch.zeros((kv_heads, pool_tokens, head_dim), dtype=dtype, device=device)

        self.keys = [pool() for _ in range(layers)]
        self.values = [pool() for _ in range(layers)]
        self.step: Step | None = None
        self.attention_calls = 0  # layers whose attention ran through slab_attention (load-time check)

    @property
    def nbytes(self) -> int:
        return sum(int(t.numel() * t.element_size()) for t in (*self.keys, *self.values))

    def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any) -> Any:
        step = self.step
        if step is None:
            raise RuntimeError("SlabCache.update outside a step")
        self.keys[layer_idx].index_copy_(1, step.rows, key_states[0])
        self.values[layer_idx].index_copy_(1, step.rows, value_states[0])
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always given to the model

    def copy_rows(self, source: int, target: int, count: int) -> None:
        """Copy `count` tokens' keys and values from row `source` to row `target`, in every layer."""
        if source == target or count == 0:
            return
        for pool in (*self.keys, *self.values):
            pool[:, target : target + count] = pool[:, source : source + count].clone()


def slab_attention(
    module: Any,
    query: Any,  # [1, heads, T, head_dim]
    key: Any,  # the pass's new keys, already in the pool
    value: Any,
    attention_mask: Any,  # None: the model builds no mask
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    cache: SlabCache = kwargs[STEP_KWARG]
    step = cache.step
    if step is None:
        raise RuntimeError("slab_attention outside a step")
    layer = module.layer_idx
    keys, values = cache.keys[layer], cache.values[layer]
    if layer == 0:
        cache.attention_calls = 0
    cache.attention_calls += 1
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    outputs = [
        _attend(query, keys, values, segment, scale, sliding_window, softcap) for segment in step.segments
    ]
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)  # [1, heads, T, head_dim]
    return out.transpose(1, 2), None  # [1, T, heads, head_dim], as transformers' own attentions answer


def _attend(
    query: Any,
    keys: Any,
    values: Any,
    segment: Segment,
    scale: float,
    window: int | None,
    softcap: float | None,
) -> Any:
    """One sequence's queries against its slab: [1, heads, count, d] x [1, kv_heads, keys, d]."""
    end = segment.position + segment.count
    lowest = max(0, segment.position - window + 1) if window else 0
    start = segment.slab.start
    q = query[:, :, segment.offset : segment.offset + segment.count]
    k = keys[:, start + lowest : start + end].unsqueeze(0)  # views of the slab
    v = values[:, start + lowest : start + end].unsqueeze(0)
    # one query (decode) sees exactly its slice; a chunk needs its causal (and window) mask
    mask = None if segment.count == 1 else segment.mask(lowest, window)
    if softcap is not None:
        return _softcapped(q, k, v, mask, scale, softcap)
    grouped = q.shape[1] != k.shape[1]
    return functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=grouped)


def _softcapped(q: Any, k: Any, v: Any, mask: Any, scale: float, softcap: float) -> Any:
    """Gemma 2's attention: scores soft-capped (tanh(s / c) * c) before the mask and softmax, which SDPA
    cannot do; the same arithmetic as transformers' eager attention."""
    repeat = q.shape[1] // k.shape[1]
    if repeat > 1:
        k = k.repeat_interleave(repeat, dim=1)
        v = v.repeat_interleave(repeat, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(weights, v)


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None


def register_attention() -> None:
    """Make "modelpod" an attention implementation transformers knows (idempotent)."""
    AttentionInterface.register(ATTENTION, slab_attention)
    AttentionMaskInterface.register(ATTENTION, _no_mask)
