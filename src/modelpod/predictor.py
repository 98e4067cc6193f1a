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
from modelpod.specfile.resolved import Spec


class Predictor:
    """A loaded model that checks what goes in and what comes out.

    **Parameters**

    * **name** `str` - the model's name (the spec's `name`), used in messages.
    * **runtime** `Runtime` - the loaded model (`load_runtime`); its signature is the predictor's.
    * **load_seconds** `float` - *(optional)* how long loading took, reported by the server.

    Usually made with `Predictor.from_spec(load_spec("examples/digits"))`.
    """

    def __init__(self, name: str, runtime: Runtime, *, load_seconds: float = 0.0) -> None:
        self.name = name
        self.runtime = runtime
        self.signature: Signature = runtime.signature
        self.load_seconds = load_seconds

    @classmethod
    def from_spec(cls, spec: Spec, *, warmup: bool = True) -> Predictor:
        """Load the spec's model (and warm it up), timing how long that takes.

        **Parameters**

        * **spec** `Spec` - a resolved spec (`load_spec`); its model, and `server.threads` for the runtime.
        * **warmup** `bool` - *(optional)* run one batch of placeholder inputs first (default `True`), so
          that the first real request does not pay for the framework's lazy set-up.

        Raises `ModelLoadError` (or `MissingDependencyError`, naming the extra to install).
        """
        started = time.perf_counter()
        runtime = load_runtime(spec.model, threads=spec.server.threads)
        if warmup:
            runtime.warmup()
        return cls(spec.name, runtime, load_seconds=time.perf_counter() - started)

    def predict(self, batch: Batch) -> Batch:
        """Run one batch of already coerced inputs; returns only the signature's outputs.

        **Parameters**

        * **batch** `dict[str, np.ndarray]` - every input of the signature by name, batch dimension first
          and the same number of rows in each (`Signature.coerce_inputs(..., batched=True)` makes one).

        Returns the outputs by name, one row per input row. Raises `InferenceError` when the model raises
        or answers something other than its signature's outputs.
        """
        size = len(next(iter(batch.values())))
        try:
            outputs = self.runtime.predict(batch)
        except InferenceError:
            raise
        except Exception as exc:
            raise InferenceError(f"the model raised {type(exc).__name__}: {exc}") from exc
        return check_outputs(self.signature, outputs, size)

    def predict_items(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
        """Coerce each item (inputs by name, no batch dimension), run them as one batch, split the rows.

        **Parameters**

        * **items** `Sequence[Mapping[str, Any]]` - one mapping of input name to value (JSON lists,
          numbers, strings or arrays) per item.

        Returns one dict of outputs per item. Raises `InputError` naming the input that does not fit the
        signature, `InferenceError` when the model fails.
        """
        arrays = [self.signature.coerce_inputs(dict(item), batched=False) for item in items]
        batch = {t.name: np.stack([a[t.name] for a in arrays]) for t in self.signature.inputs}
        outputs = self.predict(batch)
        return [{name: values[i] for name, values in outputs.items()} for i in range(len(items))]

    def predict_one(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """`predict_items` for a single item: **inputs** is one mapping of input name to value."""
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
