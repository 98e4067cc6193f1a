"""The serving workload: ServiceAccount and Deployment."""

from __future__ import annotations

import math
from typing import Any

from modelpod import contract
from modelpod.deploy.render.image import ImageRef
from modelpod.deploy.render.labels import checkov_skips, metadata, recommended_labels, selector_labels
from modelpod.deploy.render.pod import (
    container_security_context,
    pod_spec,
    resource_requirements,
    scratch_volumes,
)
from modelpod.deploy.render.sizing import serving_resources, startup_budget_s
from modelpod.specfile.resolved import Spec

CONTAINER = "server"
PORT_NAME = "http"
STARTUP_PERIOD_S = 5


def render_service_account(spec: Spec, image: ImageRef) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(spec, image),
        "automountServiceAccountToken": False,
    }


def autoscaled(spec: Spec) -> bool:
    """Whether an autoscaler owns the replica count (then the Deployment must not set it)."""
    scaling = spec.scaling
    return scaling.autoscaler != "none" and scaling.max_replicas > scaling.min_replicas


def server_args(spec: Spec) -> list[str]:
    """Arguments after the image's `modelpod serve /app` entrypoint: bind every interface, the profile."""
    args = ["--host", "0.0.0.0", "--port", str(spec.server.port)]  # noqa: S104 - a pod must listen on its IP
    if spec.profile:
        args += ["--profile", spec.profile]
    return args


def probes(spec: Spec) -> dict[str, Any]:
    """Three probes on three endpoints: startup waits for the model, readiness gates traffic, liveness
    restarts a stuck process.

    Startup asks whether the model is loaded (`/v2/models/{name}/ready`), within the load budget: liveness
    answers while the model is still loading, so it could not bound the load time, and a model that never
    loads is restarted. Readiness (`/v2/health/ready`) asks whether the server takes traffic now (it turns
    503 at once on SIGTERM); liveness (`/v2/health/live`) only whether the process works, so a draining
    or busy server is not killed.
    """

    def http(path: str, **fields: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": PORT_NAME}, **fields}

    budget = startup_budget_s(spec)
    return {
        "startupProbe": http(
            contract.model_path(contract.MODEL_READY, spec.name),
            periodSeconds=STARTUP_PERIOD_S,
            timeoutSeconds=2,
            failureThreshold=math.ceil(budget / STARTUP_PERIOD_S),
        ),
        "readinessProbe": http(contract.READY, periodSeconds=5, timeoutSeconds=2, failureThreshold=2),
        "livenessProbe": http(contract.LIVE, periodSeconds=10, timeoutSeconds=5, failureThreshold=3),
    }


def grace_period_s(spec: Spec) -> int:
    """preStop delay + the server's drain budget + a margin, so SIGKILL never cuts a drain short."""
    k8s = spec.kubernetes
    return k8s.prestop_sleep_s + math.ceil(spec.server.drain_timeout_s) + k8s.termination_margin_s


def auth_secret_name(spec: Spec) -> str:
    return spec.kubernetes.auth_secret or f"{spec.name}-auth"


def server_annotations(spec: Spec) -> dict[str, str]:
    """checkov skips on the workload, each only when its reason holds."""
    if spec.server.auth_token_env:
        return checkov_skips(
            CKV_K8S_35="the server reads its bearer token from the variable server.auth_token_env names"
        )
    return {}


def server_container(spec: Spec, image: ImageRef, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": str(image),
        "imagePullPolicy": spec.kubernetes.image_pull_policy,
        "args": server_args(spec),
        "ports": [{"name": PORT_NAME, "containerPort": spec.server.port, "protocol": "TCP"}],
        "resources": resource_requirements(spec, serving_resources(spec)),
        "securityContext": container_security_context(),
        **probes(spec),
        "volumeMounts": mounts,
    }
    if spec.server.auth_token_env:  # the server refuses to start without it
        token = {"secretKeyRef": {"name": auth_secret_name(spec), "key": "token"}}
        container["env"] = [{"name": spec.server.auth_token_env, "valueFrom": token}]
    if spec.kubernetes.prestop_sleep_s:
        # exec sleep rather than the lifecycle sleep action, which Kubernetes 1.29 does not have
        seconds = str(spec.kubernetes.prestop_sleep_s)
        container["lifecycle"] = {"preStop": {"exec": {"command": ["/bin/sleep", seconds]}}}
    return container


def server_pod_template(spec: Spec, image: ImageRef) -> dict[str, Any]:
    volumes, mounts = scratch_volumes(spec, spec.resources)
    spread = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": spec.kubernetes.topology_spread,
        "labelSelector": {"matchLabels": selector_labels(spec)},
    }
    return {
        "metadata": {"labels": recommended_labels(spec, image)},
        "spec": pod_spec(
            spec,
            spec.resources,
            [server_container(spec, image, mounts)],
            volumes,
            terminationGracePeriodSeconds=grace_period_s(spec),
            topologySpreadConstraints=[spread],
        ),
    }


def render_deployment(spec: Spec, image: ImageRef) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if not autoscaled(spec):
        body["replicas"] = spec.scaling.replicas
    body |= {
        "revisionHistoryLimit": 10,
        # a model that takes longer to load than the rollout deadline would fail every rollout
        "progressDeadlineSeconds": max(
            spec.kubernetes.progress_deadline_s,
            startup_budget_s(spec) + spec.kubernetes.progress_deadline_s - spec.kubernetes.startup_timeout_s,
        ),
        "selector": {"matchLabels": selector_labels(spec)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": server_pod_template(spec, image),
    }
    meta = metadata(spec, image, annotations=server_annotations(spec))
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": body}
