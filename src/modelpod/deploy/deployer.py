"""deploy and rollback: apply a revision, prune, follow the rollout, smoke-test, roll back on failure.

A deploy records a pending revision (the record doubles as a lock), applies every object with
server-side apply in dependency order, deletes the release's objects that the new revision no longer
has, waits for each Deployment's rollout and sends the spec's examples through the Service. Any
failure after the first object changed rolls back automatically: the previous deployed revision is
applied again as a new revision, so the history reads "2 failed, 3 rollback to 1", and the error
explains what failed with the new pods' state, events and last log lines.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from modelpod.deploy.cluster import Cluster, ClusterError, DeployError, Manifest, ObjectRef
from modelpod.deploy.release import History, Revision
from modelpod.deploy.render.labels import INSTANCE, MANAGED_BY, MANAGED_BY_KEY, release_owner_labels
from modelpod.deploy.rollout import Progress, Waiting, wait_for_rollout
from modelpod.deploy.smoke import smoke_test
from modelpod.specfile.resolved import Example

# Apply order: what others refer to comes first; a NetworkPolicy exists before the pods it protects.
KIND_ORDER = {
    kind: rank
    for rank, kinds in enumerate(
        [
            ("Namespace",),
            ("CustomResourceDefinition",),
            ("ServiceAccount",),
            ("Secret", "ConfigMap"),
            ("PersistentVolumeClaim",),
            ("Role", "ClusterRole"),
            ("RoleBinding", "ClusterRoleBinding"),
            ("NetworkPolicy",),
            ("Service",),
            ("Deployment", "StatefulSet", "DaemonSet", "Job", "InferenceService"),
            ("HorizontalPodAutoscaler", "PodDisruptionBudget", "ScaledObject"),
            ("Ingress",),
        ]
    )
    for kind in kinds
}
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "IngressClass",
}


class RolloutFailed(DeployError):
    """A deploy or rollback did not come up; says what failed and what was rolled back."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        revision: int,
        rolled_back_to: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason
        self.revision = revision
        self.rolled_back_to = rolled_back_to


class Reporter(Protocol):
    """Where deploy tells a person what it is doing (the CLI draws it with Rich)."""

    def step(self, message: str) -> None: ...

    def progress(self, progress: Progress) -> None: ...


class SilentReporter:
    def step(self, message: str) -> None:
        pass

    def progress(self, progress: Progress) -> None:
        pass


@dataclass(frozen=True)
class DeployOptions:
    waiting: Waiting = field(default_factory=Waiting)
    force_conflicts: bool = False
    smoke_test: bool = True
    smoke_timeout_s: float = 60.0
    rollback_on_failure: bool = True
    history_max: int = 10


@dataclass(frozen=True)
class DeployResult:
    revision: Revision
    applied: tuple[ObjectRef, ...]
    pruned: tuple[ObjectRef, ...]
    smoke_tested: tuple[str, ...]  # names of the examples that passed through the Service


@dataclass(frozen=True)
class Failure:
    reason: str
    explanation: str


@dataclass(frozen=True)
class Applied:
    """What applying a revision changed: its objects, in apply order, and the older objects pruned."""

    objects: tuple[ObjectRef, ...]
    pruned: tuple[ObjectRef, ...]


class _NothingApplied(Exception):
    """The API refused the first object of a revision, so the cluster is as it was before."""

    def __init__(self, error: ClusterError) -> None:
        super().__init__(str(error))
        self.error = error


_INSPECT_HINT = "inspect with `modelpod status` and `modelpod logs`"


def deploy(
    cluster: Cluster,
    manifests: Sequence[Manifest],
    *,
    release: str,
    namespace: str,
    image: str,
    examples: Sequence[Example] = (),
    options: DeployOptions | None = None,
    report: Reporter | None = None,
) -> DeployResult:
    """Deploy a new revision of `release`; on failure roll back (when there is something to go back to)."""
    options, report = options or DeployOptions(), report or SilentReporter()
    manifests = prepare(manifests, release=release, namespace=namespace)
    for api_version, kind in sorted({(m["apiVersion"], m["kind"]) for m in manifests}):
        cluster.check_served(api_version, kind)  # a missing CRD stops the deploy before any change
    history = History(cluster, release, namespace)
    previous = history.current()
    revision = history.start(manifests, image=image, description="deploy", busy_for_s=_busy_for(options))
    report.step(f"revision {revision.number} of {release} in namespace {namespace}")
    try:
        applied = apply_revision(cluster, history, revision, options, report)
        failure = follow_rollouts(cluster, revision, options.waiting, report)
        tested: tuple[str, ...] = ()
        if failure is None and options.smoke_test and examples:
            problems, tested = smoke_test(
                cluster,
                revision.manifests,
                examples,
                timeout_s=options.smoke_timeout_s,
                waiting=options.waiting,
                report=report,
            )
            failure = Failure("SmokeTestFailed", problems) if problems else None
    except KeyboardInterrupt:
        _mark_failed(history, revision, "interrupted")
        raise
    except _NothingApplied as refused:  # the cluster is unchanged: the API's own message says it best
        _mark_failed(history, revision, f"API error {refused.error.status or ''}".strip())
        raise refused.error from None
    except ClusterError as exc:
        failure = Failure("ApiError", f"while applying: {exc}")
    if failure is not None:
        _fail(cluster, history, revision, previous, failure, options, report)
    done = history.finish(revision, keep=options.history_max)
    return DeployResult(done, applied.objects, applied.pruned, tested)


