"""The ceiling for a small model's request path: a bare ASGI app under uvicorn with uvloop and httptools,
as modelpod serves. It reads the whole body and answers a fixed 150-byte JSON document, and does nothing
else: no routing, decoding, model, metrics or log line.

    python benchmarks/peer_services/bare_asgi.py PORT
"""

from __future__ import annotations

import sys

import uvicorn

BODY = (b'{"outputs":{"probabilities":[[0.01,0.01,0.01,0.01,0.01,0.01,0.01,0.91,0.01,0.01]]},'
        b'"model":"digits","padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}')  # fmt: skip
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
        access_log=False, log_level="warning", lifespan="off",
    )  # fmt: skip
