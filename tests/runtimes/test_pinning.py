"""Pinning a PyTorch model's intra-op threads (runtimes/_pinning.py), in child processes: the pins are
per thread and would outlive a test run in pytest's own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from modelpod.runtimes._pinning import ENV

pytest.importorskip("torch")

# Runs `pin_torch_threads` on a new thread (or the main one) of a process held to two CPUs, then prints
# which CPUs every thread of the process may run on. SETUP (Python) runs on that thread before the call.
_CHILD = """
import json, os, sys, threading
import torch
from modelpod.runtimes._pinning import pin_torch_threads
cpus = sorted(os.sched_getaffinity(0))[:2]
os.sched_setaffinity(0, cpus)  # threads started from here on inherit the two CPUs
threads = int(sys.argv[1])
result = {}
def model_thread():
    torch.set_num_threads(threads)
    exec(sys.argv[2])
    result["pinned"] = pin_torch_threads(torch, threads)
    torch.ones(1_000_000).add_(1)  # parallel work after the call, as a model's first batch
    result["model"] = threading.get_native_id()
    result["allowed"] = {
        tid: open(f"/proc/self/task/{tid}/status").read().split("Cpus_allowed_list:")[1].split()[0]
        for tid in os.listdir("/proc/self/task")
    }
if sys.argv[3] == "main":
    model_thread()
else:
    worker = threading.Thread(target=model_thread)
    worker.start()
    worker.join()
result["cpus"] = cpus
print(json.dumps(result))
"""


def _run(threads: int, setup: str = "", pin: str = "1", thread: str = "new") -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(threads), setup, thread],
        env={**os.environ, ENV: pin},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _single_cpu_threads(result: dict) -> dict[int, int]:
    return {int(tid): int(allowed) for tid, allowed in result["allowed"].items() if allowed.isdigit()}


def test_the_model_thread_and_its_openmp_worker_are_pinned_one_to_each_cpu():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("this test needs a machine with at least 2 CPUs, as CI has")
    result = _run(2)
    first, second = result["cpus"]
    assert result["pinned"] == [first, second]
    pinned = _single_cpu_threads(result)
    assert pinned.pop(result["model"]) == first
    assert list(pinned.values()) == [second]  # torch's one worker; no other thread, the main one included


@pytest.mark.parametrize(
    ("threads", "setup", "pin", "thread"),
    [
        (1, "", "1", "new"),  # one thread: nothing to spread
        (3, "", "1", "new"),  # more threads than the process's 2 CPUs: a quota, not a cpuset of its own
        (2, "", "0", "new"),  # turned off
        (2, "torch.ones(1_000_000).add_(1)", "1", "new"),  # the team started before: workers unknown
        (2, "", "1", "main"),  # its one CPU would pass to every thread and process it starts later
    ],
    ids=["one-thread", "threads-not-cpus", "turned-off", "team-started-before", "main-thread"],
)
def test_nothing_is_pinned_where_pinning_does_not_apply(threads, setup, pin, thread):
    result = _run(threads, setup, pin, thread)
    assert result["pinned"] is None
    assert _single_cpu_threads(result) == {}
