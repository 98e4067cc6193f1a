"""Names, labels and metadata shared by every rendered object."""

from __future__ import annotations

from typing import Any

from modelpod.deploy.render.image import ImageRef
from modelpod.spec.resolved import Spec

MANAGED_BY = "modelpod"
SERVER = "inference-server"
MONITORING = "monitoring"
TRAINING = "training"


def release_labels(spec: Spec) -> dict[str, str]:
    """The labels every pod of the release carries, the server's and the training Job's."""
    return {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/instance": spec.name}


def selector_labels(spec: Spec) -> dict[str, str]:
    """The labels that select the server's pods; stable across releases (no version in them). The
    component is part of them so that the training Job's pods, which share name and instance, never
    receive inference traffic (a Deployment's selector cannot change after its first apply)."""
    return {**release_labels(spec), "app.kubernetes.io/component": SERVER}


def recommended_labels(spec: Spec, image: ImageRef, component: str = SERVER) -> dict[str, str]:
    return {
        **selector_labels(spec),
        "app.kubernetes.io/version": image.version_label,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": spec.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
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
