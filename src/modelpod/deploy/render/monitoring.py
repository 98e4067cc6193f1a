"""Prometheus Operator objects (ServiceMonitor or PodMonitor, PrometheusRule) and a Grafana dashboard.

Queries use the metric names the server exports (server/core/metrics.py); prometheus_client adds `_total`
to counters and `_bucket` to histogram series.
"""

from __future__ import annotations

import json
from typing import Any

from modelpod import contract
from modelpod.deploy.render.image import ImageRef
from modelpod.deploy.render.labels import MONITORING, metadata, selector_labels
from modelpod.deploy.render.workload import PORT_NAME
from modelpod.specfile.resolved import Spec

RATE_WINDOW = "5m"
REQUESTS = contract.total(contract.REQUESTS)
REJECTED = contract.total(contract.REJECTED_REQUESTS)
DURATION_BUCKETS = contract.bucket(contract.REQUEST_DURATION)
BATCH_BUCKETS = contract.bucket(contract.BATCH_SIZE)


def _series(spec: Spec) -> str:
    return f'namespace="{spec.kubernetes.namespace}",model="{spec.name}"'


def render_monitor(spec: Spec, image: ImageRef) -> dict[str, Any]:
    monitoring = spec.kubernetes.monitoring
    endpoint = {"port": PORT_NAME, "path": contract.METRICS, "interval": monitoring.scrape_interval}
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(spec)},
        "namespaceSelector": {"matchNames": [spec.kubernetes.namespace]},
    }
    if monitoring.monitor == "servicemonitor":
        kind, body["endpoints"] = "ServiceMonitor", [endpoint]
    else:
        kind, body["podMetricsEndpoints"] = "PodMonitor", [endpoint]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": kind,
        "metadata": metadata(spec, image, component=MONITORING, labels=dict(monitoring.labels)),
        "spec": body,
    }


def alert_rules(spec: Spec) -> list[dict[str, Any]]:
    m = spec.kubernetes.monitoring
    s, w = _series(spec), RATE_WINDOW
    requests = f"sum(rate({REQUESTS}{{{s}}}[{w}]))"
    errors = f'sum(rate({REQUESTS}{{{s},code=~"5.."}}[{w}]))'
    p99 = f"histogram_quantile(0.99, sum by (le) (rate({DURATION_BUCKETS}{{{s}}}[{w}])))"
    rejected = f"sum(rate({REJECTED}{{{s}}}[{w}]))"

    def alert(name: str, expr: str, summary: str) -> dict[str, Any]:
        return {
            "alert": name,
            "expr": expr,
            "for": m.alert_for,
            "labels": {"severity": "warning"},
            "annotations": {"summary": f"{spec.name}: {summary}"},
        }

    return [
        alert("ModelpodHighErrorRate", f"{errors} / {requests} > {m.max_error_ratio}",
              f"more than {m.max_error_ratio:.0%} of requests fail with 5xx"),
        alert("ModelpodHighLatencyP99", f"{p99} > {m.max_p99_latency_s}",
              f"p99 latency above {m.max_p99_latency_s} s"),
        alert("ModelpodRejectingRequests", f"{rejected} > {m.max_rejected_per_s}",
              f"more than {m.max_rejected_per_s} requests/s refused (queue full, deadline, body size)"),
    ]  # fmt: skip


def render_prometheus_rule(spec: Spec, image: ImageRef) -> dict[str, Any]:
    labels = dict(spec.kubernetes.monitoring.labels)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata(spec, image, component=MONITORING, labels=labels),
        "spec": {"groups": [{"name": f"{spec.name}.rules", "rules": alert_rules(spec)}]},
    }


def dashboard(spec: Spec) -> dict[str, Any]:
    s, w = _series(spec), RATE_WINDOW
    buckets = f"sum by (le) (rate({DURATION_BUCKETS}{{{s}}}[{w}]))"
    panels = [
        ("Requests per second by code", [f"sum by (code) (rate({REQUESTS}{{{s}}}[{w}]))"]),
        ("Latency p50 and p99 (s)",
         [f"histogram_quantile(0.5, {buckets})", f"histogram_quantile(0.99, {buckets})"]),
        ("In-flight requests per pod", [f"sum by (pod) ({contract.INFLIGHT_REQUESTS}{{{s}}})"]),
        ("Queue depth per pod", [f"sum by (pod) ({contract.QUEUE_DEPTH}{{{s}}})"]),
        ("Batch size p50",
         [f"histogram_quantile(0.5, sum by (le) (rate({BATCH_BUCKETS}{{{s}}}[{w}])))"]),
        ("Rejected per second by reason",
         [f"sum by (reason) (rate({REJECTED}{{{s}}}[{w}]))"]),
    ]  # fmt: skip
    if spec.engine is not None:
        panels += generation_panels(s)
    return {
        "title": f"modelpod: {spec.name}",
        "uid": f"modelpod-{spec.name}"[:40],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "panels": [
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "gridPos": {"x": (i % 2) * 12, "y": (i // 2) * 8, "w": 12, "h": 8},
                "targets": [{"expr": expr, "refId": "AB"[j]} for j, expr in enumerate(exprs)],
            }
            for i, (title, exprs) in enumerate(panels)
        ],
    }


def generation_panels(series: str) -> list[tuple[str, list[str]]]:
    """A language model's panels, from the metrics every engine reports under modelpod's names
    (docs/engines.md): time to first token, inter-token latency, tokens, sequences, the KV cache."""
    s, w = series, RATE_WINDOW

    def p50_p99(histogram: str) -> list[str]:
        buckets = f"sum by (le) (rate({contract.bucket(histogram)}{{{s}}}[{w}]))"
        return [f"histogram_quantile(0.5, {buckets})", f"histogram_quantile(0.99, {buckets})"]

    prompt, generated = contract.total(contract.PROMPT_TOKENS), contract.total(contract.GENERATION_TOKENS)
    return [
        ("Time to first token p50 and p99 (s)", p50_p99(contract.TIME_TO_FIRST_TOKEN)),
        ("Inter-token latency p50 and p99 (s)", p50_p99(contract.INTER_TOKEN_LATENCY)),
        ("Tokens per second: prompt and generated",
         [f"sum(rate({prompt}{{{s}}}[{w}]))", f"sum(rate({generated}{{{s}}}[{w}]))"]),
        ("Sequences: running and waiting",
         [f"sum({contract.RUNNING_SEQUENCES}{{{s}}})", f"sum({contract.WAITING_SEQUENCES}{{{s}}})"]),
        ("KV cache in use per pod (share of its budget)",
         [f"max by (pod) ({contract.KV_CACHE_USAGE}{{{s}}})"]),
    ]  # fmt: skip


def render_dashboard_config_map(spec: Spec, image: ImageRef) -> dict[str, Any]:
    # grafana_dashboard: the label Grafana's dashboard sidecar (kube-prometheus-stack) watches for
    labels = {"grafana_dashboard": "1", **spec.kubernetes.monitoring.labels}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(spec, image, name=f"{spec.name}-dashboard", component=MONITORING, labels=labels),
        "data": {f"{spec.name}.json": json.dumps(dashboard(spec), indent=2, sort_keys=True)},
    }
