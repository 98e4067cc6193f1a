"""The rendered dashboard and alert rules against a real Prometheus scraping a real `modelpod serve`.

One Prometheus (Debian's `prometheus`) and one digits server for the module. Prometheus scrapes the server
every second with the target labels a ServiceMonitor would give it (namespace, pod), loads the rendered
PrometheusRule's groups, and evaluates them every second. Then, in order:

1. normal load: no alert is pending or firing;
2. requests whose outputs overflow to NaN (500s): ModelpodHighErrorRate fires, the other two do not;
3. 24 callers of 256-image requests queue behind each other: ModelpodHighLatencyP99 fires;
4. 64 such callers overflow the queue of 32 (503s): ModelpodRejectingRequests fires;
5. every query of the rendered dashboard returns data.

For the test only, the spec shortens the alerts' `for:` to 1s (kubernetes.monitoring.alert_for) and the
Prometheus config evaluates rules every second instead of every minute; the expressions are the rendered
ones, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelpod.bench.loadgen import Load, run_step
from modelpod.bench.workload import Workload
from modelpod.deploy.render import render_manifests
from modelpod.spec import load_spec
from tests.deploy.conftest import RENDER_IMAGE
from tests.server_process import ServerProcess
from tests.tools import need_tool

NAMESPACE = "models"
ALERTS = ("ModelpodHighErrorRate", "ModelpodHighLatencyP99", "ModelpodRejectingRequests")
WAIT_S = 45  # the most any alert may take to fire once its condition holds


@pytest.fixture(scope="module")
def project(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/digits with a small queue and short alert settings."""
    folder = tmp_path_factory.mktemp("digits-monitored")
    (folder / "model").mkdir()
    shutil.copy(digits_dir / "model" / "digits.onnx", folder / "model")  # copies: links may not leave it
    shutil.copy(digits_dir / "example.json", folder)
    spec = yaml.safe_load((digits_dir / "modelpod.yaml").read_text())
    spec.pop("profiles")
    spec["server"] = {"max_batch_size": 64, "max_queue": 32}
    spec["kubernetes"] = {
        "namespace": NAMESPACE,
        "monitoring": {"monitor": "servicemonitor", "alerts": True, "dashboard": True, "alert_for": "1s",
                       "max_error_ratio": 0.05, "max_p99_latency_s": 0.25, "max_rejected_per_s": 0.1},
    }  # fmt: skip
    (folder / "modelpod.yaml").write_text(yaml.safe_dump(spec))
    return folder


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[ServerProcess]:
    with ServerProcess(project) as process:
        yield process


@pytest.fixture(scope="module")
def rendered(project: Path) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in render_manifests(load_spec(project), image=RENDER_IMAGE)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(
    server: ServerProcess, rendered: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    binary = need_tool("prometheus", "install Debian's prometheus package (../shared/ci/engine-up does)")
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "rules.yaml").write_text(yaml.safe_dump(rendered["PrometheusRule"]["spec"]))
    target = server.url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(folder / "rules.yaml")],
        "scrape_configs": [{
            "job_name": "modelpod",
            # the labels the Prometheus Operator gives a ServiceMonitor's targets, which the queries use
            "static_configs": [{"targets": [target], "labels": {"namespace": NAMESPACE, "pod": "digits-0"}}],
        }],
    }  # fmt: skip
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{_free_port()}"
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address={url.removeprefix('http://')}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait(lambda: _ready(url), 60, lambda: (folder / "prometheus.log").read_text()[-3000:])
        _wait(lambda: bool(query(url, "up == 1")), 30, lambda: "the server's target is not up")
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(condition: Callable[[], bool], timeout: float, explain: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s: {explain()}")


def query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def alert_states(url: str) -> dict[str, str]:
    alerts = httpx.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return {alert["labels"]["alertname"]: alert["state"] for alert in alerts}


class Background:
    """A closed loop of `callers` sending `bodies` to /predict, on a thread of its own until `stop`."""

    def __init__(self, url: str, bodies: list[dict[str, Any]], callers: int) -> None:
        workload = Workload("/predict", tuple(json.dumps(b).encode() for b in bodies), streaming=False)
        step = run_step(url, workload, Load("closed", callers), duration=300, warmup=0, timeout=30,
                        max_connections=callers)  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self.task = self.loop.create_task(step)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.task)
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(60)
        assert not self.thread.is_alive()


def test_alerts_fire_on_their_conditions_and_the_dashboard_has_data(
    server: ServerProcess, prometheus: str, rendered: dict[str, dict[str, Any]], project: Path
) -> None:
    example = json.loads((project / "example.json").read_text())["inputs"]
    overflow = {"inputs": {"image": [[[3e38]] * 8] * 8}}  # the network's outputs overflow: NaN, a 500
    heavy = {"instances": [example] * 256}

    # 1. normal load: some seconds of answered requests and evaluations, and no alert at all
    normal = Background(server.url, [{"inputs": example}], callers=1)
    _wait(lambda: bool(query(prometheus, 'modelpod_requests_total{code="200",endpoint="/predict"} > 100')),
          30, lambda: "no answered requests scraped")  # fmt: skip
    for _ in range(8):
        assert alert_states(prometheus) == {}
        time.sleep(0.5)
    normal.stop()

    # 2. errors: only the error-rate alert
    errors = Background(server.url, [overflow], callers=2)
    _wait(lambda: alert_states(prometheus).get("ModelpodHighErrorRate") == "firing", WAIT_S,
          lambda: str(alert_states(prometheus)))  # fmt: skip
    assert set(alert_states(prometheus)) == {"ModelpodHighErrorRate"}
    errors.stop()

    # 3. latency: heavy requests wait in the queue behind each other
    slow = Background(server.url, [heavy], callers=24)
    _wait(lambda: alert_states(prometheus).get("ModelpodHighLatencyP99") == "firing", WAIT_S,
          lambda: str(alert_states(prometheus)) + str(query(prometheus, rendered_p99(rendered))))  # fmt: skip
    slow.stop()
    assert not query(prometheus, "modelpod_rejected_requests_total")  # nothing was refused so far

    # 4. overload: twice as many callers as the queue holds
    flood = Background(server.url, [heavy], callers=64)
    _wait(lambda: alert_states(prometheus).get("ModelpodRejectingRequests") == "firing", WAIT_S,
          lambda: str(alert_states(prometheus)) + str(query(prometheus, "modelpod_rejected_requests_total"))
          + str(query(prometheus, "modelpod_requests_total")))  # fmt: skip
    flood.stop()

    # 5. every panel's query has data now
    dashboard = json.loads(next(iter(rendered["ConfigMap"]["data"].values())))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            result = query(prometheus, target["expr"])
            values = [float(sample["value"][1]) for sample in result]
            assert any(math.isfinite(v) for v in values), f"{panel['title']}: {target['expr']} -> {result}"


def rendered_p99(rendered: dict[str, dict[str, Any]]) -> str:
    rules = rendered["PrometheusRule"]["spec"]["groups"][0]["rules"]
    expr: str = next(r["expr"] for r in rules if r["alert"] == "ModelpodHighLatencyP99")
    return expr.split(" > ")[0]


def test_the_rendered_rules_are_the_three_alerts(rendered: dict[str, dict[str, Any]]) -> None:
    rules = rendered["PrometheusRule"]["spec"]["groups"][0]["rules"]
    assert tuple(rule["alert"] for rule in rules) == ALERTS  # the live test above covers each of them
