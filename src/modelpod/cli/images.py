"""Commands build, run, push, doctor: container images. Importing this module registers them on the app.

Each command parses flags, connects to the engine (`connect_engine`, which tests may replace), calls one
library function from `modelpod.images` and prints. The library is imported inside the commands.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from modelpod.cli.base import PortOption, ProfileOption, SpecPath, app, err, out

if TYPE_CHECKING:
    from modelpod.images.engine import Engine
    from modelpod.images.pipeline import BuildResult
    from modelpod.specfile.resolved import Spec

# what a --build-arg NAME may be (specfile/patterns.py ENV_NAME_PATTERN; importing modelpod.specfile
# here would import numpy into `modelpod --help`)
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

EngineOption = Annotated[
    str | None,
    typer.Option(
        "--engine", help="docker, podman, buildah, or a path to one; default: MODELPOD_ENGINE, then PATH."
    ),
]
EnvOption = Annotated[
    list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the container (repeatable).")
]


def connect_engine(name: str | None) -> Engine:
    from modelpod.images.engine import connect

    return connect(name)


class ConsoleReporter:
    """Engine output dimmed as it streams, modelpod's own steps in bold."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet

    def line(self, text: str) -> None:
        if not self.quiet:
            err.print(text, style="dim", markup=False, highlight=False)

    def event(self, text: str) -> None:
        err.print(f"[bold cyan]modelpod:[/] {escape(text)}", highlight=False)


def _pairs(values: list[str] | None, flag: str, *, allow_bare: bool) -> dict[str, str | None]:
    pairs: dict[str, str | None] = {}
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not key or (not sep and not allow_bare):
            raise typer.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=flag)
        if not _VARIABLE_NAME.fullmatch(key):  # a --build-arg name becomes an ARG line
            raise typer.BadParameter(
                f"{key!r} is not a variable name (letters, digits and _, not starting with a digit)",
                param_hint=flag,
            )
        pairs[key] = rest if sep else None
    return pairs


@app.command()
def build(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="Image reference; default: REPOSITORY:latest.")
    ] = None,
    engine: EngineOption = None,
    platform: Annotated[str | None, typer.Option(help="Target platform, e.g. linux/amd64.")] = None,
    network: Annotated[str | None, typer.Option(help="Network of the build's RUN steps (e.g. host).")] = None,
    build_arg: Annotated[
        list[str] | None,
        typer.Option("--build-arg", help="NAME=VALUE, or NAME to take it from the environment (repeatable)."),
    ] = None,
    ca_bundle: Annotated[
        Path | None, typer.Option("--ca-bundle", help="Extra CA certificates (PEM) pip trusts in the build.")
    ] = None,
    wheelhouse: Annotated[
        Path | None,
        typer.Option("--wheelhouse", help="Folder of wheels pip may install from (--find-links)."),
    ] = None,
    bytecode: Annotated[
        bool | None,
        typer.Option(
            "--bytecode/--no-bytecode", help="Store .pyc files; default: for large frameworks only."
        ),
    ] = None,
    keep_symlinks: Annotated[
        bool,
        typer.Option(
            "--keep-symlinks",
            help="Keep symlinks that lead out of the spec directory as links in the image (default: refuse).",
        ),
    ] = False,
    smoke: Annotated[
        bool, typer.Option("--smoke-test/--no-smoke-test", help="Run the image and check its examples.")
    ] = True,
    ready_timeout: Annotated[float, typer.Option(help="Seconds the smoke test waits for ready.")] = 120.0,
    push: Annotated[bool, typer.Option("--push", help="Push the image once the smoke test passed.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Build every layer afresh.")] = False,
    pull: Annotated[bool, typer.Option("--pull", help="Pull a newer base image first.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds the build may take.")] = 3600.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Hide the engine's output.")] = False,
) -> None:
    """Build a small, non-root image of the model; smoke-test it; optionally push it."""
    from modelpod.images.context import ContextOptions
    from modelpod.images.pipeline import BuildOptions, build_image, image_ref
    from modelpod.images.smoke import SmokeOptions
    from modelpod.specfile import load_spec

    resolved = load_spec(spec, profile)
    build_args = _pairs(build_arg, "--build-arg", allow_bare=True)
    connected = connect_engine(engine)
    options = BuildOptions(
        tag=tag,
        context=ContextOptions(
            wheelhouse=wheelhouse, ca_bundle=ca_bundle, bytecode=bytecode, keep_symlinks=keep_symlinks
        ),
        build_args=build_args,
        network=network,
        platform=platform,
        pull=pull,
        no_cache=no_cache,
        timeout_s=timeout,
        smoke=smoke,
        smoke_options=SmokeOptions(ready_timeout_s=ready_timeout),
        push_to=image_ref(resolved, tag) if push else None,
    )
    if push and not smoke:
        err.print("[yellow]warning:[/] pushing an image that was not smoke-tested")
    _print_build(build_image(connected, resolved, options, ConsoleReporter(quiet=quiet)))


