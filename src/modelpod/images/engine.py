"""Container engines (docker, podman, buildah): finding one, and the argv of each command per engine.

The argv functions are pure, so tests check them as lists. `connect` runs the engine once to see that
it answers and whether docker builds with BuildKit:

- docker with the buildx plugin, or a client older than 23.0 (BuildKit built in, `DOCKER_BUILDKIT=1`):
  BuildKit, so the Dockerfile uses cache mounts;
- a newer docker client without buildx, or `DOCKER_BUILDKIT=0`: the legacy builder, plain RUN steps;
- podman and buildah: their own builder (`--layers`, docker image format so HEALTHCHECK is kept).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modelpod.images.errors import EngineNotFoundError, EngineUnreachableError
from modelpod.images.runner import CommandRunner, SubprocessRunner

Kind = Literal["docker", "podman", "buildah"]
KINDS: tuple[Kind, ...] = ("docker", "podman", "buildah")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
# the hardening every container modelpod starts gets; the image must run under it
HARDENED_RUN_FLAGS = (
    "--read-only",
    "--tmpfs",
    "/tmp",  # noqa: S108 - a tmpfs inside the container, not a file of ours
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)


@dataclass(frozen=True)
class Engine:
    kind: Kind
    executable: str
    buildkit: bool = False
    version: str = ""
    runner: CommandRunner = field(default_factory=SubprocessRunner, compare=False, repr=False)
    timeout_s: float = 30.0  # for short commands (inspect, version, tag); builds and pushes have their own

    @property
    def can_run(self) -> bool:
        return self.kind != "buildah"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        environment = dict(os.environ if base is None else base)
        if self.kind == "docker":
            environment["DOCKER_BUILDKIT"] = "1" if self.buildkit else "0"
        return environment


def find_engine(name: str | None = None, environ: Mapping[str, str] | None = None) -> tuple[Kind, str]:
    """The engine named by `name` (a kind or a path), else MODELPOD_ENGINE, else the first on PATH."""
    environ = os.environ if environ is None else environ
    wanted = name or environ.get("MODELPOD_ENGINE") or None
    if wanted is None:
        for kind in KINDS:
            path = shutil.which(kind, path=environ.get("PATH"))
            if path:
                return kind, path
        raise EngineNotFoundError(
            "no container engine found: none of docker, podman or buildah is on PATH",
            hint="install Docker or Podman, or name one with --engine PATH (or MODELPOD_ENGINE)",
        )
    kind = engine_kind(wanted)
    path = wanted if os.sep in wanted else shutil.which(wanted, path=environ.get("PATH"))
    if not path or not Path(path).is_file() or not os.access(path, os.X_OK):
        raise EngineNotFoundError(
            f"container engine {wanted!r} is not installed (not an executable file or not on PATH)",
            hint="install it, or pass --engine docker|podman|buildah or the path of one",
        )
    return kind, path


def engine_kind(name: str) -> Kind:
    base = Path(name).name.lower()
    for kind in KINDS:
        if base == kind or base.startswith((kind + "-", kind + ".")):
            return kind
    raise EngineNotFoundError(
        f"unknown container engine {name!r}", hint="modelpod drives docker, podman and buildah"
    )


def connect(
    name: str | None = None,
    *,
    runner: CommandRunner | None = None,
    environ: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> Engine:
    """Find the engine, check that it answers, and see whether docker can build with BuildKit."""
    environ = dict(os.environ if environ is None else environ)
    kind, path = find_engine(name, environ)
    runner = runner or SubprocessRunner()
    probe = runner.run(version_argv(kind, path), timeout=timeout_s, env=environ)
    if not probe.ok or not probe.stdout.strip():
        raise EngineUnreachableError(
            f"{kind} at {path} does not answer:\n  {probe.tail(5)}",
            hint=_unreachable_hint(kind, environ),
        )
    version = probe.stdout.strip().splitlines()[0]
    buildkit = False
    if kind == "docker" and environ.get("DOCKER_BUILDKIT") != "0":
        buildkit = docker_has_buildkit(path, runner, environ, timeout_s)
    return Engine(kind, path, buildkit, version, runner, timeout_s)


def docker_has_buildkit(
    path: str, runner: CommandRunner, environ: Mapping[str, str], timeout_s: float
) -> bool:
    if runner.run([path, "buildx", "version"], timeout=timeout_s, env=environ).ok:
        return True
    client = runner.run([path, "version", "--format", "{{.Client.Version}}"], timeout=timeout_s, env=environ)
    match = re.match(r"(\d+)\.", client.stdout.strip())
    return match is not None and int(match.group(1)) < 23  # BuildKit built into the 18.09 - 20.10 clients


def _unreachable_hint(kind: Kind, environ: Mapping[str, str]) -> str:
    if kind == "docker":
        host = environ.get("DOCKER_HOST")
        where = f"DOCKER_HOST={host}" if host else "the default socket /var/run/docker.sock"
        return f"start the Docker daemon (or fix {where}); `modelpod doctor` checks the setup"
    return f"check that `{kind} info` works for this user; `modelpod doctor` checks the setup"


def version_argv(kind: Kind, path: str) -> list[str]:
    if kind == "docker":  # the server's version: proves the daemon answers, not only the client
        return [path, "version", "--format", "{{.Server.Version}}"]
    return [path, "version", "--format", "{{.Version}}"] if kind == "podman" else [path, "--version"]


@dataclass(frozen=True)
class BuildRequest:
    context: Path
    tag: str
    dockerfile: Path | None = None  # default: <context>/Dockerfile
    build_args: Mapping[str, str | None] = field(default_factory=dict)  # None: value from the environment
    network: str | None = None
    platform: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    pull: bool = False
    no_cache: bool = False


def proxy_build_args(environ: Mapping[str, str]) -> dict[str, str | None]:
    """Proxy settings of this shell, passed by name (the engine reads the values, argv never shows them)."""
    return {name: None for name in PROXY_VARIABLES if environ.get(name)}


def build_argv(engine: Engine, request: BuildRequest) -> list[str]:
    argv = [engine.executable, "build"]
    if engine.kind == "docker" and engine.buildkit:
        argv.append("--progress=plain")
    if engine.kind in ("podman", "buildah"):
        argv += ["--layers", "--format", "docker"]  # the OCI format would drop HEALTHCHECK
    argv += ["--file", str(request.dockerfile or request.context / "Dockerfile"), "--tag", request.tag]
    if request.network:
        argv += ["--network", request.network]
    if request.platform:
        argv += ["--platform", request.platform]
    for name, value in request.build_args.items():
        argv += ["--build-arg", name if value is None else f"{name}={value}"]
    for key, value in request.labels.items():
        argv += ["--label", f"{key}={value}"]
    if request.pull:
        argv.append("--pull")
    if request.no_cache:
        argv.append("--no-cache")
    return [*argv, str(request.context)]


@dataclass(frozen=True)
class RunRequest:
    image: str
    name: str
    port: int
    network: str = "host"
    env: Mapping[str, str] = field(default_factory=dict)
    user: str = "10001:10001"
    detach: bool = True
    hardened: bool = True


def run_argv(engine: Engine, request: RunRequest) -> list[str]:
    """`run` with the image's port in MODELPOD_PORT; published on 127.0.0.1 unless on the host network."""
    argv = [engine.executable, "run", "--name", request.name]
    if request.detach:
        argv.append("--detach")
    argv += ["--network", request.network]
    if request.network != "host":
        argv += ["--publish", f"127.0.0.1:{request.port}:{request.port}"]
    if request.hardened:
        argv += [*HARDENED_RUN_FLAGS, "--user", request.user]
    for key, value in {**request.env, "MODELPOD_PORT": str(request.port)}.items():
        argv += ["--env", f"{key}={value}"]
    return [*argv, request.image]


