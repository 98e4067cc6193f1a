"""External tools the tests use (a container engine, promtool, kubectl, checkov ...).

A tool that is missing skips its tests on a developer's machine, with the reason and the way to get it;
in CI (MODELPOD_CI=1, set by .ci/run) the same absence fails the test, because CI is supposed to have
every tool and a silent skip would let a whole suite go untested.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("MODELPOD_CI") == "1"


def require(available: bool, what: str, how_to_get_it: str) -> None:
    """Skip (or, in CI, fail) the calling test unless `available`."""
    if available:
        return
    message = f"{what} is not available: {how_to_get_it}"
    if in_ci():
        pytest.fail(f"{message} (MODELPOD_CI=1: CI must have it)")
    pytest.skip(message)


def need_tool(name: str, how_to_get_it: str) -> str:
    """The path of executable `name` on PATH; skips (fails in CI) when it is missing."""
    path = shutil.which(name)
    require(path is not None, f"the `{name}` command", how_to_get_it)
    assert path is not None
    return path
