"""checkov's Kubernetes checks on everything modelpod renders: no failure, and every skip justified here.

checkov lives in its own virtual environment (.venv-tools, made by `make tools`, which `make test` runs)
because its pins would downgrade packages of .venv. The test finds it through $MODELPOD_CHECKOV, then
PATH, then .venv-tools/bin/checkov; without it the test skips (fails in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from modelpod.deploy.render import render_manifests, render_training_job, to_yaml
from modelpod.specfile import Spec
from tests.tools import require

ROOT = Path(__file__).resolve().parents[2]

# check id -> (when it may be skipped, why it does not apply)
JUSTIFIED_SKIPS = {
    "CKV_K8S_21": (
        lambda spec: spec.kubernetes.namespace == "default",
        "the examples keep kubernetes.namespace at its default, as a first deployment does; the namespace "
        "is the user's choice (modelpod renders into any), and the all-features spec, in its own namespace, "
        "passes this check with no skip",
    ),
}


def _checkov() -> str:
    candidates = [
        os.environ.get("MODELPOD_CHECKOV"),
        shutil.which("checkov"),
        str(ROOT / ".venv-tools/bin/checkov"),
    ]
    found = next((c for c in candidates if c and Path(c).is_file()), None)
    require(found is not None, "checkov", "run `make tools` (it installs checkov in .venv-tools)")
    assert found is not None
    return found


def _run_checkov(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [_checkov(), "-d", str(directory), "--framework", "kubernetes", "--quiet", "--compact",
         "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-3000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports), reports
    assert sum(r["summary"]["resource_count"] for r in reports) > 0
    return [failure for r in reports for failure in r["results"]["failed_checks"]]


def test_checkov_finds_no_failure(all_render_specs: list[Spec], render_image: str, tmp_path: Path) -> None:
    skippable: dict[str, set[str]] = {check: set() for check in JUSTIFIED_SKIPS}
    for i, spec in enumerate(all_render_specs):
        objects = render_manifests(spec, image=render_image)
        objects += render_manifests(spec, image=render_image, target="kserve")
        if spec.train.command:
            objects.append(render_training_job(spec, image=render_image, run_id="checkov"))
        (tmp_path / f"{i:02d}-{spec.name}-{spec.profile or 'base'}.yaml").write_text(to_yaml(objects))
        for check, (applies, _reason) in JUSTIFIED_SKIPS.items():
            if applies(spec):
                skippable[check] |= {
                    f"{o['kind']}.{spec.kubernetes.namespace}.{o['metadata']['name']}" for o in objects
                }
    failures = _run_checkov(tmp_path)
    unjustified = [
        f"{f['check_id']} {f['resource']}: {f['check_name']}"
        for f in failures
        if f["resource"] not in skippable.get(f["check_id"], set())
    ]
    assert not unjustified, "\n".join(unjustified)


def test_checkov_does_fail_on_an_insecure_pod(
    feature_specs: list[Spec], render_image: str, tmp_path: Path
) -> None:
    deployment = next(
        o for o in render_manifests(feature_specs[0], image=render_image) if o["kind"] == "Deployment"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    del container["livenessProbe"]
    (tmp_path / "insecure.yaml").write_text(to_yaml([deployment]))
    failed = {f["check_id"] for f in _run_checkov(tmp_path)}
    assert {"CKV_K8S_20", "CKV_K8S_8"} <= failed
