"""The `optimized` profile, written into modelpod.yaml as text, so the file keeps its comments and order.

The profile points the model at the optimised directory on the ONNX runtime (dropping the original
runtime's options), and, where the optimised model differs from an example's expected outputs by more
than the example allows, carries the examples with a tolerance that covers it. An `optimized` profile
already in the file is replaced (specfile/edit.py edits the text); the new file is checked by loading it
with the profile before it replaces the old one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelpod.specfile.edit import replace_profile
from modelpod.specfile.load import load_spec

PROFILE = "optimized"


def loosened_atol(atol: float, difference: float) -> float:
    """A tolerance for an example: twice the largest difference seen, to two significant digits, never
    below the example's own."""
    wanted = 2 * difference
    if wanted <= atol:
        return atol
    scale = 10 ** (math.floor(math.log10(wanted)) - 1)
    return max(atol, float(math.ceil(wanted / scale) * scale))


def write_profile(source: Path, model_path: str, note: str, examples: list[dict[str, Any]] | None) -> None:
    """Add (or replace) the `optimized` profile in the spec file `source` (specfile/edit.py)."""
    values: dict[str, Any] = {"model": {"path": model_path, "format": "onnx", "options": None}}
    if examples is not None:
        values["examples"] = examples
    text = replace_profile(source.read_text(encoding="utf-8"), PROFILE, values, note=note)
    _replace_checked(source, text)


def _replace_checked(source: Path, text: str) -> None:
    """Write `text` over `source` once the spec it holds loads with the profile."""
    scratch = source.with_name(f".{source.name}.optimize")
    scratch.write_text(text, encoding="utf-8")
    try:
        load_spec(scratch, PROFILE)
        load_spec(scratch)
    except Exception:
        scratch.unlink(missing_ok=True)
        raise
    scratch.replace(source)


def raw_examples(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(example) for example in raw.get("examples") or [] if isinstance(example, Mapping)]
