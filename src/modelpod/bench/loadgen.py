"""One load step against a server: closed loop or open loop, latencies in HDR histograms.

- Closed loop (`Load("closed", N)`): N callers each send a request, wait for its answer, and send the next.
  It measures what N users who wait get, but hides queueing: a slow server slows the callers down.
- Open loop (`Load("open", R)`): requests arrive at R per second on average, at exponentially distributed
  intervals (a Poisson process, seeded), whether or not earlier ones were answered. Latency counts from the
  moment a request was due, not from when a connection was free to send it, so a server that falls
  behind shows its queue in the percentiles instead of the client quietly sending less (coordinated
  omission).

A step has a warm-up window whose requests are not counted, then the measured window of `duration`
seconds; requests due in it are counted when they finish, however late (each within `timeout`).
Latencies go into HDR histograms with microsecond resolution; only answers with status 200 count in the
percentiles, every other status (and timeouts, refused connections) counts as an error by kind.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from hdrh.histogram import HdrHistogram

from modelpod.bench.sse import Stream, stream_one
from modelpod.bench.workload import Workload

PROGRESS_EVERY_S = 0.5

Send = Callable[[bytes, float], "asyncio.Task[None]"]  # send a body due at a time; the task records it


@dataclass(frozen=True)
class Load:
    mode: Literal["closed", "open"]
    level: float  # callers (closed loop) or requests per second (open loop)

    def describe(self) -> str:
        return f"concurrency {self.level:g}" if self.mode == "closed" else f"{self.level:g} requests/s"


@dataclass(frozen=True)
class Progress:
    elapsed_s: float
    total_s: float  # warm-up plus the measured window
    warming_up: bool
    ok: int
    errors: int


def _histogram(timeout: float) -> HdrHistogram:
    # 1 us to the timeout (and a margin), 3 significant digits
    return HdrHistogram(1, int((timeout + 60) * 1e6), 3)


@dataclass
class StepRecord:
    """What one step measured: counts, latency histograms (microseconds) and, for streams, tokens."""

    load: Load
    duration_s: float
    latency: HdrHistogram
    ttft: HdrHistogram  # streams: time to the first content chunk
    itl: HdrHistogram  # streams: time between content chunks
    streaming: bool
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    output_tokens: int = 0
    client_cpu_s: float = 0.0

    def record(self, due: float, done: float, error: str | None) -> None:
        if error is not None:
            self.errors[error] += 1
            return
        self.ok += 1
        self.latency.record_value(_micros(done - due, self.latency))

    def record_stream(self, stream: Stream) -> None:
        if stream.error is not None:
            kind = str(stream.status) if stream.status not in (0, 200) else "stream"
            self.errors[kind] += 1
            return
        self.record(stream.sent, stream.ended, None)
        self.output_tokens += stream.tokens
        self.ttft.record_value(_micros(stream.chunk_times[0] - stream.sent, self.ttft))
        for before, after in itertools.pairwise(stream.chunk_times):
            self.itl.record_value(_micros(after - before, self.itl))


def _micros(seconds: float, histogram: HdrHistogram) -> int:
    highest: int = histogram.highest_trackable_value
    return max(1, min(int(seconds * 1e6), highest))


async def run_step(
    url: str,
    workload: Workload,
    load: Load,
    *,
    duration: float,
    warmup: float,
    timeout: float,
    max_connections: int,
    seed: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
) -> StepRecord:
    """Put `load` on `url + workload.path` for `warmup` + `duration` seconds and record the measured part."""
    record = StepRecord(
        load,
        duration,
        _histogram(timeout),
        ttft=_histogram(timeout),
        itl=_histogram(timeout),
        streaming=workload.streaming,
    )
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)
    endpoint = url.rstrip("/") + workload.path
    connector = aiohttp.TCPConnector(limit=max_connections)
    cpu_before = time.process_time()
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        send = _sender(session, endpoint, workload, record, window)
        ticker = asyncio.create_task(_report_progress(record, start, warmup + duration, on_progress))
        try:
            if load.mode == "closed":
                await _closed_loop(send, workload, int(load.level), window)
            else:
                await _open_loop(send, workload, load.level, window, random.Random(seed))  # noqa: S311 - arrival times, not secrets
        finally:
            ticker.cancel()
    record.client_cpu_s = time.process_time() - cpu_before
    return record


def _sender(
    session: aiohttp.ClientSession,
    endpoint: str,
    workload: Workload,
    record: StepRecord,
    window: tuple[float, float],
) -> Send:
    """A function that sends one body due at a time and records its outcome when that time is in the
    measured window."""
    headers = {"content-type": "application/json"}

    async def plain(body: bytes, due: float) -> None:
        error: str | None = None
        try:
            async with session.post(endpoint, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    error = str(response.status)
        except asyncio.TimeoutError:
            error = "timeout"
        except aiohttp.ClientError:
            error = "connection"
        if window[0] <= due < window[1]:
            record.record(due, time.perf_counter(), error)

    async def streamed(body: bytes, due: float) -> None:
        stream = await stream_one(session, endpoint, body, sent=due)
        if window[0] <= due < window[1]:
            record.record_stream(stream)

    one = streamed if workload.streaming else plain
    return lambda body, due: asyncio.ensure_future(one(body, due))


async def _closed_loop(
    send: Send,
    workload: Workload,
    callers: int,
    window: tuple[float, float],
) -> None:
    async def caller(offset: int) -> None:
        for body in itertools.islice(itertools.cycle(workload.bodies), offset, None):
            now = time.perf_counter()
            if now >= window[1]:
                return
            await send(body, now)

    await asyncio.gather(*(caller(i) for i in range(callers)))


async def _open_loop(
    send: Send,
    workload: Workload,
    rate: float,
    window: tuple[float, float],
    rng: random.Random,
) -> None:
    pending: set[asyncio.Task[None]] = set()
    due = time.perf_counter()  # the warm-up's requests arrive the same way, and are not recorded
    for body in itertools.cycle(workload.bodies):
        due += rng.expovariate(rate)
        if due >= window[1]:
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        task = send(body, due)
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


async def _report_progress(
    record: StepRecord, start: float, total: float, on_progress: Callable[[Progress], None] | None
) -> None:
    if on_progress is None:
        return
    while True:
        elapsed = time.perf_counter() - start
        warming_up = elapsed < total - record.duration_s
        on_progress(Progress(min(elapsed, total), total, warming_up, record.ok, sum(record.errors.values())))
        await asyncio.sleep(PROGRESS_EVERY_S)
