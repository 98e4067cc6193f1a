"""Token usage of `/v1/embeddings` (server/protocols/openai/embeddings.py): a long input is counted off the
event loop."""

from __future__ import annotations

import threading

import pytest

from modelpod.server.protocols.openai.embeddings import COUNT_IN_PLACE_CHARS, _count_tokens

pytestmark = pytest.mark.anyio


class _CountingRuntime:
    """Counts one token per text and notes the thread it counted on."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def count_tokens(self, texts: list[str]) -> int:
        self.threads.append(threading.current_thread())
        return len(texts)


async def test_a_short_input_is_counted_in_place():
    runtime = _CountingRuntime()
    assert await _count_tokens(runtime, ["a man is eating food", "hi"]) == 2
    assert runtime.threads == [threading.current_thread()]


async def test_a_long_input_is_counted_on_another_thread():
    runtime = _CountingRuntime()
    texts = ["x" * 100] * (COUNT_IN_PLACE_CHARS // 100 + 1)
    assert await _count_tokens(runtime, texts) == len(texts)
    assert len(runtime.threads) == 1
    assert runtime.threads[0] is not threading.current_thread()


async def test_a_runtime_that_cannot_count_reports_zero():
    assert await _count_tokens(object(), ["anything"]) == 0
