"""Closed-loop HTTP load: `concurrency` workers each send a request, wait for the answer, and repeat.

Latencies go into an HDR histogram (microsecond resolution); throughput counts completed requests over
the measured window, after a warm-up window whose requests are not counted. Non-200 answers are counted
separately and excluded from latency percentiles.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import aiohttp
from hdrh.histogram import HdrHistogram


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    seconds: float
    ok: int
    errors: int
    throughput: float  # successful requests per second
    p50_ms: float
    p90_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


async def closed_loop(
    url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> LoadResult:
    histogram = HdrHistogram(1, 60_000_000, 3)  # 1 us .. 60 s, 3 significant digits
    counts = {"ok": 0, "errors": 0}
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration
    request_headers = {"content-type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

        async def worker(offset: int) -> None:
            for body in itertools.islice(itertools.cycle(bodies), offset, None):
                sent = time.perf_counter()
                if sent >= stop_at:
                    return
                async with session.post(url, data=body, headers=request_headers) as response:
                    await response.read()
                    status = response.status
                done = time.perf_counter()
                if sent < measure_from:
                    continue
                if status == 200:
                    counts["ok"] += 1
                    histogram.record_value(max(1, int((done - sent) * 1e6)))
                else:
                    counts["errors"] += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = min(time.perf_counter(), stop_at) - measure_from
    return LoadResult(
        concurrency=concurrency,
        seconds=round(elapsed, 2),
        ok=counts["ok"],
        errors=counts["errors"],
        throughput=round(counts["ok"] / elapsed, 1),
        p50_ms=histogram.get_value_at_percentile(50) / 1000,
        p90_ms=histogram.get_value_at_percentile(90) / 1000,
        p99_ms=histogram.get_value_at_percentile(99) / 1000,
    )
