"""Release history, stored in the cluster: one Secret per revision.

Why a Secret per revision (as Helm does): the history must survive the laptop that deployed, and every
revision must hold *all* of its objects so `rollback` can restore each of them and prune what the
revision did not have. A Secret is read by fewer roles than a ConfigMap (the rendered manifests show
the image, the environment and the cluster layout), its 1 MiB limit holds gzip-compressed manifests of
any model server, and `kubectl get secrets -l modelpod.dev/release=NAME` lists the history.

The record `modelpod.release.v1.<name>.v<N>` has type `modelpod.dev/release.v1` and the labels
`modelpod.dev/release=<name>`, `modelpod.dev/revision=<N>`, `modelpod.dev/status=<status>` and
`app.kubernetes.io/managed-by=modelpod`. It deliberately lacks `app.kubernetes.io/instance`, the label
that marks the release's own objects, so prune and delete never take a record for an object of the
release. Its data key `release` holds gzip-compressed JSON: revision, status, image, time, a
description, and the manifests exactly as applied. Creating a record (never overwriting) is the
lock: two deploys racing for the same revision number get a conflict, and the second one stops.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal

from modelpod.deploy.cluster import Cluster, ClusterError, DeployError, Manifest, ObjectRef
from modelpod.deploy.render.labels import MANAGED_BY, MANAGED_BY_KEY

Status = Literal["pending", "deployed", "failed", "superseded"]
RECORD_TYPE = "modelpod.dev/release.v1"
RELEASE_LABEL = "modelpod.dev/release"
REVISION_LABEL = "modelpod.dev/revision"
STATUS_LABEL = "modelpod.dev/status"
MAX_RECORD_BYTES = 900 * 1024  # below the API server's 1 MiB object limit, with room for metadata


@dataclass(frozen=True)
class Revision:
    """One deploy or rollback of a release, with every object it applied."""

    release: str
    namespace: str
    number: int
    status: Status
    image: str
    manifests: tuple[Manifest, ...] = field(repr=False)
    created: str  # ISO 8601, UTC
    description: str = ""

    @property
    def refs(self) -> set[ObjectRef]:
        return {ObjectRef.of(manifest) for manifest in self.manifests}


class History:
    """The revisions of one release in one namespace, read from and written to the cluster."""

    def __init__(self, cluster: Cluster, release: str, namespace: str) -> None:
        self.cluster = cluster
        self.release = release
        self.namespace = namespace

    def revisions(self) -> list[Revision]:
        """Every revision, oldest first."""
        records = self.cluster.list(
            "v1", "Secret", namespace=self.namespace, labels={RELEASE_LABEL: self.release}
        )
        revisions = [decode(record) for record in records if record.get("type") == RECORD_TYPE]
        return sorted(revisions, key=lambda revision: revision.number)

    def get(self, number: int) -> Revision:
        for revision in self.revisions():
            if revision.number == number:
                return revision
        raise DeployError(
            f"release {self.release!r} has no revision {number} in namespace {self.namespace!r}",
            hint=f"list them with `modelpod history` (namespace {self.namespace})",
        )

    def current(self) -> Revision | None:
        """The revision now deployed, if any."""
        deployed = [revision for revision in self.revisions() if revision.status == "deployed"]
        return deployed[-1] if deployed else None

    def start(
        self, manifests: Sequence[Manifest], *, image: str, description: str, busy_for_s: float = 0.0
    ) -> Revision:
        """Record a new pending revision, numbered after the newest one. A pending newest revision
        younger than `busy_for_s` means another deploy is still at work: refuse."""
        existing = self.revisions()
        if existing and existing[-1].status == "pending" and busy_for_s > 0:
            _refuse_if_busy(existing[-1], busy_for_s)
        revision = Revision(
            release=self.release,
            namespace=self.namespace,
            number=(existing[-1].number + 1) if existing else 1,
            status="pending",
            image=image,
            manifests=tuple(manifests),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            description=description,
        )
        try:
            self.cluster.create(encode(revision))
        except ClusterError as exc:
            if exc.status == 409:
                raise DeployError(
                    f"revision {revision.number} of {self.release!r} was just recorded by someone else",
                    hint="another deploy of this release is running; wait for it, then try again",
                ) from None
            raise
        return revision

    def mark(self, revision: Revision, status: Status, *, description: str | None = None) -> Revision:
        updated = replace(revision, status=status, description=description or revision.description)
        self.cluster.apply(encode(updated), force=True)
        return updated

    def finish(self, revision: Revision, *, keep: int) -> Revision:
        """Mark `revision` deployed, the one it replaces superseded, and drop records beyond `keep`."""
        for other in self.revisions():
            if other.number != revision.number and other.status in ("deployed", "pending"):
                self.mark(other, "superseded" if other.status == "deployed" else "failed")
        deployed = self.mark(revision, "deployed")
        self.trim(keep)
        return deployed

    def trim(self, keep: int) -> None:
        """Delete the oldest records so that at most `keep` remain (never the deployed one)."""
        revisions = self.revisions()
        for old in revisions[: max(0, len(revisions) - keep)]:
            if old.status != "deployed":
                self.cluster.delete(record_ref(self.release, self.namespace, old.number))

    def forget(self) -> int:
        """Delete every record of the release; returns how many there were."""
        revisions = self.revisions()
        for revision in revisions:
            self.cluster.delete(record_ref(self.release, self.namespace, revision.number))
        return len(revisions)


def _refuse_if_busy(pending: Revision, busy_for_s: float) -> None:
    started = datetime.fromisoformat(pending.created)
    age = (datetime.now(timezone.utc) - started).total_seconds()
    if age < busy_for_s:
        raise DeployError(
            f"revision {pending.number} of {pending.release!r} has been in progress since {pending.created}: "
            "another deploy or rollback is at work",
            hint=f"wait for it; a deploy that died leaves its revision pending, which is ignored "
            f"after {busy_for_s:g}s",
        )


def record_name(release: str, number: int) -> str:
    return f"modelpod.release.v1.{release}.v{number}"


def record_ref(release: str, namespace: str, number: int) -> ObjectRef:
    return ObjectRef("v1", "Secret", record_name(release, number), namespace)


def encode(revision: Revision) -> Manifest:
    """The Secret that stores a revision."""
    payload = {
        "revision": revision.number,
        "status": revision.status,
        "image": revision.image,
        "created": revision.created,
        "description": revision.description,
        "manifests": list(revision.manifests),
    }
    packed = gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), mtime=0)
    if len(packed) > MAX_RECORD_BYTES:
        raise DeployError(
            f"the manifests of {revision.release!r} take {len(packed)} bytes compressed, too many to record",
            hint="a release's objects must fit in one Secret (about 900 KiB compressed); "
            "move large data such as dashboards out of the release",
        )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": RECORD_TYPE,
        "metadata": {
            "name": record_name(revision.release, revision.number),
            "namespace": revision.namespace,
            "labels": {
                RELEASE_LABEL: revision.release,
                REVISION_LABEL: str(revision.number),
                STATUS_LABEL: revision.status,
                MANAGED_BY_KEY: MANAGED_BY,
            },
        },
        "data": {"release": base64.b64encode(packed).decode()},
    }


def decode(record: Manifest) -> Revision:
    """A revision from its Secret; a damaged record is an error naming the Secret."""
    meta = record.get("metadata", {})
    try:
        payload: dict[str, Any] = json.loads(gzip.decompress(base64.b64decode(record["data"]["release"])))
        return Revision(
            release=meta["labels"][RELEASE_LABEL],
            namespace=meta["namespace"],
            number=int(payload["revision"]),
            status=payload["status"],
            image=payload["image"],
            manifests=tuple(payload["manifests"]),
            created=payload["created"],
            description=payload.get("description", ""),
        )
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise DeployError(
            f"release record Secret {meta.get('name')!r} is damaged ({type(exc).__name__}: {exc})",
            hint="delete that Secret to drop the revision from the history",
        ) from None
