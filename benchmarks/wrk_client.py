"""Closed-loop load with wrk (C, epoll): on a 2-core machine a Python client would take the core the
server under test needs, so the benchmark drives servers with wrk when it is installed.

Same result type as loadgen.closed_loop: a warm-up run (not measured), then the measured run.

wrk runs one thread: the load generator shares the cores with the server under test, and a second
thread takes CPU from the server. Against the same modelpod server on minilm at concurrency 64
(alternating 8 s runs) one thread gave 469.6 and 470.6 requests/s (medians of 5) against two threads'
462.5 and 462.7, ahead in 8 of 10 pairs. On digits, whose requests cost the model almost nothing,
modelpod answered two threads 8,081 requests/s and one thread 7,813: there one thread understates
modelpod, never a peer (the fastest, KServe, answers about 1,800).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.loadgen import LoadResult

SCRIPT = Path(__file__).resolve().parent / "wrk_bodies.lua"


def available() -> bool:
    return shutil.which("wrk") is not None


def closed_loop(
    url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    headers: Mapping[str, str] | None = None,
    cpus: set[int] | None = None,
) -> LoadResult:
    """JSON `bodies` in turn; or, with `headers`, the one body of `bodies` as it is (binary allowed)
    with those headers. `cpus`: the CPUs wrk may run on (default: any)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as lines:
        if headers is None:
            extra = []
            lines.write(b"\n".join(body.replace(b"\n", b" ") for body in bodies) + b"\n")
        else:
            (body,) = bodies
            extra = ["--raw", *(f"{name}: {value}" for name, value in headers.items())]
            lines.write(body)
        lines.flush()
        if warmup > 0:
            _run(url, [lines.name, *extra], concurrency, warmup, cpus)
        summary = _run(url, [lines.name, *extra], concurrency, duration, cpus)
    seconds = summary["duration_us"] / 1e6
    ok = summary["requests"] - summary["status_errors"]
    return LoadResult(
        concurrency=concurrency,
        seconds=round(seconds, 2),
        ok=ok,
        errors=summary["status_errors"] + summary["socket_errors"],
        throughput=round(ok / seconds, 1),
        p50_ms=summary["p50_us"] / 1000,
        p90_ms=summary["p90_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
    )


def _run(
    url: str, args: list[str], concurrency: int, seconds: float, cpus: set[int] | None = None
) -> dict[str, int]:
    command = [
        "wrk",
        "--threads=1",
        f"--connections={concurrency}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=60s",
        f"--script={SCRIPT}",
        url,
        "--",
        *args,
    ]
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 120, check=True, preexec_fn=pin
    )
    return json.loads(result.stdout.strip().splitlines()[-1])
