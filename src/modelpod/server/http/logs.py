"""JSON log lines with the request id, configured when the server starts (never at import).

Every record becomes one line: {"ts", "level", "logger", "msg", "request_id"?, ...extra fields}.
uvicorn's own loggers go through the same formatter, and its text access log is replaced by ours.

The access log (`AccessLog`) writes the same lines without `logging` once `configure_logging` has set
the JSON handler up: a LogRecord, the handler's lock, the formatter and a write and flush per line cost
about 12 microseconds a request on the event loop (benchmarks/request_cost.py), while a model batching
64 requests waits for their answers to go out. Its lines are built directly, and the lines of one
event-loop turn are written at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("modelpod_request_id", default=None)

# attributes every LogRecord has; anything else on a record was passed through `extra=` and is logged
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class _Timestamps:
    """ISO 8601 UTC to the millisecond, with one strftime per second (a busy server logs many a second)."""

    def __init__(self) -> None:
        self._second = -1
        self._stamp = ""

    def format(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._timestamps = _Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(
            self._timestamps.format(record.created),
            record.levelname.lower(),
            record.name,
            record.getMessage(),
            request_id.get(),
        )
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def _entry(ts: str, level: str, logger: str, msg: str, rid: str | None) -> dict[str, Any]:
    """The fields every line starts with, in their order; a record's own fields follow."""
    entry: dict[str, Any] = {"ts": ts, "level": level, "logger": logger, "msg": msg}
    if rid is not None:
        entry["request_id"] = rid
    return entry


class AccessLog:
    """The access log: one line per request, as `JsonFormatter` would write it for the logger
    "modelpod.access" with the fields status, duration_ms, method and path."""

    NAME = "modelpod.access"

    def __init__(self) -> None:
        self._logger = logging.getLogger(self.NAME)
        self._timestamps = _Timestamps()
        self._pending: list[str] = []

    def request(
        self,
        method: str,
        path: str,
        status: int,
        seconds: float,
        rid: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        # milliseconds to 3 decimals (int() is cheaper than round() here, on every request)
        duration_ms = int(seconds * 1_000_000 + 0.5) / 1000
        handler = _direct_handler(self._logger)
        if handler is None or not self._logger.isEnabledFor(logging.INFO):
            # logging is not (or no longer) as configure_logging set it up: go through it
            fields = {"status": status, "duration_ms": duration_ms, "method": method, "path": path}
            self._logger.info("%s %s %d", method, path, status, extra={**fields, **(extra or {})})
            return
        # the fields of _entry, then the access fields, in one dict built in place
        entry: dict[str, Any] = {"ts": self._timestamps.format(time.time()), "level": "info",
                                 "logger": self.NAME, "msg": f"{method} {path} {status}"}  # fmt: skip
        if rid is not None:
            entry["request_id"] = rid
        entry["status"] = status
        entry["duration_ms"] = duration_ms
        entry["method"] = method
        entry["path"] = path
        if extra:  # e.g. a generation's prompt_tokens and completion_tokens
            entry.update(extra)
        self._pending.append(orjson.dumps(entry).decode())
        if len(self._pending) == 1:  # the first line of this loop turn: write them all at its end
            try:
                asyncio.get_running_loop().call_soon(self.flush, handler)
            except RuntimeError:  # no event loop running: write now
                self.flush(handler)

    def flush(self, handler: logging.StreamHandler[TextIO]) -> None:
        lines, self._pending = self._pending, []
        handler.acquire()  # as the handler's own writes do: a record from another thread is not interleaved
        try:
            handler.stream.write("\n".join(lines) + "\n")
            handler.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: as with logging, the request is not failed
            pass
        finally:
            handler.release()


_handler: logging.StreamHandler[TextIO] | None = None  # the one configure_logging installed


def _direct_handler(logger: logging.Logger) -> logging.StreamHandler[TextIO] | None:
    """configure_logging's JSON handler, while it is the only handler a record of `logger` (a child of
    the root) would reach: then `logger`'s lines may be written to its stream directly."""
    handlers = logging.root.handlers
    if _handler is None or len(handlers) != 1 or handlers[0] is not _handler:
        return None
    node: logging.Logger | None = logger
    while node is not None and node is not logging.root:
        if node.handlers or not node.propagate or node.disabled:
            return None
        node = node.parent
    return _handler


def configure_logging(level: str = "info") -> None:
    """Send modelpod's and uvicorn's logs to stderr as JSON lines."""
    global _handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    _handler = handler
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # replaced by modelpod.access, which carries the request id and the duration
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request at info: those of the server to its engine (server/engines/) every second
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    # what no line here shows, logging need not look up for every record (the logging HOWTO's
    # "Optimization"): the caller's file and line, the thread, the process. An access-log line went from
    # 18 to 11 microseconds.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
