"""`modelpod plan`: replicas, resources and autoscaling targets from a bench result and an SLO.

A pure function of its inputs (no clock, no network), so it is tested with exact numbers:

1. The operating point: of the steps whose p99 is within the SLO and whose error rate is within the
   limit, the one with the most answered requests per second. Its throughput is one replica's capacity.
2. Replicas: enough replicas at that capacity for the expected rate, plus one, so that losing a replica
   (a node drain, a crash, a rollout's old pod) still meets the SLO. `max_replicas` covers the peak rate
   the same way.
3. CPU: the server's CPU use at the operating point (from its process metrics), plus `cpu_margin`,
   rounded up to a tenth of a core. The CPU autoscaling target is the operating point's use as a percent
   of that request, so the autoscaler adds a replica when the average replica works as hard as the one
   measured at capacity. The in-flight target (`scaling.target_concurrency`) is the operating point's
   requests in flight (Little's law: throughput x mean latency).
4. Memory: the largest resident memory seen in any step, plus `memory_margin`, rounded up to 64 MiB.
5. Rollout: the rendered Deployment surges one pod at a time (`maxSurge: 1`, `maxUnavailable: 0`), so a
   rollout takes replicas / surge waves of one start-up (process start to ready, measured by the server)
   plus up to one readiness-probe period before the kubelet sees the pod ready.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modelpod.errors import ModelpodError

MIB = 1024 * 1024
MEMORY_STEP_BYTES = 64 * MIB
ROLLOUT_SURGE = 1  # deploy/render/workload.py: maxSurge 1, maxUnavailable 0
READINESS_PERIOD_S = 5  # deploy/render/workload.py: the readiness probe's periodSeconds
TARGET_CPU_RANGE = (10, 95)  # an HPA target outside it either never scales down or never in time


@dataclass(frozen=True)
class Slo:
    rps: float  # the expected request rate of the whole service
    p99_ms: float
    peak_rps: float | None = None  # default: rps
    max_error_rate: float | None = None  # default: the bench's own limit
    cpu_margin: float = 0.25
    memory_margin: float = 0.25
    startup_s: float | None = None  # default: what the server measured


@dataclass(frozen=True)
class Plan:
    step: int  # index of the operating point in the result's steps
    load: float  # its concurrency or rate
    capacity_rps: float
    p99_ms: float
    in_flight: float
    replicas: int
    min_replicas: int
    max_replicas: int
    cpu: str | None  # a Kubernetes quantity, or None when the server reported no CPU use
    memory: str | None
    target_cpu_percent: int | None
    target_concurrency: float
    startup_s: float | None
    rollout_s: float | None
    notes: list[str] = field(default_factory=list)

    def profile_values(self) -> dict[str, Any]:
        """What `plan --write PROFILE` merges into the spec's profile."""
        scaling: dict[str, Any] = {
            "replicas": self.replicas,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_concurrency": self.target_concurrency,
        }
        if self.target_cpu_percent is not None:
            scaling["target_cpu_percent"] = self.target_cpu_percent
        resources = {key: value for key, value in (("cpu", self.cpu), ("memory", self.memory)) if value}
        return {"resources": resources, "scaling": scaling} if resources else {"scaling": scaling}


def make_plan(result: dict[str, Any], slo: Slo) -> Plan:
    _check(slo)
    steps = result["steps"]
    max_errors = slo.max_error_rate if slo.max_error_rate is not None else result["limits"]["max_error_rate"]
    meeting = [
        i
        for i, step in enumerate(steps)
        if step["latency_ms"]["p99"] is not None
        and step["latency_ms"]["p99"] <= slo.p99_ms
        and step["error_rate"] <= max_errors
        and step["throughput_rps"] > 0
    ]
    if not meeting:
        lowest = min(steps, key=lambda s: s["latency_ms"]["p99"] or math.inf)
        raise ModelpodError(
            f"no step of the bench met p99 <= {slo.p99_ms:g} ms with at most {max_errors:.2%} errors "
            f"(the lowest p99 was {lowest['latency_ms']['p99']} ms, at load {lowest['load']:g})",
            hint="bench again from a lower load (--concurrency 1), or plan for a p99 the server can meet",
        )
    index = max(meeting, key=lambda i: steps[i]["throughput_rps"])
    point = steps[index]
    capacity = point["throughput_rps"]
    replicas = math.ceil(slo.rps / capacity) + 1
    peak = slo.peak_rps if slo.peak_rps is not None else slo.rps
    notes: list[str] = []
    cpu, target_cpu = _cpu(point, slo.cpu_margin, notes)
    memory = _memory(steps, slo.memory_margin, notes)
    startup = slo.startup_s if slo.startup_s is not None else (result.get("server") or {}).get("startup_s")
    if startup is None:
        notes.append("the server reported no start-up time (not modelpod?): pass --startup-s")
    return Plan(
        step=index,
        load=point["load"],
        capacity_rps=capacity,
        p99_ms=point["latency_ms"]["p99"],
        in_flight=point["in_flight"],
        replicas=replicas,
        min_replicas=replicas,
        max_replicas=max(replicas, math.ceil(peak / capacity) + 1),
        cpu=cpu,
        memory=memory,
        target_cpu_percent=target_cpu,
        target_concurrency=max(0.1, round(point["in_flight"], 1)),
        startup_s=startup,
        rollout_s=(
            math.ceil(replicas / ROLLOUT_SURGE) * (startup + READINESS_PERIOD_S)
            if startup is not None
            else None
        ),
        notes=notes,
    )


def _check(slo: Slo) -> None:
    if slo.rps <= 0 or slo.p99_ms <= 0:
        raise ModelpodError("--rps and --p99 must be above 0")
    if slo.peak_rps is not None and slo.peak_rps < slo.rps:
        raise ModelpodError("--peak-rps must be at least --rps")
    if slo.cpu_margin < 0 or slo.memory_margin < 0:
        raise ModelpodError("the margins must be 0 or more")


def _cpu(point: dict[str, Any], margin: float, notes: list[str]) -> tuple[str | None, int | None]:
    cores = (point.get("server") or {}).get("cpu_cores")
    if not cores:
        notes.append("the server reported no CPU use (not modelpod, or not on Linux): resources.cpu kept")
        return None, None
    request = max(0.1, math.ceil(round(cores * (1 + margin) * 10, 6)) / 10)
    percent = round(100 * cores / request)
    target = min(max(percent, TARGET_CPU_RANGE[0]), TARGET_CPU_RANGE[1])
    return cpu_quantity(request), target


def _memory(steps: list[dict[str, Any]], margin: float, notes: list[str]) -> str | None:
    peak = max(((step.get("server") or {}).get("rss_bytes") or 0) for step in steps)
    if not peak:
        notes.append("the server reported no memory use: resources.memory kept")
        return None
    step = MEMORY_STEP_BYTES
    return memory_quantity(math.ceil(peak * (1 + margin) / step) * step)


def cpu_quantity(cores: float) -> str:
    """Cores as Kubernetes writes them: "2" for whole cores, else millicores ("700m")."""
    milli = round(cores * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def memory_quantity(size: int) -> str:
    """Bytes in Gi when whole, else Mi (sizes here are multiples of 64 MiB)."""
    return f"{size // (1024 * MIB)}Gi" if size % (1024 * MIB) == 0 else f"{math.ceil(size / MIB)}Mi"
