"""Typer commands. Heavy imports (numpy, the server, frameworks) happen inside commands, not here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer.core import TyperGroup

from modelpod import __version__
from modelpod.errors import ModelpodError, SpecError


class _Commands(TyperGroup):
    """The command group. Errors modelpod raises on purpose end the command here, so that tests that
    invoke the app (Typer's CliRunner) see the same exit codes and messages as a user: 2 for a malformed
    spec, 1 for the others, and no traceback."""

    def invoke(self, ctx: Any) -> Any:  # a click Context of Typer's own (vendored) click
        try:
            return super().invoke(ctx)
        except SpecError as exc:
            print_error(exc)
            raise typer.Exit(2) from None
        except ModelpodError as exc:
            print_error(exc)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Commands,
    name="modelpod",
    help="From a model file on disk to a fast inference server, a hardened image and Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# soft_wrap: long messages and paths stay on one line when the output is not a terminal
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

SpecPath = Annotated[Path, typer.Argument(help="modelpod.yaml, or the directory holding it.")]
ProfileOption = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Profile to apply (dev, staging, prod, or one the spec defines)."),
]


def run(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="modelpod")
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def print_error(exc: BaseException) -> None:
    """An error as plain text: its message quotes user input (names, paths, patterns such as
    `[a-z0-9]`), which Rich markup would rewrite or drop."""
    err.print(Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False)


# Every line below that shows user text (a path, a name, a message) passes it through `escape`, or
# prints it with markup=False: Rich would read "[link=...]" or "[a-z]" in it as markup.


def _version(value: bool) -> None:
    if value:
        out.print(f"modelpod {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """modelpod: init, validate, serve, predict."""


@app.command()
def init(
    model: Annotated[Path, typer.Argument(help="Model file or directory.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the spec.")] = Path(
        "modelpod.yaml"
    ),
    name: Annotated[
        str | None, typer.Option(help="Deployment name; default: from the model file name.")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Model format, when it cannot be detected.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing spec.")] = False,
) -> None:
    """Write a commented modelpod.yaml for a model file (format and signature detected)."""
    from modelpod.scaffold import init_spec

    result = init_spec(model, output=output, name=name, fmt=fmt, force=force)
    out.print(f"wrote {escape(str(result.path))} ({result.format} model)")
    if not result.signature_detected:
        err.print(f"[yellow]note:[/] declare model.signature by hand: {escape(result.note or '')}")


@app.command()
def validate(spec: SpecPath = Path(), profile: ProfileOption = None) -> None:
    """Check modelpod.yaml: the base and every profile it defines (or only --profile)."""
    from modelpod.spec import load_spec, profile_names

    profiles: list[str | None] = [profile] if profile else [None, *profile_names(spec)]
    for name in profiles:
        resolved = load_spec(spec, name)
        label = f"profile {name}" if name else "base"
        out.print(
            f"[green]ok[/] {escape(str(resolved.source))} ({label}): {resolved.name}, "
            f"{resolved.model.format} model, {len(resolved.examples)} example(s)"
        )


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")
    ] = None,
) -> None:
    """Print the JSON schema of modelpod.yaml."""
    from modelpod.spec import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


@app.command()
def serve(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind; default from the spec (127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port; default from the spec (8080); 0 picks a free one.")
    ] = None,
) -> None:
    """Serve the model locally (no Docker or Kubernetes needed)."""
    from modelpod.server.stop_signal import exit_on_sigterm

    exit_on_sigterm()  # a SIGTERM before the server is up ends it at once (server/stop_signal.py)
    from modelpod.server import serve as run_server
    from modelpod.spec import load_spec

    run_server(load_spec(spec, profile), host=host, port=port)


@app.command()
def predict(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    inputs: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help='Inputs as JSON {"name": value}, or @file.json; default: the spec\'s examples.',
        ),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Send to a running server instead of loading the model here.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a server's answer.")] = 30.0,
) -> None:
    """Predict in-process, or against a server with --url; examples are checked against expected outputs."""
    from modelpod.inference import predict_examples, predict_inputs
    from modelpod.spec import load_spec

    resolved = load_spec(spec, profile, require_model=url is None)
    if inputs is not None:
        result = predict_inputs(resolved, _read_inputs(inputs), url=url, timeout=timeout)
        sys.stdout.write(json.dumps({"outputs": result}) + "\n")
        return
    failures = 0
    for report in predict_examples(resolved, url=url, timeout=timeout):
        sys.stdout.write(json.dumps({"example": report.name, "outputs": report.outputs}) + "\n")
        for problem in report.problems:
            err.print(f"[red]mismatch[/] {escape(report.name)}: {escape(problem)}")
        failures += bool(report.problems)
    if failures:
        raise SystemExit(1)


def _read_inputs(value: str) -> dict[str, Any]:
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--input") from None
    if isinstance(data, dict) and isinstance(data.get("inputs"), dict):
        data = data["inputs"]
    if not isinstance(data, dict):
        raise typer.BadParameter('expected a JSON object {"input name": value}', param_hint="--input")
    return data


# The build and cluster commands live in modules of their own; importing them registers them on `app`.
# They import their libraries inside each command, so `modelpod --help` stays fast.
from modelpod.cli import cluster, images, kube, optimize  # noqa: E402,F401
