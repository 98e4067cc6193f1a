"""One-off predictions for `modelpod predict`: in-process with the spec's runtime, or against a server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from modelpod.errors import InferenceError, ModelpodError
from modelpod.predictor import Predictor, compare_outputs, to_json
from modelpod.spec.resolved import Spec


@dataclass(frozen=True)
class ExampleReport:
    name: str
    outputs: dict[str, Any]
    problems: list[str]  # empty when the outputs match the example's expected ones


def predict_inputs(
    spec: Spec, inputs: Mapping[str, Any], *, url: str | None, timeout: float
) -> dict[str, Any]:
    if url is not None:
        return post_predict(url, inputs, timeout=timeout)
    predictor = Predictor.from_spec(spec, warmup=False)
    return {name: to_json(value) for name, value in predictor.predict_one(inputs).items()}


def predict_examples(spec: Spec, *, url: str | None, timeout: float) -> Iterator[ExampleReport]:
    if not spec.examples:
        raise ModelpodError("the spec has no examples", hint="pass --input, or add examples to modelpod.yaml")
    predictor = None if url is not None else Predictor.from_spec(spec, warmup=False)
    for example in spec.examples:
        if predictor is None:
            outputs = post_predict(url or "", example.inputs, timeout=timeout)
        else:
            outputs = {name: to_json(value) for name, value in predictor.predict_one(example.inputs).items()}
        yield ExampleReport(example.name, outputs, compare_outputs(example, outputs))


def post_predict(url: str, inputs: Mapping[str, Any], *, timeout: float) -> dict[str, Any]:
    """POST one item to a server's /predict and return its outputs."""
    import httpx

    endpoint = url.rstrip("/") + "/predict"
    try:
        response = httpx.post(endpoint, json={"inputs": dict(inputs)}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ModelpodError(
            f"cannot reach {endpoint}: {exc}", hint="is the server running? try `modelpod serve`"
        ) from None
    if response.status_code != 200:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise InferenceError(f"{endpoint} answered {response.status_code}: {message}")
    outputs: dict[str, Any] = response.json()["outputs"]
    return outputs
