"""Symlinks in the spec's directory, on their way into the build context.

The image holds the spec's directory and nothing else, so a symlink that leads out of it (to
`/etc/shadow`, to `~/.aws`) must never bring the file it points at into the context. Such links are
refused, each named with where it points; with `--keep-symlinks` (`ContextOptions.keep_symlinks`) they
are kept as symlinks, which the engine copies into the image as links to the image's own paths. A link
that stays inside the directory is copied as the file it points at (an absolute link would point
nowhere in the image); a broken one is left out with a note.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelpod.images.errors import BuildContextError


@dataclass(frozen=True)
class Link:
    """A symlink to write into the context as a symlink, pointing where the original points."""

    target: str  # the link's text, as `Path.readlink` gives it


def sort_links(
    files: Mapping[str, Path], root: Path, *, keep: bool
) -> tuple[dict[str, Path | Link], tuple[str, ...]]:
    """`files` (context path -> source path) with their symlinks sorted out, and notes for the user.

    Raises BuildContextError naming every link that leaves `root`, unless `keep`."""
    sorted_files: dict[str, Path | Link] = {}
    leaving: list[str] = []
    notes: list[str] = []
    for rel, path in files.items():
        if not path.is_symlink():
            sorted_files[rel] = path
            continue
        text = str(path.readlink())
        shown = f"{path.relative_to(root).as_posix()} -> {text}"
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a loop
            target = None
        if target is not None and target.is_relative_to(root):
            sorted_files[rel] = target  # its file, copied: the link's own path may mean nothing in the image
        elif target is None and Path(os.path.normpath(path.parent / text)).is_relative_to(root):
            notes.append(f"left out the broken symlink {shown}")
        else:
            leaving.append(shown)
            if keep:
                sorted_files[rel] = Link(text)
    if leaving and not keep:
        raise BuildContextError(
            "symlinks in the spec directory lead outside it, and the image would get what they point "
            "at: " + ", ".join(leaving),
            hint="copy what you need into the directory, or remove the links; `modelpod build "
            "--keep-symlinks` keeps them as symlinks in the image, where they point at the image's own "
            "files",
        )
    if leaving:
        notes.append("kept as symlinks (they point outside the spec directory): " + ", ".join(leaving))
    return sorted_files, tuple(notes)
