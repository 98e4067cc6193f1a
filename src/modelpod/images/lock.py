"""The locked requirements of an image, pinned from the Python environment modelpod runs in.

Why pin from the local environment instead of resolving afresh: the user tested the model with
`modelpod serve` in this environment, so these exact versions are known to load and serve it. Walking
the requirement closure of modelpod's core dependencies, the model format's extra and the spec's
`python.requirements` through `importlib.metadata` gives the versions that ran, with no resolver and no
network. A requirement that is not installed here (or whose installed version does not satisfy it) is
written unpinned, and pip resolves it inside the build; the build output says so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

from modelpod.images.errors import BuildContextError

# model format -> extras of modelpod that its runtime needs in the image
FORMAT_EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx",),
    "sklearn": ("sklearn",),
    "torch": ("torch",),
    "keras": ("keras", "torch"),  # Keras 3 runs on the torch backend in modelpod's images
    "tensorflow": ("tensorflow",),
    "transformers": ("transformers",),
    "custom": (),
}

SELF = canonicalize_name("modelpod")


# what an ONNX text encoder (a model directory with tokenizer.json, as `modelpod optimize` writes) needs
# beyond the onnx extra: the onnx-text extra's addition, named here too because the lock walks the
# installed modelpod's metadata, which may predate that extra
TEXT_ENCODER_REQUIREMENTS = ("tokenizers>=0.15",)


# what the server needs in front of an external engine (server/engines/remote.py talks to it over HTTP)
EXTERNAL_ENGINE_REQUIREMENTS = ("httpx>=0.27",)


def model_requirements(fmt: str, path: Path | None) -> tuple[str, ...]:
    """Requirements a model needs beyond its format's extra."""
    if fmt == "onnx" and path is not None and (path / "tokenizer.json").is_file():
        return TEXT_ENCODER_REQUIREMENTS
    if fmt == "gguf":  # served by llama.cpp, compiled into the image apart from the Python environment
        return EXTERNAL_ENGINE_REQUIREMENTS
    return ()


DistributionLookup = Callable[[str], "metadata.Distribution | None"]


def installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Pin:
    name: str  # as the distribution spells it
    version: str

    @property
    def line(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def has_local_label(self) -> bool:
        """A version such as 2.13.0+cpu: such builds are not on PyPI, so the build needs a wheelhouse."""
        return "+" in self.version


@dataclass(frozen=True)
class Lock:
    extras: tuple[str, ...]
    pins: tuple[Pin, ...]
    unresolved: tuple[str, ...]  # requirement strings that pip resolves inside the build
    notes: tuple[str, ...] = field(default=())  # why each unresolved one is unresolved


def lock_requirements(
    extras: Iterable[str], requirements: Iterable[str] = (), *, lookup: DistributionLookup = installed
) -> Lock:
    """Pin modelpod's core dependencies + `extras` + `requirements`, and everything they require."""
    extras = tuple(extras)
    own = lookup("modelpod")
    if own is None:
        raise BuildContextError(
            "modelpod is not installed in this Python environment, so its dependencies cannot be locked",
            hint='pip install "modelpod[build]"',
        )
    roots = _applicable(own.requires or (), set(extras))
    for text in requirements:
        try:
            roots.append(Requirement(text))
        except InvalidRequirement as exc:
            raise BuildContextError(
                f"python.requirements: {text!r} is not a valid requirement: {exc}",
                hint='use pip\'s syntax, e.g. "scikit-learn>=1.3"',
            ) from None
    pins: dict[NormalizedName, Pin] = {}
    unresolved: dict[NormalizedName, str] = {}
    notes: list[str] = []
    queue = list(roots)
    while queue:
        requirement = queue.pop(0)
        key = canonicalize_name(requirement.name)
        if key == SELF or key in pins or key in unresolved:
            continue
        dist = lookup(requirement.name)
        if dist is None:
            unresolved[key] = str(requirement)
            notes.append(f"{requirement.name}: not installed here")
            continue
        if requirement.specifier and not requirement.specifier.contains(dist.version, prereleases=True):
            unresolved[key] = str(requirement)
            notes.append(f"{requirement.name}: installed {dist.version} does not satisfy {requirement}")
            continue
        pins[key] = Pin(dist.metadata["Name"] or requirement.name, dist.version)
        queue.extend(_applicable(dist.requires or (), set(requirement.extras)))
    ordered = tuple(pins[k] for k in sorted(pins))
    return Lock(extras, ordered, tuple(unresolved[k] for k in sorted(unresolved)), tuple(notes))


def _applicable(texts: Iterable[str], extras: set[str]) -> list[Requirement]:
    """The requirements whose markers hold here, with `extras` of the requiring distribution active."""
    chosen = []
    for text in texts:
        requirement = Requirement(text)
        if requirement.marker is None or _holds(requirement.marker, extras):
            chosen.append(requirement)
    return chosen


def _holds(marker: Marker, extras: set[str]) -> bool:
    return any(marker.evaluate({"extra": extra}) for extra in (extras or {""}))


def render_lock(lock: Lock, *, spec_name: str, fmt: str) -> str:
    """The text of requirements.lock: a header saying where the pins come from, then one pin a line."""
    python = ".".join(map(str, sys.version_info[:3]))
    extras = ",".join(lock.extras)
    lines = [
        f"# requirements.lock for {spec_name!r} ({fmt} model, modelpod[{extras}]), rendered by modelpod.",
        f"# Pinned from the environment that ran `modelpod build` ({sys.prefix}, Python {python}): the",
        "# closure of modelpod's core dependencies, the format's extra and python.requirements, so that",
        "# what ran under `modelpod serve` is what runs in the image.",
    ]
    if lock.unresolved:
        lines.append("# Not pinned (pip resolves these inside the build):")
        lines.extend(f"#   {note}" for note in lock.notes)
    lines.extend(pin.line for pin in lock.pins)
    lines.extend(lock.unresolved)
    return "\n".join(lines) + "\n"
