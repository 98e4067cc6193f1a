"""A bench result as data: each step's figures, the limits, and the knee; JSON in, JSON out.

The JSON (`modelpod bench --json`) is what `modelpod plan` reads, so its shape is versioned:

    {"version": 1, "url", "endpoint", "mode": "closed" | "open", "limits": {...}, "server": {startup},
     "steps": [{"load", "throughput_rps", "error_rate", "errors", "latency_ms": {p50, p90, p99, p99_9,
                "mean", "max"}, "in_flight", "generation": {...} | null, "server": {...} | null,
                "within_limits"}, ...],
     "knee": index of the highest load within the limits, or null}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from modelpod.bench.loadgen import StepRecord
from modelpod.errors import ModelpodError

VERSION = 1
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}


@dataclass(frozen=True)
class Limits:
    """Where a sweep stops: the first step over either is past the knee."""

    max_p99_ms: float
    max_error_rate: float


def latency_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    if histogram.get_total_count() == 0:
        return dict.fromkeys([*PERCENTILES, "mean", "max"])
    figures = {name: round(histogram.get_value_at_percentile(p) / 1000, 3) for name, p in PERCENTILES.items()}
    figures["mean"] = round(histogram.get_mean_value() / 1000, 3)
    figures["max"] = round(histogram.get_max_value() / 1000, 3)
    return figures


def step_summary(record: StepRecord, server: dict[str, Any] | None, limits: Limits) -> dict[str, Any]:
    errors = sum(record.errors.values())
    total = record.ok + errors
    latency = latency_ms(record.latency)
    throughput = record.ok / record.duration_s
    step: dict[str, Any] = {
        "load": record.load.level,
        "seconds": record.duration_s,
        "requests": total,
        "ok": record.ok,
        "throughput_rps": round(throughput, 2),
        "error_rate": round(errors / total, 5) if total else 1.0,
        "errors": dict(sorted(record.errors.items())),
        "latency_ms": latency,
        # Little's law: requests in the server (and on the wire) on average at this load
        "in_flight": round(throughput * (latency["mean"] or 0.0) / 1000, 2),
        "client_cpu_s": round(record.client_cpu_s, 3),
        "generation": None,
        "server": server,
    }
    if record.streaming:
        step["generation"] = {
            "ttft_ms": latency_ms(record.ttft),
            "itl_ms": latency_ms(record.itl),
            "output_tokens_per_s": round(record.output_tokens / record.duration_s, 2),
        }
    step["within_limits"] = within_limits(step, limits)
    return step


def within_limits(step: dict[str, Any], limits: Limits) -> bool:
    p99 = step["latency_ms"]["p99"]
    return (
        step["ok"] > 0
        and p99 is not None
        and p99 <= limits.max_p99_ms
        and step["error_rate"] <= limits.max_error_rate
    )


def knee(steps: list[dict[str, Any]]) -> int | None:
    """The last step within the limits before the first that is not: the most load the server takes
    while meeting them."""
    best = None
    for index, step in enumerate(steps):
        if not step["within_limits"]:
            break
        best = index
    return best


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    """A result written by `modelpod bench --json`, checked enough to plan from."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelpodError(f"{path} does not exist", hint="write one with `modelpod bench --json`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelpodError(f"{path} is not JSON: {exc}", hint="pass the file `bench --json` wrote") from None
    if not isinstance(result, dict) or result.get("version") != VERSION or not result.get("steps"):
        raise ModelpodError(
            f"{path} is not a bench result of version {VERSION} with steps",
            hint="run `modelpod bench --sweep --json FILE` with this version of modelpod",
        )
    return result
