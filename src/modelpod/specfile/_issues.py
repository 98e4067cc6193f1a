"""Turning YAML and pydantic errors into SpecIssues that name the field, its line and a fix."""

from __future__ import annotations

import types
import typing
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from modelpod.errors import SpecIssue
from modelpod.signature import suggest
from modelpod.specfile.patterns import PATTERN_HINTS

Loc = tuple[str | int, ...]


def format_path(loc: Loc) -> str:
    """("model", "signature", "inputs", 0, "dtype") -> "model.signature.inputs[0].dtype"."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def yaml_issue(error: yaml.YAMLError, text: str) -> SpecIssue:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    line = mark.line + 1 if mark is not None else None
    hint = "check indentation and quoting near that line"
    if isinstance(error, yaml.reader.ReaderError):  # a control character: no mark, a position
        line = text[: error.position].count("\n") + 1
        problem = f"character #x{error.character:04x} is not allowed in YAML"
        hint = "remove control characters (is this a binary file?); write them as escapes in a quoted string"
    return SpecIssue(path="", message=f"not valid YAML: {problem}", hint=hint, line=line)


def validation_issues(
    error: ValidationError, model: type[BaseModel], lines: dict[Loc, int], prefix: Loc = ()
) -> list[SpecIssue]:
    issues = []
    for item in error.errors(include_url=False):
        loc = _clean_loc(item["loc"])
        full = (*prefix, *loc)
        kind = item["type"]
        message = item["msg"]
        value = item.get("input")
        hint = None
        if kind == "extra_forbidden":
            allowed = _field_names(model, loc[:-1])
            close = suggest(str(loc[-1]), allowed) if allowed else None
            message = f"unknown key {loc[-1]!r}"
            hint = (
                f"did you mean {close!r}?"
                if close
                else (f"allowed keys: {', '.join(allowed)}" if allowed else None)
            )
            value = None
        elif kind == "missing":
            message = "required field is missing"
            value = None
        elif kind.startswith("value_error"):
            message = message.removeprefix("Value error, ")
        elif kind == "string_pattern_mismatch":
            # pydantic's message quotes the regular expression; the hint says in words what it takes
            message = "not a value this field takes"
            hint = PATTERN_HINTS.get(str(item.get("ctx", {}).get("pattern", "")))
            if item["loc"][-1] == "[key]":
                message = f"the key: {message}"
        elif kind == "finite_number":
            hint = ".inf and .nan are not allowed here: write a number"
        if hint is None and kind != "extra_forbidden":
            hint = _description(model, loc) or "`modelpod schema` describes every field and what it takes"
        if isinstance(value, dict | list) or kind == "model_type":
            value = None  # a whole section is noise in a one-line message
        issues.append(
            SpecIssue(
                path=format_path(full), message=message, value=value, hint=hint, line=_line(lines, full)
            )
        )
    return _without_cascades(issues)


def _without_cascades(issues: list[SpecIssue]) -> list[SpecIssue]:
    """Drop an issue on a section when one of its fields has an issue: a bad item makes pydantic also
    report its list as too short, and the item's message is the one that helps."""
    paths = [i.path for i in issues]
    return [
        issue
        for issue in issues
        if not any(
            other != issue.path and other.startswith((issue.path + ".", issue.path + "[")) for other in paths
        )
    ]


def _line(lines: dict[Loc, int], loc: Loc) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def _clean_loc(loc: tuple[Any, ...]) -> Loc:
    # pydantic adds union branch names ("str", "function-after[...]") to locations; keep real field names.
    return tuple(
        p for p in loc if isinstance(p, int) or not (("[" in p) or p in {"str", "int", "float", "bool"})
    )


def _field_names(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys allowed at `loc` inside `model`, for "did you mean" hints."""
    current = _unwrap(_annotation_at(model, loc), index=False)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _description(model: type[BaseModel], loc: Loc) -> str | None:
    """The description of the field nearest to `loc`, as a hint when pydantic's message is all there is."""
    while loc:
        if isinstance(loc[-1], str):
            owner = _unwrap(_annotation_at(model, loc[:-1]), index=False)
            if isinstance(owner, type) and issubclass(owner, BaseModel):
                field = next((f for n, f in owner.model_fields.items() if (f.alias or n) == loc[-1]), None)
                if field is not None and field.description:
                    return field.description
        loc = loc[:-1]
    return None


def _annotation_at(model: type[BaseModel], loc: Loc) -> Any:
    current: Any = model
    for part in loc:
        current = _unwrap(current, index=isinstance(part, int))
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        current = field.annotation
    return current


def _unwrap(annotation: Any, *, index: bool) -> Any:
    """Strip Optional, and with index=True take the element type of tuple[X, ...] or list[X]."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = options[0] if len(options) == 1 else annotation
        origin = typing.get_origin(annotation)
    if index and origin in (tuple, list):
        return typing.get_args(annotation)[0]
    return annotation
