"""The lock-free request metrics expose exactly what prometheus_client's own Histogram and Counter would
for the same observations (server/http/request_stats.py)."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelpod.server.core.metrics import _LATENCY_BUCKETS, Metrics
from modelpod.server.http.request_stats import DURATION, REQUESTS, RequestStats

OBSERVATIONS = [
    ("/predict", 200, 0.0012),
    ("/predict", 200, 0.001),  # on a bound: counted in that bound's bucket
    ("/predict", 200, 0.0),
    ("/predict", 422, 0.3),
    ("/v2/models/{name}/infer", 200, 61.0),  # past the last bound: +Inf only
]


def _without_created_values(text: str) -> str:
    # the creation times differ by the microseconds between the two registries' first observations
    return re.sub(r"_created(\{.*?\}) \S+", r"_created\1 T", text)


def test_the_exposition_equals_the_client_librarys() -> None:
    theirs = CollectorRegistry(auto_describe=True)
    labels = ["model", "endpoint", "code"]
    duration = Histogram(DURATION, "Time from request received to response sent.", labels,
                         buckets=_LATENCY_BUCKETS, registry=theirs)  # fmt: skip
    requests = Counter(REQUESTS, "Requests answered.", labels, registry=theirs)
    ours = CollectorRegistry(auto_describe=True)
    stats = RequestStats("digits", _LATENCY_BUCKETS)
    ours.register(stats)
    for endpoint, code, seconds in OBSERVATIONS:
        duration.labels("digits", endpoint, str(code)).observe(seconds)
        requests.labels("digits", endpoint, str(code)).inc()
        stats.observe(endpoint, code, seconds)
    expected = _without_created_values(generate_latest(theirs).decode())
    assert _without_created_values(generate_latest(ours).decode()) == expected
    assert 'modelpod_requests_total{code="200",endpoint="/predict",model="digits"} 3.0' in expected


def test_the_servers_metrics_count_requests_by_endpoint_and_code() -> None:
    metrics = Metrics("digits", max_batch_size=8)
    for _ in range(3):
        metrics.observe_request("/predict", 200, 0.002)
    metrics.observe_request("/predict", 503, 0.0001)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    totals = {(s.labels["endpoint"], s.labels["code"]): s.value
              for s in families[REQUESTS].samples if s.name == f"{REQUESTS}_total"}  # fmt: skip
    assert totals == {("/predict", "200"): 3.0, ("/predict", "503"): 1.0}
    buckets = {s.labels["le"]: s.value for s in families[DURATION].samples
               if s.name.endswith("_bucket") and s.labels["code"] == "200"}  # fmt: skip
    assert (buckets["0.001"], buckets["0.0025"], buckets["+Inf"]) == (0.0, 3.0, 3.0)
