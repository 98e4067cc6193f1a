"""The in-process limit: a model's own throughput at its best batch size, with no server in the way.

The runtime is called directly on the same inputs the load test sends, batch after batch, for each batch
size in a sweep; the best batch size is then measured again for as long as a server is loaded, and that
rate is the ceiling a server on the same machine can approach. (Taking the best of the short sweep runs
would favour the raw side: on a noisy VM the maximum of eight short measurements is biased upwards.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelpod.predictor import Predictor
from modelpod.spec import Spec


def limit(
    spec: Spec,
    items: Sequence[dict[str, Any]],
    batch_sizes: Sequence[int],
    *,
    sweep_seconds: float,
    confirm_seconds: float,
) -> dict[str, Any]:
    """The sweep (items per second by batch size), the best batch size, and its rate measured again for
    `confirm_seconds`: the limit."""
    predictor = Predictor.from_spec(spec)
    coerced = [predictor.signature.coerce_inputs(item, batched=False) for item in items]
    rates = {size: _rate(predictor, coerced, size, sweep_seconds) for size in batch_sizes}
    best = max(rates, key=lambda size: rates[size])
    return {
        "by_batch_size": rates,
        "best_batch_size": best,
        "items_per_s": _rate(predictor, coerced, best, confirm_seconds),
    }


def _rate(predictor: Predictor, coerced: Sequence[dict[str, Any]], size: int, seconds: float) -> float:
    """Items per second at batch size `size`, measured for about `seconds` after one warm-up batch."""
    batches = []
    for start in range(0, len(coerced), size):
        chunk = [coerced[(start + i) % len(coerced)] for i in range(size)]
        batches.append({t.name: np.stack([c[t.name] for c in chunk]) for t in predictor.signature.inputs})
    predictor.runtime.predict(batches[0])
    done = 0
    index = 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        predictor.runtime.predict(batches[index % len(batches)])
        done += size
        index += 1
    return done / (time.perf_counter() - began)
