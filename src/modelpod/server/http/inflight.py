"""HTTP requests in flight: ServerApp counts them, the in-flight gauge shows them, the drain waits for them.

A request still receiving its body is counted in `count` but is not yet `working`: neither the gauge nor
the drain counts it until its body has arrived (server/http/body_watch.py).
"""

from __future__ import annotations

import asyncio

from modelpod.server.http.body_watch import BodyWatch


class InFlight:
    def __init__(self, body_timeout_s: float) -> None:
        self.count = 0
        self.bodies = BodyWatch(body_timeout_s)
        self._idle: asyncio.Event | None = None  # set when `working()` reaches 0 while the drain waits

    def working(self) -> int:
        """Requests in flight whose body has arrived: what the drain waits for and the gauge shows."""
        return self.count - len(self.bodies)

    def started(self) -> None:
        self.count += 1

    def finished(self) -> None:
        """One request less in flight; wakes the drain when none is left working."""
        self.count -= 1
        if self._idle is not None and self.working() <= 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until no request is working; True when none is.

        Only a request's end can bring `working()` to 0 (a request that starts adds one in flight before
        its body is counted as arriving), so `finished` is the one place that wakes this."""
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._wait_no_work(self._idle), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._idle = None
        return self.working() <= 0

    async def _wait_no_work(self, idle: asyncio.Event) -> None:
        while self.working() > 0:
            idle.clear()
            await idle.wait()
