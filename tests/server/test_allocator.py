"""glibc's malloc thresholds (server/http/allocator.py): a block freed after one model call is reused by the
next one instead of being mapped again and faulted in page by page."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from modelpod.server.http.allocator import ENV, keep_freed_memory

# 200 "calls" on a thread of their own, as the server runs its model, each holding six arrays of 2 and
# 8 MB at once and freeing them, as a model does with its activations; prints the page faults they took
_CALLS = """
import resource, threading
import numpy as np
from modelpod.server.http.allocator import keep_freed_memory
keep_freed_memory()
def call():
    alive = [np.ones(n) for n in (250_000, 1_000_000, 1_000_000, 250_000, 1_000_000, 250_000)]
    return sum(a.sum() for a in alive)
def calls():
    call()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        call()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
model = threading.Thread(target=calls)
model.start()
model.join()
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")


def _faults(tuning: str) -> int:
    env = {**os.environ, ENV: tuning}
    done = subprocess.run(
        [sys.executable, "-c", _CALLS], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return int(done.stdout)


@glibc
def test_a_block_freed_by_one_call_is_reused_by_the_next():
    default, tuned = _faults("0"), _faults("1")
    # by default the thread's arena gives the freed 30 MB back after each call, and the next call faults
    # them in again
    assert default > 100_000
    assert tuned < default / 20


@glibc
def test_glibc_takes_the_thresholds():
    assert keep_freed_memory() is True


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(ENV, "0")
    assert keep_freed_memory() is False
