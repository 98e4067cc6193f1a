"""The commands that need neither a container engine nor a cluster: init, validate, schema, serve, predict."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from modelpod.cli.base import ModelFormat, PortOption, ProfileOption, SpecPath, app, err, out


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
        ModelFormat | None, typer.Option("--format", help="Model format, when it cannot be detected.")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="What a transformers model does, when its config does not say: text-generation, "
            "embeddings or text-classification (written as model.options.task)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing spec.")] = False,
) -> None:
    """Write a commented modelpod.yaml for a model file (format and signature detected)."""
    from modelpod.scaffold import init_spec

    result = init_spec(model, output=output, name=name, fmt=fmt, task=task, force=force)
    out.print(f"wrote {escape(str(result.path))} ({result.format} model)")
    for remark in result.remarks:
        err.print(f"[yellow]note:[/] {escape(remark)}")
    if not result.signature_detected:
        err.print(
            "[yellow]note:[/] declare model.signature by hand (`modelpod validate` refuses the spec until "
            f"then): {escape(result.note or '')}"
        )


@app.command()
def validate(spec: SpecPath = Path(), profile: ProfileOption = None) -> None:
    """Check modelpod.yaml: the base and every profile it defines (or only --profile)."""
    from modelpod.specfile import load_spec, profile_names

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
    from modelpod.specfile import json_schema

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
    port: PortOption = None,
) -> None:
    """Serve the model locally (no Docker or Kubernetes needed)."""
    from modelpod.server.stop_signal import exit_on_sigterm

    exit_on_sigterm()  # a SIGTERM before the server is up ends it at once (server/stop_signal.py)
    from modelpod.server import serve as run_server
    from modelpod.specfile import load_spec

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
    from modelpod.specfile import load_spec

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
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise typer.BadParameter(f"cannot read {value[1:]}: {reason}", param_hint="--input") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--input") from None
    if isinstance(data, dict) and isinstance(data.get("inputs"), dict):
        data = data["inputs"]
    if not isinstance(data, dict):
        raise typer.BadParameter('expected a JSON object {"input name": value}', param_hint="--input")
    return data
