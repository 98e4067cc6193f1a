"""Stopping at once: a stop signal outside the drain ends the process with exit code 0.

In a container the server is PID 1, and the kernel drops a signal that PID 1 has no handler for. uvicorn
sets its handlers only once the server starts, after the imports and the spec (about a second). Before
that, a SIGTERM from `docker stop` or a deleted pod was lost: the server went on to load and serve, and
was killed when the grace period ran out (exit 137). So the entrypoints (`python -m modelpod.server`,
`modelpod serve`) call `exit_on_sigterm` before the server's imports.

Once uvicorn is up, its handler calls `ModelServer.handle_exit` (server/run.py): the first signal while
ready drains; one while the model loads, or a second one during the drain, calls `exit_now`. Stopping
through uvicorn instead waited for the loading thread (minutes for a large model) or for the batch the
drain was waiting on, and answered the requests it cut off with a 500 and a traceback in the log.

The handler may run in the middle of any import (only the interpreter's own start, tens of
milliseconds, comes before it), so `exit_now` writes its log line itself, with modules that are always
loaded, rather than through `logging`, which may be half imported then.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType
from typing import NoReturn


def exit_on_sigterm() -> None:
    """Make SIGTERM end the process at once with exit code 0 (call first thing in an entrypoint)."""
    signal.signal(signal.SIGTERM, _on_signal)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    exit_now(signum)


def exit_now(signum: int) -> NoReturn:
    """Log that signal `signum` ends the process, and end it with exit code 0 without waiting for any
    thread (not sys.exit: the interpreter would wait for a model still loading or a batch still running)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    # the shape of server/http/logs.py's JSON lines
    line = (
        f'{{"ts":"{stamp}","level":"info","logger":"modelpod.server",'
        f'"msg":"signal {signum}: exiting now","signal":{signum}}}\n'
    )
    try:  # noqa: SIM105 - not contextlib.suppress: an import this module does without
        sys.stderr.flush()  # what the server logged before goes out first
    except (OSError, ValueError):
        pass
    os.write(2, line.encode())
    os._exit(0)
