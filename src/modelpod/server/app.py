"""The ASGI app: routes of every protocol over one ServerState, start-up and shut-down.

Inference routes are served on the direct path of `ServerApp` (server/http/asgi.py); the rest by Starlette.

Start-up returns at once and loads the model on a worker thread (STARTING), so liveness answers while
a large model loads; READY when it is loaded and warmed up, FAILED (with one log line) when it is not.
Shut-down drains the batcher within the drain budget. A text-generation model runs under the generation
engine (server/scheduling/generation.py) instead of the batcher, on the same one model thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelpod import contract
from modelpod.errors import ModelpodError
from modelpod.predictor import Predictor
from modelpod.runtimes.base import reconcile
from modelpod.runtimes.external_runtime import SIGNATURE as EXTERNAL_SIGNATURE
from modelpod.runtimes.external_runtime import ExternalEngineRuntime
from modelpod.runtimes.generation_runtime import TextGenerator
from modelpod.server.core.health import Health
from modelpod.server.core.metrics import CONTENT_TYPE
from modelpod.server.core.state import ServerState
from modelpod.server.engines.builtin import start_builtin
from modelpod.server.http.asgi import ServerApp
from modelpod.server.http.auth import BearerAuth
from modelpod.server.http.errors import ApiError
from modelpod.server.http.responses import error_response
from modelpod.server.protocols import openapi, simple
from modelpod.server.protocols.openai import embeddings as openai_embeddings
from modelpod.server.protocols.openai import generation as generation_routes
from modelpod.server.protocols.v2 import routes as v2_routes
from modelpod.server.scheduling.batcher import Batcher, BatchStats, model_thread
from modelpod.specfile.resolved import Spec

log = logging.getLogger("modelpod.server")
EXTERNAL_ENGINES = ("llamacpp", "vllm")  # run as child processes (server/engines/)


def create_app(
    spec: Spec,
    *,
    predictor: Predictor | None = None,
    on_failure: Callable[[], None] | None = None,
) -> ServerApp[ServerState]:
    """The app for `spec`. Pass a loaded `predictor` to skip loading (tests); `on_failure` runs when the
    model fails to load (the runner uses it to exit non-zero)."""
    state = ServerState(spec, auth=BearerAuth.from_environment(spec.server.auth_token_env))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.create_task(_load(state, predictor, on_failure))
        try:
            yield
        finally:
            loading.cancel()
            await _stop(state)

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    routes: list[Route] = [
        *v2_routes.routes(state),
        *openai_embeddings.routes(state),
        *openapi.routes(state),
        Route(contract.METRICS, metrics),
    ]
    others = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error_handler(state), HTTPException: _http_error},  # type: ignore[dict-item]
    )
    inference = [
        *simple.routes(state),
        *v2_routes.inference_routes(state),
        *openai_embeddings.inference_routes(state),
        *generation_routes.inference_routes(state),
    ]
    return ServerApp(state, inference, others)


async def _load(
    state: ServerState, predictor: Predictor | None, on_failure: Callable[[], None] | None
) -> None:
    if state.spec.engine in EXTERNAL_ENGINES and predictor is None:
        await _start_external(state, on_failure)
        return
    thread = model_thread(0)  # load, warm up and predict on one thread (see model_thread)
    try:
        if predictor is None:
            loop = asyncio.get_running_loop()
            predictor = await loop.run_in_executor(thread, Predictor.from_spec, state.spec)
    except ModelpodError as exc:
        thread.shutdown(wait=False)
        _fail(state, str(exc), on_failure)
        return
    except Exception as exc:  # noqa: BLE001 - a framework's own error while loading; reported the same way
        thread.shutdown(wait=False)
        _fail(state, f"{type(exc).__name__}: {exc}", on_failure)
        return
    if isinstance(predictor.runtime, TextGenerator):
        engine = start_builtin(state, predictor.runtime, thread)
        state.generate = generation_routes.texts_for_prompts(engine)
        _ready(state, predictor)
        return
    server = state.spec.server
    batcher = Batcher(
        [predictor.predict],
        max_batch_size=server.max_batch_size,
        max_wait_ms=server.max_wait_ms,
        max_queue=server.max_queue,
        refill_fraction=server.batch_refill_fraction,
        on_batch=lambda stats: _observe(state, stats),
        executors=[thread],
        inline_below_ms=server.inline_below_ms,
    )
    batcher.start()
    state.batcher = batcher
    state.limits = state.limits.with_signature(predictor.signature)
    state.metrics.queue_now.set_function(lambda: batcher.queue_depth)
    state.metrics.busy_now.set_function(lambda: batcher.busy_workers)
    _ready(state, predictor)


async def _start_external(state: ServerState, on_failure: Callable[[], None] | None) -> None:
    """Start the spec's external engine (server/engines/external.py); ready when it is."""
    # imported here: the external engines' client (httpx) is in an image only when its spec needs one
    from modelpod.server.engines.external import start_external

    started = time.perf_counter()
    engine_name = str(state.spec.engine)

    def died(reason: str) -> None:
        if state.health.now is Health.READY:
            state.health.move_to(Health.FAILED)
            state.failure = reason
            log.error("model %s stopped: %s; the server exits", state.name, reason)
            if on_failure is not None:
                on_failure()

    try:
        signature = reconcile(state.spec.model.signature, EXTERNAL_SIGNATURE, fmt=engine_name)
        runtime = ExternalEngineRuntime(signature, engine_name)
        engine = await start_external(state, died)
    except ModelpodError as exc:
        _fail(state, str(exc), on_failure)
        return
    state.generate = generation_routes.texts_for_prompts(engine)
    _ready(state, Predictor(state.name, runtime, load_seconds=time.perf_counter() - started))


