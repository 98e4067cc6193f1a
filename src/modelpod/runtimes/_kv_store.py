"""Who holds which part of the KV pool: running sequences, and the prefixes kept for reuse.

`open` gives a new sequence a slab as long as its reservation (prompt + max_tokens). With prefix caching
on, a sequence that ends leaves its tokens' keys and values in place as a cached prefix (the rest of its
slab is freed); a later prompt that begins with the same tokens (a chat's system prompt and earlier
turns) gets them copied into its own slab, and its prefill computes only the tokens after them. Cached
prefixes live in memory no running sequence holds: when a new sequence needs room, the least recently
used ones are dropped first, and when the free rows suffice but lie in pieces, the pool is compacted
(slabs moved to the start, every layer copied). So caching never keeps a request waiting, and the pool
never holds more than its budget.

A copy from a cached slab is cheap next to computing it: for SmolLM2-135M a token's keys and values are
45 KiB across its 30 layers, so 1,000 tokens are a 46 MB copy where a prefill runs the whole model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelpod.runtimes._kv_slabs import Slab, SlabAllocator, SlabCache

# cached prefixes at most: each lookup compares the prompt with every one of them
MAX_CACHED_PREFIXES = 256


@dataclass(eq=False)
class SequenceKV:
    """A running sequence's slab, and how many of its prompt's tokens came from a cached prefix."""

    slab: Slab
    reused: int = 0


@dataclass(eq=False)
class _Prefix:
    tokens: np.ndarray  # int64, the tokens whose keys and values the slab holds
    slab: Slab


class KVStore:
    def __init__(self, cache: SlabCache, *, prefix_caching: bool) -> None:
        self.cache = cache
        self.allocator = SlabAllocator(cache.pool_tokens)
        self.prefix_caching = prefix_caching
        self.running: set[SequenceKV] = set()
        # tokens the running sequences hold, kept as a count: the metrics read it from another thread
        self.reserved = 0
        self._prefixes: OrderedDict[int, _Prefix] = OrderedDict()  # least recently used first

    @property
    def capacity(self) -> int:
        return self.cache.pool_tokens

    def open(self, prompt: Sequence[int], reservation: int) -> SequenceKV | None:
        """A slab for a new sequence, with its longest cached prefix copied in; None while there is no room
        (the running sequences hold too much of the pool)."""
        source, shared = self._longest_prefix(prompt)
        slab = self._allocate(reservation, keep=source)
        if slab is None and source is not None:
            source, shared = None, 0
            slab = self._allocate(reservation, keep=None)
        if slab is None:
            return None
        if source is not None and shared:
            self.cache.copy_rows(source.slab.start, slab.start, shared)
            self._prefixes.move_to_end(id(source))
        kv = SequenceKV(slab, shared)
        self.running.add(kv)
        self.reserved += slab.length
        return kv

    def close(self, kv: SequenceKV, tokens: Sequence[int]) -> None:
        """`kv`'s sequence ended; `tokens` are those whose keys and values its slab holds."""
        self.running.discard(kv)
        self.reserved -= kv.slab.length
        kept = min(len(tokens), kv.slab.length)
        if not self.prefix_caching or kept == 0:
            self.allocator.release(kv.slab)
            return
        if kept < kv.slab.length:  # free the tail the sequence reserved but did not fill
            self.allocator.release(Slab(kv.slab.start + kept, kv.slab.length - kept))
            kv.slab.length = kept
        new = _Prefix(np.asarray(tokens[:kept], dtype=np.int64), kv.slab)
        for key, old in list(self._prefixes.items()):
            if _common(old.tokens, new.tokens) == len(old.tokens):  # the new one extends it
                self._drop(key)
            elif _common(old.tokens, new.tokens) == len(new.tokens):  # an older one holds it all already
                self.allocator.release(new.slab)
                self._prefixes.move_to_end(key)
                return
        self._prefixes[id(new)] = new
        while len(self._prefixes) > MAX_CACHED_PREFIXES:
            self._drop(next(iter(self._prefixes)))

    def clear(self) -> None:
        """Free everything (after a failed step, when no slab's contents can be trusted)."""
        self.running.clear()
        self.reserved = 0
        self._prefixes.clear()
        self.allocator = SlabAllocator(self.cache.pool_tokens)

    # --- room -----------------------------------------------------------------------------------------

    def _longest_prefix(self, prompt: Sequence[int]) -> tuple[_Prefix | None, int]:
        """The cached prefix sharing most leading tokens with `prompt`, and how many it shares; at most
        all but the prompt's last token, whose logits the prefill must compute."""
        if not self._prefixes or len(prompt) < 2:
            return None, 0
        wanted = np.asarray(prompt[: len(prompt) - 1], dtype=np.int64)
        best, best_shared = None, 0
        for prefix in self._prefixes.values():
            shared = _common(prefix.tokens, wanted)
            if shared > best_shared:
                best, best_shared = prefix, shared
        return best, best_shared

    def _allocate(self, length: int, *, keep: _Prefix | None) -> Slab | None:
        """A slab of `length`: from free rows, else after dropping cached prefixes (least recently used
        first, `keep` last), compacting the pool when the free rows lie in pieces."""
        while True:
            slab = self.allocator.allocate(length)
            if slab is not None:
                return slab
            if self.allocator.free_tokens >= length:
                self._compact()
                continue
            victim = next((k for k, p in self._prefixes.items() if p is not keep), None)
            if victim is None:
                return None
            self._drop(victim)

    def _compact(self) -> None:
        live = [kv.slab for kv in self.running] + [p.slab for p in self._prefixes.values()]
        for slab, old_start in self.allocator.compacted(live):
            self.cache.copy_rows(old_start, slab.start, slab.length)

    def _drop(self, key: int) -> None:
        self.allocator.release(self._prefixes.pop(key).slab)


def _common(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n
