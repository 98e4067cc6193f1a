"""The day-two operations on a deployed release: status, logs, scale, delete, and the dry-run diff."""

from __future__ import annotations

import copy
import difflib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from modelpod.deploy.cluster import Cluster, ClusterError, DeployError, Manifest, ObjectRef
from modelpod.deploy.deployer import CLUSTER_SCOPED, KIND_ORDER, identity, prepare
from modelpod.deploy.release import History, Revision
from modelpod.deploy.render.labels import release_owner_labels
from modelpod.deploy.rollout import container_problems

# Server-set fields that say nothing about what a deploy would change.
_VOLATILE_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp")


@dataclass(frozen=True)
class WorkloadState:
    name: str
    desired: int
    updated: int
    available: int
    conditions: tuple[str, ...]


@dataclass(frozen=True)
class PodState:
    name: str
    phase: str
    ready: str  # "1/1"
    restarts: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class ReleaseStatus:
    release: str
    namespace: str
    revision: Revision | None
    workloads: tuple[WorkloadState, ...]
    pods: tuple[PodState, ...]


def release_status(cluster: Cluster, *, release: str, namespace: str) -> ReleaseStatus:
    history = History(cluster, release, namespace)
    revisions = history.revisions()
    if not revisions:
        raise _not_found(release, namespace)
    revision = history.current() or revisions[-1]
    workloads, pods = [], []
    for manifest in _deployments(revision):
        live = cluster.get(ObjectRef.of(manifest))
        if live is None:
            continue
        status = live.get("status", {})
        conditions = tuple(
            f"{c.get('type')}={c.get('status')} ({c.get('reason', '')})" for c in status.get("conditions", [])
        )
        workloads.append(
            WorkloadState(
                live["metadata"]["name"],
                int(live.get("spec", {}).get("replicas", 1)),
                int(status.get("updatedReplicas", 0)),
                int(status.get("availableReplicas", 0)),
                conditions,
            )
        )
        pods += [_pod_state(pod) for pod in release_pods(cluster, live)]
    return ReleaseStatus(release, namespace, revision, tuple(workloads), tuple(pods))


def release_pods(cluster: Cluster, deployment: Manifest) -> list[Manifest]:
    """The Deployment's pods: selected by its labels and owned by a ReplicaSet (not, say, a Job's pod
    that happens to carry the same labels)."""
    selector = deployment.get("spec", {}).get("selector", {}).get("matchLabels", {})
    pods = cluster.list("v1", "Pod", namespace=deployment["metadata"]["namespace"], labels=selector)
    return [
        pod
        for pod in pods
        if any(owner.get("kind") == "ReplicaSet" for owner in pod["metadata"].get("ownerReferences", []))
    ]


def _pod_state(pod: Manifest) -> PodState:
    containers = pod.get("status", {}).get("containerStatuses", [])
    return PodState(
        name=pod["metadata"]["name"],
        phase=pod.get("status", {}).get("phase", "Unknown"),
        ready=f"{sum(bool(c.get('ready')) for c in containers)}/{len(containers)}",
        restarts=sum(int(c.get("restartCount", 0)) for c in containers),
        problems=tuple(message for _, message in container_problems(pod)),
    )


def pods_of_release(cluster: Cluster, *, release: str, namespace: str) -> list[str]:
    """Names of the pods of the release's Deployments, in the current revision."""
    revision = _current(History(cluster, release, namespace))
    names = []
    for manifest in _deployments(revision):
        live = cluster.get(ObjectRef.of(manifest))
        if live is not None:
            names += [pod["metadata"]["name"] for pod in release_pods(cluster, live)]
    return names


