"""The in-process limit: a model's own throughput at its best batch size, with no server in the way.

The runtime is called directly on the same inputs the load test sends, batch after batch, for each batch
size in a sweep; the best items per second is the ceiling that a server on the same machine can approach.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelpod.predictor import Predictor
from modelpod.spec import Spec


def sweep(
    spec: Spec, items: Sequence[dict[str, Any]], batch_sizes: Sequence[int], *, seconds: float
) -> dict[int, float]:
    """Items per second for each batch size, each measured for about `seconds` after one warm-up batch."""
    predictor = Predictor.from_spec(spec)
    coerced = [predictor.signature.coerce_inputs(item, batched=False) for item in items]
    results: dict[int, float] = {}
    for size in batch_sizes:
        batches = []
        for start in range(0, len(coerced), size):
            chunk = [coerced[(start + i) % len(coerced)] for i in range(size)]
            batches.append({t.name: np.stack([c[t.name] for c in chunk]) for t in predictor.signature.inputs})
        predictor.runtime.predict(batches[0])
        done = 0
        began = time.perf_counter()
        index = 0
        while time.perf_counter() - began < seconds:
            predictor.runtime.predict(batches[index % len(batches)])
            done += size
            index += 1
        results[size] = done / (time.perf_counter() - began)
    return results
