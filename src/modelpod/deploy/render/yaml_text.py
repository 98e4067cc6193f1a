"""YAML text of rendered objects: key order kept, multi-line strings (patches, dashboards) as blocks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120)


def to_yaml(objects: Iterable[dict[str, Any]]) -> str:
    """Multi-document YAML, in the given order; multi-line strings as literal blocks."""
    return "---\n".join(dump(obj) for obj in objects)
