"""Closed-loop streaming load: `concurrency` workers each send a streaming chat completion, read its
server-sent events to the end, and send the next.

Every content chunk is timestamped as it is read. A run has a warm-up window, then a measured window of
`duration` seconds; after it no new request is sent and the requests in flight finish (so the measured
window sees the full concurrency to its end). Everything counted is an event inside the measured window:
the output tokens whose chunks arrived in it, the times to first token of the requests whose first
token arrived in it, the gaps between content chunks that ended in it, the requests that ended in it.
(A request can last longer than a short window: counting only the requests sent inside it would leave
a short window of a slow server with no latencies at all.) The tokens of a request are the
`completion_tokens` of its usage where the server reports one, else its content chunks; a chunk may
carry more than one token, so each of a request's chunks counts as tokens / chunks.

The client is `modelpod bench`'s (modelpod/bench/sse.py): aiohttp with a line-by-line SSE parser and
orjson, on uvloop when it is installed: a fifth to an eighth of the CPU time per token of the openai
SDK's AsyncOpenAI stream, which builds pydantic objects for every chunk (benchmarks/generation-method.md).
It shares the machine's cores with the server, so its own CPU time is measured and reported per token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import numpy as np

from modelpod.bench.sse import Stream, stream_one


async def closed_loop(
    url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    timeout: float = 600,
    fresh_connections: bool = False,
) -> dict[str, Any]:
    """`fresh_connections`: a new connection per request, for a server that closes idle keep-alive
    connections under the client (llama-server: aiohttp then fails to write the next request)."""
    streams: list[Stream] = []
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration
    cpu_before = time.process_time()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=fresh_connections)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

        async def worker(offset: int) -> None:
            index = offset
            while time.perf_counter() < stop_at:
                streams.append(await stream_one(session, url, bodies[index % len(bodies)]))
                index += 1

        # the workers start on different prompts, spread over the set
        step = max(1, len(bodies) // concurrency)
        await asyncio.gather(*(worker(i * step) for i in range(concurrency)))
    client_cpu = time.process_time() - cpu_before
    return summarise(streams, concurrency, measure_from, stop_at, client_cpu)


def summarise(
    streams: list[Stream], concurrency: int, measure_from: float, stop_at: float, client_cpu: float
) -> dict[str, Any]:
    duration = stop_at - measure_from
    window_tokens = 0.0
    for stream in streams:
        if stream.chunk_times:
            per_chunk = stream.tokens / len(stream.chunk_times)
            window_tokens += per_chunk * sum(measure_from <= t < stop_at for t in stream.chunk_times)

    def inside(t: float) -> bool:
        return measure_from <= t < stop_at

    ok = [s for s in streams if s.error is None]
    ended = [s for s in ok if inside(s.ended)]
    ttft = [(s.chunk_times[0] - s.sent) * 1000 for s in ok if inside(s.chunk_times[0])]
    gaps = [
        (b - a) * 1000
        for s in ok
        for a, b in zip(s.chunk_times, s.chunk_times[1:], strict=False)
        if inside(b)
    ]
    tokens = sum(s.tokens for s in ok)  # per request and per chunk: over every request of the run
    chunks = sum(len(s.chunk_times) for s in ok)
    errors = [s.error for s in streams if s.error is not None and inside(s.ended)]
    return {
        "concurrency": concurrency,
        "seconds": round(duration, 2),
        "output_tokens_per_s": round(window_tokens / duration, 2),
        "requests": len(ended),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "requests_per_s": round(len(ended) / duration, 3),
        "ttft_count": len(ttft),
        "ttft_ms": percentiles(ttft),
        "itl_ms": percentiles(gaps),
        "tokens_per_request": round(tokens / len(ok), 1) if ok else None,
        "tokens_per_chunk": round(tokens / chunks, 3) if chunks else None,
        "usage_reported": sum(s.completion_tokens is not None for s in ok),
        "prompt_tokens": sorted({s.prompt_tokens for s in ok if s.prompt_tokens is not None}),
        "finish_reasons": {r: sum(s.finish_reason == r for s in ok) for r in {s.finish_reason for s in ok}},
        "client_cpu_s": round(client_cpu, 3),
        "client_cpu_us_per_token": round(client_cpu / tokens * 1e6, 1) if tokens else None,
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "p50": round(float(p50), 2),
        "p90": round(float(p90), 2),
        "p99": round(float(p99), 2),
        "mean": round(float(np.mean(values)), 2),
    }


async def probe(url: str, body: bytes, timeout: float) -> Stream:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        return await stream_one(session, url, body)


def run(coroutine: Any) -> Any:
    """Run on a fresh event loop: uvloop's when it is installed (less of the client's CPU)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
