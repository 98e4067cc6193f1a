"""Fixtures for the image tests: a real container engine, copies of the examples in temporary
directories, and each example image built once per session.

The engine, registry and base image come from ENGINE_UP_DOCKER, ENGINE_UP_REGISTRY and
ENGINE_UP_BASE_IMAGE: export them after starting a Docker engine and a registry (README.md says how;
CI's .ci/run has a script print them). Without a reachable engine the image tests skip on a developer
machine and fail in CI (tests/tools.py `require`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import modelpod
from modelpod.images.context import ContextOptions, modelpod_wheel
from modelpod.images.engine import Engine, connect
from modelpod.images.errors import EngineError
from modelpod.images.pipeline import BuildOptions, BuildResult, QuietReporter, build_image
from modelpod.images.smoke import SmokeOptions
from modelpod.specfile import load_spec
from tests.tools import require

DEFAULT_BASE = "python:3.11-slim"
# how to get what the image tests need, from a clone (the skip reasons say it)
HOW_TO_GET_AN_ENGINE = (
    "start a Docker engine (with BuildKit) and export ENGINE_UP_DOCKER=$(command -v docker); "
    "README.md, 'The two commands', says how to run the image tests"
)
HOW_TO_GET_A_REGISTRY = "run an OCI registry and export ENGINE_UP_REGISTRY=HOST:PORT (README.md)"
WHEELHOUSE = Path("/opt/wheels")  # where this machine keeps the CPU torch wheel the minilm image needs
HOW_TO_GET_TORCH_CPU = (
    f"put torch's CPU wheel in {WHEELHOUSE}: pip download --no-deps -d {WHEELHOUSE} torch==2.13.0+cpu"
)


def docker_path() -> str:
    return os.environ.get("ENGINE_UP_DOCKER", "/usr/bin/docker")


@pytest.fixture(scope="session")
def engine() -> Engine:
    reason = ""
    try:
        connected = connect(docker_path())
    except EngineError as exc:
        connected = None
        reason = str(exc)
    require(connected is not None, "a docker engine", f"{HOW_TO_GET_AN_ENGINE} ({reason})")
    assert connected is not None
    return connected


@pytest.fixture(scope="session")
def registry() -> str:
    address = os.environ.get("ENGINE_UP_REGISTRY", "")
    require(bool(address), "a local OCI registry", HOW_TO_GET_A_REGISTRY)
    return address


@pytest.fixture(scope="session")
def session_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """modelpod's wheel, built once: every image of the session installs the same runtime layer, so a
    rebuild shows only what the test changed (others may be editing the source tree meanwhile)."""
    # the tree these tests import (a git worktree's), which need not be the one modelpod is installed from
    source = Path(modelpod.__file__).resolve().parents[2]
    wheel = modelpod_wheel(300, source if (source / "pyproject.toml").is_file() else None)
    assert wheel is not None, "modelpod should be installed from this source tree"
    target = tmp_path_factory.mktemp("wheel") / wheel.name
    shutil.copy2(wheel, target)
    shutil.rmtree(wheel.parent)
    return target


def copy_example(source: Path, destination: Path) -> Path:
    """A copy of an example (its trained model included) that builds on the engine-up base image."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(".modelpod", "__pycache__"))
    base = os.environ.get("ENGINE_UP_BASE_IMAGE", DEFAULT_BASE)
    if base != DEFAULT_BASE:
        with (destination / "modelpod.yaml").open("a", encoding="utf-8") as spec:
            spec.write(f"image:\n  base: {base}\n")
    return destination


@pytest.fixture(scope="session")
def build_example(
    engine: Engine, session_wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., tuple[Path, BuildResult, QuietReporter]]:
    def build(
        directory: Path, tag: str, profile: str | None = None, **context: object
    ) -> tuple[Path, BuildResult, QuietReporter]:
        reporter = QuietReporter()
        options = BuildOptions(
            tag=tag,
            context=ContextOptions(modelpod_wheel=session_wheel, **context),  # type: ignore[arg-type]
            network="host",
            timeout_s=1800,
            smoke_options=SmokeOptions(ready_timeout_s=180),
        )
        try:
            result = build_image(engine, load_spec(directory, profile), options, reporter)
        except Exception as exc:
            tail = "\n".join(reporter.lines[-60:])
            raise AssertionError(f"build of {tag} failed: {exc}\n--- build output ---\n{tail}") from exc
        return directory, result, reporter

    return build


@pytest.fixture(scope="session")
def digits_image(
    build_example: Callable[..., tuple[Path, BuildResult, QuietReporter]],
    digits_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, BuildResult, QuietReporter]:
    directory = copy_example(digits_dir, tmp_path_factory.mktemp("images") / "digits")
    return build_example(directory, "modelpod-test/digits:buildkit")


@pytest.fixture(scope="session")
def minilm_image(
    build_example: Callable[..., tuple[Path, BuildResult, QuietReporter]],
    minilm_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, BuildResult, QuietReporter]:
    require(WHEELHOUSE.is_dir(), "the CPU torch wheelhouse", HOW_TO_GET_TORCH_CPU)
    directory = copy_example(minilm_dir, tmp_path_factory.mktemp("images") / "minilm")
    return build_example(directory, "modelpod-test/minilm:buildkit", wheelhouse=WHEELHOUSE)


@pytest.fixture(scope="session")
def smollm2_image(
    build_example: Callable[..., tuple[Path, BuildResult, QuietReporter]],
    smollm2_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, BuildResult, QuietReporter]:
    """SmolLM2 shares minilm's dependencies (the transformers extra): its build reuses that layer."""
    require(WHEELHOUSE.is_dir(), "the CPU torch wheelhouse", HOW_TO_GET_TORCH_CPU)
    directory = copy_example(smollm2_dir.parent, tmp_path_factory.mktemp("images") / "smollm2")
    return build_example(directory, "modelpod-test/smollm2:buildkit", wheelhouse=WHEELHOUSE)


def docker(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [docker_path(), *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
