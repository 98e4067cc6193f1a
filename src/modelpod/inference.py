"""One-off predictions for `modelpod predict`: in-process with the spec's runtime, or against a server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from modelpod import contract
from modelpod.errors import InferenceError, ModelpodError
from modelpod.predictor import Predictor
from modelpod.specfile.example_answers import compare_outputs, example_outputs, example_request, to_json
from modelpod.specfile.resolved import Example, Spec

# tokens a chat example generates when it does not say
_CHAT_MAX_TOKENS = 64


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
            outputs = post_example(url or "", example, timeout=timeout)
        elif example.chat is not None:
            outputs = {"content": _chat_in_process(predictor, example)}
        else:
            outputs = {name: to_json(value) for name, value in predictor.predict_one(example.inputs).items()}
        yield ExampleReport(example.name, outputs, compare_outputs(example, outputs))


def _chat_in_process(predictor: Predictor, example: Example) -> str:
    from modelpod.runtimes.generation_runtime import TextGenerator

    runtime = predictor.runtime
    if not isinstance(runtime, TextGenerator) or example.chat is None:
        raise ModelpodError(
            f"example {example.name!r} is a chat request, but the model does not generate text",
            hint="give the example inputs instead of chat",
        )
    max_tokens = int(example.chat.get("max_tokens") or _CHAT_MAX_TOKENS)
    return runtime.generate(runtime.chat_prompt(example.chat["messages"]), max_tokens)


def post_example(url: str, example: Example, *, timeout: float) -> dict[str, Any]:
    """Send an example to a server where it takes it (/predict, or the chat endpoint); its outputs."""
    path, body = example_request(example)
    return example_outputs(example, _post(url.rstrip("/") + "/" + path, body, timeout=timeout))


def post_predict(url: str, inputs: Mapping[str, Any], *, timeout: float) -> dict[str, Any]:
    """POST one item to a server's /predict and return its outputs."""
    outputs: dict[str, Any] = _post(
        url.rstrip("/") + contract.PREDICT, {"inputs": dict(inputs)}, timeout=timeout
    )["outputs"]
    return outputs


def _post(endpoint: str, body: Mapping[str, Any], *, timeout: float) -> Any:
    import httpx

    try:
        response = httpx.post(endpoint, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ModelpodError(
            f"cannot reach {endpoint}: {exc}", hint="is the server running? try `modelpod serve`"
        ) from None
    if response.status_code != 200:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        if isinstance(message, dict):  # OpenAI's shape
            message = message.get("message", message)
        raise InferenceError(f"{endpoint} answered {response.status_code}: {message}")
    return response.json()
