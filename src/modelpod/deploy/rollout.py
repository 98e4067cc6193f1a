"""Following a Deployment's rollout by polling, with a bounded total wait and early failure detection.

Done is what `kubectl rollout status` calls done: the controller has seen the new generation, every
replica runs the new template, and as many are available. Failed is any of: the Deployment's
Progressing condition says ProgressDeadlineExceeded; its ReplicaFailure condition is true (pods
cannot even be created: quota, admission, Pod Security); a pod of the new ReplicaSet is in
CrashLoopBackOff or cannot pull its image; or the wait runs past its timeout. A failure carries the
new pods' state, their events and their last log lines, so the person reading it sees why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from modelpod.deploy.cluster import Cluster, ClusterError, Manifest, ObjectRef

# Container waiting reasons that will not fix themselves within a rollout.
FATAL_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"

T = TypeVar("T")


def _is_not_none(result: object) -> bool:
    return result is not None


@dataclass(frozen=True)
class Progress:
    deployment: str
    desired: int
    updated: int
    available: int
    message: str


@dataclass(frozen=True)
class PodReport:
    """What a person needs to see about one pod of a failed rollout."""

    name: str
    phase: str
    problems: tuple[str, ...]
    events: tuple[str, ...]
    log_tail: tuple[str, ...]

    def render(self) -> str:
        lines = [f"  pod {self.name} ({self.phase}): {'; '.join(self.problems) or 'no container problem'}"]
        lines += [f"    event: {event}" for event in self.events]
        if self.log_tail:
            lines.append("    last log lines:")
            lines += [f"      {line}" for line in self.log_tail]
        return "\n".join(lines)


@dataclass(frozen=True)
class RolloutResult:
    ok: bool
    deployment: str
    reason: str = ""  # ProgressDeadlineExceeded, CrashLoopBackOff, ImagePullBackOff, Timeout, ...
    message: str = ""
    pods: tuple[PodReport, ...] = field(default_factory=tuple)

    def explain(self) -> str:
        head = f"Deployment {self.deployment}: {self.reason}: {self.message}"
        return "\n".join([head, *(pod.render() for pod in self.pods)])


@dataclass(frozen=True)
class Waiting:
    """How long and how often to look, and how much to report."""

    timeout_s: float = 300.0
    interval_s: float = 2.0
    log_lines: int = 20
    events: int = 10
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def poll(
        self,
        step: Callable[[], T],
        *,
        until: Callable[[T], bool] = _is_not_none,
        deadline: float | None = None,
    ) -> T:
        """Call `step` every `interval_s` until `until` holds for what it returns (by default: until it
        returns something other than None) or the deadline passes, and return its last result either
        way. The deadline is a time on `clock`, by default `timeout_s` from now; no sleep goes past it.
        """
        if deadline is None:
            deadline = self.clock() + self.timeout_s
        while True:
            result = step()
            if until(result) or self.clock() >= deadline:
                return result
            self.sleep(min(self.interval_s, max(0.0, deadline - self.clock())))


def wait_for_rollout(
    cluster: Cluster,
    ref: ObjectRef,
    waiting: Waiting,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> RolloutResult:
    """Poll the Deployment until its rollout completes, fails, or `waiting.timeout_s` passes."""

    def look() -> RolloutResult | Manifest:
        """The rollout's result once it is decided, else the Deployment as it stands."""
        deployment = cluster.get(ref)
        if deployment is None:
            return RolloutResult(False, ref.name, "NotFound", "the Deployment disappeared during the rollout")
        progress, done = _progress(deployment)
        on_progress(progress)
        if done:
            return RolloutResult(True, ref.name, message=progress.message)
        # Until the controller has seen the new generation, status and conditions describe the old one.
        observed = _observed(deployment)
        failure = observed and (_failed_condition(deployment) or _failed_pod(cluster, deployment))
        if failure:
            return _failed(cluster, deployment, *failure, waiting=waiting)
        return deployment

    seen = waiting.poll(look, until=lambda result: isinstance(result, RolloutResult))
    if isinstance(seen, RolloutResult):
        return seen
    # the time ran out with the rollout under way: what `look` saw last is the Deployment
    progress, _ = _progress(seen)
    message = f"not complete after {waiting.timeout_s:g}s ({progress.message})"
    return _failed(cluster, seen, "Timeout", message, waiting=waiting)


def _progress(deployment: Manifest) -> tuple[Progress, bool]:
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    desired = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    total = int(status.get("replicas", 0))
    if not _observed(deployment):
        return Progress(
            deployment["metadata"]["name"], desired, 0, available, "waiting for the controller"
        ), False
    if updated < desired:
        message = f"{updated} of {desired} replicas updated"
    elif total > updated:
        message = f"{total - updated} old replicas pending termination"
    elif available < updated:
        message = f"{available} of {updated} updated replicas available"
    else:
        message = f"{available} of {desired} replicas available"
        return Progress(deployment["metadata"]["name"], desired, updated, available, message), True
    return Progress(deployment["metadata"]["name"], desired, updated, available, message), False


def _observed(deployment: Manifest) -> bool:
    observed = deployment.get("status", {}).get("observedGeneration", 0)
    return int(observed) >= int(deployment["metadata"].get("generation", 1))


