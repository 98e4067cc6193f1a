"""The `optimized` profile, written into modelpod.yaml as text, so the file keeps its comments and order.

The profile points the model at the optimised directory on the ONNX runtime (dropping the original
runtime's options), and, where the optimised model differs from an example's expected outputs by more
than the example allows, carries the examples with a tolerance that covers it. An `optimized` profile
already in the file is replaced; the new file is checked by loading it with the profile before it
replaces the old one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from modelpod.optimize.errors import OptimizeError
from modelpod.spec.load import load_spec

PROFILE = "optimized"


def profile_text(model_path: str, note: str, examples: list[dict[str, Any]] | None, indent: int) -> str:
    """The profile as YAML lines, indented as a child of `profiles:`."""
    body: dict[str, Any] = {"model": {"path": model_path, "format": "onnx", "options": None}}
    if examples is not None:
        body["examples"] = examples
    dumped = yaml.safe_dump(body, sort_keys=False, default_flow_style=False, width=100)
    inner = "".join(" " * (indent + 2) + line + "\n" for line in dumped.splitlines())
    return f"{' ' * indent}{PROFILE}:  # {note}\n{inner}"


def loosened_atol(atol: float, difference: float) -> float:
    """A tolerance for an example: twice the largest difference seen, to two significant digits, never
    below the example's own."""
    wanted = 2 * difference
    if wanted <= atol:
        return atol
    scale = 10 ** (math.floor(math.log10(wanted)) - 1)
    return max(atol, float(math.ceil(wanted / scale) * scale))


def write_profile(source: Path, model_path: str, note: str, examples: list[dict[str, Any]] | None) -> None:
    """Add (or replace) the `optimized` profile in the spec file `source`."""
    text = source.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    profiles = _child(root, "profiles")
    if profiles is None:
        lines += ["profiles:\n", profile_text(model_path, note, examples, 2)]
    elif not isinstance(profiles, yaml.MappingNode) or profiles.flow_style:
        raise OptimizeError(
            f"{source}: profiles is not written as a block mapping, so optimize cannot add {PROFILE} to it",
            hint="write profiles one per line (profiles:\\n  prod: ...), or add the profile by hand",
        )
    else:
        indent = profiles.value[0][0].start_mark.column if profiles.value else 2
        start, end = _span(profiles, lines)
        existing = _child(profiles, PROFILE)
        if existing is not None:
            key = next(k for k, v in profiles.value if v is existing)
            start, end = key.start_mark.line, _end_line(existing, lines)
        else:
            start = end
        lines[start:end] = [profile_text(model_path, note, examples, indent)]
    _replace_checked(source, "".join(lines))


def _child(node: Any, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _span(mapping: yaml.MappingNode, lines: list[str]) -> tuple[int, int]:
    last_value = mapping.value[-1][1] if mapping.value else mapping
    return mapping.start_mark.line, _end_line(last_value, lines)


def _end_line(node: Any, lines: list[str]) -> int:
    """The index of the first line after `node`. A block node's end mark is where the next token starts
    (the next key, after any blank lines and comments, which stay with what follows)."""
    mark = node.end_mark
    ends_inside_line = mark.line < len(lines) and lines[mark.line][: mark.column].strip() != ""
    end: int = min(mark.line + 1 if ends_inside_line else mark.line, len(lines))
    while end - 1 > node.start_mark.line and lines[end - 1].strip()[:1] in ("", "#"):
        end -= 1
    return end


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
