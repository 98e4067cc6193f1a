"""Pure rendering: resolved spec + image reference -> Kubernetes manifests (plain dicts).

    render_manifests(spec, image=..., target="kubernetes")   the release's objects, in apply order
    render_training_job(spec, image=..., run_id=...)          a batch/v1 Job for `modelpod train`
    render_kustomize(spec_path, profiles=[...], image=...)    a base plus one overlay per profile
    to_yaml(objects)                                          one multi-document YAML text

Nothing here reads the cluster, the clock or the environment: the same inputs give the same output,
which tests compare as a whole. Every object carries the recommended `app.kubernetes.io/*` labels and
its namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
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
from modelpod.spec.resolved import Spec

__all__ = [
    "ImageRef",
    "RenderError",
    "Target",
    "parse_image",
    "render_kustomize",
    "render_manifests",
    "render_training_job",
    "to_yaml",
]

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


def render_kustomize(
    spec_path: str | Path, *, profiles: Iterable[str], image: str, allow_tag: bool = False
) -> dict[str, str]:
    """Kustomize files (relative path -> text): base/ from the spec without a profile, and
    overlays/<profile>/ holding only what that profile changes."""
    from modelpod.deploy.render.kustomize import kustomize_tree

    return kustomize_tree(spec_path, profiles=list(profiles), image=image, allow_tag=allow_tag)


def to_yaml(objects: Iterable[dict[str, Any]]) -> str:
    """Multi-document YAML, in the given order; multi-line strings as literal blocks."""
    from modelpod.deploy.render.yaml_text import dump_all

    return dump_all(objects)
