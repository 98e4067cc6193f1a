"""The JSON log lines, and the access log's direct path (server/http/logs.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from modelpod.server.http import logs
from modelpod.server.http.logs import AccessLog, JsonFormatter, configure_logging, request_id


@pytest.fixture
def json_stderr(monkeypatch):
    """configure_logging writing to a StringIO; logging's global state is put back afterwards."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))  # restored at teardown
    monkeypatch.setattr(logs, "_handler", logs._handler)
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(logging.getLogger("uvicorn.access"), "disabled", False)
    level = root.level
    configure_logging("info")
    yield stream
    root.setLevel(level)


@contextlib.contextmanager
def only_json_handler() -> Iterator[None]:
    """As in `modelpod serve`: pytest's capture handlers (added for each test's call) off the root logger."""
    root = logging.getLogger()
    saved = root.handlers
    root.handlers = [logs._handler]
    try:
        yield
    finally:
        root.handlers = saved


def _as_logging_writes_it(method: str, path: str, status: int, seconds: float, rid: str) -> dict:
    fields = {"status": status, "duration_ms": round(seconds * 1000, 3), "method": method, "path": path}
    record = logging.getLogger(AccessLog.NAME).makeRecord(
        AccessLog.NAME, logging.INFO, "", 0, "%s %s %d", (method, path, status), None, extra=fields
    )
    token = request_id.set(rid)
    try:
        return json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)


def test_access_lines_are_written_at_the_end_of_the_loop_turn_as_logging_would_write_them(json_stderr):
    access = AccessLog()

    async def two_requests() -> tuple[str, str]:
        access.request("POST", "/predict", 200, 0.0123456, "rid-1")
        access.request("GET", "/v2/models/m", 404, 0.0005, "rid-2")
        during = json_stderr.getvalue()
        await asyncio.sleep(0)  # the loop turn ends; the flush it scheduled runs
        return during, json_stderr.getvalue()

    with only_json_handler():
        during, after = asyncio.run(two_requests())
    assert during == ""
    lines = [json.loads(line) for line in after.splitlines()]
    expected = [
        _as_logging_writes_it("POST", "/predict", 200, 0.0123456, "rid-1"),
        _as_logging_writes_it("GET", "/v2/models/m", 404, 0.0005, "rid-2"),
    ]
    for line, wanted in zip(lines, expected, strict=True):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("ts"))
        wanted.pop("ts")
        assert list(line.items()) == list(wanted.items())  # same fields, same order
    assert lines[0]["msg"] == "POST /predict 200"
    assert lines[0]["duration_ms"] == 12.346


def test_without_an_event_loop_the_line_is_written_at_once(json_stderr):
    with only_json_handler():
        AccessLog().request("POST", "/predict", 503, 0.001, "rid-3")
    assert json.loads(json_stderr.getvalue())["status"] == 503


def test_access_lines_go_through_logging_once_its_handlers_change(json_stderr, caplog):
    # pytest's caplog has a handler of its own on the root logger: a direct write would bypass it
    assert len(logging.getLogger().handlers) > 1
    with caplog.at_level(logging.INFO, logger=AccessLog.NAME):
        AccessLog().request("POST", "/predict", 200, 0.002, "rid-4")
    (record,) = [r for r in caplog.records if r.name == AccessLog.NAME]
    assert record.getMessage() == "POST /predict 200"
    assert (record.status, record.path, record.duration_ms) == (200, "/predict", 2.0)
    assert json.loads(json_stderr.getvalue())["msg"] == "POST /predict 200"  # the JSON handler still wrote it


def test_a_log_level_above_info_silences_the_access_log(json_stderr):
    logging.getLogger().setLevel(logging.WARNING)
    with only_json_handler():
        AccessLog().request("POST", "/predict", 200, 0.002, "rid-5")
    assert json_stderr.getvalue() == ""
