"""SIGTERM outside the drain: the server process exits at once, with code 0.

In a container the server is PID 1, and the kernel drops a signal that PID 1 has no handler for. uvicorn
sets its handlers only once the server starts, after the imports and the spec (about a second). Before
that, a SIGTERM from `docker stop` or a deleted pod was lost: the server went on to load and serve, and
was killed when the grace period ran out (exit 137). While the model loads, uvicorn takes the signal and
stops, then raises it again with the handler it found; PID 1 ignored that too, and the interpreter waited
for the loading thread (minutes for a large model) before it exited.

`exit_on_sigterm` sets the handler the entrypoints (`python -m modelpod.server`, `modelpod serve`) start
with, so both cases exit within a moment. While the server is ready, uvicorn's handler is the one set and
SIGTERM drains (server/run.py); a second signal during the drain comes here too and stops at once.
The handler is set before the server's imports (what remains unguarded is the interpreter's own start,
tens of milliseconds), so it may run in the middle of any import: it writes its log line itself, with
modules that are always loaded, rather than through `logging`, which may be half imported then.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType


def exit_on_sigterm() -> None:
    """Make SIGTERM end the process at once with exit code 0 (call first thing in an entrypoint)."""
    signal.signal(signal.SIGTERM, _exit_now)


def _exit_now(signum: int, frame: FrameType | None) -> None:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    # the shape of server/logs.py's JSON lines
    line = (
        f'{{"ts":"{stamp}","level":"info","logger":"modelpod.server",'
        f'"msg":"signal {signum}: exiting now","signal":{signum}}}\n'
    )
    try:  # noqa: SIM105 - not contextlib.suppress: an import this module does without
        sys.stderr.flush()  # what the server logged before goes out first
    except (OSError, ValueError):
        pass
    os.write(2, line.encode())
    # not sys.exit: the interpreter would wait for a thread that is still loading the model
    os._exit(0)
