"""A real `modelpod serve` process on port 0: URL read from its log, readiness polled, every wait bounded.

On any failure the server's own log is attached to the assertion message, so a test failure explains itself.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx

_URL = re.compile(r"https?://127\.0\.0\.1:(\d+)")


class ServerProcess:
    def __init__(
        self, spec: Path, *args: str, env: dict[str, str] | None = None, start_timeout: float = 120
    ) -> None:
        self.project = spec
        self.command = [sys.executable, "-m", "modelpod", "serve", str(spec), "--port", "0", *args]
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.lines: list[str] = []
        self.url = ""
        self._url_found = threading.Event()
        self.process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def start(self, *, ready: bool = True) -> ServerProcess:
        """Start; wait for the URL in the log (uvicorn is up), then for readiness unless `ready` is False."""
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._url_found.wait(self.start_timeout):
            self.stop()
            raise AssertionError(f"server printed no URL within {self.start_timeout}s:\n{self.log}")
        if not self.url:  # the reader reached the end of the output: the server exited first
            self.stop()
            raise AssertionError(f"server exited with {self.process.returncode} before serving:\n{self.log}")
        if ready:
            self.wait_ready(self.start_timeout)
        return self

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            match = _URL.search(line)
            if match and not self._url_found.is_set():
                self.url = f"http://127.0.0.1:{match.group(1)}"
                self._url_found.set()
        self.process.wait()
        self._url_found.set()  # end of output: wake `start`, which sees that no URL came

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout}s:\n{self.log}")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit code (killing the process if it overstays)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"server did not exit within {timeout}s of SIGTERM:\n{self.log}") from None
        self._close()
        return code

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close()

    def _close(self) -> None:
        """After exit: let the reader drain the last lines, then close the pipe."""
        if self._reader is not None:
            self._reader.join(5)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