def rollback(
    cluster: Cluster,
    *,
    release: str,
    namespace: str,
    to: int | None = None,
    options: DeployOptions | None = None,
    report: Reporter | None = None,
) -> DeployResult:
    """Restore every object of revision `to` (default: the last good one before the current)."""
    options, report = options or DeployOptions(), report or SilentReporter()
    history = History(cluster, release, namespace)
    target = history.get(to) if to is not None else _last_good(history)
    busy_for = _busy_for(options)
    return restore(cluster, history, target, options, report, f"rollback to {target.number}", busy_for)


def restore(
    cluster: Cluster,
    history: History,
    target: Revision,
    options: DeployOptions,
    report: Reporter,
    description: str,
    busy_for_s: float = 0.0,
) -> DeployResult:
    """Apply a recorded revision again as a new revision; no further rollback if this fails."""
    revision = history.start(
        target.manifests, image=target.image, description=description, busy_for_s=busy_for_s
    )
    report.step(f"revision {revision.number}: {description}")
    try:
        applied = apply_revision(cluster, history, revision, options, report)
        failure = follow_rollouts(cluster, revision, options.waiting, report)
    except KeyboardInterrupt:
        _mark_failed(history, revision, "interrupted")
        raise
    except (ClusterError, _NothingApplied) as exc:
        failure = Failure("ApiError", str(exc))
    if failure is not None:
        _mark_failed(history, revision, failure.reason)
        message = f"revision {revision.number} ({description}) failed: {failure.explanation}"
        raise RolloutFailed(message, reason=failure.reason, revision=revision.number, hint=_INSPECT_HINT)
    done = history.finish(revision, keep=options.history_max)
    return DeployResult(done, applied.objects, applied.pruned, ())


def prepare(manifests: Iterable[Manifest], *, release: str, namespace: str) -> list[Manifest]:
    """Copies in apply order, each with the namespace and the release labels that prune relies on."""
    prepared = []
    for manifest in manifests:
        obj = copy.deepcopy(manifest)
        meta = obj.setdefault("metadata", {})
        if obj.get("kind") not in CLUSTER_SCOPED:
            meta.setdefault("namespace", namespace)
        labels = meta.setdefault("labels", {})
        owner = labels.setdefault(INSTANCE, release)
        if owner != release:
            raise DeployError(
                f"{obj.get('kind')}/{meta.get('name')} is labelled {INSTANCE}={owner}, not {release}",
                hint="each object of a release must carry the release's instance label",
            )
        labels.setdefault(MANAGED_BY_KEY, MANAGED_BY)
        prepared.append(obj)
    return sorted(prepared, key=lambda obj: KIND_ORDER.get(obj.get("kind", ""), len(KIND_ORDER)))


def apply_revision(
    cluster: Cluster, history: History, revision: Revision, options: DeployOptions, report: Reporter
) -> Applied:
    """Apply every object of `revision` in order, then prune the release's objects it does not have.

    An API error on the first object raises `_NothingApplied` (the cluster is unchanged); a later one
    raises the `ClusterError` itself: the cluster holds part of the revision, so the caller rolls back.
    """
    applied: list[ObjectRef] = []
    for manifest in revision.manifests:
        ref = ObjectRef.of(manifest)
        try:
            cluster.apply(manifest, force=options.force_conflicts)
        except ClusterError as exc:
            if not applied:
                raise _NothingApplied(exc) from exc
            raise
        applied.append(ref)
        report.step(f"applied {ref}")
    kinds = {(m["apiVersion"], m["kind"]) for r in history.revisions() for m in r.manifests}
    pruned = prune(cluster, revision.release, history.namespace, revision.manifests, kinds, report)
    return Applied(tuple(applied), tuple(pruned))


