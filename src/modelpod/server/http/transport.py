"""uvicorn's httptools protocol with each response written to the socket once, not twice, and with the
connection limits uvicorn lacks.

uvicorn writes a response's status line and headers when the app sends `http.response.start`, and the
body when it sends `http.response.body`; on uvloop each write is a system call and a TCP segment that
wakes the client. Here writes made in one turn of the event loop are joined and written at the end of
that turn: one system call per response. Measured on minilm at concurrency 64, where 64 answers are
written while the model waits for the next batch, the event loop's share of that wait was mostly these
writes.

Connection limits (`GuardedHttpToolsProtocol`, settings from the spec's server section, docs/limits.md).
uvicorn times out a connection only once it has answered a request on it: a connection that sends
nothing, or sends its request line and headers a byte a second, was held forever, and ten thousand of
them used up the process's file descriptors. Here:
- an idle connection, fresh or between requests, is closed after `keepalive_timeout_s`;
- a request's line and headers must arrive within `header_timeout_s` of its first byte, and hold at most
  `MAX_HEADER_BYTES`: else 408 or 431, and the connection is closed;
- at `max_connections`, the connection idle the longest is closed to make room for a new one; when none
  is idle, the new one is answered 503 and closed;
- a connection whose answer went out before its request's body came in whole (a route that reads no
  body) is closed, rather than left reading a body that may never end.
The body of an inference request has its own deadline (`body_timeout_s`, server/http/asgi.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelpod.server.http.deadlines import Deadlines
from modelpod.specfile.model import ServerSection

# request line and headers; larger ones get 431 (nginx allows 32 KiB by default, Node.js 16 KiB)
MAX_HEADER_BYTES = 64 * 1024


class CoalescingTransport:
    """Wraps a transport; `write` collects, and the writes of one loop turn go out as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()  # what was written before close goes out first, as with the transport itself
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else (reading, extra info) is the transport's
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]


def _canned(status: str, message: str, *extra: str) -> bytes:
    body = b'{"error": "' + message.encode() + b'"}'
    head = [f"HTTP/1.1 {status}", "content-type: application/json", f"content-length: {len(body)}"]
    head += [*extra, "connection: close"]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


class _Idle:
    """The server's idle connections, the longest idle first (a dict keeps insertion order)."""

    def __init__(self) -> None:
        self.connections: dict[GuardedHttpToolsProtocol, None] = {}

    def add(self, connection: GuardedHttpToolsProtocol) -> None:
        self.connections.pop(connection, None)
        self.connections[connection] = None

    def discard(self, connection: GuardedHttpToolsProtocol) -> None:
        self.connections.pop(connection, None)

    def oldest(self) -> GuardedHttpToolsProtocol | None:
        return next(iter(self.connections), None)


class GuardedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """Keep-alive and header timeouts, a header size limit and a connection limit (module docstring).
    Made per server by `guarded_protocol`, which sets the class attributes below."""

    keepalive_timeout: float = 5.0
    max_connections: int = 1000
    idle: _Idle
    heads: Deadlines[GuardedHttpToolsProtocol]  # connections receiving a request head

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.keepalive_timeout  # type: ignore[assignment]
        self._head_bytes = 0
        self._head_too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            self.transport.write(_canned("503 Service Unavailable", "too many connections", "retry-after: 1"))
            self.transport.close()
            return
        self._wait_for_request()

    def _make_room(self) -> bool:
        oldest = self.idle.oldest()
        if oldest is None:
            return False
        self.idle.discard(oldest)
        oldest.transport.close()
        return True

    def _wait_for_request(self) -> None:
        """Idle: uvicorn arms its keep-alive timer only after an answer; arm it for a fresh one too."""
        self.idle.add(self)
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.keepalive_timeout, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.idle.discard(self)
        self.heads.discard(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.idle.discard(self)
        self._head_bytes = 0
        self.heads.add(self)

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEADER_BYTES:
            self._stop_parsing_head()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_bytes > MAX_HEADER_BYTES:
            self._stop_parsing_head()
        super().on_header(name, value)

    def _stop_parsing_head(self) -> NoReturn:
        self._head_too_large = True
        # an error in a callback stops httptools' parser; uvicorn then calls send_400_response (below)
        raise ValueError("request head too large")

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            super().send_400_response(msg)
            return
        self.heads.discard(self)
        message = f"the request line and headers are larger than {MAX_HEADER_BYTES} bytes"
        self.transport.write(_canned("431 Request Header Fields Too Large", message))
        self.transport.close()

    def on_headers_complete(self) -> None:
        self.heads.discard(self)
        super().on_headers_complete()

    def head_timed_out(self) -> None:
        if not self.transport.is_closing():
            message = f"the request line and headers did not arrive within {self.heads.timeout:g}s"
            self.transport.write(_canned("408 Request Timeout", message))
            self.transport.close()

    def on_response_complete(self) -> None:
        # with a pipelined request waiting, self.cycle is that one, not the one just answered
        answered = None if self.pipeline else self.cycle
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if answered is not None and answered.more_body:  # answered before its body came in whole
            self.transport.close()
        elif not self.pipeline:
            self.idle.add(self)


def guarded_protocol(server: ServerSection) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server: its own settings and its own register of idle connections."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "keepalive_timeout": server.keepalive_timeout_s,
            "max_connections": server.max_connections,
            "idle": _Idle(),
            "heads": Deadlines(server.header_timeout_s, GuardedHttpToolsProtocol.head_timed_out),
        },
    )
