"""Token ids to text while they are generated: incremental decoding and stop strings.

Decoding one token at a time is wrong for byte-level tokenizers: a character can span tokens, and a
word's leading space depends on the token before. `Detokenizer` decodes a short window of recent tokens
and emits what that window added, the approach of TGI and vLLM. `StopMatcher` finds stop strings across
token boundaries and holds back text that could still turn out to be the start of one, so a stream never
shows part of a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# tokens decoded before the new ones, for the leading space and merges to come out right
_CONTEXT_TOKENS = 5


class Detokenizer:
    def __init__(self, tokenizer: Any, prompt: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        self._ids = list(prompt[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0  # where the decoded window starts in `_ids`
        self._read = len(self._ids)  # the first id not yet turned into text

    def push(self, token: int) -> str:
        """The text that `token` completes (empty while it ends inside a character)."""
        self._ids.append(token)
        start = self._prefix_offset
        before = self._decode(self._ids[start : self._read])
        after = self._decode(self._ids[start:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            delta = after[len(before) :]
            self._prefix_offset = self._read
            self._read = len(self._ids)
            return delta
        return ""

    def flush(self) -> str:
        """At the end of a sequence: what its last tokens add that `push` held back (a character they
        leave unfinished comes out as the replacement character, as a decode of the whole answer gives)."""
        before = self._decode(self._ids[self._prefix_offset : self._read])
        after = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read = len(self._ids)
        return after[len(before) :] if len(after) > len(before) else ""

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))


class StopMatcher:
    """Cuts generated text at the first stop string; `feed` returns what may be shown so far."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""  # text not yet shown: it may be the start of a stop string
        self.stopped = False

    def feed(self, text: str) -> str:
        if not self._stops:
            return text
        held = self._held + text
        first = min((i for i in (held.find(s) for s in self._stops) if i >= 0), default=-1)
        if first >= 0:
            self.stopped = True
            self._held = ""
            return held[:first]
        keep = _longest_stop_prefix_suffix(held, self._stops)
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep]

    def flush(self) -> str:
        """At the end of a sequence that did not stop on a stop string: the text held back."""
        held, self._held = self._held, ""
        return held


def _longest_stop_prefix_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that some stop string begins with."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best
