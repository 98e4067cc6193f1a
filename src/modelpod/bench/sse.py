"""One streamed generation request (OpenAI chat or completions with `stream: true`), timed chunk by chunk.

The parser reads server-sent events line by line with orjson: a fifth to an eighth of the client CPU per
token of the openai SDK's stream, which builds pydantic objects for every chunk. The load generator
shares the machine with the server it measures, so its own cost matters.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import orjson


@dataclass
class Stream:
    """One request: when it was sent, when each content chunk arrived, and what the server reported."""

    sent: float
    ended: float = 0.0
    status: int = 0  # the HTTP status; 0 when no answer came
    chunk_times: list[float] = field(default_factory=list)
    completion_tokens: int | None = None  # from the usage the server reported, if it did
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else len(self.chunk_times)


async def stream_one(
    session: aiohttp.ClientSession, url: str, body: bytes, *, sent: float | None = None
) -> Stream:
    """Send `body` and read its events to the end. `sent`: when the request was due (an open loop's
    arrival time), so that time spent waiting for a connection counts; default now."""
    stream = Stream(sent=time.perf_counter() if sent is None else sent)
    try:
        async with session.post(url, data=body, headers={"content-type": "application/json"}) as response:
            stream.status = response.status
            if response.status != 200:
                stream.error = f"HTTP {response.status}: {(await response.text())[:300]}"
                return stream
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments, pings
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                now = time.perf_counter()
                event = orjson.loads(payload)
                if "error" in event:
                    stream.error = str(event["error"])[:300]
                    break
                _read_event(stream, event, now)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"[:300]
    if stream.error is None and not stream.chunk_times:
        stream.error = "no content streamed"
    stream.ended = time.perf_counter()
    return stream


def _read_event(stream: Stream, event: dict[str, object], now: float) -> None:
    choices = event.get("choices")
    if isinstance(choices, list) and choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        if delta.get("content") or choice.get("text"):  # chat deltas, or completions' text
            stream.chunk_times.append(now)
        if choice.get("finish_reason"):
            stream.finish_reason = choice["finish_reason"]
    usage = event.get("usage")
    if isinstance(usage, dict):
        stream.completion_tokens = usage.get("completion_tokens")
        stream.prompt_tokens = usage.get("prompt_tokens")
