"""Commands render: Kubernetes manifests. Importing this module registers them on the app."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from modelpod.cli.base import ProfileOption, SpecPath, app, err

RenderFormat = Literal["yaml", "kustomize", "kserve"]


@app.command()
def render(
    # first: a required option, it comes before the parameters with defaults
    image: Annotated[
        str,
        typer.Option("--image", help="Image by digest, REPOSITORY@sha256:... (as `modelpod push` prints)."),
    ],
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    fmt: Annotated[
        RenderFormat,
        typer.Option(
            "--format", help="yaml: plain manifests; kustomize: base + overlays; kserve: an InferenceService."
        ),
    ] = "yaml",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Directory to write; default: YAML on stdout.")
    ] = None,
    allow_tag: Annotated[
        bool,
        typer.Option("--allow-tag", help="Accept an image without a digest (development clusters only)."),
    ] = False,
) -> None:
    """Render Kubernetes manifests for the spec (pure: reads no cluster)."""
    from modelpod.deploy.render import RenderError, parse_image

    try:
        parse_image(image, allow_tag=allow_tag)
    except RenderError as exc:
        raise typer.BadParameter(str(exc), param_hint="--image") from None
    files = _render_files(spec, profile, image, fmt, allow_tag)
    if output is None:
        if fmt == "kustomize":
            raise typer.BadParameter("kustomize output is a directory tree", param_hint="--output")
        sys.stdout.write("---\n".join(files.values()))
        return
    if fmt == "yaml":
        files.update(_rule_files(spec, profile))
    for relative, text in files.items():
        path = output / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    err.print(f"wrote {len(files)} file(s) to {output}", markup=False, highlight=False)


def _rule_files(spec_path: Path, profile: str | None) -> dict[str, str]:
    """The alert rules as a Prometheus rule file and their `promtool test rules` file, when the spec
    renders alerts: for checking the rules in the user's own CI."""
    import yaml

    from modelpod.deploy.render.rule_tests import RULES_FILE, rule_tests, rules_file
    from modelpod.specfile import load_spec

    resolved = load_spec(spec_path, profile, require_model=False)
    if not resolved.kubernetes.monitoring.alerts:
        return {}
    return {
        f"prometheus/{RULES_FILE}": yaml.safe_dump(rules_file(resolved), sort_keys=False),
        "prometheus/rules.test.yaml": yaml.safe_dump(rule_tests(resolved), sort_keys=False),
    }


def _render_files(
    spec_path: Path, profile: str | None, image: str, fmt: RenderFormat, allow_tag: bool
) -> dict[str, str]:
    from modelpod.deploy.render import Target, render_kustomize, render_manifests, to_yaml
    from modelpod.specfile import load_spec, profile_names

    if fmt == "kustomize":
        profiles = [profile] if profile else sorted({"dev", "staging", "prod", *profile_names(spec_path)})
        return render_kustomize(spec_path, profiles=profiles, image=image, allow_tag=allow_tag)
    resolved = load_spec(spec_path, profile, require_model=False)
    target: Target = "kserve" if fmt == "kserve" else "kubernetes"
    objects = render_manifests(resolved, image=image, target=target, allow_tag=allow_tag)
    return {f"{i:02d}-{obj['kind'].lower()}.yaml": to_yaml([obj]) for i, obj in enumerate(objects, 1)}
