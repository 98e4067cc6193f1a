"""What a build reused and what the image weighs, read from the engine's own output.

- `cache_report`: the build steps and whether each came from the cache, parsed from the build output
  (BuildKit's `#N [stage i/n] ...` and `#N CACHED`, the legacy builder's `Step i/n :` and
  ` ---> Using cache`, podman/buildah's `STEP i/n:` and `--> Using cache`).
- `group_sizes`: `docker history` of the image summed per layer group (base, system, dependencies,
  runtime, weights, code, spec), the base being as many history entries as the base image has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_BUILDKIT_STEP = re.compile(r"^#(\d+) \[([^\]]+?) (\d+)/(\d+)\] (.+)$")
_BUILDKIT_CACHED = re.compile(r"^#(\d+) CACHED\s*$")
_LEGACY_STEP = re.compile(r"^(?:Step|STEP) (\d+)/(\d+) ?: ?(.+)$")
_LEGACY_CACHED = re.compile(r"^\s*-+> Using cache")


@dataclass(frozen=True)
class Step:
    stage: str  # BuildKit's stage name; "" for builders that do not print it
    instruction: str
    cached: bool


def cache_report(lines: Iterable[str]) -> list[Step]:
    """The build's steps in order; FROM steps are left out (a base image is never built)."""
    steps: dict[str, list[str | bool]] = {}
    order: list[str] = []
    current = ""
    for line in lines:
        if match := _BUILDKIT_STEP.match(line):
            key = match.group(1)
            if key not in steps:
                order.append(key)
                steps[key] = [match.group(2), match.group(5), False]
        elif match := _BUILDKIT_CACHED.match(line):
            if match.group(1) in steps:
                steps[match.group(1)][2] = True
        elif match := _LEGACY_STEP.match(line):
            current = f"step{match.group(1)}"
            order.append(current)
            steps[current] = ["", match.group(3), False]
        elif _LEGACY_CACHED.match(line) and current in steps:
            steps[current][2] = True
    report = [Step(str(s[0]), " ".join(str(s[1]).split()), bool(s[2])) for s in (steps[k] for k in order)]
    return [step for step in report if not step.instruction.upper().startswith("FROM ")]


@dataclass(frozen=True)
class HistoryEntry:
    size: int
    created_by: str


def parse_history(text: str) -> list[HistoryEntry]:
    """The output of `history_argv` (newest first) as entries, oldest first."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        size, _, created_by = line.partition("\t")
        try:
            entries.append(HistoryEntry(int(size.strip() or 0), created_by))
        except ValueError:
            entries.append(HistoryEntry(_parse_size(size), created_by))
    return list(reversed(entries))


def _parse_size(text: str) -> int:
    match = re.match(r"([\d.]+)\s*([kKMG]?)B?", text.strip())
    if not match:
        return 0
    scale = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}[match.group(2)]
    return int(float(match.group(1)) * scale)


def group_sizes(image: Sequence[HistoryEntry], base_entries: int, groups: Sequence[str]) -> dict[str, int]:
    """Bytes per layer group. `groups` names each instruction of the final stage in order; entries past
    them (labels the engine adds) count as metadata. Falls back to base + "modelpod layers" when the
    history does not line up with the instructions (another engine's idea of history)."""
    sizes: dict[str, int] = {"base": sum(e.size for e in image[:base_entries])}
    own = image[base_entries:]
    if len(own) < len(groups):
        sizes["modelpod layers"] = sum(e.size for e in own)
        return sizes
    for index, entry in enumerate(own):
        group = groups[index] if index < len(groups) else "metadata"
        sizes[group] = sizes.get(group, 0) + entry.size
    return sizes


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
