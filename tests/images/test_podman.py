"""podman and buildah for real, from the command line as a user runs them (`modelpod build --engine`).

podman builds the digits image, runs it hardened (read-only, no capabilities, uid 10001), checks the
example's answer and stops it with SIGTERM (exit 0): the build's smoke test. buildah builds the same
image into the storage it shares with podman; it cannot run containers, so without `--no-smoke-test`
it stops with a message that says so.

What this machine needed (`.ci/podman-up` does it, docs/images.md says why): Debian's podman and
buildah packages; the base image copied from docker's store (`docker save | podman load`, no registry
to pull from); and, because this sandbox refuses the rlimits podman sets by default (runc: "error
setting rlimit type 7 / 6: operation not permitted"), default_ulimits in containers.conf below the
host's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.images.conftest import DEFAULT_BASE, copy_example
from tests.tools import need_tool, require

pytestmark = pytest.mark.slow

HOW_TO_GET_THEM = "apt-get install podman buildah, then run .ci/podman-up (docs/images.md)"


@pytest.fixture(scope="module")
def podman() -> str:
    path = need_tool("podman", HOW_TO_GET_THEM)
    base = subprocess.run([path, "image", "exists", DEFAULT_BASE], timeout=60, check=False)
    require(base.returncode == 0, f"the base image {DEFAULT_BASE} in podman's store", HOW_TO_GET_THEM)
    return path


@pytest.fixture(scope="module")
def project(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_example(digits_dir, tmp_path_factory.mktemp("podman") / "digits")


def build(project: Path, engine: str, tag: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modelpod", "build", str(project), "--engine", engine, "--tag", tag]
    return subprocess.run(
        [*command, "--network", "host", *extra], capture_output=True, text=True, timeout=900, check=False
    )


def test_podman_builds_runs_hardened_and_stops_the_image(podman: str, project: Path) -> None:
    run = build(project, "podman", "modelpod-test/digits:podman")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "example 'seven': outputs match" in output
    assert "stopped with SIGTERM: exit code 0" in output
    assert "smoke test passed: seven" in output


def test_buildah_builds_the_image_into_podmans_store(podman: str, project: Path) -> None:
    need_tool("buildah", HOW_TO_GET_THEM)
    refused = build(project, "buildah", "modelpod-test/digits:buildah")
    assert refused.returncode == 1
    assert "buildah builds images but cannot run them" in refused.stderr
    assert "Traceback" not in refused.stderr

    run = build(project, "buildah", "modelpod-test/digits:buildah", "--no-smoke-test")
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    image = "modelpod-test/digits:buildah"
    exists = subprocess.run([podman, "image", "exists", image], timeout=60, check=False)
    assert exists.returncode == 0
