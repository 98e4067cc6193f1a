"""The `bench` extra's packages, imported when used, with a message naming the extra when one is missing."""

from __future__ import annotations

import importlib
from typing import Any

from modelpod.errors import ModelpodError


def require(module: str, *, package: str | None = None) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but broken: its own message says more than ours would
        raise ModelpodError(
            f"modelpod bench needs the Python package {package or module!r}, which is not installed",
            hint="pip install 'modelpod[bench]'",
        ) from None


def check_load_generator() -> None:
    """Fail with the install hint before importing the load generator's modules, which import these."""
    require("aiohttp")
    require("hdrh", package="hdrhistogram")
