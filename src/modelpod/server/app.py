"""The ASGI app: health, model metadata and a simple JSON `POST /predict`.

The model loads in the background at start-up (STARTING -> READY, or FAILED), so liveness answers while a
large model loads. Inference runs on a worker thread, one call at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelpod.errors import InferenceError, InputError, ModelpodError
from modelpod.predictor import Predictor, to_json
from modelpod.spec.resolved import Spec

log = logging.getLogger("modelpod.server")


class Health(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"


def json_response(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json"
    )


def error(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


class ServerState:
    def __init__(self, spec: Spec, predictor: Predictor | None) -> None:
        self.spec = spec
        self.predictor = predictor
        self.health = Health.READY if predictor else Health.STARTING
        self.lock = asyncio.Lock()


def predict_items(body: Any) -> list[dict[str, Any]] | None:
    """The items of a /predict body: {"inputs": {...}} is one, {"instances": [{...}, ...]} several."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("inputs"), dict):
        return [body["inputs"]]
    instances = body.get("instances")
    if isinstance(instances, list) and instances and all(isinstance(i, dict) for i in instances):
        return instances
    return None


def create_app(spec: Spec, *, predictor: Predictor | None = None) -> Starlette:
    """The app for `spec`; pass a loaded `predictor` to skip loading (tests)."""
    state = ServerState(spec, predictor)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if state.predictor is None:
            try:
                state.predictor = await asyncio.to_thread(Predictor.from_spec, spec)
            except ModelpodError as exc:
                state.health = Health.FAILED
                log.error("model failed to load: %s", exc)
                raise
            state.health = Health.READY
            log.info("model %s loaded in %.2fs", spec.name, state.predictor.load_seconds)
        yield

    async def live(request: Request) -> Response:
        return json_response(
            {"live": state.health is not Health.FAILED}, 200 if state.health is not Health.FAILED else 503
        )

    async def ready(request: Request) -> Response:
        is_ready = state.health is Health.READY
        return json_response({"ready": is_ready, "state": state.health.value}, 200 if is_ready else 503)

    async def predict(request: Request) -> Response:
        if state.predictor is None or state.health is not Health.READY:
            return error(f"model is {state.health.value}", 503)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return error(f"body is not valid JSON: {exc}", 400)
        items = predict_items(body)
        if items is None:
            return error('expected {"inputs": {name: value}} or {"instances": [{name: value}, ...]}', 400)
        single = "inputs" in body
        try:
            async with state.lock:
                results = await asyncio.to_thread(state.predictor.predict_items, items)
        except InputError as exc:
            return error(str(exc), 422)
        except InferenceError as exc:
            log.error("inference failed: %s", exc)
            return error(str(exc), 500)
        rows = [{name: to_json(value) for name, value in result.items()} for result in results]
        return json_response({"outputs": rows[0]} if single else {"predictions": rows})

    return Starlette(
        routes=[
            Route("/v2/health/live", live),
            Route("/v2/health/ready", ready),
            Route("/predict", predict, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
