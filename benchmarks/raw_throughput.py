"""The in-process limit: a model's own throughput at its best batch size, with no server in the way.

The runtime is called directly on the same inputs the load test sends, batch after batch, for each batch
size in a sweep. The best batch size is then measured on demand: `RawLimit` keeps the model loaded in a
child process, idle between measurements, so the benchmark can measure the limit right before and right
after each load run. On a shared VM the limit itself drifts by +-15% from one minute to the next; a
ratio of a server to a limit measured minutes earlier mostly measured that drift. (Taking the best of
the short sweep runs would favour the raw side too: the maximum of eight short measurements is biased
upwards.)

Child protocol (`python -m benchmarks.raw_throughput EXAMPLE_DIR ITEMS_JSON SWEEP_SECONDS`): one JSON
line with the sweep, then for each line "SECONDS BATCH_SIZE" read from stdin, one JSON line
{"items_per_s": x}.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128]
SWEEP_PASSES = 3  # the sweep measures each batch size this many times, interleaved; the median counts
LOAD_TIMEOUT = 600  # seconds for the child to load the model and sweep the batch sizes


class RawLimit:
    """The limit of one example, measured in a child process: `sweep` at start, `measure(s)` on demand."""

    def __init__(self, example_dir: Path, items_file: Path, sweep_seconds: float) -> None:
        command = [sys.executable, "-m", "benchmarks.raw_throughput", str(example_dir), str(items_file)]
        self._process = subprocess.Popen(
            [*command, str(sweep_seconds)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.sweep: dict[str, Any] = self._read(LOAD_TIMEOUT)
        self.best_batch_size = int(self.sweep["best_batch_size"])

    def measure(self, seconds: float, batch_size: int | None = None) -> float:
        """Items per second over about `seconds`, at `batch_size` (default: the sweep's best)."""
        assert self._process.stdin is not None
        self._process.stdin.write(f"{seconds} {batch_size or self.best_batch_size}\n")
        self._process.stdin.flush()
        return round(float(self._read(seconds + 60)["items_per_s"]), 1)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)

    def __enter__(self) -> RawLimit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        line = self._process.stdout.readline() if ready else ""
        if not line:
            self._process.kill()
            raise RuntimeError(f"the raw-limit process gave no answer within {timeout:.0f}s")
        return dict(json.loads(line))


def wait_until_quiet(timeout: float = 30.0, busy_cores: float = 0.25, window: float = 0.25) -> float:
    """Wait until the machine's CPUs are busy less than `busy_cores` cores' worth over a `window`; return
    the seconds waited (at most `timeout`).

    A server can go on computing after its load run ends (KServe, which does not batch, finishes what it
    had accepted), and a raw measurement taken meanwhile reads low: 100.5 items/s once on minilm, against
    about 530. Waiting for quiet keeps that out of the limit that brackets the next run."""
    began = time.monotonic()
    while True:
        idle_before, total_before = _cpu_times()
        time.sleep(window)
        idle_after, total_after = _cpu_times()
        total = (total_after - total_before) or 1
        busy = (total - (idle_after - idle_before)) / total * (os.cpu_count() or 1)
        if busy < busy_cores or time.monotonic() - began > timeout:
            return round(time.monotonic() - began, 2)


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user..steal


def _batches(predictor: Any, coerced: Sequence[dict[str, Any]], size: int) -> list[dict[str, np.ndarray]]:
    batches = []
    for start in range(0, len(coerced), size):
        chunk = [coerced[(start + i) % len(coerced)] for i in range(size)]
        batches.append({t.name: np.stack([c[t.name] for c in chunk]) for t in predictor.signature.inputs})
    return batches


def _rate(predictor: Any, batches: list[dict[str, np.ndarray]], seconds: float) -> float:
    """Items per second over about `seconds`, after one warm-up batch."""
    size = len(next(iter(batches[0].values())))
    predictor.runtime.predict(batches[0])
    done = 0
    index = 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        predictor.runtime.predict(batches[index % len(batches)])
        done += size
        index += 1
    return done / (time.perf_counter() - began)


def main(argv: list[str]) -> None:
    from modelpod.server.http.allocator import keep_freed_memory
    from modelpod.server.scheduling.batcher import model_thread

    keep_freed_memory()  # the allocator `modelpod serve` runs with: the limit is the same runtime's
    # and, as in the server, the model is loaded and run on a thread of its own (where its threads are pinned)
    with model_thread(0) as thread:
        thread.submit(_measure, argv).result()


def _measure(argv: list[str]) -> None:
    from modelpod.predictor import Predictor
    from modelpod.specfile import load_spec

    example_dir, items_file, sweep_seconds = argv[0], argv[1], float(argv[2])
    predictor = Predictor.from_spec(load_spec(example_dir))
    items = json.loads(Path(items_file).read_text())
    coerced = [predictor.signature.coerce_inputs(item, batched=False) for item in items]
    by_size = {size: _batches(predictor, coerced, size) for size in BATCH_SIZES}
    # the sizes take turns, SWEEP_PASSES times: the VM's speed drifts from one second to the next, and a
    # size measured once, in one stretch, could win or lose by the moment it was measured in
    passes = [
        {size: _rate(predictor, batches, sweep_seconds / SWEEP_PASSES) for size, batches in by_size.items()}
        for _ in range(SWEEP_PASSES)
    ]
    rates = {size: statistics.median(one[size] for one in passes) for size in BATCH_SIZES}
    best = max(rates, key=lambda size: rates[size])
    sweep = {
        "by_batch_size": {size: round(rate, 1) for size, rate in rates.items()},
        "passes": [{size: round(rate, 1) for size, rate in one.items()} for one in passes],
        "best_batch_size": best,
    }
    print(json.dumps(sweep), flush=True)
    for line in sys.stdin:  # idle (blocked here) while a server is measured
        seconds, size = float(line.split()[0]), int(line.split()[1])
        if size not in by_size:
            by_size[size] = _batches(predictor, coerced, size)
        print(json.dumps({"items_per_s": _rate(predictor, by_size[size], seconds)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