def prune(
    cluster: Cluster,
    release: str,
    namespace: str,
    keep: Sequence[Manifest],
    kinds: Iterable[tuple[str, str]],
    report: Reporter,
) -> list[ObjectRef]:
    """Delete the release's objects (by its labels) of `kinds` that are not among `keep`."""
    kept = {identity(ObjectRef.of(manifest)) for manifest in keep}
    labels = release_owner_labels(release)
    pruned = []
    for api_version, kind in sorted(set(kinds), key=lambda k: -KIND_ORDER.get(k[1], len(KIND_ORDER))):
        scope = None if kind in CLUSTER_SCOPED else namespace
        try:
            live = cluster.list(api_version, kind, namespace=scope, labels=labels)
        except ClusterError as exc:  # e.g. a CRD uninstalled since an old revision used it
            report.step(f"cannot look for old {kind} objects: {exc.message}")
            continue
        for obj in live:
            ref = ObjectRef.of({**obj, "apiVersion": api_version, "kind": kind})
            if identity(ref) not in kept and cluster.delete(ref):
                pruned.append(ref)
                report.step(f"pruned {ref}")
    return pruned


def follow_rollouts(
    cluster: Cluster, revision: Revision, waiting: Waiting, report: Reporter
) -> Failure | None:
    for manifest in revision.manifests:
        if manifest["kind"] == "Deployment" and manifest["apiVersion"] == "apps/v1":
            report.step(f"waiting for the rollout of Deployment/{manifest['metadata']['name']}")
            result = wait_for_rollout(cluster, ObjectRef.of(manifest), waiting, report.progress)
            if not result.ok:
                return Failure(result.reason, result.explain())
    return None


def _fail(
    cluster: Cluster,
    history: History,
    revision: Revision,
    previous: Revision | None,
    failure: Failure,
    options: DeployOptions,
    report: Reporter,
) -> NoReturn:
    """Mark `revision` failed, roll back to `previous` where there is one and the options allow it, and
    raise `RolloutFailed` saying what failed and what was done about it."""
    _mark_failed(history, revision, failure.reason)
    rolled_back_to = None
    if previous is None:
        outcome = (
            f"Nothing to roll back to: no earlier revision of {revision.release!r} was deployed "
            "successfully; its objects are left in place for inspection."
        )
        hint: str | None = "fix the cause and deploy again, or remove the release with `modelpod delete`"
    elif not options.rollback_on_failure:
        outcome = f"Not rolled back (--no-rollback); revision {previous.number} was the last good one."
        hint = f"roll back with `modelpod rollback --to {previous.number}`"
    else:
        report.step(f"{failure.reason}: rolling back to revision {previous.number}")
        description = f"automatic rollback to {previous.number} after revision {revision.number} failed"
        try:
            restored = restore(cluster, history, previous, options, report, description)
        except DeployError as exc:
            outcome = f"The automatic rollback to revision {previous.number} failed too: {exc.message}"
            hint = _INSPECT_HINT
        else:
            outcome = (
                f"Rolled back: revision {restored.revision.number} restores revision {previous.number} "
                f"(image {previous.image})."
            )
            hint, rolled_back_to = None, previous.number
    raise RolloutFailed(
        f"revision {revision.number} of {revision.release} failed: {failure.explanation}\n{outcome}",
        reason=failure.reason,
        revision=revision.number,
        rolled_back_to=rolled_back_to,
        hint=hint,
    )


def _busy_for(options: DeployOptions) -> float:
    """How long a pending revision may belong to a deploy still at work: its longest possible run."""
    return 2 * options.waiting.timeout_s + options.smoke_timeout_s + 120


def _mark_failed(history: History, revision: Revision, reason: str) -> None:
    """Best effort: the cluster may be the thing that failed."""
    with contextlib.suppress(ClusterError):
        history.mark(revision, "failed", description=f"{revision.description}: failed ({reason})")


def _last_good(history: History) -> Revision:
    current = history.current()
    good = [
        revision
        for revision in history.revisions()
        if revision.status == "superseded"
        and (
            current is None or (revision.number < current.number and revision.manifests != current.manifests)
        )
    ]
    if not good:
        raise DeployError(
            f"release {history.release!r} has no earlier good revision to roll back to",
            hint="see `modelpod history`; choose one with --to N",
        )
    return good[-1]


def identity(ref: ObjectRef) -> tuple[str, str, str | None, str]:
    """An object regardless of the API version it was read through (autoscaling/v1 vs v2)."""
    group = ref.api_version.rpartition("/")[0]
    return group, ref.kind, ref.namespace, ref.name
