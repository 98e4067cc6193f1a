"""The load generator's own ceiling: `modelpod bench`'s client and wrk against a server that does nothing.

A raw ASGI app on uvicorn (uvloop, httptools) answers `{}` to every POST, in a child process; each client
runs a closed loop of 64 callers for 5 s, alternating, for a few rounds. Whatever a client reaches here
is the most it can measure on this machine, where it shares the cores with the server under test.

    python -m benchmarks.loadgen_ceiling [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import time

from benchmarks import wrk_client
from benchmarks.loadgen import closed_loop

BODY = b'{"inputs": {"x": [1.0, 2.0, 3.0]}}'


async def _app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


def _serve(port: int) -> None:
    import uvicorn

    uvicorn.run(
        _app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    time.sleep(2)
    url = f"http://127.0.0.1:{port}/predict"
    results: dict[str, list[float]] = {"modelpod bench (aiohttp)": [], "wrk (1 thread)": []}
    try:
        for _ in range(args.rounds):
            ours = asyncio.run(
                closed_loop(url, [BODY], concurrency=args.concurrency, duration=args.duration, warmup=1)
            )
            results["modelpod bench (aiohttp)"].append(ours.throughput)
            if wrk_client.available():
                theirs = wrk_client.closed_loop(
                    url, [BODY], concurrency=args.concurrency, duration=args.duration, warmup=1
                )
                results["wrk (1 thread)"].append(theirs.throughput)
    finally:
        server.terminate()
    for name, values in results.items():
        if values:
            print(f"{name}: median {statistics.median(values):,.0f} requests/s over {values}")


if __name__ == "__main__":
    main()
