"""`modelpod build | run | push`: render the context, build, measure, SBOM, smoke-test, push.

Each step reports through a `Reporter` (the CLI prints with Rich; tests collect lines). What the last
build made is recorded in `.modelpod/image.json` (image, id, size, spec digest, and the pushed digest
reference), so `run`, `push` and later steps find the image without being told.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from modelpod.images.base import BaseImage, resolve_base
from modelpod.images.context import BuildContext, ContextOptions, gather_sources, render_context
from modelpod.images.dockerfile import layer_groups
from modelpod.images.engine import (
    BuildRequest,
    Engine,
    build_argv,
    history_argv,
    inspect_argv,
    logs_argv,
    proxy_build_args,
    pull_argv,
    push_argv,
    tag_argv,
)
from modelpod.images.errors import EngineError, ImageBuildError, PushError
from modelpod.images.layers import Step, cache_report, group_sizes, parse_history
from modelpod.images.sbom import image_packages, render_sbom
from modelpod.images.smoke import Container, SmokeOptions, SmokeReport, free_port, smoke_test
from modelpod.specfile.load import spec_digest
from modelpod.specfile.resolved import Spec

_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


class Reporter(Protocol):
    def line(self, text: str) -> None: ...  # the engine's own output, as it comes

    def event(self, text: str) -> None: ...  # a step of modelpod's


class QuietReporter:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.events: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def event(self, text: str) -> None:
        self.events.append(text)


@dataclass(frozen=True)
class BuildOptions:
    tag: str | None = None  # default: <image.repository>:latest
    context: ContextOptions = field(default_factory=ContextOptions)
    build_args: Mapping[str, str | None] = field(default_factory=dict)
    network: str | None = None
    platform: str | None = None
    pull: bool = False
    no_cache: bool = False
    timeout_s: float = 3600.0
    smoke: bool = True
    smoke_options: SmokeOptions = field(default_factory=SmokeOptions)
    sbom: bool = True
    push_to: str | None = None  # push after a passed smoke test, under this reference


@dataclass(frozen=True)
class BuildResult:
    image: str
    image_id: str
    context: BuildContext
    steps: tuple[Step, ...]
    size: int
    groups: dict[str, int]
    seconds: float
    base: BaseImage | None = None
    sbom: Path | None = None
    smoke: SmokeReport | None = None
    pushed: str | None = None  # repository@sha256:...

    @property
    def rebuilt(self) -> list[Step]:
        return [step for step in self.steps if not step.cached]


def image_ref(spec: Spec, tag: str | None = None) -> str:
    ref = tag or spec.image.repository
    return ref if ":" in ref.rsplit("/", 1)[-1] or "@" in ref else f"{ref}:latest"


def record_path(spec: Spec) -> Path:
    return spec.root / ".modelpod" / "image.json"


def read_record(spec: Spec) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(record_path(spec).read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return {}


def build_image(engine: Engine, spec: Spec, options: BuildOptions, reporter: Reporter) -> BuildResult:
    started = time.monotonic()
    names = tuple(sorted({*options.context.build_args, *options.build_args}))
    sources = gather_sources(spec, options.context)  # refuses symlinks out of the directory, first
    base = resolve_base(engine, spec.image.base, pull=options.pull, reporter=reporter)
    reporter.event(base.how)
    context_options = dataclasses.replace(
        options.context, buildkit=engine.buildkit, build_args=names, base=base.ref, base_digest=base.digest
    )
    context = render_context(spec, context_options, sources)
    reporter.event(f"build context in {context.directory}")
    for note in context.notes:
        reporter.event(f"note: {note}")
    ref = image_ref(spec, options.tag)
    request = BuildRequest(
        context=context.directory,
        tag=ref,
        build_args={**proxy_build_args(engine.env()), **options.build_args},
        network=options.network,
        platform=options.platform,
        labels={
            "org.opencontainers.image.created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        },
        pull=options.pull and base.ref == spec.image.base,  # a pinned base was pulled by resolve_base
        no_cache=options.no_cache,
    )
    builder = (
        "BuildKit" if engine.buildkit else ("the legacy builder" if engine.kind == "docker" else engine.kind)
    )
    reporter.event(f"building {ref} with {engine.kind} ({builder})")
    result = engine.runner.stream(
        build_argv(engine, request), timeout=options.timeout_s, on_line=reporter.line, env=engine.env()
    )
    if not result.ok:
        raise ImageBuildError(
            f"{engine.kind} build of {ref} failed (exit code {result.returncode}):\n{result.tail(25)}",
            hint=f"the full Dockerfile is {context.dockerfile}",
        )
    steps = tuple(cache_report(result.stdout.splitlines()))
    image_id = _inspect(engine, ref, "{{.Id}}", image=True)
    size, groups = measure(engine, ref, base.image_id or base.ref, layer_groups(context.inputs))
    built = BuildResult(ref, image_id, context, steps, size, groups, time.monotonic() - started, base)
    if options.sbom and engine.can_run:
        built = _replace(built, sbom=write_sbom(engine, spec, ref))
        reporter.event(f"SBOM (CycloneDX) in {built.sbom}")
    _write_record(spec, built, pushed=None)
    if options.smoke:
        report = smoke_test(engine, ref, spec, options.smoke_options, on_event=reporter.event)
        built = _replace(built, smoke=report)
    if options.push_to is not None:
        built = _replace(built, pushed=push_image(engine, ref, options.push_to, reporter))
        _write_record(spec, built, pushed=built.pushed)
    return built


def _replace(result: BuildResult, **changes: Any) -> BuildResult:
    return dataclasses.replace(result, **changes)


def _inspect(engine: Engine, ref: str, template: str, *, image: bool = False) -> str:
    result = engine.runner.run(
        inspect_argv(engine, ref, template, image=image), timeout=engine.timeout_s, env=engine.env()
    )
    if not result.ok:
        raise EngineError(f"cannot inspect {ref}: {result.tail(3)}")
    return result.stdout.strip()


def measure(engine: Engine, ref: str, base: str, groups: list[str]) -> tuple[int, dict[str, int]]:
    """The image's size and its size per layer group, from the engine's history of image and base."""
    if engine.kind == "buildah":
        return 0, {}
    size = int(_inspect(engine, ref, "{{.Size}}", image=True) or 0)
    image = engine.runner.run(history_argv(engine, ref), timeout=engine.timeout_s, env=engine.env())
    base_history = engine.runner.run(history_argv(engine, base), timeout=engine.timeout_s, env=engine.env())
    if not image.ok or not base_history.ok:
        return size, {}
    base_entries = len(parse_history(base_history.stdout))
    return size, group_sizes(parse_history(image.stdout), base_entries, groups)


def write_sbom(engine: Engine, spec: Spec, ref: str) -> Path:
    path = spec.root / ".modelpod" / "sbom.cdx.json"
    path.write_text(render_sbom(ref, image_packages(engine, ref)), encoding="utf-8")
    return path


def _write_record(spec: Spec, result: BuildResult, *, pushed: str | None) -> None:
    record = {
        "image": result.image,
        "id": result.image_id,
        "size": result.size,
        "spec_digest": spec_digest(spec),
        "profile": spec.profile,
        "pushed": pushed,
        "base": result.base.record() if result.base else None,
    }
    record_path(spec).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def push_image(
    engine: Engine, source: str, target: str | None, reporter: Reporter, *, timeout_s: float = 1800
) -> str:
    """Push `source` (tagged as `target` first when given); returns `repository@sha256:...`."""
    ref = target or source
    if ref != source:
        tagged = engine.runner.run(tag_argv(engine, source, ref), timeout=engine.timeout_s, env=engine.env())
        if not tagged.ok:
            raise PushError(f"cannot tag {source} as {ref}: {tagged.tail(3)}")
    reporter.event(f"pushing {ref}")
    result = engine.runner.stream(
        push_argv(engine, ref), timeout=timeout_s, on_line=reporter.line, env=engine.env()
    )
    if not result.ok:
        raise PushError(
            f"push of {ref} failed:\n{result.tail(8)}",
            hint="log in first (`docker login REGISTRY`); check that the reference names a registry",
        )
    repository = repository_of(ref)
    match = _DIGEST.search(result.stdout)
    if match:
        return f"{repository}@{match.group(1)}"
    digests = _inspect(engine, ref, "{{json .RepoDigests}}", image=True)
    for candidate in json.loads(digests or "[]"):
        if candidate.startswith(repository + "@"):
            return str(candidate)
    raise PushError(
        f"the push of {ref} reported no digest", hint="check the registry with `docker manifest inspect`"
    )


def repository_of(ref: str) -> str:
    """The reference without its tag or digest: host:5000/digits:1 -> host:5000/digits."""
    ref = ref.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    name = last.split(":", 1)[0]
    return f"{head}/{name}" if head else name


def record_push(spec: Spec, pushed: str) -> None:
    record = read_record(spec)
    record["pushed"] = pushed
    record_path(spec).parent.mkdir(parents=True, exist_ok=True)
    record_path(spec).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class RunOptions:
    port: int | None = None  # None: the spec's port
    network: str = "host"
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0
    stop_grace_s: int | None = None


def require_built_image(engine: Engine, image: str, spec: Spec) -> None:
    """Raise EngineError when `image`, the spec's default image, is not in the engine's local store:
    run would otherwise try to pull it from a registry named like it and print the engine's DNS errors."""
    found = engine.runner.run(
        inspect_argv(engine, image, "{{.Id}}", image=True), timeout=engine.timeout_s, env=engine.env()
    )
    if not found.ok:
        raise EngineError(
            f"there is no image {image} to run: nothing was built from {spec.source} with this engine",
            hint=f"build one with `modelpod build {spec.root}`, or pass --image REF",
        )


