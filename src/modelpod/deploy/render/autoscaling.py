"""Replica count: an HPA on CPU or on in-flight requests, or a KEDA ScaledObject; and the PDB."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from modelpod import contract
from modelpod.deploy.render.image import ImageRef
from modelpod.deploy.render.labels import metadata, selector_labels
from modelpod.specfile.resolved import Spec

INFLIGHT_METRIC = contract.INFLIGHT_REQUESTS


def quantity(value: float) -> str:
    """A Kubernetes quantity: whole numbers plain, fractions in milli-units ("2.5" -> "2500m")."""
    if float(value).is_integer():
        return str(int(value))
    milli = (Decimal(str(value)) * 1000).quantize(Decimal(1))
    return f"{milli}m"


def _scale_target(spec: Spec) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name}


def _behavior(spec: Spec) -> dict[str, Any]:
    return {"scaleDown": {"stabilizationWindowSeconds": spec.scaling.scale_down_stabilization_s}}


def render_hpa(spec: Spec, image: ImageRef) -> dict[str, Any]:
    scaling = spec.scaling
    metric: dict[str, Any]
    if scaling.autoscaler == "cpu":
        target = {"type": "Utilization", "averageUtilization": scaling.target_cpu_percent}
        metric = {"type": "Resource", "resource": {"name": "cpu", "target": target}}
    else:  # inflight: served by the Prometheus adapter as a custom per-pod metric
        target = {"type": "AverageValue", "averageValue": quantity(scaling.target_concurrency)}
        metric = {"type": "Pods", "pods": {"metric": {"name": INFLIGHT_METRIC}, "target": target}}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(spec, image),
        "spec": {
            "scaleTargetRef": _scale_target(spec),
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [metric],
            "behavior": _behavior(spec),
        },
    }


def inflight_query(spec: Spec) -> str:
    labels = f'namespace="{spec.kubernetes.namespace}",model="{spec.name}"'
    return f"sum({INFLIGHT_METRIC}{{{labels}}})"


def render_scaled_object(spec: Spec, image: ImageRef) -> dict[str, Any]:
    scaling = spec.scaling
    trigger = {
        "type": "prometheus",
        "metadata": {
            "serverAddress": scaling.prometheus_url,
            "query": inflight_query(spec),
            "threshold": f"{scaling.target_concurrency:g}",  # KEDA parses a plain number, not a quantity
        },
    }
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(spec, image),
        "spec": {
            "scaleTargetRef": _scale_target(spec),
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(spec)}},
            "triggers": [trigger],
        },
    }


def render_pdb(spec: Spec, image: ImageRef) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(spec, image),
        "spec": {
            "maxUnavailable": spec.kubernetes.max_unavailable,
            "selector": {"matchLabels": selector_labels(spec)},
            # a crash-looping pod must not block a node drain
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
