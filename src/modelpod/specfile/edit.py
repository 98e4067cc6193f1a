"""Writing one profile of modelpod.yaml, touching as little of the user's text as possible: `plan --write`
merges settings into a profile (`set_profile`), `optimize` replaces its profile whole (`replace_profile`).

PyYAML cannot write a document back with its comments, so the file is not re-dumped: the text of the
one profile's mapping (found from the composed nodes' positions) is replaced by the profile's old
settings with the new ones merged in, in the style it was written in (block or flow), and everything
else stays byte for byte. Comments inside that profile's mapping are lost; comments after it are kept.
A profile the file lacks is added at the end of `profiles:`, and `profiles:` at the end of the file.
The result is parsed again and must hold exactly the old data with the merge applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node

from modelpod.errors import ModelpodError
from modelpod.specfile.load import deep_merge


def set_profile(text: str, profile: str, values: dict[str, Any]) -> str:
    """`text` with `values` merged into `profiles.<profile>` (created when missing): `plan --write`."""
    return _edit_profile(text, profile, lambda old: deep_merge(old, values), note=None)


def replace_profile(text: str, profile: str, values: dict[str, Any], *, note: str | None = None) -> str:
    """`text` with `profiles.<profile>` replaced by `values` (added when missing): `modelpod optimize`.
    `note` becomes a comment on the profile's key line (not in a flow-style `profiles: {...}`)."""
    return _edit_profile(text, profile, lambda old: values, note=note)


def _edit_profile(
    text: str, profile: str, make: Callable[[dict[str, Any]], dict[str, Any]], *, note: str | None
) -> str:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, MappingNode):
        raise ModelpodError("the spec is not a mapping of settings", hint="check modelpod.yaml")
    data = yaml.safe_load(text)
    profiles_node = _value(root, "profiles")
    old_profile = ((data.get("profiles") or {}).get(profile)) or {}
    new_profile = make(old_profile)
    if profiles_node is None:
        if not text.endswith("\n"):
            text += "\n"
        edited = text + "profiles:\n" + _block({profile: new_profile}, indent=2, first_indent=True, note=note)
    elif not isinstance(profiles_node, MappingNode):
        raise ModelpodError(
            "`profiles:` is not a mapping", hint="write profiles as `profiles: {prod: {...}}`"
        )
    elif profiles_node.flow_style:
        edited = _replace(text, profiles_node, {**data["profiles"], profile: new_profile})
    else:
        edited = _edit_block_profiles(text, profiles_node, profile, new_profile, note)
    expected = {**data, "profiles": {**(data.get("profiles") or {}), profile: new_profile}}
    if yaml.safe_load(edited) != expected:  # pragma: no cover - a bug here must not reach a user's file
        raise ModelpodError("could not edit the spec without changing other settings", hint="edit it by hand")
    return edited


def _edit_block_profiles(
    text: str, profiles_node: MappingNode, profile: str, new_profile: dict[str, Any], note: str | None
) -> str:
    column = profiles_node.start_mark.column
    entry = next(((k, v) for k, v in profiles_node.value if k.value == profile), None)
    if entry is None:  # a new profile, after the others
        end = _content_end(text, profiles_node)
        return (
            text[:end]
            + _block({profile: new_profile}, indent=column, first_indent=True, note=note)
            + text[end:]
        )
    key_node, profile_node = entry
    if note is None:  # the key line stays as it is, comment included
        return _replace(text, profile_node, new_profile)
    start, end = key_node.start_mark.index, _content_end(text, profile_node)
    return (
        text[:start]
        + _block({profile: new_profile}, indent=column, first_indent=False, note=note)
        + text[end:]
    )


def _value(mapping: MappingNode, key: str) -> Node | None:
    for key_node, value_node in mapping.value:
        if key_node.value == key:
            found: Node = value_node
            return found
    return None


def _replace(text: str, node: Node, value: dict[str, Any]) -> str:
    start = node.start_mark.index
    if getattr(node, "flow_style", False):
        flow = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**9).strip()
        return text[:start] + flow + text[node.end_mark.index :]
    end = _content_end(text, node)
    return text[:start] + _block(value, indent=node.start_mark.column, first_indent=False) + text[end:]


def _content_end(text: str, node: Node) -> int:
    """Where a block node's own text ends: a block's end mark lies after any blank and comment lines that
    follow it, and those belong to what comes next."""
    end = node.end_mark.index
    lines = text[node.start_mark.index : end].splitlines(keepends=True)
    while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
        end -= len(lines.pop())
    return end


def _block(value: dict[str, Any], *, indent: int, first_indent: bool, note: str | None = None) -> str:
    lines = yaml.safe_dump(value, default_flow_style=False, sort_keys=False, allow_unicode=True).splitlines()
    pad = " " * indent
    first = (pad if first_indent else "") + lines[0] + (f"  # {note}" if note else "")
    return "\n".join([first, *(pad + line for line in lines[1:])]) + "\n"
