"""The rendered dashboard and alert rules against a real Prometheus scraping a real `modelpod serve`.

One Prometheus (Debian's `prometheus`) and one server for the module. The server runs a custom model
(`CONDITIONS`) whose input picks what a request provokes, so that each alert's condition is brought
about by its own requests and none can trip another, even on a machine busy with other work (a busy
machine once pushed the p99 of quick requests over a 0.25 s threshold):
- a normal request answers at once;
- `x = -1` answers NaN: a 500, at once;
- `x >= 1000` sleeps x milliseconds: 2 s requests against a 1 s latency threshold, ten times anything
  the other phases' requests take, however loaded the machine.
Prometheus scrapes the server every second with the target labels a ServiceMonitor would give it
(namespace, pod), loads the rendered PrometheusRule's groups, and evaluates them every second. Then:

1. normal load: no alert is pending or firing;
2. errors (500s): ModelpodHighErrorRate fires, the other two do not;
3. slow requests: ModelpodHighLatencyP99 fires, and nothing was refused;
4. 64 callers of slow requests overflow the queue of 32 (503s): ModelpodRejectingRequests fires;
5. every query of the rendered dashboard returns data.

For the test only, the spec shortens the alerts' `for:` to 1s (kubernetes.monitoring.alert_for) and the
Prometheus config evaluates rules every second instead of every minute; the expressions are the rendered
ones, unchanged. The promtool rule tests (tests/deploy) prove each alert alone on synthetic series.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelpod.bench.loadgen import Load, run_step
from modelpod.bench.workload import Workload
from modelpod.deploy.render import render_manifests
from modelpod.specfile import load_spec
from tests.deploy.conftest import RENDER_IMAGE
from tests.prometheus_process import query, running_prometheus, wait_for
from tests.server_process import ServerProcess

NAMESPACE = "models"
ALERTS = ("ModelpodHighErrorRate", "ModelpodHighLatencyP99", "ModelpodRejectingRequests")
WAIT_S = 45  # the most any alert may take to fire once its condition holds


CONDITIONS = '''
import time

import numpy as np


class Conditions:
    """y = x + 1; x = -1 answers NaN (a 500); x >= 1000 sleeps x milliseconds first."""

    def predict(self, batch):
        x = batch["x"]
        if x.max() >= 1000:
            time.sleep(float(x.max()) / 1000)
        return {"y": np.where(x == -1, np.nan, x + 1).astype(np.float32)}
'''
NORMAL, FAILING, SLOW = {"inputs": {"x": 1.0}}, {"inputs": {"x": -1.0}}, {"inputs": {"x": 2000.0}}
MAX_P99_S = 1.0  # half of a slow request's 2 s


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A custom model with a small queue and short alert settings."""
    folder = tmp_path_factory.mktemp("conditions-monitored")
    (folder / "conditions.py").write_text(CONDITIONS)
    (folder / "example.json").write_text(json.dumps(NORMAL))
    spec = {
        "name": "conditions",
        "model": {"format": "custom", "class": "conditions:Conditions",
                  "signature": {"inputs": [{"name": "x", "dtype": "float32"}],
                                "outputs": [{"name": "y", "dtype": "float32"}]}},
        "examples": [{"name": "normal", "file": "example.json"}],
        "server": {"max_batch_size": 64, "max_queue": 32},
        "kubernetes": {
            "namespace": NAMESPACE,
            "monitoring": {"monitor": "servicemonitor", "alerts": True, "dashboard": True,
                           "alert_for": "1s", "max_error_ratio": 0.05, "max_p99_latency_s": MAX_P99_S,
                           "max_rejected_per_s": 0.1},
        },
    }  # fmt: skip
    (folder / "modelpod.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[ServerProcess]:
    with ServerProcess(project) as process:
        yield process


@pytest.fixture(scope="module")
def rendered(project: Path) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in render_manifests(load_spec(project), image=RENDER_IMAGE)}


@pytest.fixture(scope="module")
def prometheus(
    server: ServerProcess, rendered: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    # the labels the Prometheus Operator gives a ServiceMonitor's targets, which the queries use
    target = {server.url.removeprefix("http://"): {"namespace": NAMESPACE, "pod": "conditions-0"}}
    folder = tmp_path_factory.mktemp("prometheus")
    with running_prometheus(folder, target, rules=rendered["PrometheusRule"]["spec"]) as url:
        yield url


def alert_states(url: str) -> dict[str, str]:
    alerts = httpx.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return {alert["labels"]["alertname"]: alert["state"] for alert in alerts}


class Background:
    """Load on /predict, on a thread of its own until `stop`: `callers` in a closed loop, or `rate`
    requests per second (open loop)."""

    def __init__(self, url: str, body: dict[str, Any], *, callers: int = 0, rate: float = 0) -> None:
        workload = Workload("/predict", (json.dumps(body).encode(),), streaming=False)
        load = Load("closed", callers) if callers else Load("open", rate)
        step = run_step(url, workload, load, duration=300, warmup=0, timeout=30,
                        max_connections=callers or 64)  # fmt: skip
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
    # The quick requests are paced, so that the slow ones of phase 3 soon make more than 1% of the
    # latency window (5 minutes).
    # 1. normal load: some seconds of answered requests and evaluations, and no alert at all
    normal = Background(server.url, NORMAL, rate=25)
    wait_for(lambda: bool(query(prometheus, 'modelpod_requests_total{code="200",endpoint="/predict"} > 100')),
          30, lambda: "no answered requests scraped")  # fmt: skip
    for _ in range(8):
        assert alert_states(prometheus) == {}
        time.sleep(0.5)
    normal.stop()

    # 2. errors: only the error-rate alert
    errors = Background(server.url, FAILING, rate=25)
    wait_for(lambda: alert_states(prometheus).get("ModelpodHighErrorRate") == "firing", WAIT_S,
          lambda: str(alert_states(prometheus)))  # fmt: skip
    p99 = query(prometheus, rendered_p99(rendered))
    assert set(alert_states(prometheus)) == {"ModelpodHighErrorRate"}, p99
    errors.stop()

    # 3. latency: slow requests, fewer callers than the queue holds
    slow = Background(server.url, SLOW, callers=16)
    wait_for(lambda: alert_states(prometheus).get("ModelpodHighLatencyP99") == "firing", WAIT_S,
          lambda: str(alert_states(prometheus)) + str(query(prometheus, rendered_p99(rendered))))  # fmt: skip
    slow.stop()
    assert not query(prometheus, "modelpod_rejected_requests_total")  # nothing was refused so far

    # 4. overload: twice as many callers as the queue holds
    flood = Background(server.url, SLOW, callers=64)
    wait_for(lambda: alert_states(prometheus).get("ModelpodRejectingRequests") == "firing", WAIT_S,
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
