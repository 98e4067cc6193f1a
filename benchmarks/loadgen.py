"""Closed-loop HTTP load for the benchmark suite: `modelpod bench`'s load generator (modelpod.bench), with
the benchmarks' own result type (which wrk_client.py returns too).

`concurrency` workers each send a request, wait for the answer, and repeat. Latencies go into an HDR
histogram (microsecond resolution); throughput counts completed requests over the measured window, after
a warm-up window whose requests are not counted. Non-200 answers are counted separately and excluded
from latency percentiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from modelpod.bench.loadgen import Load, run_step
from modelpod.bench.workload import Workload


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
    timeout: float = 60,
) -> LoadResult:
    """`url` is the whole endpoint (e.g. http://127.0.0.1:8080/predict)."""
    record = await run_step(
        url,
        Workload(path="", bodies=tuple(bodies), streaming=False),
        Load("closed", concurrency),
        duration=duration,
        warmup=warmup,
        timeout=timeout,
        max_connections=concurrency,
    )
    latency = record.latency
    return LoadResult(
        concurrency=concurrency,
        seconds=round(duration, 2),
        ok=record.ok,
        errors=sum(record.errors.values()),
        throughput=round(record.ok / duration, 1),
        p50_ms=latency.get_value_at_percentile(50) / 1000,
        p90_ms=latency.get_value_at_percentile(90) / 1000,
        p99_ms=latency.get_value_at_percentile(99) / 1000,
    )
