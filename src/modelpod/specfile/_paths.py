"""The paths a spec names: one rule for all of them, and the example files they lead to."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from modelpod.errors import SpecIssue
from modelpod.specfile._yaml import read_limited


def inside(root: Path, relative: str, field: str, issues: list[SpecIssue]) -> Path | None:
    """`relative`, a path the spec names, resolved against the spec's directory `root` with symlinks
    followed; None (and an issue) when it leads outside `root`.

    One rule for every path in the spec and every command: the image holds the spec's directory and
    nothing else, so a path that leaves it would work under `serve` and break (or leak a file) in a build.
    """
    hint = (
        "paths in the spec stay inside its directory (links are followed): the image holds that "
        "directory and nothing else; move or copy the file in"
    )
    try:
        path = (root / relative).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        issues.append(SpecIssue(field, f"cannot follow {relative!r}: {exc}", hint=hint))
        return None
    if path.is_relative_to(root):
        return path
    lexical = Path(os.path.normpath(root / relative))
    how = f"leads through a symlink to {path}" if lexical.is_relative_to(root) else f"leads to {path}"
    issues.append(SpecIssue(field, f"{relative!r} {how}, outside the spec's directory {root}", hint=hint))
    return None


def read_example(path: Path, limit: int) -> Any:
    """An example file's JSON; at most `limit` bytes (server.max_body_bytes: it is sent as one request)."""
    data = read_limited(path, limit)
    if data is None:
        raise ValueError(
            f"the file is larger than server.max_body_bytes ({limit} bytes), and an example is sent as "
            "one request"
        )
    return json.loads(data.decode("utf-8"))
