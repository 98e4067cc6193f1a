"""The base image, pinned at build time: the Dockerfile names it by digest, so that the image holds
exactly the base that was resolved, and `.modelpod/image.json` records it.

`image.base` names a tag (`python:3.11-slim`), which moves. Before rendering, `resolve_base` asks the
engine for the image (pulling it when it is not there, or when `--pull` asks for a newer one) and
reads its repository digests (`docker image inspect`, RepoDigests):

- with one for the base's repository, FROM becomes `python:3.11-slim@sha256:...`, which every engine
  builds from and any registry serves;
- a base built or loaded locally has none: docker's legacy builder is given its image ID
  (`FROM sha256:...`); BuildKit, podman and buildah cannot build FROM an image ID (moby/buildkit#2204),
  so they keep the tag, and the image ID is recorded. The build output says which happened.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from modelpod.images.engine import Engine, inspect_argv, pull_argv
from modelpod.images.errors import EngineError

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_DEFAULT_REGISTRY = "docker.io"


class _Events(Protocol):
    def line(self, text: str) -> None: ...

    def event(self, text: str) -> None: ...


@dataclass(frozen=True)
class BaseImage:
    name: str  # as the spec gives it
    ref: str  # what the Dockerfile's FROM names
    digest: str | None  # the manifest digest in the base's repository, when the engine knows it
    image_id: str | None  # the engine's image ID
    how: str  # one line for the build output: how it was pinned

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "ref": self.ref, "digest": self.digest, "id": self.image_id}


def resolve_base(engine: Engine, name: str, *, pull: bool, reporter: _Events) -> BaseImage:
    """The base image `name` pinned as well as `engine` allows (see the module docstring)."""
    if "@" in name:  # image.base's pattern allows only a sha256 digest after "@"
        return BaseImage(name, name, name.rpartition("@")[2], None, f"base image {name}: pinned in the spec")
    if engine.kind == "buildah":
        return BaseImage(
            name, name, None, None, f"base image {name}: not pinned (buildah reports no digests)"
        )
    found = None if pull else _inspect(engine, name)
    if found is None:
        reporter.event(f"pulling the base image {name}")
        result = engine.runner.stream(
            pull_argv(engine, name),
            timeout=max(engine.timeout_s, 600),
            on_line=reporter.line,
            env=engine.env(),
        )
        found = _inspect(engine, name) if result.ok else None
        if found is None:
            raise EngineError(
                f"cannot find or pull the base image {name}:\n{result.tail(5)}",
                hint="check image.base, and that the engine can reach its registry (`modelpod doctor`)",
            )
    digests, image_id = found
    return pin(name, digests, image_id, id_in_from=engine.kind == "docker" and not engine.buildkit)


def pin(name: str, repo_digests: list[str], image_id: str, *, id_in_from: bool) -> BaseImage:
    """How to name the base `name` in FROM, given the engine's RepoDigests and image ID."""
    repository = _normalized(name.split("@", 1)[0])
    for candidate in repo_digests:
        repo, _, digest = candidate.partition("@")
        if _normalized(repo) == repository and _DIGEST.fullmatch(digest):
            ref = f"{name}@{digest}"
            return BaseImage(name, ref, digest, image_id, f"base image {name}: pinned by digest, {ref}")
    if id_in_from:
        how = (
            f"base image {name}: no registry digest (built or loaded locally), pinned by its image ID "
            f"{image_id}"
        )
        return BaseImage(name, image_id, None, image_id, how)
    how = (
        f"base image {name}: no registry digest (built or loaded locally), and this builder cannot "
        f"build FROM an image ID: the Dockerfile names the tag; its image ID {image_id} is recorded"
    )
    return BaseImage(name, name, None, image_id, how)


def _inspect(engine: Engine, name: str) -> tuple[list[str], str] | None:
    argv = inspect_argv(engine, name, "{{json .RepoDigests}}\t{{.Id}}", image=True)
    result = engine.runner.run(argv, timeout=engine.timeout_s, env=engine.env())
    if not result.ok:
        return None
    digests_text, _, image_id = result.stdout.strip().partition("\t")
    try:
        digests = [str(d) for d in json.loads(digests_text or "null") or []]
    except ValueError:
        digests = []
    image_id = image_id.strip()
    if not image_id.startswith("sha256:"):
        image_id = f"sha256:{image_id}"
    return digests, image_id


def _normalized(repository: str) -> str:
    """docker.io/library/python, python and index.docker.io/library/python are one repository."""
    repository = re.sub(r":[^/]*$", "", repository)  # a tag
    head, _, rest = repository.partition("/")
    if not rest or ("." not in head and ":" not in head and head != "localhost"):
        repository = f"{_DEFAULT_REGISTRY}/{repository}"
    repository = repository.replace("index.docker.io/", "docker.io/")
    host, _, path = repository.partition("/")
    if host == _DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    return f"{host}/{path}"
