"""A quick in-process measure of a model's speed, and sizes on disk, for optimize's table.

The model is called directly, with no server: latency at batch 1 (the median call), and throughput at
the best of a few batch sizes. It runs for about a second per model by default, on whatever else the
machine is doing, so it shows the order of the gain, not a benchmark; benchmarks/optimize.py measures
carefully.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelpod.runtimes.base import Batch

BATCH_SIZES = (1, 8, 32, 64)


@dataclass(frozen=True)
class Speed:
    latency_ms: float  # median call at batch 1
    items_per_s: float  # at best_batch_size
    best_batch_size: int


def measure(predict: Callable[[Batch], Batch], rows: Batch, seconds: float) -> Speed:
    """Time `predict` on slices of `rows` (at least max(BATCH_SIZES) rows) for about `seconds`."""
    budget = seconds / (1 + len(BATCH_SIZES))
    latencies = _timed_calls(predict, _take(rows, 1), budget)
    throughput = {}
    for size in BATCH_SIZES:
        calls = _timed_calls(predict, _take(rows, size), budget)
        throughput[size] = size / statistics.median(calls)
    best = max(throughput, key=lambda size: throughput[size])
    return Speed(statistics.median(latencies) * 1000, throughput[best], best)


def _take(rows: Batch, size: int) -> Batch:
    count = len(next(iter(rows.values())))
    index = np.arange(size) % count
    return {name: values[index] for name, values in rows.items()}


def _timed_calls(predict: Callable[[Batch], Batch], batch: Batch, budget: float) -> list[float]:
    predict(batch)  # the first call of a shape may allocate or compile
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while not times or (time.perf_counter() < deadline and len(times) < 10_000):
        started = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - started)
    return times


def size_on_disk(path: Path, *, leave_out: Sequence[Path] = ()) -> int:
    """Bytes of a file, or of every file under a directory except those under `leave_out`."""
    if path.is_file():
        return path.stat().st_size
    return sum(
        f.stat().st_size
        for f in path.rglob("*")
        if f.is_file() and not any(f.is_relative_to(other) for other in leave_out)
    )


def readable_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
