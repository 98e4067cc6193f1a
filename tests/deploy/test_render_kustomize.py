"""Kustomize output built by the real `kubectl kustomize`: every overlay of every example.

An overlay must build to exactly what `render --profile P` renders (so a profile's whole difference
lives in its overlay), and for the digits example the overlays' patches are checked in full.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelpod.deploy.render import render_kustomize, render_manifests
from modelpod.deploy.render.kustomize import json_patch
from modelpod.specfile import load_spec, profile_names
from tests.tools import need_tool


def _write(files: dict[str, str], root: Path) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _build(kubectl: str, directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, f"kubectl kustomize {directory}:\n{result.stderr}"
    return {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(result.stdout)}


def _keyed(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.mark.parametrize("example", ["digits_dir", "minilm_dir", "sklearn_dir", "features_dir"])
def test_every_overlay_builds_to_the_profiles_manifests(
    example: str, request: pytest.FixtureRequest, tmp_path: Path, render_image: str
) -> None:
    kubectl = need_tool("kubectl", "install kubectl (it carries kustomize)")
    directory: Path = request.getfixturevalue(example)
    profiles = sorted({"dev", "staging", "prod", *profile_names(directory)})
    _write(render_kustomize(directory, profiles=profiles, image=render_image), tmp_path)
    base = load_spec(directory, None, require_model=False)
    assert _build(kubectl, tmp_path / "base") == _keyed(render_manifests(base, image=render_image))
    for profile in profiles:
        expected = render_manifests(load_spec(directory, profile, require_model=False), image=render_image)
        assert _build(kubectl, tmp_path / "overlays" / profile) == _keyed(expected), profile


def _patches(files: dict[str, str], profile: str) -> dict[str, list[str]]:
    """Overlay patches as {kind: [op path]} ("delete" for a deleted object)."""
    kustomization = yaml.safe_load(files[f"overlays/{profile}/kustomization.yaml"])
    assert kustomization["resources"] == ["../../base"]
    found: dict[str, list[str]] = {}
    for patch in kustomization.get("patches", []):
        body = yaml.safe_load(patch["patch"])
        if isinstance(body, dict):
            found[body["kind"]] = [body["$patch"]]
        else:
            found[patch["target"]["kind"]] = [f"{op['op']} {op['path']}" for op in body]
    return found


def test_digits_overlays_differ_only_in_replicas_resources_and_profile(
    digits_dir: Path, render_image: str
) -> None:
    files = render_kustomize(digits_dir, profiles=["dev", "staging", "prod"], image=render_image)
    args = "replace /spec/template/spec/containers/0/args"  # the server gets --profile P
    resources = [f"replace /spec/template/spec/containers/0/resources/{kind}/{res}"
                 for kind in ("requests", "limits") for res in ("cpu", "memory")]  # fmt: skip
    assert _patches(files, "dev") == {
        "Deployment": ["add /spec/replicas", args],  # one fixed replica, so no autoscaler
        "HorizontalPodAutoscaler": ["delete"],
    }
    assert _patches(files, "staging") == {
        "Deployment": [args],
        "HorizontalPodAutoscaler": ["replace /spec/minReplicas", "replace /spec/maxReplicas"],
    }
    assert _patches(files, "prod") == {
        "Deployment": [args, *resources],  # the digits spec gives prod 2 CPUs and 1Gi
        "HorizontalPodAutoscaler": ["replace /spec/minReplicas", "replace /spec/maxReplicas"],
    }


def test_json_patch_escapes_and_replaces_lists() -> None:
    old = {"labels": {"a/b": "1", "c~d": "2"}, "args": [1, 2], "keep": [1, {"x": 1}]}
    new = {"labels": {"a/b": "3"}, "args": [1, 2, 3], "keep": [1, {"x": 2}]}
    assert json_patch(old, new) == [
        {"op": "remove", "path": "/labels/c~0d"},
        {"op": "replace", "path": "/labels/a~1b", "value": "3"},
        {"op": "replace", "path": "/args", "value": [1, 2, 3]},
        {"op": "replace", "path": "/keep/1/x", "value": 2},
    ]
