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
from modelpod.spec.resolved import Example, Spec


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


def to_json(value: np.ndarray | Any) -> Any:
    """A numpy value as plain JSON types (lists, numbers, strings)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def example_request(example: Example) -> tuple[str, dict[str, Any]]:
    """The path (without a leading slash) a server takes `example` on, and the body to send: a chat
    example goes to OpenAI's chat endpoint, greedy unless it says otherwise; any other to /predict."""
    if example.chat is not None:
        return "v1/chat/completions", {"temperature": 0, **example.chat}
    return "predict", {"inputs": example.inputs}


def example_outputs(example: Example, answer: Any) -> dict[str, Any]:
    """The outputs in a server's answer to `example_request` (a chat reply is the output `content`);
    empty when the answer has none."""
    try:
        if example.chat is not None:
            return {"content": answer["choices"][0]["message"]["content"]}
        outputs = answer["outputs"]
    except (KeyError, IndexError, TypeError):
        return {}
    return outputs if isinstance(outputs, dict) else {}


def compare_outputs(example: Example, outputs: Mapping[str, Any]) -> list[str]:
    """What differs between an example's expected outputs and actual ones; empty when they agree."""
    problems = []
    if example.contains is not None:
        texts = [value for value in outputs.values() if isinstance(value, str)]
        if not any(example.contains in text for text in texts):
            answer = texts[0] if len(texts) == 1 else texts
            problems.append(f"the answer {answer!r} does not contain {example.contains!r}")
    for name, expected in (example.expected or {}).items():
        if name not in outputs:
            problems.append(f"output {name!r} is missing")
            continue
        want, got = np.asarray(expected), np.asarray(outputs[name])
        if want.shape != got.shape:
            problems.append(f"output {name!r} has shape {list(got.shape)}, expected {list(want.shape)}")
        elif want.dtype.kind in "OUS" or got.dtype.kind in "OUS":
            if want.tolist() != got.tolist():
                problems.append(f"output {name!r} is {got.tolist()!r}, expected {want.tolist()!r}")
        elif not np.allclose(got, want, atol=example.atol, rtol=example.rtol):
            worst = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
            problems.append(
                f"output {name!r} differs by up to {worst:.3g} "
                f"(tolerance atol={example.atol}, rtol={example.rtol})"
            )
    return problems