def stop_argv(engine: Engine, name: str, *, grace_s: int) -> list[str]:
    return [engine.executable, "stop", "--time", str(grace_s), name]


def remove_argv(engine: Engine, name: str) -> list[str]:
    return [engine.executable, "rm", "--force", name]


def logs_argv(engine: Engine, name: str, *, tail: int | None = None, follow: bool = False) -> list[str]:
    argv = [engine.executable, "logs"]
    if tail is not None:
        argv += ["--tail", str(tail)]
    if follow:
        argv.append("--follow")
    return [*argv, name]


def inspect_argv(engine: Engine, ref: str, template: str, *, image: bool = False) -> list[str]:
    if engine.kind == "buildah":  # it runs no containers: only images, whose ID it calls FromImageID
        template = template.replace("{{.Id}}", "{{.FromImageID}}")
        return [engine.executable, "inspect", "--type", "image", "--format", template, ref]
    return [engine.executable, *(["image"] if image else []), "inspect", "--format", template, ref]


def history_argv(engine: Engine, image: str) -> list[str]:
    return [
        engine.executable,
        "history",
        "--no-trunc",
        "--human=false",
        "--format",
        "{{.Size}}\t{{.CreatedBy}}",
        image,
    ]


def tag_argv(engine: Engine, source: str, target: str) -> list[str]:
    return [engine.executable, "tag", source, target]


def push_argv(engine: Engine, ref: str, *, digest_file: Path | None = None) -> list[str]:
    if engine.kind == "docker" or digest_file is None:
        return [engine.executable, "push", ref]
    return [engine.executable, "push", "--digestfile", str(digest_file), ref]


def pull_argv(engine: Engine, ref: str) -> list[str]:
    return [engine.executable, "pull", ref]


def flatten(argv: Sequence[str]) -> str:
    """An argv as a shell line, for messages."""
    return " ".join(a if re.fullmatch(r"[\w@%+=:,./{}-]+", a) else repr(a) for a in argv)
