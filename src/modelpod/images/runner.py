"""Running an engine's commands: the one place that starts processes, behind a small interface.

Tests that only check argv never need it; a test double can replace `CommandRunner` wherever an
`Engine` is built. Every call has a timeout.
"""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from modelpod.images.errors import EngineError


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 20) -> str:
        text = (self.stdout + "\n" + self.stderr).strip()
        return "\n".join(text.splitlines()[-lines:])


class CommandRunner(Protocol):
    def run(self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None) -> Result: ...

    def stream(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_line: Callable[[str], None],
        env: Mapping[str, str] | None = None,
    ) -> Result: ...


class SubprocessRunner:
    """Runs commands as subprocesses; `stream` merges stderr into stdout and hands over each line."""

    def __init__(self, keep_lines: int = 5000) -> None:
        self.keep_lines = keep_lines

    def run(self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None) -> Result:
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except FileNotFoundError:
            raise EngineError(f"{argv[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise EngineError(
                f"`{' '.join(argv[:3])} ...` did not finish within {timeout:.0f}s",
                hint="is the engine stuck? `modelpod doctor` checks it",
            ) from None
        return Result(tuple(argv), done.returncode, done.stdout, done.stderr)

    def stream(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_line: Callable[[str], None],
        env: Mapping[str, str] | None = None,
    ) -> Result:
        try:
            process = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                errors="replace",
            )
        except FileNotFoundError:
            raise EngineError(f"{argv[0]} is not installed") from None
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            process.kill()

        # A daemon, started inside the try: a Ctrl-C that lands while it starts (`modelpod run` right after
        # "ready") once left a timer of a year running, and the interpreter waited for it at exit.
        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        lines: deque[str] = deque(maxlen=self.keep_lines)
        try:
            timer.start()
            for raw in process.stdout or ():
                line = raw.rstrip("\n")
                lines.append(line)
                on_line(line)
            process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:  # interrupted (Ctrl-C): do not leave the child behind
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if expired.is_set():
            raise EngineError(f"`{' '.join(argv[:3])} ...` did not finish within {timeout:.0f}s")
        return Result(tuple(argv), process.returncode, "\n".join(lines))
