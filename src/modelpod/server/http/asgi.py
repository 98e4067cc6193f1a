"""The outermost ASGI app: bookkeeping for every request, and a direct path for the inference routes.

Every HTTP request gets a request id (X-Request-ID in and out), counts as in flight (the drain waits for
none), is measured by route template and status, and is logged as one JSON access-log line.

The inference routes (`POST /predict`, v2 infer, `POST /v1/embeddings`) do not go through Starlette:
their handlers take the body as bytes and return a `Reply`, and this module reads the body (enforcing
`server.max_body_bytes`, chunked bodies included), checks the bearer token and writes the answer itself.
Why: with a model batching 64 requests, every request's answer is written and the next request read
while the model waits; Starlette's routing, exception and response layers made up about a third of that
per-request time (py-spy, digits at concurrency 16). Everything else (health, metadata, metrics, docs)
is served by the Starlette app passed in as `fallback`.

A handler may answer with a stream (`Reply.stream`, server-sent events of text generation): its parts are
sent as they come. On a route with `watch_disconnect`, the handler runs beside a watch for the client's
disconnect, and is cancelled when the client goes away, so what it waits on (a sequence in the
generation engine) is freed at once instead of when the answer is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from itertools import count
from typing import Any, Generic, NoReturn, Protocol, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelpod.errors import ModelpodError
from modelpod.server.http import body_watch
from modelpod.server.http.allocator import LARGE_BODY_BYTES, ReleaseAfterLargeRequests
from modelpod.server.http.auth import BearerAuth
from modelpod.server.http.errors import CLOSE, ApiError, api_error
from modelpod.server.http.inflight import InFlight
from modelpod.server.http.limits import RequestLimits
from modelpod.server.http.logs import AccessLog, request_id
from modelpod.server.http.responses import error_body, openai_error_body

log = logging.getLogger("modelpod.server")

# nginx's code for "the client closed the connection before the answer": nothing was sent
CLIENT_GONE = 499


# a body in one message is the bytes that came; one in several, a buffer they were copied into
Body = bytes | bytearray
# the scope key that marks a request whose body was large (server/http/allocator.py)
_LARGE_BODY = "modelpod.large_body"


@dataclass(slots=True)
class Call:
    """One inference request as a handler sees it."""

    body: Body
    headers: Mapping[str, str]  # names in lower case
    params: Mapping[str, str]  # from the route template, e.g. {"name": "digits"}
    log: dict[str, Any] = field(default_factory=dict)  # fields the handler adds to the access-log line


@dataclass
class Reply:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: AsyncGenerator[bytes, None] | None = None  # a body sent in parts as they come, not `body`


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class InferenceRoute:
    """A POST route served directly. `template` segments in braces capture one path segment."""

    template: str
    handler: Handler
    openai_errors: bool = False  # answer errors in OpenAI's shape, which its SDKs parse
    watch_disconnect: bool = False  # cancel the handler when the client disconnects
    _pattern: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pattern", tuple(self.template.split("/")))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(self._pattern) != len(segments):
            return None
        params: dict[str, str] = {}
        for expected, got in zip(self._pattern, segments, strict=True):
            if expected.startswith("{"):
                if not got:
                    return None
                params[expected[1:-1]] = got
            elif expected != got:
                return None
        return params


class _ClientGone(Exception):
    pass


class RequestMetrics(Protocol):
    def observe_request(self, endpoint: str, status: int, seconds: float) -> None: ...
    def reject(self, reason: str) -> None: ...


class Surroundings(Protocol):
    """What ServerApp needs of the server around it (server/core/state.py's ServerState has it)."""

    @property
    def inflight(self) -> InFlight: ...
    @property
    def auth(self) -> BearerAuth: ...
    @property
    def limits(self) -> RequestLimits: ...
    @property
    def metrics(self) -> RequestMetrics: ...
    @property
    def access_log(self) -> bool: ...


S = TypeVar("S", bound=Surroundings)


class ServerApp(Generic[S]):
    def __init__(self, state: S, routes: list[InferenceRoute], fallback: ASGIApp) -> None:
        self.state = state
        self.routes = routes  # the inference routes, as the OpenAPI test compares them with the document
        # most inference paths have no parameter (/predict, /v1/...): one dict lookup finds them
        self._exact = {r.template: r for r in reversed(routes) if "{" not in r.template}
        self._templated = [r for r in routes if "{" in r.template]
        self.fallback = fallback
        self.max_body_bytes = state.limits.max_body_bytes
        self.access_log = AccessLog() if state.access_log else None
        self.release = ReleaseAfterLargeRequests()
        self._new_request_id = _request_ids()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.fallback(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        rid = headers.get("x-request-id") or self._new_request_id()
        token = request_id.set(rid)
        started = time.perf_counter()
        status, endpoint = CLIENT_GONE, "unmatched"
        log_fields: dict[str, Any] = {}
        self.state.inflight.started()  # the in-flight gauge reads this
        try:
            route, params = self._match(scope["path"])
            if route is not None:
                endpoint = route.template
                call = Call(b"", headers, params, log_fields)
                status = await self._direct(route, call, scope, receive, send, rid)
            else:
                status = await self._fallback(scope, receive, send, rid)
                endpoint = getattr(scope.get("route"), "path", "unmatched")
        finally:
            self.state.inflight.finished()
            if scope.get(_LARGE_BODY):  # its body and decoded values are freed: give them back
                self.release.closed()
            seconds = time.perf_counter() - started
            self.state.metrics.observe_request(endpoint, status, seconds)
            if self.access_log is not None:
                self.access_log.request(scope["method"], scope["path"], status, seconds, rid, log_fields)
            request_id.reset(token)

    def _match(self, path: str) -> tuple[InferenceRoute | None, dict[str, str]]:
        exact = self._exact.get(path)
        if exact is not None:
            return exact, {}
        segments = path.split("/")
        for route in self._templated:
            params = route.match(segments)
            if params is not None:
                return route, params
        return None, {}

    async def _direct(
        self, route: InferenceRoute, call: Call, scope: Scope, receive: Receive, send: Send, rid: str
    ) -> int:
        try:
            if scope["method"] != "POST":
                message = f"{scope['method']} is not allowed on {scope['path']}"
                raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, message, headers={"Allow": "POST"})
            self.state.auth.check(call.headers.get("authorization"))  # before reading a stranger's body
            body = await self._read_body(call.headers, receive, scope)
        except _ClientGone:
            return CLIENT_GONE
        except ApiError as exc:
            reply = self._error_reply(route, exc)
            await _send_reply(send, reply, rid)
            return reply.status
        call = Call(body, call.headers, call.params, call.log)
        if route.watch_disconnect:
            return await _unless_disconnected(self._respond(route, call, scope, send, rid), receive)
        return await self._respond(route, call, scope, send, rid)

    async def _respond(self, route: InferenceRoute, call: Call, scope: Scope, send: Send, rid: str) -> int:
        try:
            reply = await route.handler(call)
        except ModelpodError as exc:  # ApiErrors, and what schedulers and models raise (http/errors.py)
            reply = self._error_reply(route, api_error(exc, request_id=rid))
        except Exception:  # a bug of ours or of a runtime: answer 500 and keep serving
            log.exception("unexpected error in %s %s", scope["method"], scope["path"])
            error = ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal server error (request id {rid})")
            reply = self._error_reply(route, error)
        await _send_reply(send, reply, rid)
        return reply.status

    async def _read_body(self, headers: Mapping[str, str], receive: Receive, scope: Scope) -> Body:
        """The whole body within `server.body_timeout_s`, else 408; 503 when the server stops first.
        Meanwhile the request is not counted in flight, and the drain does not wait for it
        (server/http/body_watch.py)."""
        task: asyncio.Task[object] = asyncio.current_task()  # type: ignore[assignment]
        bodies = self.state.inflight.bodies
        bodies.start(task)
        try:
            return await self._receive_body(headers, receive, scope)
        except asyncio.CancelledError:
            reason = bodies.interrupted(task)
            if reason is None:
                raise
            if reason == body_watch.TIMEOUT:
                message = (
                    f"the request body did not arrive within {bodies.timeout:g}s (server.body_timeout_s)"
                )
                raise ApiError(
                    HTTPStatus.REQUEST_TIMEOUT, message, headers=CLOSE, reason="body_timeout"
                ) from None
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "the server is shutting down",
                headers=CLOSE,
                reason="draining",
            ) from None
        finally:
            bodies.finish(task)

    async def _receive_body(self, headers: Mapping[str, str], receive: Receive, scope: Scope) -> Body:
        """The whole body, or 413 as soon as it is known to be over the limit (by Content-Length up
        front, or by counting the chunks of a chunked body as they arrive).

        A body in one message is returned as it came; one in several is copied into one buffer, sized
        up front when declared, so a large body is held once rather than as chunks plus their join. A
        large body marks the request for a memory release when it ends (server/http/allocator.py)."""
        declared = headers.get("content-length", "")
        length = int(declared) if declared.isdigit() else None
        if length is not None and length > self.max_body_bytes:
            self._too_large()
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(chunk) > self.max_body_bytes:
                self._too_large()
            self._mark_large(len(chunk), scope)
            return chunk
        buffer = bytearray(length) if length is not None else bytearray()
        size = 0
        while True:
            if size + len(chunk) > self.max_body_bytes:
                self._too_large()
            if length is not None and size + len(chunk) <= length:
                buffer[size : size + len(chunk)] = chunk  # the same length: in place
            else:
                del buffer[size:]
                buffer += chunk
            size += len(chunk)
            if not message.get("more_body", False):
                del buffer[size:]  # a client that declared more than it sent
                self._mark_large(size, scope)
                return buffer
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")

    def _mark_large(self, size: int, scope: Scope) -> None:
        if size >= LARGE_BODY_BYTES:
            scope[_LARGE_BODY] = True
            self.release.opened()

    def _too_large(self) -> NoReturn:
        raise ApiError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"request body is larger than the limit of {self.max_body_bytes} bytes (server.max_body_bytes)",
            # the rest of the body is not read, so the connection cannot be reused
            headers=CLOSE,
            reason="body_too_large",
        )

    def _error_reply(self, route: InferenceRoute, error: ApiError) -> Reply:
        """The answer to `error`, counted as a refusal when it is one (its `reason`)."""
        if error.reason is not None:
            self.state.metrics.reject(error.reason)
        render = openai_error_body if route.openai_errors else error_body
        return Reply(render(error.status, error.message), error.status, headers=error.headers)

    async def _fallback(self, scope: Scope, receive: Receive, send: Send, rid: str) -> int:
        status = 500
        rid_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        await self.fallback(scope, receive, send_with_id)
        return status


