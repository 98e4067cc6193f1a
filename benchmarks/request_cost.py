"""The server's own work per request on the event loop, in process: no sockets, no model, no load generator.

    .venv/bin/python benchmarks/request_cost.py [--rounds 300] [--profile]

At concurrency 64 on minilm the model waits while the event loop writes 64 answers and reads 64 requests
(docs/benchmarks.md), so this work is throughput lost. Measured end to end it drowns in the VM's noise;
here it is measured alone: the real app (`create_app` on the minilm spec, uvicorn's httptools protocol
with modelpod's transport, the access log on) serves `POST /predict` to 64 in-memory connections per
round, and a stand-in model answers each batch at once with 384 floats per row, as minilm would.
Reported: microseconds per request (median and best round). The kernel's part (send and receive system
calls) is not included. `--profile` prints cProfile's top functions instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvloop
from asgi_lifespan import LifespanManager
from uvicorn.server import ServerState as UvicornState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelpod.predictor import Predictor  # noqa: E402
from modelpod.runtimes.base import BaseRuntime, Batch  # noqa: E402
from modelpod.server.app import create_app  # noqa: E402
from modelpod.server.core.health import Health  # noqa: E402
from modelpod.server.http.logs import configure_logging  # noqa: E402
from modelpod.server.run import uvicorn_config  # noqa: E402
from modelpod.signature import Signature, TensorSpec  # noqa: E402
from modelpod.specfile import load_spec  # noqa: E402

CONNECTIONS = 64
WARMUP_ROUNDS = 50
READY_TIMEOUT_S = 30


class InstantEmbeddings(BaseRuntime):
    """minilm's signature, answered at once."""

    def predict(self, batch: Batch) -> Batch:
        return {"embedding": np.full((len(batch["text"]), 384), 0.123456789, dtype=np.float32)}


class MemoryTransport(asyncio.Transport):
    """Collects what the server writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self._closing = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def requests() -> list[bytes]:
    from benchmarks.serving import minilm_items

    bodies = [orjson.dumps({"inputs": item}) for item in minilm_items()]
    return [
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        for body in bodies
    ]


async def measure(rounds: int, profile: cProfile.Profile | None) -> list[float]:
    spec = load_spec(ROOT / "examples" / "minilm")
    signature = Signature(
        inputs=(TensorSpec(name="text", dtype="string", shape=()),),
        outputs=(TensorSpec(name="embedding", dtype="float32", shape=(384,)),),
    )
    app = create_app(spec, predictor=Predictor(spec.name, InstantEmbeddings(signature)))
    async with LifespanManager(app, startup_timeout=READY_TIMEOUT_S, shutdown_timeout=READY_TIMEOUT_S):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while app.state.health.now is not Health.READY:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not become ready: {app.state.health.now}")
            await asyncio.sleep(0.01)
        return await _rounds(app, rounds, profile)


async def _rounds(app: Any, rounds: int, profile: cProfile.Profile | None) -> list[float]:
    config = uvicorn_config(app, host="127.0.0.1", port=8080)  # as `modelpod serve` runs it
    config.load()
    shared = UvicornState()
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(CONNECTIONS):
        protocol = config.http_protocol_class(config=config, server_state=shared, app_state={}, _loop=loop)
        transport = MemoryTransport()
        protocol.connection_made(transport)
        connections.append((protocol, transport))
    bodies = requests()

    async def one_round() -> None:
        for index, (protocol, _) in enumerate(connections):
            protocol.data_received(bodies[index % len(bodies)])
        while not all(transport.written for _, transport in connections):
            await asyncio.sleep(0)
        for _, transport in connections:
            assert b" 200 OK\r\n" in transport.written[0], transport.written[0][:200]
            transport.written.clear()

    for _ in range(WARMUP_ROUNDS):
        await one_round()
    seconds = []
    if profile is not None:
        profile.enable()
    for _ in range(rounds):
        began = time.perf_counter()
        await one_round()
        seconds.append(time.perf_counter() - began)
    if profile is not None:
        profile.disable()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 40 functions")
    args = parser.parse_args()
    # the access log on, as served, written where it costs what a pipe would: a file nobody reads
    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    configure_logging("info")
    profile = cProfile.Profile() if args.profile else None
    try:
        seconds = uvloop.run(measure(args.rounds, profile))
    finally:
        sys.stderr.close()
        sys.stderr = stderr
    if profile is not None:
        report = io.StringIO()
        pstats.Stats(profile, stream=report).sort_stats("tottime").print_stats(40)
        print(report.getvalue())
    per_request = [s / CONNECTIONS * 1e6 for s in seconds]
    print(
        f"event-loop work per request: {statistics.median(per_request):.1f} us median round,"
        f" {min(per_request):.1f} us best ({args.rounds} rounds of {CONNECTIONS} requests)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