def _print_build(result: BuildResult) -> None:
    from rich.table import Table

    from modelpod.images.layers import human

    table = Table(title=escape(result.image), show_edge=False)
    table.add_column("layer group")
    table.add_column("size", justify="right")
    for group, size in result.groups.items():
        table.add_row(group, human(size))
    table.add_row("[bold]image[/]", f"[bold]{human(result.size)}[/]")
    out.print(table)
    rebuilt = [
        s.instruction.split(" ", 1)[0] + " " + s.instruction.split(" ", 1)[-1][:60] for s in result.rebuilt
    ]
    cached = len(result.steps) - len(rebuilt)
    out.print(f"built in {result.seconds:.1f}s: {cached} step(s) from the cache, {len(rebuilt)} rebuilt")
    for line in rebuilt:
        out.print(f"  rebuilt: {line}", markup=False, highlight=False)
    if result.sbom:
        out.print(f"SBOM: {escape(str(result.sbom))}")
    if result.smoke:
        out.print(
            f"[green]smoke test passed[/]: {escape(', '.join(result.smoke.examples))} "
            f"(ready in {result.smoke.ready_s:.1f}s)"
        )
    if result.pushed:
        out.print(f"pushed: {escape(result.pushed)}")


def _image_for(spec_obj: Spec, image: str | None) -> str:
    from modelpod.images.pipeline import image_ref, read_record

    if image:
        return image
    recorded = read_record(spec_obj).get("image")
    return str(recorded) if recorded else image_ref(spec_obj)


@app.command(name="run")
def run_command(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    image: Annotated[str | None, typer.Option(help="Image reference; default: the last build.")] = None,
    engine: EngineOption = None,
    port: PortOption = None,
    network: Annotated[str, typer.Option(help="Container network.")] = "host",
    env: EnvOption = None,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for ready.")] = 120.0,
) -> None:
    """Run the built image locally (hardened: read-only, no capabilities, uid 10001); Ctrl-C stops it."""
    from modelpod.images.pipeline import RunOptions, require_built_image, run_image
    from modelpod.specfile import load_spec

    resolved = load_spec(spec, profile, require_model=False)
    connected = connect_engine(engine)
    variables = {k: v or "" for k, v in _pairs(env, "--env", allow_bare=False).items()}
    options = RunOptions(port=port, network=network, env=variables, ready_timeout_s=ready_timeout)
    ref = _image_for(resolved, image)
    if image is None:  # an image named with --image may be pulled; the default must have been built
        require_built_image(connected, ref, resolved)
    with _sigterm_as_ctrl_c():
        code = run_image(connected, ref, resolved, options, _RunReporter())
    raise typer.Exit(code)


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """A supervisor's SIGTERM stops the container as Ctrl-C does. Python's default would end `modelpod
    run` at once and leave the container running."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _RunReporter(ConsoleReporter):
    def event(self, text: str) -> None:
        if text.startswith("ready after"):
            out.print(f"[green]ready[/]: {escape(text.split(': ', 1)[-1])}", highlight=False)
        super().event(text)


@app.command(name="push")
def push_command(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    image: Annotated[str | None, typer.Option(help="Local image; default: the last build.")] = None,
    tag: Annotated[
        str | None,
        typer.Option("--tag", "-t", help="Reference to push as (REGISTRY/NAME:TAG); default: --image."),
    ] = None,
    engine: EngineOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds the push may take.")] = 1800.0,
) -> None:
    """Push the image to an OCI registry and print its digest reference."""
    from modelpod.images.pipeline import push_image, record_push
    from modelpod.specfile import load_spec

    resolved = load_spec(spec, profile, require_model=False)
    connected = connect_engine(engine)
    pushed = push_image(connected, _image_for(resolved, image), tag, ConsoleReporter(), timeout_s=timeout)
    record_push(resolved, pushed)
    out.print(pushed, markup=False, highlight=False)


@app.command()
def doctor(
    engine: EngineOption = None,
    registry: Annotated[
        str | None, typer.Option(help="Registry to look for credentials for, e.g. the host of your images.")
    ] = None,
) -> None:
    """Check the environment: container engine, BuildKit, registry credentials, cluster context, GPU."""
    from rich.table import Table

    from modelpod.images.doctor import run_checks

    findings = run_checks(engine=engine, registry=registry)
    table = Table(show_edge=False)
    for column in ("check", "status", "finding", "fix"):
        table.add_column(column, overflow="fold")
    colours = {"ok": "green", "warn": "yellow", "fail": "red"}
    for finding in findings:
        status = f"[{colours[finding.status]}]{finding.status}[/]"
        table.add_row(escape(finding.check), status, escape(finding.detail), escape(finding.hint or ""))
    out.print(table)
    if any(f.status == "fail" for f in findings):
        raise typer.Exit(1)
