"""The cluster commands end to end: a spec rendered by the real renderer, deployed through the real
adapter to a faked API server (tests/deploy/fake_api.py; a fake because no Kubernetes API server can
run here), and the messages a person sees, without tracebacks. The last test runs the real `modelpod`
command against a closed local port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from modelpod.cli import cluster as cluster_cli
from modelpod.cli.app import run
from tests.deploy.fake_api import BAD, GOOD, FakeApi, crash_loop, doubling

SPEC = """
name: digits
model: {path: model.onnx}
kubernetes: {namespace: models}
scaling: {autoscaler: none}
examples:
  - {name: seven, inputs: {x: [3.5]}, expected: {y: [7.0]}}
"""
FAST = ["--timeout", "30", "--poll-interval", "0.1", "--smoke-timeout", "5"]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    fake.predictors[GOOD] = doubling
    monkeypatch.setattr(cluster_cli, "connect", lambda context: fake.cluster())
    return fake


@pytest.fixture
def spec_dir(write_spec: Callable[..., Path]) -> str:
    return str(write_spec(SPEC).parent)


def modelpod(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        run(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return int(exited.value.code or 0), captured.out, captured.err


def test_deploy_then_history_status_scale_logs_and_delete(
    api: FakeApi, spec_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = modelpod(capsys, "deploy", spec_dir, "--image", GOOD, *FAST)
    assert code == 0, err
    assert "deployed digits revision 1 in namespace models" in out
    assert "smoke test passed: seven" in out
    assert "applied Deployment/digits" in err

    code, out, _ = modelpod(capsys, "history", spec_dir)
    assert code == 0
    assert "│ 1        │ deployed │" in out

    code, out, _ = modelpod(capsys, "status", spec_dir)
    assert code == 0
    assert "revision 1 (deployed)" in out
    assert "Deployment/digits: 1/1 available" in out

    code, out, err = modelpod(capsys, "scale", "3", spec_dir)
    assert (code, out.strip()) == (0, "scaled Deployment/digits to 3 replica(s)")

    first, *others = sorted(api.names("pods", "models"))
    api.logs[first] = ["ready", "POST /predict 200"]
    code, out, err = modelpod(capsys, "logs", spec_dir, "--tail", "1")
    assert code == 0, err
    assert out == "POST /predict 200\n"
    assert f"==> {first}" in err
    assert all(f"(no log: no log for pod {pod}" in err for pod in others)

    code, out, _ = modelpod(capsys, "delete", spec_dir, "--yes")
    assert code == 0
    assert "Deployment/digits" in out
    assert api.names("deployments", "models") == set()


def test_failed_deploy_explains_and_rolls_back(
    api: FakeApi, spec_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert modelpod(capsys, "deploy", spec_dir, "--image", GOOD, *FAST)[0] == 0
    api.behaviours[BAD] = crash_loop(["Traceback (most recent call last):", "ModelLoadError: bad file"])

    code, _, err = modelpod_allowing_pod_tracebacks(capsys, "deploy", spec_dir, "--image", BAD, *FAST)

    assert code == 1
    assert "error: revision 2 of digits failed: Deployment digits: CrashLoopBackOff" in err
    assert "ModelLoadError: bad file" in err
    assert "Rolled back: revision 3 restores revision 1" in err

    code, _, err = modelpod_allowing_pod_tracebacks(capsys, "rollback", spec_dir, "--to", "2", *FAST[:4])
    assert code == 1
    assert "error: revision 4 (rollback to 2) failed: Deployment digits: CrashLoopBackOff" in err
    code, out, _ = modelpod(capsys, "rollback", spec_dir, "--to", "1", *FAST[:4])
    assert (code, out.strip()) == (0, "rolled back digits: revision 5 (rollback to 1)")


def modelpod_allowing_pod_tracebacks(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Like `modelpod`, for a failure whose explanation quotes a crashed pod's own traceback."""
    with pytest.raises(SystemExit) as exited:
        run(list(argv))
    captured = capsys.readouterr()
    assert 'File "' not in captured.err  # no Python frames of modelpod itself
    return int(exited.value.code or 0), captured.out, captured.err


def test_dry_run_prints_the_diff_and_applies_nothing(
    api: FakeApi, spec_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert modelpod(capsys, "deploy", spec_dir, "--image", GOOD, *FAST)[0] == 0
    before = len(api.calls("PATCH"))

    code, out, err = modelpod(capsys, "deploy", spec_dir, "--image", BAD, "--dry-run")

    assert code == 0
    assert re.search(rf"^\+\s+(- )?image: {re.escape(BAD)}$", out, re.MULTILINE)
    assert "update Deployment/digits" in err
    assert "nothing was applied" in err
    assert all(params.get("dryRun") == "All" for _, _, params in api.calls("PATCH")[before:])


def test_forbidden_and_missing_namespace_are_messages_not_tracebacks(
    api: FakeApi, spec_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    api.forbidden.add(("PATCH", "serviceaccounts"))
    code, _, err = modelpod(capsys, "deploy", spec_dir, "--image", GOOD, *FAST)
    assert code == 1
    assert "error: cannot apply ServiceAccount/digits: serviceaccounts is forbidden" in err
    assert "Hint: your user lacks RBAC permission" in err

    code, _, err = modelpod(capsys, "history", spec_dir, "--namespace", "absent")
    assert code == 1
    assert "namespace 'absent' does not exist" in err


def test_unreachable_cluster_through_the_real_command(tmp_path: Path, spec_dir: str) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    env = {**os.environ, "KUBECONFIG": str(config)}
    result = subprocess.run(
        [sys.executable, "-m", "modelpod", "deploy", spec_dir, "--image", GOOD],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "error: cannot reach the Kubernetes API server at https://127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_kubeconfig_through_the_real_command(tmp_path: Path, spec_dir: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config either
    result = subprocess.run(
        [sys.executable, "-m", "modelpod", "history", spec_dir],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "error: no usable Kubernetes configuration" in result.stderr
    assert "Hint: set KUBECONFIG" in result.stderr
    assert "Traceback" not in result.stderr
