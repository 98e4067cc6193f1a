"""The servers a benchmark run compares: modelpod and its peers, each started the same way.

Every target is a process started on a free port with its log going to a file (never to a pipe that the
load generator's process would have to read), polled until ready, probed once, loaded, then stopped.
Peers live in virtual environments of their own (benchmarks/setup-peers.sh makes them under .bench/);
one that is not installed is skipped and the report says so.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "benchmarks" / "peer_services"
START_TIMEOUT = 300  # seconds; a server that is not ready by then fails the run


@dataclass(frozen=True)
class Target:
    name: str

    @property
    def venv(self) -> Path:
        if self.name == "modelpod":
            return Path(sys.executable).parent.parent
        return Path(os.environ.get(f"MODELPOD_BENCH_{self.name.upper()}_VENV", ROOT / ".bench" / self.name))

    @property
    def install_hint(self) -> str:
        return f"bash benchmarks/setup-peers.sh {self.name}"

    def available(self) -> bool:
        return (self.venv / "bin" / "python").exists()

    def command(self, example: str, port: int) -> list[str]:
        python = str(self.venv / "bin" / "python")
        if self.name == "modelpod":
            return [python, "-m", "modelpod", "serve", str(ROOT / "examples" / example), "--port", str(port)]
        if self.name == "bentoml":
            service = "Digits" if example == "digits" else "Minilm"
            return [
                str(self.venv / "bin" / "bentoml"),
                "serve",
                f"bentoml_service:{service}",
                "--working-dir",
                str(SERVICES),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
        return [python, str(SERVICES / "kserve_server.py"), "--example", example, "--http_port", str(port)]

    def ready_path(self, example: str) -> str:
        return {"modelpod": "/v2/health/ready", "bentoml": "/readyz"}.get(self.name, f"/v1/models/{example}")

    def request(self, example: str, item: dict[str, Any]) -> tuple[str, bytes]:
        """The endpoint and body each server documents for one item."""
        if self.name == "modelpod":
            return "/predict", orjson.dumps({"inputs": item})
        value = next(iter(item.values()))
        if self.name == "bentoml":
            field, path = ("images", "/predict") if example == "digits" else ("sentences", "/encode")
            return path, orjson.dumps({field: [value]})
        return f"/v1/models/{example}:predict", orjson.dumps({"instances": [value]})


TARGETS = {target.name: target for target in (Target("modelpod"), Target("bentoml"), Target("kserve"))}

LoadAll = Callable[[str, list[bytes], list[int], float, float], Awaitable[list[dict[str, Any]]]]


def bench_target(
    target: Target, example: str, items: list[dict[str, Any]], args: Any, load_all: LoadAll
) -> dict[str, Any]:
    port = free_port()
    requests = [target.request(example, item) for item in items]
    path = requests[0][0]
    bodies = [body for _, body in requests]
    env = {**os.environ, "MODELPOD_EXAMPLES": str(ROOT / "examples"), "HF_HUB_OFFLINE": "1"}
    log_path = args.out.parent / f"{target.name}-{example}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            target.command(example, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}{target.ready_path(example)}", process, log_path)
            probe = httpx.post(
                f"{base}{path}", content=bodies[0], headers={"content-type": "application/json"}, timeout=60
            )
            if probe.status_code != 200:
                raise RuntimeError(f"{target.name} answered {probe.status_code}: {probe.text[:500]}")
            rss = tree_rss_mb(process.pid)
            runs = asyncio.run(
                load_all(f"{base}{path}", bodies, args.concurrency, args.duration, args.warmup)
            )
            rss_after = tree_rss_mb(process.pid)
        finally:
            stop(process)
    return {
        "server": target.name,
        "endpoint": f"POST {path}",
        "rss_mb_idle": rss,
        "rss_mb_after": rss_after,
        "runs": runs,
    }


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (servers that fork workers count whole)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    total_kb, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return round(total_kb / 1024, 1)


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready; see {log_path}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server not ready within {START_TIMEOUT}s ({url}); see {log_path}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
