"""SubprocessRunner.stream on real child processes: lines as they come, the timeout, and Ctrl-C."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

from modelpod.images.errors import EngineError
from modelpod.images.runner import SubprocessRunner

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_stream_hands_over_each_line_and_merges_stderr() -> None:
    seen: list[str] = []
    script = "import sys; print('one', flush=True); print('two', file=sys.stderr, flush=True); sys.exit(3)"
    result = SubprocessRunner().stream([sys.executable, "-c", script], timeout=30, on_line=seen.append)
    assert seen == ["one", "two"]
    assert result.returncode == 3
    assert result.stdout == "one\ntwo"


def test_stream_kills_a_child_that_outlives_the_timeout() -> None:
    with pytest.raises(EngineError, match="did not finish within 1s"):
        SubprocessRunner().stream(SLEEPER, timeout=1, on_line=lambda _: None)


def test_ctrl_c_as_the_stream_starts_leaves_no_child_and_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """`modelpod run` streams the container's log right after printing "ready"; a Ctrl-C that landed as
    the stream's timeout timer started once left the timer (a year long, not a daemon) and the child
    running, and the process hung at exit. Here the Ctrl-C lands just after the timer has started."""
    children: list[subprocess.Popen[Any]] = []
    timers: list[threading.Timer] = []
    real_popen, real_start = subprocess.Popen, threading.Timer.start

    def recording_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        children.append(real_popen(*args, **kwargs))
        return children[-1]

    def start_then_ctrl_c(timer: threading.Timer) -> None:
        real_start(timer)
        timers.append(timer)
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    monkeypatch.setattr(threading.Timer, "start", start_then_ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            SubprocessRunner().stream(SLEEPER, timeout=3600, on_line=lambda _: None)
        (child,) = children
        (timer,) = timers
        timer.join(timeout=5)
        assert not timer.is_alive(), "the timeout timer outlived the interrupted stream"
        assert child.poll() is not None, "the child outlived the interrupted stream"
    finally:  # when it fails, leave neither behind: a live timer would hold pytest at exit
        for timer in timers:
            timer.cancel()
        for child in children:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
