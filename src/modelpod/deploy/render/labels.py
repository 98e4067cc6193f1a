"""Names, labels and metadata shared by every rendered object, and the one home of the label keys.

The deployer (`modelpod.deploy`) imports the keys and `release_owner_labels` from here: it marks and
selects a release's objects by the same labels the renderers write.
"""

from __future__ import annotations

from typing import Any

from modelpod.deploy.render.image import ImageRef
from modelpod.specfile.resolved import Spec

# Kubernetes' recommended label keys ("common labels")
NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"  # the release an object belongs to; prune and delete select by it
VERSION = "app.kubernetes.io/version"
COMPONENT = "app.kubernetes.io/component"
PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY_KEY = "app.kubernetes.io/managed-by"

MANAGED_BY = "modelpod"  # the value of MANAGED_BY_KEY on every object modelpod renders or applies

# values of COMPONENT
SERVER = "inference-server"
MONITORING = "monitoring"
TRAINING = "training"


def release_owner_labels(release: str) -> dict[str, str]:
    """The labels that make an object one of `release`'s: the deployer sets them on every object it
    applies, and prune and delete select by them."""
    return {INSTANCE: release, MANAGED_BY_KEY: MANAGED_BY}


def release_labels(spec: Spec) -> dict[str, str]:
    """The labels every pod of the release carries, the server's and the training Job's."""
    return {NAME: spec.name, INSTANCE: spec.name}


def selector_labels(spec: Spec) -> dict[str, str]:
    """The labels that select the server's pods; stable across releases (no version in them). The
    component is part of them so that the training Job's pods, which share name and instance, never
    receive inference traffic (a Deployment's selector cannot change after its first apply)."""
    return {**release_labels(spec), COMPONENT: SERVER}


def recommended_labels(spec: Spec, image: ImageRef, component: str = SERVER) -> dict[str, str]:
    return {
        **selector_labels(spec),
        VERSION: image.version_label,
        COMPONENT: component,
        PART_OF: spec.name,
        MANAGED_BY_KEY: MANAGED_BY,
    }


def metadata(
    spec: Spec,
    image: ImageRef,
    *,
    name: str | None = None,
    component: str = SERVER,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name or spec.name,
        "namespace": spec.kubernetes.namespace,
        "labels": {**recommended_labels(spec, image, component), **(labels or {})},
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def checkov_skips(**reasons: str) -> dict[str, str]:
    """checkov annotations skipping checks on one object, each with the reason it does not apply."""
    return {
        f"checkov.io/skip{i}": f"{check}={reason}" for i, (check, reason) in enumerate(reasons.items(), 1)
    }
