"""The leader of an external engine's process group: it runs the engine, and takes the whole group down
when it is told to stop, when modelpod dies, or when the engine exits.

    python group_guard.py GRACE_S ARGV...

modelpod starts this script (with the standard library only, so it starts in a few milliseconds) in a
session of its own with a parent-death signal, SIGTERM: even when modelpod is killed outright, the guard
is told. A parent-death signal reaches only the process that asked for it, and an engine's own children
do not always follow their parent: vLLM's API server, stopped that way, left its engine-core and worker
processes running here, holding 3 GB. So the guard, not the engine, gets the signal and passes it to the
whole group: SIGTERM to every member, SIGKILL after GRACE_S to what is left. When the engine exits by
itself, what it left in the group is stopped the same way, and the guard exits with the engine's status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType


def group_members() -> list[int]:
    """The live processes of this process group other than this one (from /proc)."""
    group, me = os.getpgid(0), os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:  # ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command, which may hold spaces
        state, process_group = fields[0], int(fields[2])
        if process_group == group and state != "Z":
            found.append(int(entry.name))
    return found


def stop_group(engine: subprocess.Popen[bytes], grace_s: float) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        engine.poll()  # reaps the engine, so that it does not linger as a zombie of the group
        if not group_members():
            return
        time.sleep(0.1)
    for pid in group_members():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    grace_s, command = float(argv[0]), argv[1:]
    engine = subprocess.Popen(command)  # the same process group; its output goes where the guard's does

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        stop_group(engine, grace_s)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_stop)
    code = engine.wait()
    stop_group(engine, grace_s)  # whatever the engine left behind
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