def _ready(state: ServerState, predictor: Predictor) -> None:
    state.predictor = predictor
    state.metrics.ready(predictor.load_seconds)
    state.health.move_to(Health.READY)
    served_by = f" on the {state.spec.engine} engine" if state.spec.engine else ""
    log.info(
        "model %s ready (%s%s, loaded in %.2fs)",
        state.name,
        state.spec.model.format,
        served_by,
        predictor.load_seconds,
        extra={"load_seconds": round(predictor.load_seconds, 3)},
    )


def _fail(state: ServerState, message: str, on_failure: Callable[[], None] | None) -> None:
    state.health.move_to(Health.FAILED)
    state.failure = message
    log.error("model %s failed to load: %s", state.name, message.replace("\n", " "))
    if on_failure is not None:
        on_failure()


def _observe(state: ServerState, stats: BatchStats) -> None:
    state.metrics.observe_batch(stats.rows, stats.seconds)


async def _stop(state: ServerState) -> None:
    if state.health.now is not Health.FAILED:
        state.health.move_to(Health.DRAINING)
    if state.engine_stop is not None:
        await state.engine_stop()
    if state.batcher is not None:
        if not await state.batcher.drain(state.spec.server.drain_timeout_s):
            log.warning(
                "drain budget of %.1fs ran out; cancelling what is left", state.spec.server.drain_timeout_s
            )
        await state.batcher.close()
    if state.health.now is not Health.FAILED:
        state.health.move_to(Health.STOPPED)


def _api_error_handler(state: ServerState) -> Callable[[Request, ApiError], Awaitable[Response]]:
    """Starlette's handler of ApiErrors on the routes it serves (ServerApp answers its own); a refusal
    is counted as ServerApp counts it."""

    async def answer(request: Request, exc: ApiError) -> Response:
        if exc.reason is not None:
            state.metrics.reject(exc.reason)
        return error_response(exc.status, exc.message, exc.headers)

    return answer


async def _http_error(request: Request, exc: HTTPException) -> Response:
    message = exc.detail
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, message, dict(exc.headers or {}))
