"""Starting and stopping the built-in engine: its loop runs on the model's thread for the life of the
server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib

from modelpod.runtimes.generation_runtime import TextGenerator
from modelpod.server.core.metrics import GenerationMetrics
from modelpod.server.core.state import ServerState
from modelpod.server.scheduling.generation import GenerationEngine
from modelpod.server.scheduling.generation_request import GenerationLimits
from modelpod.server.scheduling.text_engine import LocalTextEngine

# at shut-down, how long the engine may take to end the step it is in
_STOP_S = 30.0


def start_builtin(
    state: ServerState, model: TextGenerator, thread: concurrent.futures.ThreadPoolExecutor
) -> LocalTextEngine:
    settings = state.spec.generation
    context = settings.max_context_tokens or model.max_context
    limits = GenerationLimits(
        max_running_sequences=settings.max_running_sequences,
        max_tokens_per_step=settings.max_tokens_per_step,
        max_context_tokens=context,
        kv_cache_tokens=settings.kv_cache_tokens_for(context),
        max_queue=state.spec.server.max_queue,
        prefix_caching=settings.prefix_caching,
    )
    metrics = GenerationMetrics(state.metrics)
    loop = asyncio.get_running_loop()
    engine = GenerationEngine(model, limits, loop=loop, observer=metrics)
    text_engine = LocalTextEngine(
        engine, default_max_tokens=settings.default_max_tokens, timeout_s=state.spec.server.request_timeout_s
    )
    metrics.running.set_function(lambda: engine.running)
    metrics.waiting.set_function(lambda: engine.waiting)
    metrics.kv_usage.set_function(lambda: engine.kv_usage)
    state.metrics.queue_now.set_function(lambda: engine.waiting)
    stopped = loop.run_in_executor(thread, engine.run)

    async def stop() -> None:
        # uvicorn has drained the requests (server/run.py); the engine ends its step and fails what is left
        engine.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(stopped), _STOP_S)

    state.engine = text_engine
    state.engine_stop = stop
    return text_engine
