"""The pod every workload shares: Pod Security Standard "restricted", read-only root, no API token.

The Deployment, the training Job and the KServe predictor all build their pods here, so one test of
this module's output covers the security posture of every workload modelpod renders.
"""

from __future__ import annotations

from typing import Any

from modelpod.specfile.model import ResourcesSection
from modelpod.specfile.patterns import quantity_bytes
from modelpod.specfile.resolved import Spec

# The image's non-root user, made by images/templates/Dockerfile.j2; a UID over 10000 stays clear of
# host users
RUN_AS_USER = 10001
APP_DIR = "/app"  # where the image holds the spec, the model and the user's code
TMP_VOLUME = "tmp"
SHM_VOLUME = "dshm"


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resource_requirements(
    spec: Spec, resources: ResourcesSection, *, extra_storage: str | None = None
) -> dict[str, Any]:
    """Requests equal limits: the pod gets Guaranteed QoS, and the CPU limit sets the server's threads.
    Ephemeral storage covers /tmp and the logs, plus `extra_storage` (a disk-backed output volume)."""
    storage = resources.ephemeral_storage
    if extra_storage is not None:
        storage = _sum_quantities(storage, extra_storage)
    amounts: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory, "ephemeral-storage": storage}
    limits = dict(amounts)
    if resources.gpu:
        limits[spec.kubernetes.gpu.resource] = resources.gpu
    return {"requests": amounts, "limits": limits}


def _sum_quantities(*quantities: str) -> str:
    total = sum(quantity_bytes(q) for q in quantities)
    for suffix, size in (("Gi", 2**30), ("Mi", 2**20)):
        if total % size == 0:
            return f"{total // size}{suffix}"
    return str(total)


def scratch_volumes(
    spec: Spec, resources: ResourcesSection
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): a writable /tmp on a read-only root, and /dev/shm for GPU engines."""
    volumes: list[dict[str, Any]] = [
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": spec.kubernetes.tmp_size}}
    ]
    mounts: list[dict[str, Any]] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]  # noqa: S108 - the pod's own emptyDir
    if resources.gpu:
        gpu = spec.kubernetes.gpu
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": gpu.shm_size}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})  # noqa: S108 - the pod's own volume
    return volumes, mounts


def pod_spec(
    spec: Spec,
    resources: ResourcesSection,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    **fields: Any,
) -> dict[str, Any]:
    """A pod spec with the shared security settings, GPU scheduling and any workload-specific `fields`."""
    pod: dict[str, Any] = {
        "serviceAccountName": spec.name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no Docker-link env vars: nothing reads them, and they leak names
        "securityContext": pod_security_context(),
        **fields,
        "containers": containers,
        "volumes": volumes,
    }
    if spec.kubernetes.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in spec.kubernetes.image_pull_secrets]
    if resources.gpu:
        gpu = spec.kubernetes.gpu
        if gpu.node_selector:
            pod["nodeSelector"] = dict(gpu.node_selector)
        if gpu.tolerations:
            pod["tolerations"] = [t.model_dump(exclude_none=True) for t in gpu.tolerations]
    return pod
