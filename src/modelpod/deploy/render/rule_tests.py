"""Unit tests for the rendered alert rules, in `promtool test rules` form.

Each alert gets two cases over synthetic series with the labels the server exports: one where its
condition holds for longer than its `for:` (it must fire, with its labels and summary, and no other
alert may), and one of healthy traffic (nothing fires). The values are derived from the spec's
thresholds, so the tests follow the spec: a rule edited into something that no longer fires on its own
condition, or fires on healthy traffic, fails them. `modelpod render -o DIR` writes them next to the
rules (`prometheus/rules.yaml`, `prometheus/rules.test.yaml`) for `promtool test rules` in the user's CI.
"""

from __future__ import annotations

import re
from typing import Any

from modelpod import contract
from modelpod.deploy.render.monitoring import alert_rules
from modelpod.specfile.resolved import Spec

RULES_FILE = "rules.yaml"
_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_INTERVAL_S = 60  # one sample a minute, and rules evaluated as often


def rules_file(spec: Spec) -> dict[str, Any]:
    """The rules as a Prometheus rule file (what the PrometheusRule's `spec` holds)."""
    return {"groups": [{"name": f"{spec.name}.rules", "rules": alert_rules(spec)}]}


def rule_tests(spec: Spec) -> dict[str, Any]:
    """A `promtool test rules` file for `rules_file(spec)`, saved as RULES_FILE beside it."""
    monitoring = spec.kubernetes.monitoring
    # long enough for the 5-minute rate window to fill and the alert's `for:` to pass, with a margin
    minutes = 10 + _whole_minutes(monitoring.alert_for)
    labels = {"namespace": spec.kubernetes.namespace, "model": spec.name}
    healthy = _requests(labels, minutes, ok_per_s=1.0, errors_per_s=0.0) + _latency(
        labels, minutes, threshold=monitoring.max_p99_latency_s, slow=False
    )
    cases: list[dict[str, Any]] = [_case("healthy traffic: no alert", healthy, minutes, spec, firing=None)]

    ratio = monitoring.max_error_ratio
    if ratio < 1:  # a ratio of 1 cannot be exceeded: that alert is off
        errors_per_s = 2 * ratio / (1 - ratio)  # errors / all = 2 ratio / (1 + ratio) > ratio
        failing = _requests(labels, minutes, ok_per_s=1.0, errors_per_s=errors_per_s)
        series = failing + _latency(labels, minutes, threshold=monitoring.max_p99_latency_s, slow=False)
        cases.append(
            _case("5xx answers over the ratio", series, minutes, spec, firing="ModelpodHighErrorRate")
        )
    slow = healthy[:2] + _latency(labels, minutes, threshold=monitoring.max_p99_latency_s, slow=True)
    cases.append(
        _case("answers slower than the p99 limit", slow, minutes, spec, firing="ModelpodHighLatencyP99")
    )
    refused = {**labels, "reason": "queue_full"}
    rejected = [
        _counter(
            contract.total(contract.REJECTED_REQUESTS), refused, minutes, 2 * monitoring.max_rejected_per_s
        )
    ]
    cases.append(
        _case(
            "requests refused over the limit",
            healthy + rejected,
            minutes,
            spec,
            firing="ModelpodRejectingRequests",
        )
    )
    return {"rule_files": [RULES_FILE], "evaluation_interval": f"{_INTERVAL_S}s", "tests": cases}


def _case(
    name: str, series: list[dict[str, str]], minutes: int, spec: Spec, *, firing: str | None
) -> dict[str, Any]:
    rules = {rule["alert"]: rule for rule in alert_rules(spec)}
    checks = []
    for alert, rule in rules.items():
        expected = []
        if alert == firing:
            expected = [{"exp_labels": {**rule["labels"]}, "exp_annotations": dict(rule["annotations"])}]
        checks.append({"eval_time": f"{minutes}m", "alertname": alert, "exp_alerts": expected})
    return {"name": name, "interval": f"{_INTERVAL_S}s", "input_series": series, "alert_rule_test": checks}


def _requests(
    labels: dict[str, str], minutes: int, *, ok_per_s: float, errors_per_s: float
) -> list[dict[str, str]]:
    base = {**labels, "endpoint": contract.PREDICT}
    requests = contract.total(contract.REQUESTS)
    return [
        _counter(requests, {**base, "code": "200"}, minutes, ok_per_s),
        _counter(requests, {**base, "code": "500"}, minutes, errors_per_s),
    ]


def _latency(labels: dict[str, str], minutes: int, *, threshold: float, slow: bool) -> list[dict[str, str]]:
    """Request durations in two buckets around the p99 limit: every answer in the lower one (p99 about
    half the limit), or every answer in the upper one (p99 near four times it)."""
    base = {**labels, "endpoint": contract.PREDICT}
    name = contract.bucket(contract.REQUEST_DURATION)
    fast_le, slow_le = f"{threshold / 2:g}", f"{threshold * 4:g}"
    return [
        _counter(name, {**base, "le": fast_le}, minutes, 0.0 if slow else 1.0),
        _counter(name, {**base, "le": slow_le}, minutes, 1.0),
        _counter(name, {**base, "le": "+Inf"}, minutes, 1.0),
    ]


def _counter(name: str, labels: dict[str, str], minutes: int, per_s: float) -> dict[str, str]:
    """A counter rising by `per_s` a second, sampled once a minute, in promtool's expanding notation."""
    selector = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return {"series": f"{name}{{{selector}}}", "values": f"0+{per_s * _INTERVAL_S:g}x{minutes}"}


def _whole_minutes(duration: str) -> int:
    match = _DURATION.match(duration)
    if match is None:  # the spec's pattern admits nothing else
        raise ValueError(f"not a duration: {duration!r}")
    seconds = int(match.group(1)) * _SECONDS[match.group(2)]
    return -(-int(seconds) // 60)
