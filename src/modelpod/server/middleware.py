"""Pure ASGI middleware (no per-request task or body buffering, unlike Starlette's BaseHTTPMiddleware).

- `RequestMiddleware`: request id (X-Request-ID in and out), in-flight gauge, request metrics by route
  template, one JSON access-log line per request.
- `BodyLimitMiddleware`: 413 for a body over the limit, by Content-Length up front or by counting the
  chunks of a chunked body as they arrive. Requests without a body (health, metrics) pass untouched.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelpod.server.logs import request_id
from modelpod.server.metrics import Metrics
from modelpod.server.responses import error_body
from modelpod.server.state import ServerState

access_log = logging.getLogger("modelpod.access")

_BODY_METHODS = {"POST", "PUT", "PATCH"}


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.metrics = state.metrics
        self.log_requests = state.spec.server.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _header(scope, b"x-request-id") or uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        self.metrics.inflight_now.inc()
        self.state.inflight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.state.inflight -= 1
            self.metrics.inflight_now.dec()
            seconds = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.observe_request(endpoint, status, seconds)
            if self.log_requests:
                access_log.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        "method": scope["method"],
                        "path": scope["path"],
                    },
                )
            request_id.reset(token)


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if started:  # the app answered before reading it all; nothing more can be said
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        self.metrics.reject("body_too_large")
        body = error_body(
            f"request body is larger than the limit of {self.max_bytes} bytes (server.max_body_bytes)"
        )
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the rest of the body is not read; the connection cannot be reused
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> Any:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
