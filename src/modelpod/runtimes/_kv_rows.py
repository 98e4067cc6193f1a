"""The KV cache of continuous batching: one row per running sequence, all rows ending in the same column.

transformers' `DynamicCache` holds one batch that starts together and grows together: a sequence can
neither join nor leave it without copying every other sequence's keys and values. `RowCache` keeps, per
layer, one preallocated buffer `[rows, kv_heads, columns, head_dim]` instead:

- every running sequence owns one row, and every row's last token sits in the same column (`end - 1`),
  so one decode step writes column `end` for all rows and attends to `[lowest start, end]`, with a mask
  that hides each row's columns before its own start (the left padding of a row that joined later);
- a new sequence is prefilled straight into a free row, its prompt placed to end at column `end - 1`;
  only when its prompt is longer than `end` are the other rows moved right to make room;
- a finished sequence's row is refilled with the last row (one row copied), so rows `[0, rows)` stay
  contiguous and a step runs on exactly the running sequences;
- when the columns run out, the rows are moved left past the columns no running row uses any more, and
  only when that is not enough is the buffer enlarged (doubled).

This is the layout of TGI's padded `CausalLMBatch` (concatenate and filter), without its copy of the
whole batch at every join and leave. The model sees an ordinary `Cache` whose `update` writes the new
keys and values into the window the caller set and returns that window's views; the 4D attention mask
and the position ids are made here too, so nothing depends on how the model would make them.

Imported only by the text-generation runtime, inside its `load()`: it imports torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

_MIN_COLUMNS = 64


@dataclass(frozen=True)
class ModelInputs:
    """What one forward pass of the model takes besides the token ids."""

    position_ids: Any  # [rows, tokens] int64
    attention_mask: Any  # [rows, 1, tokens, columns] bool, True where a query may attend


class RowCache(Cache):
    def __init__(
        self,
        *,
        layers: int,
        kv_heads: int,
        head_dim: int,
        max_rows: int,
        max_columns: int,
        dtype: Any,
        device: Any,
    ) -> None:
        # the placeholder layers answer Cache's questions about layer kinds (none is sliding or linear)
        super().__init__(layers=[DynamicLayer() for _ in range(layers)])  # type: ignore[no-untyped-call]
        self._shape = (max_rows, kv_heads, head_dim)
        self._dtype, self._device = dtype, device
        self.max_rows = max_rows
        self.max_columns = max_columns
        self.columns = 0
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.rows = 0  # running rows are [0, rows)
        self.end = 0  # the next column a decode step writes; every row's last token is at end - 1
        self.starts: list[int] = []  # per row, the column of its first token
        self._window = (0, 0, 0, 0)  # rows [r0, r1), write at column w, read from column c

    # --- the Cache interface the model calls -------------------------------------------------------

    def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any) -> Any:
        r0, r1, write, read = self._window
        stop = write + key_states.shape[-2]
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[r0:r1, :, write:stop] = key_states
        values[r0:r1, :, write:stop] = value_states
        return keys[r0:r1, :, read:stop], values[r0:r1, :, read:stop]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.end

    # --- what the generation runtime calls -----------------------------------------------------------

    @property
    def used_tokens(self) -> int:
        """Cells holding a token: the rows' own lengths (padding not counted)."""
        return sum(self.end - start for start in self.starts)

    def prepare_prefill(self, lengths: list[int]) -> ModelInputs:
        """Place prompts of `lengths` tokens in new rows `[rows, rows + len(lengths))`, each ending at
        column `end - 1`, and return the inputs of the prefill pass (ids left-padded to the longest)."""
        longest = max(lengths)
        if self.rows + len(lengths) > self.max_rows:
            raise ValueError(f"{self.rows} + {len(lengths)} rows exceed the cache's {self.max_rows}")
        if self.rows == 0:
            self.end = 0
        if self.end < longest:
            self._shift_right(longest - self.end)
        self._reserve(self.end + 1)  # room for the decode step after this prefill
        first = self.rows
        for length in lengths:
            self.starts.append(self.end - length)
        self.rows += len(lengths)
        self._window = (first, self.rows, self.end - longest, self.end - longest)
        pads = torch.tensor([longest - n for n in lengths], device=self._device)
        steps = torch.arange(longest, device=self._device)
        positions = (steps[None, :] - pads[:, None]).clamp(min=0)
        causal = steps[None, :] <= steps[:, None]  # [query, key]
        real_key = steps[None, :] >= pads[:, None]  # [row, key]
        mask = causal[None, :, :] & real_key[:, None, :]
        # a padding query attends to itself alone, so that no softmax row is empty (an empty row is NaN,
        # and a NaN in a padding column's keys would reach real rows through 0 * NaN)
        mask |= torch.eye(longest, dtype=torch.bool, device=self._device)[None, :, :]
        return ModelInputs(positions, mask[:, None, :, :])

    def prepare_decode(self) -> ModelInputs:
        """Inputs of one decode step: one token per row, written at column `end`."""
        self._reserve(self.end + 1)
        lowest = min(self.starts)
        starts = torch.tensor(self.starts, device=self._device)
        self._window = (0, self.rows, self.end, lowest)
        columns = torch.arange(lowest, self.end + 1, device=self._device)
        mask = columns[None, :] >= starts[:, None]
        positions = (self.end - starts)[:, None]
        return ModelInputs(positions, mask[:, None, None, :])

    def advance(self) -> None:
        """After a decode step: every row has one token more."""
        self.end += 1

    def remove(self, row: int) -> int | None:
        """Free `row`; the last row moves into it. Returns the row that moved (now `row`), or None."""
        last = self.rows - 1
        moved = None
        if row != last:
            start = self.starts[last]
            for buffer in (*self.keys, *self.values):
                buffer[row, :, start : self.end] = buffer[last, :, start : self.end]
            self.starts[row] = start
            moved = last
        self.starts.pop()
        self.rows -= 1
        if self.rows == 0:
            self.end = 0
        return moved

    def clear(self) -> None:
        self.rows, self.end, self.starts = 0, 0, []

    # --- room ----------------------------------------------------------------------------------------

    def _reserve(self, columns: int) -> None:
        """Make columns `[0, columns)` exist: first by moving rows left past unused columns, else by
        enlarging the buffers."""
        if columns <= self.columns:
            return
        lowest = min(self.starts, default=self.end)
        if lowest > 0 and columns - lowest <= self.columns:
            self._shift_left(lowest)
            return
        if columns > self.max_columns:
            raise ValueError(f"the KV cache needs {columns} columns, more than its {self.max_columns}")
        size = min(max(columns, 2 * self.columns, _MIN_COLUMNS), self.max_columns)
        rows, heads, dim = self._shape
        for buffers in (self.keys, self.values):
            for i in range(len(self.layers)):
                # zeros, not empty: a row's left padding is never written, and uninitialised memory
                # can hold NaN, which reaches the real rows through the attention's 0 * NaN
                grown = torch.zeros((rows, heads, size, dim), dtype=self._dtype, device=self._device)
                if i < len(buffers):
                    grown[:, :, : self.end] = buffers[i][:, :, : self.end]
                    buffers[i] = grown
                else:
                    buffers.append(grown)
        self.columns = size

    def _shift_left(self, by: int) -> None:
        lowest = min(self.starts)
        for buffer in (*self.keys, *self.values):
            moved = buffer[: self.rows, :, lowest : self.end].clone()
            buffer[: self.rows, :, lowest - by : self.end - by] = moved
        self.starts = [start - by for start in self.starts]
        self.end -= by

    def _shift_right(self, by: int) -> None:
        self._reserve(self.end + by + 1)
        if self.rows:
            lowest = min(self.starts)
            for buffer in (*self.keys, *self.values):
                moved = buffer[: self.rows, :, lowest : self.end].clone()
                buffer[: self.rows, :, lowest + by : self.end + by] = moved
        self.starts = [start + by for start in self.starts]
        self.end += by
