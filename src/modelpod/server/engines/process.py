"""An external engine as a child process: started, its log passed on, watched, stopped.

The child is `group_guard.py`, which runs the engine in a process group of its own and takes the whole
group down with it; the guard is told to stop when the server dies (Linux's parent-death signal,
SIGTERM), so a server killed without a chance to stop it leaves no process of the engine's behind,
holding the port and the memory. The engine's output is read line by line on a thread and written to
the server's log as JSON lines (logger `modelpod.engine`), so one log stream stays one format.
`wait_ready` polls the engine's health route until it answers 200, the child exits, or the start-up
budget runs out; `watch` calls back once if the child ends while the server does not expect it; `stop`
sends the guard SIGTERM (it passes it to the group) and, if the group outlasts the grace period,
SIGKILL to all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from modelpod.errors import ModelLoadError

log = logging.getLogger("modelpod.engine")
_PR_SET_PDEATHSIG = 1
_TAIL_LINES = 40  # of the child's log, quoted when it fails to start
_GUARD = Path(__file__).with_name("group_guard.py")
STOP_GRACE_S = 10.0  # from SIGTERM to SIGKILL for the engine's processes


def _libc_prctl() -> Callable[..., int] | None:
    try:
        prctl: Callable[..., int] = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not glibc Linux: the child is stopped only by `stop`
        return None
    return prctl


# looked up here, in the parent: between fork and exec the child must take no lock (dlopen takes one)
_PRCTL = _libc_prctl()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EngineProcess:
    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], url: str, health: str) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.url = url
        self.health = health
        self.tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def start(self) -> None:
        log.info("starting %s: %s", self.name, " ".join(self.argv), extra={"engine": self.name})
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", str(_GUARD), str(STOP_GRACE_S), *self.argv],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                start_new_session=True,  # a group of its own, which the guard leads
            )
        except OSError as exc:
            raise ModelLoadError(f"could not start {self.name} ({self.argv[0]}): {exc.strerror}") from None
        threading.Thread(target=self._pass_log, name=f"{self.name}-log", daemon=True).start()

    def _pass_log(self) -> None:
        output = self.process.stdout if self.process is not None else None
        for raw in output or ():
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self.tail.append(line)
                log.info(line, extra={"engine": self.name})

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_ready(self, timeout_s: float) -> None:
        """Until the engine's health route answers 200; ModelLoadError with its log's last lines when it
        exits first or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive:
                    raise self._failure("exited while starting")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + self.health)).status_code == 200:
                        return
                await asyncio.sleep(0.25)
        raise self._failure(f"was not ready within {timeout_s:g} s (kubernetes.startup_timeout_s)")

    def _failure(self, what: str) -> ModelLoadError:
        code = self.process.poll() if self.process is not None else None
        ended = f", exit code {code}" if code is not None else ""
        tail = " | ".join(list(self.tail)[-8:])
        return ModelLoadError(f"{self.name} {what}{ended}; its last log lines: {tail or '(none)'}")

    async def watch(self, on_exit: Callable[[str], None]) -> None:
        """Wait for the child to end; unless `stop` ended it, call `on_exit` with why."""
        while self.alive:
            await asyncio.sleep(0.5)
        if not self.stopping:
            code = self.process.poll() if self.process is not None else None
            tail = " | ".join(list(self.tail)[-5:])
            on_exit(f"{self.name} exited with code {code}; its last log lines: {tail}")

    async def stop(self) -> None:
        self.stopping = True
        if self.process is None or not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)  # the guard passes it on to the engine's group
        grace_s = STOP_GRACE_S + 5  # the guard's own grace, and time for it to exit
        deadline = time.monotonic() + grace_s
        while self.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.alive:
            log.warning("%s did not stop within %g s: killing it", self.name, grace_s)
        with contextlib.suppress(ProcessLookupError):  # and whatever of its group is left
            os.killpg(self.process.pid, signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, 10)
