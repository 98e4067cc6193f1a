"""The server's own view of a load step, from its /metrics before and after (server/core/metrics.py).

A step's requests spend their time in the server either in the model (`modelpod_inference_duration_seconds`,
one observation per batch, which every request of the batch waits through) or outside it: waiting in the
queue, for a batch to fill, and being decoded and encoded. The mean request time less the mean batch time
is that outside share. Batch sizes come from `modelpod_batch_size`; CPU and memory from the process
collector (`process_cpu_seconds_total`, `process_resident_memory_bytes`), which `modelpod plan` sizes pods
from. A server that is not modelpod (or hides /metrics) gives no server figures, and the bench says so.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelpod import contract as c

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Snapshot:
    samples: dict[tuple[str, Labels], float]
    taken: float  # time.monotonic() when read

    def sum(self, name: str, **match: str | re.Pattern[str]) -> float:
        """The sum of the samples of `name` whose labels match (a string exactly, a pattern in full)."""
        total = 0.0
        for (sample, labels), value in self.samples.items():
            if sample == name and _matches(dict(labels), match):
                total += value
        return total

    def get(self, name: str) -> float | None:
        values = [value for (sample, _), value in self.samples.items() if sample == name]
        return values[0] if values else None


def _matches(labels: dict[str, str], match: dict[str, str | re.Pattern[str]]) -> bool:
    for key, wanted in match.items():
        value = labels.get(key, "")
        if isinstance(wanted, re.Pattern) and not wanted.fullmatch(value):
            return False
        if isinstance(wanted, str) and value != wanted:
            return False
    return True


def parse(text: str) -> dict[tuple[str, Labels], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(url: str, timeout: float) -> Snapshot | None:
    """The server's metrics now, or None when it serves none we can read."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url.rstrip("/") + c.METRICS) as response,
        ):
            if response.status != 200:
                return None
            text = await response.text()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    try:
        samples = parse(text)
    except ValueError:
        return None
    return Snapshot(samples, time.monotonic()) if any(n.startswith("modelpod_") for n, _ in samples) else None


def endpoint_pattern(path: str) -> re.Pattern[str]:
    """Route templates that could have served `path`: the server labels requests by template
    (/v2/models/{name}/infer), the bench knows the path (/v2/models/digits/infer)."""
    parts = [re.escape(part) + "|\\{[^}]+\\}" if part else "" for part in path.split("/")]
    return re.compile("/".join(f"(?:{part})" if part else "" for part in parts))


def step_figures(before: Snapshot, after: Snapshot, path: str) -> dict[str, Any]:
    """What the server measured between two snapshots, for the requests to `path`."""
    endpoint = endpoint_pattern(path)

    def delta(name: str, **match: str | re.Pattern[str]) -> float:
        return after.sum(name, **match) - before.sum(name, **match)

    seconds = max(after.taken - before.taken, 1e-9)
    requests = delta(c.count_of(c.REQUEST_DURATION), endpoint=endpoint)
    batches = delta(c.count_of(c.INFERENCE_DURATION))
    rows = delta(c.sum_of(c.BATCH_SIZE))
    mean_request = _ratio(delta(c.sum_of(c.REQUEST_DURATION), endpoint=endpoint), requests)
    mean_batch_time = _ratio(delta(c.sum_of(c.INFERENCE_DURATION)), batches)
    figures: dict[str, Any] = {
        "requests": int(requests),
        "codes": _by_code(before, after, endpoint),
        "mean_request_ms": _ms(mean_request),
        "batches": int(batches),
        "mean_batch_ms": _ms(mean_batch_time),
        "mean_outside_model_ms": (
            _ms(max(0.0, mean_request - mean_batch_time))
            if mean_request is not None and mean_batch_time is not None
            else None
        ),
        "mean_batch_size": round(rows / batches, 2) if batches else None,
        "batch_sizes": _batch_sizes(before, after),
        "cpu_cores": round(delta("process_cpu_seconds_total") / seconds, 3),
        "rss_bytes": int(max(before.get("process_resident_memory_bytes") or 0,
                             after.get("process_resident_memory_bytes") or 0)),
        "rejected": {key: int(v) for key, v in _by_label(before, after, c.total(c.REJECTED_REQUESTS),
                                                          "reason").items() if v},
    }  # fmt: skip
    tokens = delta(c.total(c.GENERATION_TOKENS))
    if after.get(c.total(c.GENERATION_TOKENS)) is not None:
        figures["generation_tokens_per_s"] = round(tokens / seconds, 2)
        ttft_sum, ttft_count = c.sum_of(c.TIME_TO_FIRST_TOKEN), c.count_of(c.TIME_TO_FIRST_TOKEN)
        ttft = _ratio(delta(ttft_sum), delta(ttft_count))
        figures["mean_ttft_ms"] = _ms(ttft)
    return figures


def startup_figures(snapshot: Snapshot) -> dict[str, float | None]:
    return {
        "startup_s": snapshot.get(c.STARTUP_SECONDS),
        "model_load_s": snapshot.get(c.MODEL_LOAD_SECONDS),
    }


def _ratio(total: float, count: float) -> float | None:
    return total / count if count else None


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 3) if seconds is not None else None


def _by_label(before: Snapshot, after: Snapshot, name: str, label: str, **match: Any) -> dict[str, float]:
    values: dict[str, float] = {}
    for (sample, labels), value in after.samples.items():
        if sample == name and _matches(dict(labels), match):
            key = dict(labels).get(label, "")
            values[key] = values.get(key, 0.0) + value - before.samples.get((sample, labels), 0.0)
    return values


def _by_code(before: Snapshot, after: Snapshot, endpoint: re.Pattern[str]) -> dict[str, int]:
    counts = _by_label(before, after, c.total(c.REQUESTS), "code", endpoint=endpoint)
    return {code: int(count) for code, count in sorted(counts.items()) if count}


def _batch_sizes(before: Snapshot, after: Snapshot) -> dict[str, int]:
    """Batches by size range, from the cumulative buckets: {"1": n, "2": n, "3-4": n, ...}."""
    cumulative = _by_label(before, after, c.bucket(c.BATCH_SIZE), "le")
    bounds = sorted((float(le), count) for le, count in cumulative.items() if le != "+Inf")
    sizes, below, low = {}, 0.0, 1
    for bound, count in bounds:
        high = int(bound)
        if count - below:
            sizes[str(high) if high == low else f"{low}-{high}"] = int(count - below)
        below, low = count, high + 1
    return sizes
