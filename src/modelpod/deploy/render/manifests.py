"""The release's objects: resolved spec + image reference -> Kubernetes manifests in apply order, and the
training Job. Pure: the same inputs give the same output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from modelpod.deploy.render.autoscaling import render_hpa, render_pdb, render_scaled_object
from modelpod.deploy.render.image import ImageRef, RenderError, parse_image
from modelpod.deploy.render.job import render_training_job as _render_job
from modelpod.deploy.render.kserve import render_inference_service
from modelpod.deploy.render.monitoring import (
    render_dashboard_config_map,
    render_monitor,
    render_prometheus_rule,
)
from modelpod.deploy.render.network import render_ingress, render_network_policy, render_service
from modelpod.deploy.render.workload import autoscaled, render_deployment, render_service_account
from modelpod.specfile.resolved import Spec

Target = Literal["kubernetes", "kserve"]
Renderer = Callable[[Spec, ImageRef], dict[str, Any]]


def _renderers(spec: Spec, target: Target) -> list[Renderer]:
    """What to render, in apply order: identity and policy first, then the workload, then its users."""
    monitoring = spec.kubernetes.monitoring
    optional_monitoring: list[Renderer] = []
    if monitoring.monitor != "none":
        optional_monitoring.append(render_monitor)
    if monitoring.alerts:
        optional_monitoring.append(render_prometheus_rule)
    if monitoring.dashboard:
        optional_monitoring.append(render_dashboard_config_map)
    if target == "kserve":
        return [render_service_account, render_inference_service, *optional_monitoring]
    renderers: list[Renderer] = [render_service_account]
    if spec.kubernetes.network_policy.enabled:
        renderers.append(render_network_policy)
    renderers += [render_service, render_deployment, render_pdb]
    if autoscaled(spec):
        renderers.append(render_scaled_object if spec.scaling.autoscaler == "keda" else render_hpa)
    if spec.kubernetes.ingress.enabled:
        renderers.append(render_ingress)
    return renderers + optional_monitoring


def render_manifests(
    spec: Spec, *, image: str, target: Target = "kubernetes", allow_tag: bool = False
) -> list[dict[str, Any]]:
    """The release's objects in dependency (apply) order. `image` must be pinned by digest unless
    `allow_tag` (development clusters only)."""
    if target not in ("kubernetes", "kserve"):
        raise RenderError(f"unknown target {target!r}", hint="use kubernetes or kserve")
    ref = parse_image(image, allow_tag=allow_tag)
    return [render(spec, ref) for render in _renderers(spec, target)]


def render_training_job(spec: Spec, *, image: str, run_id: str, allow_tag: bool = False) -> dict[str, Any]:
    """A batch/v1 Job running the spec's train.command; `run_id` names it (`<name>-train-<run_id>`)."""
    return _render_job(spec, parse_image(image, allow_tag=allow_tag), run_id)
