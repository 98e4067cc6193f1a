"""Reading modelpod.yaml without trusting it: limits checked before and while the YAML is parsed.

- the file: at most `MAX_SPEC_BYTES`, UTF-8 text (checked before parsing);
- the document: at most `MAX_DEPTH` levels of nesting; at most `MAX_ALIASES` aliases (`*name`), none
  inside the node it names (a recursive structure); at most `MAX_VALUES` values with every alias
  expanded, so a "billion laughs" document stops within the first few thousand; no key twice in one
  mapping (YAML would keep the last one silently); integers of at most `MAX_INT_DIGITS` digits.

Parsing is PyYAML's own: libyaml's event parser (C, when PyYAML has it) feeding PyYAML's composer,
subclassed to check the limits as it goes, and its SafeConstructor. The composer also records the line
of every field path, so that later messages can point at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from modelpod.errors import SpecIssue
from modelpod.specfile._issues import Loc, format_path

MAX_SPEC_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_VALUES = 1_000_000
MAX_INT_DIGITS = 100

_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"

try:  # libyaml's parser: events in C, several times faster than the pure-Python scanner
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class Refused(Exception):
    """The document breaks a limit; carries the issue to report."""

    def __init__(self, issue: SpecIssue) -> None:
        super().__init__(issue.message)
        self.issue = issue


def read_limited(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it holds more than `limit` (reading stops there)."""
    with path.open("rb") as stream:
        data = stream.read(limit + 1)
    return None if len(data) > limit else data


def decode_spec(data: bytes) -> str:
    """The spec's text; raises Refused for bytes that are not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise Refused(
            SpecIssue(
                "",
                f"the file is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}",
                hint="save modelpod.yaml as UTF-8 text; is it the spec, and not a binary file?",
                line=line,
            )
        ) from None


def parse_yaml(text: str) -> tuple[Any, dict[Loc, int]]:
    """The document's data and the 1-based line of every field path (keys and sequence items).

    Raises Refused for a document that breaks a limit, and yaml.YAMLError for malformed YAML."""
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        return data, loader.lines
    finally:
        loader.dispose()


class _SpecLoader(Composer, _Parser, SafeConstructor, Resolver):
    """PyYAML's safe loader with its composer checking the limits as each node is composed."""

    def __init__(self, text: str) -> None:
        _Parser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.lines: dict[Loc, int] = {}
        self._path: list[Loc] = []  # field path of every node being composed, outermost first
        self._open: set[str] = set()  # anchors of the collections being composed
        self._sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded
        self._aliases = 0
        self._values = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        loc = self._child_loc(parent, index)
        event: Any = self.peek_event()
        if index is not None or parent is None:  # not a mapping key: record where the field is
            mark = index.start_mark if isinstance(index, Node) else event.start_mark
            self.lines.setdefault(loc, mark.line + 1)
        if isinstance(event, AliasEvent):
            return self._alias(event, loc, parent, index)
        anchor = getattr(event, "anchor", None)
        if isinstance(event, CollectionStartEvent):
            if len(self._path) >= MAX_DEPTH:
                raise self._refuse(
                    loc,
                    event.start_mark,
                    f"nesting deeper than {MAX_DEPTH} levels",
                    "a spec needs a handful of levels; write deep data (tensors) to an example file",
                )
            if anchor is not None:
                self._open.add(anchor)
        self._path.append(loc)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._path.pop()
            if anchor is not None:
                self._open.discard(anchor)
        if node is not None:
            self._count(loc, node, self._size(node))
        return node

    def compose_scalar_node(self, anchor: Any) -> ScalarNode:
        node = super().compose_scalar_node(anchor)
        if node.tag == _INT_TAG and len(node.value) > MAX_INT_DIGITS:
            raise self._refuse(
                self._path[-1],
                node.start_mark,
                f"an integer of {len(node.value)} digits (at most {MAX_INT_DIGITS})",
                "no setting takes a number that large; quote it if it is meant as text",
            )
        return node

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int] = {}
        for key, _value in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                continue
            ident = (key.tag, key.value)
            if ident in first:
                raise self._refuse(
                    (*self._path[-1], str(key.value)),
                    key.start_mark,
                    f"key {key.value!r} appears twice in one mapping (first on line {first[ident]})",
                    "YAML would keep only the last one: delete or merge one of them",
                )
            first[ident] = key.start_mark.line + 1
        return node

    def _alias(self, event: AliasEvent, loc: Loc, parent: Node | None, index: Any) -> Node | None:
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise self._refuse(
                loc,
                event.start_mark,
                f"more than {MAX_ALIASES} aliases (*name)",
                "write the values out, or share them through fewer anchors",
            )
        if event.anchor in self._open:
            raise self._refuse(
                loc,
                event.start_mark,
                f"alias *{event.anchor} refers to the node that contains it (a recursive structure)",
                "an alias can only repeat a value defined before it, outside it",
            )
        node = super().compose_node(parent, index)  # the anchored node itself, shared
        self._count(loc, None, self._sizes.get(id(node), 1))
        return node

    def _child_loc(self, parent: Node | None, index: Any) -> Loc:
        if parent is None:
            return ()
        base = self._path[-1]
        if isinstance(index, int):  # a sequence item
            return (*base, index)
        if isinstance(index, ScalarNode):  # the value of a key
            return (*base, str(index.value))
        return base  # a mapping key itself, or the value of a complex key: reported at the mapping

    def _size(self, node: Node) -> int:
        if isinstance(node, SequenceNode):
            size = 1 + sum(self._sizes.get(id(child), 1) for child in node.value)
        elif isinstance(node, MappingNode):
            size = 1 + sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return size

    def _count(self, loc: Loc, node: Node | None, size: int) -> None:
        # a composed node adds itself (its children were counted as they were composed); an alias adds
        # everything the node it repeats stands for
        self._values += 1 if node is not None else size
        if self._values > MAX_VALUES:
            raise self._refuse(
                loc,
                None,
                f"more than {MAX_VALUES:,} values with every alias expanded",
                "aliases that repeat aliases multiply (a 'billion laughs' document); write the values out",
            )

    def _refuse(self, loc: Loc, mark: Any, message: str, hint: str) -> Refused:
        line = mark.line + 1 if mark is not None else self.lines.get(loc)
        return Refused(SpecIssue(format_path(loc), message, hint=hint, line=line))
