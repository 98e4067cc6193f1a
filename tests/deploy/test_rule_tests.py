"""The rendered alert rules pass their `promtool test rules` unit tests (deploy/render/rule_tests.py), for
several thresholds; a broken rule fails them; and `modelpod render -o` writes both files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelpod.deploy.render.rule_tests import RULES_FILE, rule_tests, rules_file
from modelpod.specfile import load_spec
from tests.deploy.conftest import RENDER_IMAGE
from tests.tools import need_tool

MONITORING_VARIANTS = {
    "defaults": {"alerts": True},
    "strict and slow to fire": {
        "alerts": True,
        "alert_for": "1h",
        "max_error_ratio": 0.001,
        "max_p99_latency_s": 0.02,
        "max_rejected_per_s": 0.01,
    },
    "error alert off (ratio 1)": {"alerts": True, "max_error_ratio": 1, "alert_for": "30s"},
}


def project(digits_dir: Path, folder: Path, monitoring: dict) -> Path:
    spec = yaml.safe_load((digits_dir / "modelpod.yaml").read_text())
    spec.pop("examples", None)
    spec["model"]["path"] = "model/digits.onnx"  # absent, which rendering allows (require_model=False)
    spec["kubernetes"] = {"namespace": "models", "monitoring": monitoring}
    (folder / "modelpod.yaml").write_text(yaml.safe_dump(spec))
    return folder


def promtool_test(folder: Path, rules: dict, tests: dict) -> subprocess.CompletedProcess[str]:
    promtool = need_tool("promtool", "install Debian's prometheus package (../shared/ci/engine-up does)")
    (folder / RULES_FILE).write_text(yaml.safe_dump(rules))
    (folder / "rules.test.yaml").write_text(yaml.safe_dump(tests))
    return subprocess.run(
        [promtool, "test", "rules", str(folder / "rules.test.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("variant", list(MONITORING_VARIANTS))
def test_every_rule_passes_its_unit_tests(variant, digits_dir, tmp_path):
    spec = load_spec(project(digits_dir, tmp_path, MONITORING_VARIANTS[variant]), require_model=False)
    tests = rule_tests(spec)
    run = promtool_test(tmp_path, rules_file(spec), tests)
    assert run.returncode == 0, run.stdout + run.stderr
    firing = {
        check["alertname"]
        for case in tests["tests"]
        for check in case["alert_rule_test"]
        if check["exp_alerts"]
    }
    expected = {"ModelpodHighLatencyP99", "ModelpodRejectingRequests", "ModelpodHighErrorRate"}
    if variant == "error alert off (ratio 1)":
        expected.discard("ModelpodHighErrorRate")
    assert firing == expected  # each alert is shown firing on its own condition


@pytest.mark.parametrize(
    ("alert", "broken"),
    [
        ("ModelpodHighErrorRate", lambda expr: expr.rsplit(" > ", 1)[0] + " > 10"),  # can never fire
        ("ModelpodHighLatencyP99", lambda expr: expr.rsplit(" > ", 1)[0] + " > 0"),  # fires on health
        ("ModelpodRejectingRequests", lambda expr: expr.replace("rejected", "refused")),  # wrong metric
    ],
)
def test_a_broken_rule_fails_its_unit_tests(alert, broken, digits_dir, tmp_path):
    spec = load_spec(project(digits_dir, tmp_path, {"alerts": True}), require_model=False)
    rules = rules_file(spec)
    for rule in rules["groups"][0]["rules"]:
        if rule["alert"] == alert:
            rule["expr"] = broken(rule["expr"])
    run = promtool_test(tmp_path, rules, rule_tests(spec))
    assert run.returncode != 0
    assert alert in run.stdout + run.stderr


def test_render_writes_the_rules_and_their_tests(digits_dir, tmp_path):
    folder = project(digits_dir, tmp_path, {"alerts": True})
    out = tmp_path / "out"
    command = [sys.executable, "-m", "modelpod", "render", str(folder), "--image", RENDER_IMAGE]
    command += ["-o", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    promtool = need_tool("promtool", "install Debian's prometheus package (../shared/ci/engine-up does)")
    run = subprocess.run(
        [promtool, "test", "rules", str(out / "prometheus" / "rules.test.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rendered = next(out.glob("*-prometheusrule.yaml"))
    assert yaml.safe_load(rendered.read_text())["spec"] == yaml.safe_load(
        (out / "prometheus" / RULES_FILE).read_text()
    )
