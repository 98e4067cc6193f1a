"""Fixtures for the server tests: the echo test model, in-process apps and spec variants."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelpod.specfile import Spec, load_spec

ECHO_DIR = Path(__file__).resolve().parents[1] / "models" / "echo"


def with_server(spec: Spec, **settings: Any) -> Spec:
    """A copy of `spec` with some server settings changed."""
    return spec.model_copy(update={"server": spec.server.model_copy(update=settings)})


@pytest.fixture
def echo_spec() -> Spec:
    return load_spec(ECHO_DIR)


@pytest.fixture
def echo_project(tmp_path: Path) -> Callable[..., Path]:
    """A copy of the echo project with server settings overridden, for servers in a subprocess."""

    def make(**server: Any) -> Path:
        shutil.copy(ECHO_DIR / "echo_model.py", tmp_path / "echo_model.py")
        spec = yaml.safe_load((ECHO_DIR / "modelpod.yaml").read_text())
        spec["server"].update(server)
        (tmp_path / "modelpod.yaml").write_text(yaml.safe_dump(spec))
        return tmp_path

    return make


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server runs on asyncio (uvloop); trio is not a target
