"""Image references: a release runs an image pinned by digest, so every replica runs the same bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelpod.errors import ModelpodError


class RenderError(ModelpodError):
    """The spec or the arguments cannot be rendered into manifests (names what and how to fix it)."""


# The grammar of github.com/distribution/reference, without the parts nobody uses (uppercase paths).
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?P<repository>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def version_label(self) -> str:
        """A label value naming this image: its tag, else the start of its digest."""
        if self.tag and re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", self.tag):
            return self.tag
        if self.digest:
            return "sha256-" + self.digest.removeprefix("sha256:")[:12]
        return "unknown"


def parse_image(reference: str, *, allow_tag: bool = False) -> ImageRef:
    """Parse and check an image reference; without `allow_tag` it must carry a sha256 digest."""
    match = _REFERENCE.match(reference.strip())
    if match is None:
        raise RenderError(
            f"{reference!r} is not an image reference",
            hint="use REPOSITORY@sha256:<64 hex digits>, as printed by `modelpod push`",
        )
    image = ImageRef(match["repository"], match["tag"], match["digest"])
    if image.digest is None and not allow_tag:
        raise RenderError(
            f"image {reference!r} has no digest: a tag can move, and replicas could run different images",
            hint="pass the digest `modelpod push` printed (REPOSITORY@sha256:...), "
            "or --allow-tag for a development cluster",
        )
    return image