def _failed_condition(deployment: Manifest) -> tuple[str, str] | None:
    for condition in deployment.get("status", {}).get("conditions", []):
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "ProgressDeadlineExceeded", condition.get("message", "progress deadline exceeded")
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return condition.get("reason", "ReplicaFailure"), condition.get("message", "")
    return None


def new_replica_set(cluster: Cluster, deployment: Manifest) -> Manifest | None:
    """The Deployment's current ReplicaSet: the one carrying the Deployment's revision number."""
    meta = deployment["metadata"]
    revision = meta.get("annotations", {}).get(REVISION_ANNOTATION)
    selector = deployment.get("spec", {}).get("selector", {}).get("matchLabels", {})
    for rs in cluster.list("apps/v1", "ReplicaSet", namespace=meta.get("namespace"), labels=selector):
        if _owned_by(rs, meta) and rs["metadata"].get("annotations", {}).get(REVISION_ANNOTATION) == revision:
            return rs
    return None


def new_pods(cluster: Cluster, deployment: Manifest) -> list[Manifest]:
    """The pods of the Deployment's current ReplicaSet."""
    rs = new_replica_set(cluster, deployment)
    if rs is None:
        return []
    selector = deployment.get("spec", {}).get("selector", {}).get("matchLabels", {})
    template_hash = rs["metadata"].get("labels", {}).get("pod-template-hash")
    labels = {**selector, "pod-template-hash": template_hash} if template_hash else selector
    return cluster.list("v1", "Pod", namespace=deployment["metadata"].get("namespace"), labels=labels)


def _owned_by(obj: Manifest, owner_meta: Mapping[str, Any]) -> bool:
    owners = obj["metadata"].get("ownerReferences", [])
    return any(o.get("uid") == owner_meta.get("uid") or o.get("name") == owner_meta["name"] for o in owners)


def container_problems(pod: Manifest) -> list[tuple[str, str]]:
    """(reason, message) of each container that is waiting or terminated with an error."""
    problems = []
    status = pod.get("status", {})
    for container in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
        state = container.get("state", {})
        waiting, terminated = state.get("waiting"), state.get("terminated")
        restarts = container.get("restartCount", 0)
        if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            text = f"container {container['name']} {waiting['reason']}: {waiting.get('message', '')}".strip()
            problems.append((waiting["reason"], f"{text} (restarts: {restarts})"))
        elif terminated and terminated.get("exitCode", 0) != 0:
            reason = terminated.get("reason", "Error")
            problems.append((reason, f"container {container['name']} exited {terminated.get('exitCode')}"))
    return problems


def _failed_pod(cluster: Cluster, deployment: Manifest) -> tuple[str, str] | None:
    for pod in new_pods(cluster, deployment):
        for reason, message in container_problems(pod):
            if reason in FATAL_WAITING_REASONS:
                return reason, f"pod {pod['metadata']['name']}: {message}"
    return None


def _failed(
    cluster: Cluster, deployment: Manifest, reason: str, message: str, *, waiting: Waiting
) -> RolloutResult:
    name = deployment["metadata"]["name"]
    pods = tuple(describe_pod(cluster, pod, waiting=waiting) for pod in new_pods(cluster, deployment)[:3])
    if not pods:  # no pod was created: the reason is in the events of the Deployment and its ReplicaSet
        namespace = deployment["metadata"].get("namespace", "")
        rs = new_replica_set(cluster, deployment)
        names = [name] + ([rs["metadata"]["name"]] if rs else [])
        events = [line for n in names for line in _event_lines(cluster, namespace, n, waiting.events)]
        pods = (PodReport(f"(none created for {name})", "-", (), tuple(events), ()),) if events else ()
    return RolloutResult(False, name, reason, message, pods)


def describe_pod(cluster: Cluster, pod: Manifest, *, waiting: Waiting) -> PodReport:
    meta = pod["metadata"]
    namespace = meta.get("namespace", "")
    problems = tuple(message for _, message in container_problems(pod))
    restarted = any(c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses", []))
    try:
        logs = cluster.pod_log(meta["name"], namespace=namespace, tail_lines=waiting.log_lines)
        if not logs and restarted:
            logs = cluster.pod_log(
                meta["name"], namespace=namespace, tail_lines=waiting.log_lines, previous=True
            )
    except ClusterError as exc:
        logs = [f"(no log: {exc.message})"]
    return PodReport(
        name=meta["name"],
        phase=pod.get("status", {}).get("phase", "Unknown"),
        problems=problems,
        events=tuple(_event_lines(cluster, namespace, meta["name"], waiting.events)),
        log_tail=tuple(logs[-waiting.log_lines :]),
    )


def _event_lines(cluster: Cluster, namespace: str, name: str, limit: int) -> list[str]:
    try:
        events = cluster.events(namespace=namespace, object_name=name)
    except ClusterError as exc:
        return [f"(no events: {exc.message})"]
    lines = [
        f"{e.get('type', '')} {e.get('reason', '')}: {e.get('message', '').strip()}"
        + (f" (x{e['count']})" if e.get("count", 1) > 1 else "")
        for e in events
    ]
    return lines[-limit:]
