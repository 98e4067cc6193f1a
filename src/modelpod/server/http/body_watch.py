"""The inference requests whose body is still arriving: a deadline for each, and an end for all of them
when the drain is over.

A client that sends its headers and then its body slowly, or never, held its request forever: counted
in flight (the gauge the autoscaler reads), waited on by the SIGTERM drain for its whole budget, and
cancelled at exit with a CancelledError traceback. Here such a request is not counted in flight until its
body is in, the drain does not wait for it, and it is ended on purpose: 408 past `body_timeout_s`, 503
when the server stops. Ended means its task is cancelled and the reader turns that into the answer
(`interrupted` says why). The deadlines share one timer (server/http/deadlines.py).
"""

from __future__ import annotations

import asyncio

from modelpod.server.http.deadlines import Deadlines

TIMEOUT = "timeout"
STOPPING = "stopping"


class BodyWatch:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._deadlines: Deadlines[asyncio.Task[object]] = Deadlines(timeout, self._timed_out)
        self._reasons: dict[asyncio.Task[object], str] = {}

    def __len__(self) -> int:
        """Requests whose body is still arriving."""
        return len(self._deadlines)

    def start(self, task: asyncio.Task[object]) -> None:
        self._deadlines.add(task)

    def finish(self, task: asyncio.Task[object]) -> None:
        self._deadlines.discard(task)

    def interrupted(self, task: asyncio.Task[object]) -> str | None:
        """Why `task` was cancelled by this watch (TIMEOUT or STOPPING), or None when it was not; in
        the first case the cancellation is taken back, so the task goes on to answer."""
        reason = self._reasons.pop(task, None)
        if reason is not None and hasattr(task, "uncancel"):  # Python 3.11+
            task.uncancel()
        return reason

    def stop_all(self) -> None:
        """End every request still waiting for its body (the drain is over)."""
        for task in self._deadlines.pending():
            self._deadlines.discard(task)
            self._interrupt(task, STOPPING)

    def _timed_out(self, task: asyncio.Task[object]) -> None:
        self._interrupt(task, TIMEOUT)

    def _interrupt(self, task: asyncio.Task[object], reason: str) -> None:
        self._reasons[task] = reason
        task.cancel()
