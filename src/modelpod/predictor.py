"""A loaded model ready to predict: the runtime plus the checks every caller needs.

`Predictor` coerces request inputs to the signature, runs the runtime, and checks that it returned every
declared output with one row per input row, so a runtime or custom class that breaks that contract gives
an InferenceError with a hint rather than a confusing failure later.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelpod.errors import InferenceError
from modelpod.runtimes import load_runtime
from modelpod.runtimes.base import Batch, Runtime
from modelpod.signature import Signature
from modelpod.spec.resolved import Spec


class Predictor:
    def __init__(self, name: str, runtime: Runtime, *, load_seconds: float = 0.0) -> None:
        self.name = name
        self.runtime = runtime
        self.signature: Signature = runtime.signature
        self.load_seconds = load_seconds

    @classmethod
    def from_spec(cls, spec: Spec, *, warmup: bool = True) -> Predictor:
        """Load the spec's model (and warm it up), timing how long that takes."""
        started = time.perf_counter()
        runtime = load_runtime(spec.model, threads=spec.server.threads)
        if warmup:
            runtime.warmup()
        return cls(spec.name, runtime, load_seconds=time.perf_counter() - started)

    def predict(self, batch: Batch) -> Batch:
        """Run one batch of already coerced inputs; returns only the signature's outputs."""
        size = len(next(iter(batch.values())))
        try:
            outputs = self.runtime.predict(batch)
        except InferenceError:
            raise
        except Exception as exc:
            raise InferenceError(f"the model raised {type(exc).__name__}: {exc}") from exc
        return check_outputs(self.signature, outputs, size)

    def predict_items(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
        """Coerce each item (inputs by name, no batch dimension), run them as one batch, split the rows."""
        arrays = [self.signature.coerce_inputs(dict(item), batched=False) for item in items]
        batch = {t.name: np.stack([a[t.name] for a in arrays]) for t in self.signature.inputs}
        outputs = self.predict(batch)
        return [{name: values[i] for name, values in outputs.items()} for i in range(len(items))]

    def predict_one(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self.predict_items([inputs])[0]


def check_outputs(signature: Signature, outputs: Mapping[str, Any], size: int) -> Batch:
    checked: Batch = {}
    for tensor in signature.outputs:
        if tensor.name not in outputs:
            raise InferenceError(
                f"the model returned no output {tensor.name!r} (it returned {sorted(outputs)})",
                hint="ensure predict returns every output named in the signature",
            )
        values = np.asarray(outputs[tensor.name])
        if values.ndim == 0 or len(values) != size:
            rows = "a scalar" if values.ndim == 0 else f"{len(values)} rows"
            raise InferenceError(
                f"output {tensor.name!r} has {rows} for a batch of {size}",
                hint="ensure predict returns one item per input",
            )
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            # JSON has no NaN or inf (they would be written as null): never answer them as a result
            raise InferenceError(f"the model returned NaN or infinite values in output {tensor.name!r}")
        checked[tensor.name] = values
    return checked
