"""Kustomize output: base/ is the spec without a profile; overlays/<profile>/ holds only what P changes.

Each overlay is computed, not written by hand: the profile's objects are rendered and compared with the
base's, and every difference becomes a JSON patch (RFC 6902) on that object; objects only the profile
has are added, objects only the base has are deleted. So `kubectl kustomize overlays/prod` gives exactly
what `modelpod render --profile prod` gives, and an overlay shows at a glance what a profile changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modelpod.deploy.render.manifests import render_manifests
from modelpod.deploy.render.yaml_text import dump as _dump
from modelpod.specfile.load import load_spec

KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
ObjectKey = tuple[str, str, str]  # apiVersion, kind, name


def _key(obj: dict[str, Any]) -> ObjectKey:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def _file_name(obj: dict[str, Any]) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def _pointer(path: tuple[str | int, ...]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def json_patch(old: Any, new: Any, path: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """RFC 6902 operations turning `old` into `new`: mappings key by key, lists item by item when their
    lengths match (else replaced whole), anything else replaced."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = [
            {"op": "remove", "path": _pointer((*path, key))} for key in old if key not in new
        ]
        for key, value in new.items():
            if key in old:
                ops += json_patch(old[key], value, (*path, key))
            else:
                ops.append({"op": "add", "path": _pointer((*path, key)), "value": value})
        return ops
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            op for i, (a, b) in enumerate(zip(old, new, strict=True)) for op in json_patch(a, b, (*path, i))
        ]
    return [{"op": "replace", "path": _pointer(path), "value": new}]


def _target(obj: dict[str, Any]) -> dict[str, str]:
    group, _, version = obj["apiVersion"].rpartition("/")
    target = {"version": version, "kind": obj["kind"], "name": obj["metadata"]["name"]}
    return {"group": group, **target} if group else target


def _overlay(base: list[dict[str, Any]], profiled: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    base_by_key = {_key(obj): obj for obj in base}
    profiled_by_key = {_key(obj): obj for obj in profiled}
    files: dict[str, str] = {}
    resources: list[str] = ["../../base"]
    patches: list[dict[str, Any]] = []
    for key, obj in profiled_by_key.items():
        if key not in base_by_key:
            files[f"{prefix}/{_file_name(obj)}"] = _dump(obj)
            resources.append(_file_name(obj))
        elif ops := json_patch(base_by_key[key], obj):
            patches.append({"target": _target(obj), "patch": _dump(ops)})
    for key, obj in base_by_key.items():
        if key not in profiled_by_key:
            meta = {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"]}
            delete = {
                "$patch": "delete",
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "metadata": meta,
            }
            patches.append({"patch": _dump(delete)})
    kustomization: dict[str, Any] = {**KUSTOMIZATION, "resources": resources}
    if patches:
        kustomization["patches"] = patches
    files[f"{prefix}/kustomization.yaml"] = _dump(kustomization)
    return files


def kustomize_tree(
    spec_path: str | Path, *, profiles: list[str], image: str, allow_tag: bool
) -> dict[str, str]:
    base = render_manifests(load_spec(spec_path, None, require_model=False), image=image, allow_tag=allow_tag)
    files = {f"base/{_file_name(obj)}": _dump(obj) for obj in base}
    files["base/kustomization.yaml"] = _dump(
        {**KUSTOMIZATION, "resources": [_file_name(obj) for obj in base]}
    )
    for profile in profiles:
        spec = load_spec(spec_path, profile, require_model=False)
        profiled = render_manifests(spec, image=image, allow_tag=allow_tag)
        files |= _overlay(base, profiled, f"overlays/{profile}")
    return files


def render_kustomize(
    spec_path: str | Path, *, profiles: Iterable[str], image: str, allow_tag: bool = False
) -> dict[str, str]:
    """Kustomize files (relative path -> text): base/ from the spec without a profile, and
    overlays/<profile>/ holding only what that profile changes."""
    return kustomize_tree(spec_path, profiles=list(profiles), image=image, allow_tag=allow_tag)
