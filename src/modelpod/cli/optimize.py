"""Command optimize: the model to ONNX, optimised, int8, checked. Importing this module registers it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from modelpod.cli.base import ProfileOption, SpecPath, app, err, out

if TYPE_CHECKING:
    from modelpod.optimize import OptimizeResult
    from modelpod.optimize.check import Accuracy


class Quantization(str, Enum):
    int8 = "int8"
    none = "none"


@app.command()
def optimize(
    spec: SpecPath = Path(),
    profile: ProfileOption = None,
    quantize: Annotated[
        Quantization, typer.Option(help="int8: quantise to 8-bit integers; none: only optimise the graph.")
    ] = Quantization.int8,
    output: Annotated[
        Path | None,
        typer.Option("--out", help="Directory for the optimised model, relative to the spec's directory."),
    ] = None,
    eval_file: Annotated[
        Path | None,
        typer.Option("--eval", help="Held-out inputs (JSON list or JSON Lines); default: generated ones."),
    ] = None,
    eval_items: Annotated[int, typer.Option(min=1, help="How many held-out inputs to generate.")] = 256,
    calibration: Annotated[
        Path | None, typer.Option(help="Inputs for static int8 calibration; default: examples + generated.")
    ] = None,
    min_top1: Annotated[
        float, typer.Option(min=0, max=1, help="Least top-1 agreement with the original (classifiers).")
    ] = 0.99,
    min_cosine: Annotated[
        float, typer.Option(min=-1, max=1, help="Least mean cosine similarity to the original (embeddings).")
    ] = 0.99,
    measure_seconds: Annotated[
        float, typer.Option(min=0, help="Seconds per model for the quick speed figures; 0 leaves them out.")
    ] = 2.0,
) -> None:
    """Export the model to ONNX, optimise and quantise it, check it against the original, and add a
    profile `optimized` that serves it (without the framework it was trained with)."""
    from modelpod.optimize import OptimizeOptions
    from modelpod.optimize import optimize as run_optimize
    from modelpod.optimize.errors import AccuracyError

    options = OptimizeOptions(
        profile=profile,
        quantize=quantize.value,
        out=output,
        eval_file=eval_file,
        eval_items=eval_items,
        calibration_file=calibration,
        min_top1=min_top1,
        min_cosine=min_cosine,
        measure_seconds=measure_seconds,
    )
    err.print("[bold cyan]modelpod:[/] exporting, optimising and checking the model", highlight=False)
    try:
        result = run_optimize(spec, options)
    except AccuracyError as exc:
        out.print(_accuracy_table(exc.figures))  # type: ignore[arg-type]
        raise
    out.print(_result_table(result))
    for name in result.loosened_examples:
        err.print(
            f"[yellow]note:[/] example {escape(name)}: the optimized profile widens its tolerance (atol) to "
            "cover the optimised model's difference",
            highlight=False,
        )
    out.print(
        f"wrote {escape(str(result.out))} and the profile [bold]optimized[/]; serve it with "
        f"`modelpod serve --profile optimized`",
        highlight=False,
    )


def _result_table(result: OptimizeResult) -> Table:
    from modelpod.optimize.report import readable_size

    table = Table(title=f"original vs optimised ({escape(result.steps)})", title_justify="left")
    table.add_column("")
    table.add_column("original", justify="right")
    table.add_column("optimised", justify="right")
    before, after = result.original, result.optimised
    table.add_row("size on disk", readable_size(before.size_bytes), readable_size(after.size_bytes))
    if before.speed is not None and after.speed is not None:
        latency = [f"{figures.latency_ms:.2f} ms" for figures in (before.speed, after.speed)]
        table.add_row("latency, batch 1 (median)", *latency)
        table.add_row(
            "throughput, best batch",
            f"{before.speed.items_per_s:,.0f}/s (batch {before.speed.best_batch_size})",
            f"{after.speed.items_per_s:,.0f}/s (batch {after.speed.best_batch_size})",
        )
    for figure, value in _accuracy_rows(result.accuracy):
        table.add_row(figure, "", value)
    table.caption = (
        "speed: a quick in-process measure on this machine as it is now, no server "
        "(benchmarks/optimize.py measures carefully); accuracy: " + escape(result.accuracy.source)
    )
    return table


def _accuracy_table(accuracy: Accuracy) -> Table:
    table = Table(title="accuracy of the optimised model against the original", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for figure, value in _accuracy_rows(accuracy):
        table.add_row(figure, value)
    table.caption = escape(accuracy.source)
    return table


def _accuracy_rows(accuracy: Accuracy) -> list[tuple[str, str]]:
    from modelpod.optimize.check import describe

    return [(escape(figure), value) for figure, value in describe(accuracy)]