def stream_log(
    cluster: Cluster,
    pod: str,
    *,
    namespace: str,
    on_line: Callable[[str], None],
    timeout_s: float,
    container: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Pass a pod's log lines to `on_line` as they come; True when the log ended, False at the timeout.

    The stream is read on a daemon thread so that a silent container cannot block past the timeout.
    """
    lines: queue.Queue[tuple[str, Any]] = queue.Queue()

    def pump() -> None:
        try:
            for line in cluster.follow_log(pod, namespace=namespace, container=container):
                lines.put(("line", line))
        except ClusterError as exc:
            lines.put(("error", exc))
        finally:
            lines.put(("end", None))

    threading.Thread(target=pump, name=f"log-{pod}", daemon=True).start()
    deadline = clock() + timeout_s
    while (remaining := deadline - clock()) > 0:
        try:
            kind, value = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if kind == "error":
            raise value
        if kind == "end":
            return True
        on_line(value)
    return False


def scale(
    cluster: Cluster, *, release: str, namespace: str, replicas: int, deployment: str | None = None
) -> tuple[ObjectRef, list[str]]:
    """Set a Deployment's replicas (server-side apply of the recorded manifest); returns warnings."""
    if replicas < 0:
        raise DeployError(f"replicas must be 0 or more, got {replicas}")
    revision = _current(History(cluster, release, namespace))
    candidates = [m for m in _deployments(revision) if deployment in (None, m["metadata"]["name"])]
    if not candidates:
        raise DeployError(
            f"revision {revision.number} of {release!r} has no Deployment {deployment or ''}".strip()
        )
    manifest = copy.deepcopy(candidates[0])
    manifest["spec"]["replicas"] = replicas
    cluster.apply(manifest, force=True)
    warnings = [
        f"{m['kind']}/{m['metadata']['name']} also sets the replica count and will override this"
        for m in revision.manifests
        if m["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
    ]
    warnings.append("the next deploy or rollback sets the replicas of the spec again")
    return ObjectRef.of(manifest), warnings


def delete_release(
    cluster: Cluster, *, release: str, namespace: str, keep_history: bool = False
) -> list[ObjectRef]:
    """Delete every object of the release (found by its labels, of every kind it ever had)."""
    history = History(cluster, release, namespace)
    revisions = history.revisions()
    if not revisions:
        raise _not_found(release, namespace)
    deleted = []
    for api_version, kind in _kinds(revisions, reverse=True):
        scope = None if kind in CLUSTER_SCOPED else namespace
        labels = release_owner_labels(release)
        for obj in cluster.list(api_version, kind, namespace=scope, labels=labels):
            ref = ObjectRef.of({**obj, "apiVersion": api_version, "kind": kind})
            if cluster.delete(ref):
                deleted.append(ref)
    if not keep_history:
        history.forget()
    return deleted


@dataclass(frozen=True)
class ObjectDiff:
    ref: ObjectRef
    action: str  # create, update, unchanged, delete
    diff: str  # unified diff of the live object against what the server would make of the apply


def diff_release(
    cluster: Cluster,
    manifests: Sequence[Manifest],
    *,
    release: str,
    namespace: str,
    force: bool = False,
) -> list[ObjectDiff]:
    """What a deploy would change: server-side dry-run apply of each object against the live one."""
    prepared = prepare(manifests, release=release, namespace=namespace)
    diffs = []
    for manifest in prepared:
        ref = ObjectRef.of(manifest)
        live = cluster.get(ref)
        after = cluster.apply(manifest, force=force, dry_run=True)
        before_text, after_text = _comparable(live), _comparable(after)
        action = "create" if live is None else ("unchanged" if before_text == after_text else "update")
        diffs.append(ObjectDiff(ref, action, _unified(ref, before_text, after_text)))
    kept = {identity(ObjectRef.of(m)) for m in prepared}
    revisions = History(cluster, release, namespace).revisions()
    kinds = _kinds([*revisions], extra=prepared)
    labels = release_owner_labels(release)
    for api_version, kind in kinds:
        scope = None if kind in CLUSTER_SCOPED else namespace
        for obj in cluster.list(api_version, kind, namespace=scope, labels=labels):
            ref = ObjectRef.of({**obj, "apiVersion": api_version, "kind": kind})
            if identity(ref) not in kept:
                diffs.append(ObjectDiff(ref, "delete", _unified(ref, _comparable(obj), "")))
    return diffs


def _comparable(obj: Manifest | None) -> str:
    if obj is None:
        return ""
    clean = copy.deepcopy(obj)
    clean.pop("status", None)
    meta = clean.get("metadata", {})
    for key in _VOLATILE_METADATA:
        meta.pop(key, None)
    meta.get("annotations", {}).pop("deployment.kubernetes.io/revision", None)
    if not meta.get("annotations"):
        meta.pop("annotations", None)
    return yaml.safe_dump(clean, sort_keys=True)


def _unified(ref: ObjectRef, before: str, after: str) -> str:
    name = f"{ref.kind}/{ref.name}"
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"live/{name}",
        tofile=f"deploy/{name}",
    )
    return "".join(lines)


def _kinds(
    revisions: Sequence[Revision], *, extra: Sequence[Manifest] = (), reverse: bool = False
) -> list[tuple[str, str]]:
    kinds = {(m["apiVersion"], m["kind"]) for r in revisions for m in r.manifests}
    kinds |= {(m["apiVersion"], m["kind"]) for m in extra}
    ordered = sorted(kinds, key=lambda k: (KIND_ORDER.get(k[1], len(KIND_ORDER)), k))
    return ordered[::-1] if reverse else ordered


def _deployments(revision: Revision) -> list[Manifest]:
    return [m for m in revision.manifests if m["kind"] == "Deployment" and m["apiVersion"] == "apps/v1"]


def _current(history: History) -> Revision:
    current = history.current()
    if current is None:
        raise _not_found(history.release, history.namespace)
    return current


def _not_found(release: str, namespace: str) -> DeployError:
    return DeployError(
        f"no release {release!r} in namespace {namespace!r}",
        hint="deploy it with `modelpod deploy`, or pass --namespace where it lives",
    )
