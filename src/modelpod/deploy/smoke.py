"""The smoke test after a rollout: the spec's examples through the Service, via the API server's proxy.

Going through `/api/v1/namespaces/NS/services/NAME:PORT/proxy/predict` needs no port-forward, Ingress
or LoadBalancer, and exercises the Service's selector and port as clients will. Outputs are compared
with the examples' expected ones by the same function `modelpod predict` uses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from modelpod.deploy.cluster import Cluster, Manifest, ProxyResponse
from modelpod.deploy.rollout import Waiting
from modelpod.specfile.example_answers import compare_outputs, example_outputs, example_request
from modelpod.specfile.resolved import Example

# Statuses with which the proxy says it reached no ready endpoint (yet).
_NOT_SERVED = (502, 503, 504)
_UNREACHABLE_HINT = (
    "the API server's service proxy could not reach the pods; where a NetworkPolicy enforcer blocks "
    "the control plane from the serving port, admit its addresses with "
    "kubernetes.network_policy.allow_from (e.g. - {cidr: 172.18.0.0/16}), or deploy with --no-smoke-test"
)


class _Steps(Protocol):
    def step(self, message: str) -> None: ...


def smoke_test(
    cluster: Cluster,
    manifests: Sequence[Manifest],
    examples: Sequence[Example],
    *,
    timeout_s: float,
    waiting: Waiting,
    report: _Steps,
) -> tuple[str | None, tuple[str, ...]]:
    """POST each example to the release's Service; (what went wrong or None, names of passed examples)."""
    services = [m for m in manifests if m["kind"] == "Service" and m["apiVersion"] == "v1"]
    if not services:
        report.step("smoke test skipped: the release has no Service to send the examples to")
        return None, ()
    service = services[0]
    port = service["spec"]["ports"][0]
    port_ref = str(port.get("name") or port["port"])
    report.step(f"smoke test: {len(examples)} example(s) through Service/{service['metadata']['name']}")
    problems, passed, unreachable = [], [], False
    for example in examples:
        path, body = example_request(example)
        status, text = _post_until_served(
            cluster, service, port_ref, path, body, timeout_s=timeout_s, waiting=waiting
        )
        if status != 200:
            problems.append(f"example {example.name!r}: HTTP {status}: {text[:500]}")
            unreachable |= status in _NOT_SERVED
            continue
        mismatches = compare_outputs(example, example_outputs(example, _json(text)))
        problems += [f"example {example.name!r}: {problem}" for problem in mismatches]
        if not mismatches:
            passed.append(example.name)
    if not problems:
        return None, tuple(passed)
    if unreachable:  # the pods passed their readiness probes, yet the API server could not reach them
        problems.append(_UNREACHABLE_HINT)
    where = f"Service/{service['metadata']['name']} port {port_ref}"
    return f"smoke test through {where}:\n  " + "\n  ".join(problems), ()


def _post_until_served(
    cluster: Cluster,
    service: Manifest,
    port: str,
    path: str,
    body: dict[str, Any],
    *,
    timeout_s: float,
    waiting: Waiting,
) -> tuple[int, str]:
    """Retry while the proxy reaches no ready endpoint, up to `timeout_s` in all."""
    deadline = waiting.clock() + timeout_s

    def post() -> ProxyResponse:
        return cluster.proxy(
            "POST",
            namespace=service["metadata"]["namespace"],
            service=service["metadata"]["name"],
            port=port,
            path=path,
            json_body=body,
            timeout=max(0.1, deadline - waiting.clock()),
        )

    response = waiting.poll(post, until=lambda answer: answer.status not in _NOT_SERVED, deadline=deadline)
    return response.status, response.body.decode(errors="replace")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
