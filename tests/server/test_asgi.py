"""The direct path of `ServerApp` with handlers of the test's own, and the coalescing transport.

The app is driven by raw ASGI messages, so the tests can see exactly what is sent: how a chunked body is
read, what a client that goes away leaves in the metrics, and what a handler's bug answers.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from modelpod.server.core.state import ServerState
from modelpod.server.http.asgi import Call, InferenceRoute, Reply, ServerApp
from modelpod.server.http.auth import BearerAuth
from modelpod.server.http.errors import ApiError
from modelpod.server.http.transport import CoalescingTransport
from tests.server.conftest import with_server

pytestmark = pytest.mark.anyio


def app_with(spec: Any, *routes: InferenceRoute) -> ServerApp[ServerState]:
    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return ServerApp(ServerState(spec), list(routes), Starlette(routes=[Route("/hello", hello)]))


async def call(
    app: ServerApp[ServerState],
    method: str,
    path: str,
    chunks: list[bytes],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request as a list of body chunks; returns (status, headers, body)."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    if not sent:
        return 0, {}, b""
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def requests_by_code(app: ServerApp) -> dict[tuple[str, str], float]:
    families = text_string_to_metric_families(app.state.metrics.render().decode())
    family = next(f for f in families if f.name == "modelpod_requests")
    return {
        (s.labels["endpoint"], s.labels["code"]): s.value for s in family.samples if s.name.endswith("_total")
    }


async def echo_body(call: Call) -> Reply:
    return Reply(orjson.dumps({"size": len(call.body), "params": dict(call.params)}))


async def test_a_chunked_body_is_read_whole_and_params_come_from_the_template(echo_spec):
    app = app_with(echo_spec, InferenceRoute("/v2/models/{name}/infer", echo_body))
    status, headers, body = await call(app, "POST", "/v2/models/echo/infer", [b"ab", b"cde", b"f"])
    assert status == 200
    assert orjson.loads(body) == {"size": 6, "params": {"name": "echo"}}
    assert headers["content-length"] == str(len(body))
    assert len(headers["x-request-id"]) == 16


async def test_a_body_over_the_limit_is_413_whether_declared_or_counted(echo_spec):
    app = app_with(with_server(echo_spec, max_body_bytes=10), InferenceRoute("/predict", echo_body))
    declared = await call(app, "POST", "/predict", [b"x" * 11], {"content-length": "11"})
    counted = await call(app, "POST", "/predict", [b"x" * 6, b"x" * 6])
    for status, headers, body in (declared, counted):
        assert status == 413
        assert headers["connection"] == "close"
        assert orjson.loads(body) == {
            "error": "request body is larger than the limit of 10 bytes (server.max_body_bytes)"
        }


async def test_a_handler_bug_is_a_json_500_with_the_request_id_and_serving_goes_on(echo_spec, caplog):
    async def broken(call: Call) -> Reply:
        raise RuntimeError("a bug")

    app = app_with(
        echo_spec, InferenceRoute("/predict", broken), InferenceRoute("/v1/embeddings", broken, True)
    )
    status, headers, body = await call(app, "POST", "/predict", [b"{}"], {"x-request-id": "req-7"})
    openai_status, _, openai_body = await call(app, "POST", "/v1/embeddings", [b"{}"])
    after = await call(app, "GET", "/hello", [b""])
    assert status == 500
    assert headers["x-request-id"] == "req-7"
    assert orjson.loads(body) == {"error": "internal server error (request id req-7)"}
    assert openai_status == 500
    assert orjson.loads(openai_body)["error"]["type"] == "server_error"
    assert "RuntimeError: a bug" in caplog.text  # the traceback goes to the log, not to the client
    assert (after[0], after[2]) == (200, b"hello")
    assert after[1]["x-request-id"]  # the Starlette routes get a request id too


async def test_api_errors_keep_their_status_and_headers(echo_spec):
    async def refuse(call: Call) -> Reply:
        raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "busy", headers={"Retry-After": "1"})

    app = app_with(echo_spec, InferenceRoute("/predict", refuse))
    status, headers, body = await call(app, "POST", "/predict", [b"{}"])
    wrong_method = await call(app, "GET", "/predict", [b""])
    assert (status, headers["retry-after"], orjson.loads(body)) == (503, "1", {"error": "busy"})
    assert wrong_method[0] == 405
    assert orjson.loads(wrong_method[2]) == {"error": "GET is not allowed on /predict"}


async def test_a_request_without_the_token_is_refused_before_its_body_is_read(echo_spec):
    state = ServerState(echo_spec, auth=BearerAuth("s3cret"))
    app = ServerApp(state, [InferenceRoute("/predict", echo_body)], Starlette())
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body of an unauthenticated request was read")

    async def send(message: Any) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    assert sent[0]["status"] == 401
    assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]


async def test_a_client_that_goes_away_mid_body_is_counted_and_nothing_is_sent(echo_spec):
    app = app_with(echo_spec, InferenceRoute("/predict", echo_body))
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    messages = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    assert sent == []
    assert requests_by_code(app) == {("/predict", "499"): 1.0}
    assert app.state.inflight.count == 0


async def test_request_ids_are_distinct_and_metrics_are_by_template(echo_spec):
    app = app_with(echo_spec, InferenceRoute("/v2/models/{name}/infer", echo_body))
    ids = set()
    for _ in range(50):
        _, headers, _ = await call(app, "POST", "/v2/models/echo/infer", [b"{}"])
        ids.add(headers["x-request-id"])
    await call(app, "GET", "/nowhere", [b""])
    assert len(ids) == 50
    counts = requests_by_code(app)
    assert counts[("/v2/models/{name}/infer", "200")] == 50
    assert counts[("unmatched", "404")] == 1


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_writes_of_one_loop_turn_go_out_as_one():
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"body")
    assert raw.writes == []  # nothing until the loop turns
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert raw.writes[1:] == [b"next"]
    assert transport.get_extra_info("peername") == "info:peername"  # the rest is the transport's


async def test_close_sends_what_was_written_first_and_abort_drops_it():
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"last words")
    transport.close()
    assert (raw.writes, raw.closed) == ([b"last words"], True)
    await asyncio.sleep(0)  # the scheduled flush finds nothing left and writes nothing
    assert raw.writes == [b"last words"]

    dropped = RecordingTransport()
    transport = CoalescingTransport(dropped, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"never")
    transport.abort()
    await asyncio.sleep(0)
    assert (dropped.writes, dropped.aborted) == ([], True)


async def test_a_body_that_stops_coming_is_408_and_is_not_counted_in_flight_meanwhile(echo_spec):
    app = app_with(with_server(echo_spec, body_timeout_s=0.2), InferenceRoute("/predict", echo_body))
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    first = [{"type": "http.request", "body": b"ab", "more_body": True}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        if first:
            return first.pop()
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(message)

    request = asyncio.ensure_future(app(scope, receive, send))
    await asyncio.sleep(0.05)
    assert (app.state.inflight.count, app.state.inflight.working()) == (1, 0)
    await asyncio.wait_for(request, timeout=10)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert orjson.loads(sent[1]["body"]) == {
        "error": "the request body did not arrive within 0.2s (server.body_timeout_s)"
    }
    assert app.state.inflight.count == 0


async def test_when_the_server_stops_a_request_still_sending_its_body_gets_503(echo_spec):
    app = app_with(echo_spec, InferenceRoute("/predict", echo_body))
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(message)

    request = asyncio.ensure_future(app(scope, receive, send))
    await asyncio.sleep(0.05)
    app.state.inflight.bodies.stop_all()
    await asyncio.wait_for(request, timeout=10)
    assert sent[0]["status"] == 503
    assert orjson.loads(sent[1]["body"]) == {"error": "the server is shutting down"}
