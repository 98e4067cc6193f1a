"""OpenAI-compatible routes for embedding models: `POST /v1/embeddings`, `GET /v1/models`.

Served for embedding models only: a sentence-transformers directory, or a model whose spec declares
`model.options.task: embeddings`, with a signature of text in, vector out (one string input of shape [],
one float output of shape [d]). A text classifier has the same signature, and its class probabilities are
no embedding: it gets 404 naming /predict. Errors use OpenAI's shape, which its SDKs turn into exception
messages. The SDK asks for base64 by default: float32 little-endian bytes, base64-encoded.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelpod import contract
from modelpod.server.core import dispatch, gate
from modelpod.server.core.state import ServerState
from modelpod.server.http.asgi import Call, InferenceRoute, Reply
from modelpod.server.http.errors import ApiError
from modelpod.server.http.limits import off_loop
from modelpod.server.http.responses import JSONResponse, json_body
from modelpod.signature import Signature

# inputs up to this many characters (about a millisecond of tokenizing) are counted on the event loop
COUNT_IN_PLACE_CHARS = 2000


def model_task(runtime: object, options: Mapping[str, Any]) -> str | None:
    """What the model does: as its runtime knows it, else as the spec declares (`model.options.task`)."""
    task = getattr(runtime, "task", None) or options.get("task")
    return str(task) if task else None


def embedding_io(signature: Signature, task: str | None) -> tuple[str, str] | None:
    """(input name, output name) when the model is an embedding model that maps one text to one vector."""
    if task != "embeddings" or len(signature.inputs) != 1 or not signature.outputs:
        return None
    text = signature.inputs[0]
    vectors = [t for t in signature.outputs if t.dtype.startswith("float") and len(t.shape) == 1]
    if text.dtype != "string" or text.shape != () or not vectors:
        return None
    return text.name, vectors[0].name


def routes(state: ServerState) -> list[Route]:
    """`GET /v1/models`, served by Starlette."""

    async def models(request: Request) -> Response:
        # 503 until the model is ready: clients that wait on /v1/models (a common readiness check) must
        # not start sending requests that would get 503s
        gate.loaded(state)
        card = {"id": state.name, "object": "model", "created": state.started_at, "owned_by": "modelpod"}
        return JSONResponse({"object": "list", "data": [card]})

    return [Route(contract.MODELS, models)]


def inference_routes(state: ServerState) -> list[InferenceRoute]:
    """`POST /v1/embeddings`, served on the direct path (see server/http/asgi.py)."""

    async def embeddings(call: Call) -> Reply:
        predictor = gate.loaded(state)
        task = model_task(predictor.runtime, state.spec.model.options)
        names = embedding_io(predictor.signature, task)
        if names is None:
            what = f"a {task} model" if task else "not an embedding model"
            routes = f"POST {contract.PREDICT} or POST {contract.model_path(contract.INFER, state.name)}"
            if task == "text-generation":
                routes = f"POST {contract.CHAT_COMPLETIONS} or POST {contract.COMPLETIONS} (or {routes})"
            raise ApiError(
                HTTPStatus.NOT_FOUND,
                f"model {state.name} is {what}: /v1/embeddings serves embedding models only; use {routes}",
            )
        input_name, output_name = names

        def decode() -> tuple[list[str], str]:
            body = gate.parse_json(state, call.body)
            texts, encoding = _parse(body, state.name)
            gate.check_items(state, len(texts))
            return texts, encoding

        texts, encoding = await off_loop(len(call.body), decode)
        outputs = await dispatch.infer(state, {input_name: np.asarray(texts, dtype=object)})
        vectors = np.asarray(outputs[output_name], dtype=np.float32)
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(vector, encoding)}
            for i, vector in enumerate(vectors)
        ]
        tokens = await _count_tokens(predictor.runtime, texts)
        return Reply(
            json_body(
                {
                    "object": "list",
                    "data": data,
                    "model": state.name,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )
        )

    return [InferenceRoute(contract.EMBEDDINGS, embeddings, openai_errors=True)]


def _parse(body: Any, model: str) -> tuple[list[str], str]:
    if not isinstance(body, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, 'expected a JSON object {"input": ..., "model": ...}')
    requested = body.get("model")
    if requested is not None and requested != model:
        raise ApiError(HTTPStatus.NOT_FOUND, f"model {requested!r} not found; this server serves {model!r}")
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            "input must be a string or a non-empty list of strings (token arrays are not supported)",
        )
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(
            HTTPStatus.BAD_REQUEST, f"encoding_format must be 'float' or 'base64', not {encoding!r}"
        )
    if body.get("dimensions") is not None:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "dimensions is not supported: this model has a fixed embedding size"
        )
    return texts, encoding


def _encode(vector: np.ndarray, encoding: str) -> Any:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector


async def _count_tokens(runtime: Any, texts: list[str]) -> int:
    """Token usage when the runtime can count tokens; 0 otherwise (the usage block is informational).

    A long input is counted on a worker thread: tokenizing takes about half a microsecond a character
    (2,048 sentences of 100 characters: about 100 ms), and on the event loop that would hold up every
    other request and health check. A short one is counted in place, which is cheaper than the hand-off."""
    count = getattr(runtime, "count_tokens", None)
    if not callable(count):
        return 0
    if sum(len(text) for text in texts) <= COUNT_IN_PLACE_CHARS:
        return int(count(texts))
    return int(await asyncio.to_thread(count, texts))
