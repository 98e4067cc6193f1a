"""Connections that send nothing, send slowly or never finish, on real sockets (server/http/transport.py and
server/http/body_watch.py): each is closed within its timeout, the connection limit holds while health
still answers, and the SIGTERM drain does not wait for a body that has not arrived."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.server_process import ServerProcess

WAIT = 30  # bound on every wait
LIMITS = {"keepalive_timeout_s": 0.5, "header_timeout_s": 0.5, "body_timeout_s": 1, "max_connections": 20}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    import shutil

    import yaml

    from tests.server.conftest import ECHO_DIR

    project = tmp_path_factory.mktemp("echo")
    shutil.copy(ECHO_DIR / "echo_model.py", project / "echo_model.py")
    spec = yaml.safe_load((ECHO_DIR / "modelpod.yaml").read_text())
    spec["server"].update(LIMITS)
    (project / "modelpod.yaml").write_text(yaml.safe_dump(spec))
    with ServerProcess(project) as running:
        yield running


def connect(server: ServerProcess) -> socket.socket:
    port = int(server.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT)


def read_until_closed(sock: socket.socket, timeout: float = WAIT) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - started


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


def inflight(server: ServerProcess) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=WAIT).text.splitlines():
        if line.startswith("modelpod_inflight_requests{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no modelpod_inflight_requests")


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(server):
    with connect(server) as fresh:  # uvicorn alone held one that never sent a byte forever
        answer, idle_fresh = read_until_closed(fresh)
    assert answer == b""
    assert 0.4 < idle_fresh < 5
    with connect(server) as used:
        used.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        rest, idle_used = read_until_closed(used)
    assert rest.startswith(b"HTTP/1.1 200 OK")
    assert rest.endswith(b'{"live":true}')
    assert 0.4 < idle_used < 5


def test_headers_sent_a_byte_at_a_time_get_408(server):
    with connect(server) as slow:
        started = time.monotonic()
        for byte in b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n":
            try:
                slow.sendall(bytes([byte]))
            except OSError:  # closed by the server: what the test waits for
                break
            time.sleep(0.1)
            if time.monotonic() - started > 5:
                break
        answer, _ = read_until_closed(slow)
    assert status_of(answer) == 408
    assert b"the request line and headers did not arrive within 0.5s" in answer
    assert time.monotonic() - started < 3


def test_a_header_over_64_kib_gets_431(server):
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n")
        answer, _ = read_until_closed(sock)
    assert status_of(answer) == 431


def test_a_body_that_never_completes_gets_408_and_is_not_counted_in_flight(server):
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n" + b'{"inputs":')
        time.sleep(0.3)
        assert inflight(server) == 1.0  # the scrape itself; not the request still sending its body
        answer, took = read_until_closed(sock)
    assert status_of(answer) == 408
    assert b"the request body did not arrive within 1s (server.body_timeout_s)" in answer
    assert took < 3
    metrics = httpx.get(f"{server.url}/metrics", timeout=WAIT).text
    assert 'modelpod_rejected_requests_total{model="echo",reason="body_timeout"} 1.0' in metrics


def test_an_answer_before_the_body_closes_the_connection(server):
    with connect(server) as sock:  # health reads no body: the rest of it would be read forever
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\nabc")
        answer, took = read_until_closed(sock)
    assert status_of(answer) == 200
    assert took < 3


def test_at_the_connection_limit_idle_connections_make_room_and_health_answers(server):
    idle = [connect(server) for _ in range(40)]  # twice the limit, all idle
    try:
        live = httpx.get(f"{server.url}/v2/health/live", timeout=WAIT)
        assert live.status_code == 200
        closed = 0
        for sock in idle:
            sock.settimeout(0.05)
            with contextlib.suppress(TimeoutError):
                closed += sock.recv(1) == b""
        assert closed >= 20  # the oldest made room as the newer came
    finally:
        for sock in idle:
            sock.close()


def test_at_the_connection_limit_with_none_idle_a_new_connection_gets_503(server):
    busy = [connect(server) for _ in range(20)]
    try:
        for sock in busy:  # each in the middle of a request body: none idle
            sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        time.sleep(0.2)
        with connect(server) as extra:
            answer, _ = read_until_closed(extra, timeout=5)
        assert status_of(answer) == 503
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": "too many connections"}
    finally:
        for sock in busy:
            sock.close()


def test_sigterm_does_not_wait_for_a_body_that_has_not_arrived(echo_project):
    project = echo_project(drain_timeout_s=20, body_timeout_s=60)
    server = ServerProcess(project).start()
    try:
        with connect(server) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
            time.sleep(0.3)
            assert server.process is not None
            started = time.monotonic()
            server.process.send_signal(15)
            code = server.process.wait(WAIT)
            stopped = time.monotonic() - started
            answer, _ = read_until_closed(sock)
    finally:
        server.stop()
    assert code == 0, server.log
    assert stopped < 5, server.log  # not the drain budget of 20 s
    assert status_of(answer) == 503
    assert b"the server is shutting down" in answer
    assert "Traceback" not in server.log
    assert "CancelledError" not in server.log
    assert '"msg":"drained: no request in flight"' in server.log


def test_pipelined_requests_are_both_answered_while_the_second_body_is_coming(server):
    body = b'{"inputs": {"x": [1, 2]}}'
    with connect(server) as sock:
        sock.sendall(
            b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
            b"POST /predict HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body[:5]
        )
        time.sleep(0.3)  # the first is answered meanwhile
        sock.sendall(body[5:])
        answer, _ = read_until_closed(sock)
    assert answer.count(b"HTTP/1.1 200 OK") == 2, answer
    assert answer.endswith(b'{"outputs":{"y":[2.0,4.0]}}')
