"""The `modelpod` command line, assembled: importing each command module registers its commands on the
one Typer app (cli/base.py), which none of them imports from here, so there is no import cycle."""

from __future__ import annotations

# importing a command module registers its commands; the help lists them in that order, local ones first
import modelpod.cli.local  # noqa: F401
from modelpod.cli import bench, cluster, images, kube, optimize  # noqa: F401
from modelpod.cli.base import (
    COMMAND_EXTRAS,
    ModelFormat,
    PortOption,
    ProfileOption,
    SpecPath,
    app,
    err,
    out,
    print_error,
    run,
)

__all__ = [
    "COMMAND_EXTRAS",
    "ModelFormat",
    "PortOption",
    "ProfileOption",
    "SpecPath",
    "app",
    "err",
    "out",
    "print_error",
    "run",
]