def run_image(engine: Engine, image: str, spec: Spec, options: RunOptions, reporter: Reporter) -> int:
    """Run the image until it exits or Ctrl-C (then SIGTERM and a drain); returns its exit code."""
    port = options.port if options.port is not None else spec.server.port
    port = port or free_port()
    grace = options.stop_grace_s if options.stop_grace_s is not None else int(spec.server.drain_timeout_s) + 5
    with Container(engine, image, port=port, network=options.network, env=options.env) as container:
        reporter.event(f"started {container.name} from {image}")
        # Ctrl-C before ready removes the container at once: there is nothing to drain, and a SIGTERM in
        # the first few tens of milliseconds, before the interpreter has set the server's handler, would
        # be lost (PID 1 ignores signals it does not handle; server/stop_signal.py) and docker stop would
        # wait out the grace period. From ready on, even while "ready" is being printed, it drains.
        ready_s = container.wait_ready(options.ready_timeout_s)
        try:
            reporter.event(f"ready after {ready_s:.1f}s: {container.url}")
            engine.runner.stream(
                logs_argv(engine, container.name, follow=True),
                timeout=365 * 24 * 3600,
                on_line=reporter.line,
                env=engine.env(),
            )
        except KeyboardInterrupt:
            reporter.event(f"stopping {container.name} (SIGTERM, up to {grace}s to drain)")
        code = container.stop(grace)
        reporter.event(f"{container.name} exited with code {code}")
        return code


def pull_by_digest(engine: Engine, ref: str, *, timeout_s: float = 600) -> None:
    result = engine.runner.run(pull_argv(engine, ref), timeout=timeout_s, env=engine.env())
    if not result.ok:
        raise EngineError(f"cannot pull {ref}: {result.tail(5)}")
