"""Starting an external engine (llama.cpp, vLLM) for the server, watching it, and stopping it.

The engine runs as a child process on a private loopback port (server/engines/process.py); the server
is ready only once the engine answers its health route. Every second the engine's own metrics are read
into modelpod's gauges (running and waiting sequences, the KV cache's share in use), under modelpod's
names, so dashboards and autoscalers need not know which engine serves. If the engine dies, the
server's health turns FAILED, the requests in flight end with an error, and the server exits non-zero:
in a pod, Kubernetes restarts the container (docs/engines.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from modelpod.errors import ModelLoadError
from modelpod.server.core.metrics import GenerationMetrics
from modelpod.server.core.state import ServerState
from modelpod.server.engines.commands import command_for
from modelpod.server.engines.process import EngineProcess
from modelpod.server.engines.remote import RemoteTextEngine

log = logging.getLogger("modelpod.server")
_POLL_S = 1.0
# the engines' own metric names for what modelpod calls running and waiting sequences
_RUNNING = {"llamacpp": "llamacpp:requests_processing", "vllm": "vllm:num_requests_running"}
_WAITING = {"llamacpp": "llamacpp:requests_deferred", "vllm": "vllm:num_requests_waiting"}
_KV_USAGE = "vllm:kv_cache_usage_perc"  # llama.cpp exports none: its /slots tell the tokens held


def free_port() -> int:
    """A free loopback port for the engine, below the kernel's range of ephemeral ports. A port the
    kernel handed out for port 0 and took back could be handed out again, to this server's own listener
    (bound after the engine is started) before the engine binds it: both would then listen on it."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10_000, low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ModelLoadError(f"no free loopback port between 10000 and {low} for the engine")


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    return max(low, 10_001)


async def start_external(state: ServerState, on_death: Callable[[str], None]) -> RemoteTextEngine:
    """Start the spec's engine and wait until it is ready; `on_death` is called if it dies later."""
    spec = state.spec
    port = free_port()
    command = command_for(spec, port)
    url = f"http://127.0.0.1:{port}"
    process = EngineProcess(command.engine, command.argv, command.env, url, command.health)
    process.start()
    try:
        await process.wait_ready(spec.kubernetes.startup_timeout_s)
    except BaseException:
        await process.stop()
        raise
    settings = spec.generation
    in_flight = settings.max_running_sequences + spec.server.max_queue
    client = httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(spec.server.request_timeout_s, connect=10.0),
        limits=httpx.Limits(max_connections=in_flight + 4, max_keepalive_connections=in_flight),
    )
    metrics = GenerationMetrics(state.metrics)
    engine = RemoteTextEngine(
        command.engine,
        client,
        served_name=command.served_name,
        max_in_flight=in_flight,
        default_max_tokens=settings.default_max_tokens,
        timeout_s=spec.server.request_timeout_s,
        metrics=metrics,
    )
    metrics.running.set_function(lambda: engine.running)
    metrics.waiting.set_function(lambda: engine.waiting)
    metrics.kv_usage.set_function(lambda: engine.kv_usage)
    state.metrics.queue_now.set_function(lambda: engine.waiting)
    poller = asyncio.create_task(_poll(engine, client))

    def died(reason: str) -> None:
        engine.abort_all(f"the {command.engine} engine stopped: the server is restarting")
        on_death(reason)

    watcher = asyncio.create_task(process.watch(died))

    async def stop() -> None:
        engine.abort_all("the server is shutting down")
        for task in (poller, watcher):
            task.cancel()
        await process.stop()
        await client.aclose()

    state.engine = engine
    state.engine_stop = stop
    return engine


async def _poll(engine: RemoteTextEngine, client: httpx.AsyncClient) -> None:
    """Read the engine's running, waiting and KV figures every second, for the gauges."""
    from prometheus_client.parser import text_string_to_metric_families

    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            text = (await client.get("/metrics", timeout=2.0)).text
            samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
            engine.running = int(samples.get(_RUNNING[engine.name], 0))
            engine.waiting = int(samples.get(_WAITING[engine.name], 0))
            if engine.name == "vllm":
                engine.kv_usage = float(samples.get(_KV_USAGE, 0.0))
            else:
                engine.kv_usage = _slots_usage((await client.get("/slots", timeout=2.0)).json())
        await asyncio.sleep(_POLL_S)


def _slots_usage(slots: Any) -> float:
    """llama.cpp's share of its context in use: the tokens of the slots that are processing, over the
    context of all slots (one unified KV cache, `--kv-unified`)."""
    if not isinstance(slots, list) or not slots:
        return 0.0
    held = 0
    for slot in slots:
        if slot.get("is_processing"):
            decoded = sum(int(t.get("n_decoded", 0)) for t in slot.get("next_token") or [])
            held += int(slot.get("n_prompt_tokens", 0)) + decoded
    total = int(slots[0].get("n_ctx", 0)) or 1
    return min(1.0, held / total)
