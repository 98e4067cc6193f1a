"""A real Prometheus (Debian's `prometheus`) for tests: scraping given targets every second with the labels
a ServiceMonitor would give them, loading rule files, evaluating every second; and its query API."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.tools import need_tool

START_TIMEOUT_S = 60


@contextlib.contextmanager
def running_prometheus(
    folder: Path, targets: dict[str, dict[str, str]], rules: dict[str, Any] | None = None
) -> Iterator[str]:
    """Prometheus scraping `targets` (host:port -> labels) into `folder`; yields its URL once every
    target is up. `rules`: a rule file's content (a PrometheusRule's spec)."""
    binary = need_tool("prometheus", "install Debian's prometheus package (../shared/ci/engine-up does)")
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "modelpod",
            "static_configs": [{"targets": [target], "labels": labels} for target, labels in targets.items()],
        }],
    }  # fmt: skip
    if rules is not None:
        (folder / "rules.yaml").write_text(yaml.safe_dump(rules))
        config["rule_files"] = [str(folder / "rules.yaml")]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{_free_port()}"
    with (folder / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address={url.removeprefix('http://')}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for(
                lambda: _ready(url), START_TIMEOUT_S, lambda: (folder / "prometheus.log").read_text()[-3000:]
            )
            wait_for(lambda: len(query(url, "up == 1")) == len(targets), 30, lambda: "a target is not up")
            yield url
        finally:
            process.terminate()
            process.wait(30)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def wait_for(condition: Callable[[], bool], timeout: float, explain: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s: {explain()}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
