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

from modelpod.deploy.render.image import ImageRef, RenderError, parse_image
from modelpod.deploy.render.kustomize import render_kustomize
from modelpod.deploy.render.manifests import Target, render_manifests, render_training_job
from modelpod.deploy.render.yaml_text import to_yaml

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