async def _send_reply(send: Send, reply: Reply, rid: str) -> None:
    headers = [(b"content-type", reply.content_type.encode()), (b"x-request-id", rid.encode())]
    if reply.stream is None:
        headers.append((b"content-length", str(len(reply.body)).encode()))
    headers += [(name.lower().encode(), value.encode()) for name, value in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    if reply.stream is None:
        await send({"type": "http.response.body", "body": reply.body})
        return
    # aclosing: a cancelled stream runs its own clean-up (freeing its sequence) now, not at collection
    async with contextlib.aclosing(reply.stream) as parts:
        try:
            async for part in parts:
                await send({"type": "http.response.body", "body": part, "more_body": True})
        except Exception:  # a bug in the stream: the head is sent, so end the body rather than hang
            log.exception("the answer's stream failed")
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _unless_disconnected(responding: Awaitable[int], receive: Receive) -> int:
    """Run `responding` until it ends or the client disconnects, whichever comes first; on a disconnect
    it is cancelled and the status is CLIENT_GONE."""
    answer = asyncio.ensure_future(responding)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({answer, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not answer.done():
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answer
    return answer.result() if not answer.cancelled() else CLIENT_GONE


async def _disconnected(receive: Receive) -> None:
    # the body has been read, so the server's next message is the disconnect
    while (await receive())["type"] != "http.disconnect":
        pass


def _request_ids() -> Callable[[], str]:
    """Request ids: a random prefix per process and a counter, 16 hex digits. Unique within a process,
    and across replicas but for a 1 in 2**32 chance per pair; a uuid4 per request cost a system call."""
    prefix = os.urandom(4).hex()
    numbers = count(1)
    return lambda: f"{prefix}{next(numbers) & 0xFFFFFFFF:08x}"
