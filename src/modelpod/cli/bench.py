"""Commands bench and plan: load against a running server, and sizing from what it measured.

Importing this module registers them on the app; the library (`modelpod.bench`) is imported inside each
command, so `modelpod --help` imports neither aiohttp nor matplotlib.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from modelpod.cli.base import ProfileOption, app, err, out
from modelpod.errors import ModelpodError

if TYPE_CHECKING:
    from modelpod.bench.plan import Plan
    from modelpod.bench.workload import Workload

OptionalSpec = Annotated[
    Path | None,
    typer.Argument(help="modelpod.yaml, or the directory holding it (for its examples, or to --write)."),
]


@app.command()
def bench(
    spec: OptionalSpec = None,
    url: Annotated[
        str, typer.Option(help="The server, e.g. http://127.0.0.1:8080.")
    ] = "http://127.0.0.1:8080",
    profile: ProfileOption = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Closed loop: callers that each wait for an answer (sweep: the first).")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(help="Open loop: requests per second, Poisson arrivals (sweep: the first)."),
    ] = None,
    duration: Annotated[float, typer.Option(help="Seconds measured per step.")] = 10.0,
    warmup: Annotated[float, typer.Option(help="Seconds of load before each step, not measured.")] = 2.0,
    sweep: Annotated[bool, typer.Option(help="Raise the load step by step until a limit breaks.")] = False,
    factor: Annotated[float, typer.Option(help="Sweep: each step's load over the last one's.")] = 2.0,
    steps: Annotated[int, typer.Option(help="Sweep: the most steps.")] = 8,
    max_p99: Annotated[float, typer.Option("--max-p99", help="Sweep limit: p99 latency in ms.")] = 1000.0,
    max_error_rate: Annotated[float, typer.Option(help="Sweep limit: share of failed requests.")] = 0.01,
    requests: Annotated[
        Path | None, typer.Option(help="JSON Lines file of request bodies; default: the spec's examples.")
    ] = None,
    endpoint: Annotated[str, typer.Option(help="Path the --requests bodies go to.")] = "/predict",
    timeout: Annotated[float, typer.Option(help="Seconds one request may take.")] = 30.0,
    max_connections: Annotated[int, typer.Option(help="Connections the client may open.")] = 1000,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the full result here.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write latency and throughput against load here (PNG).")
    ] = None,
) -> None:
    """Load-test a running server: throughput, latency percentiles, errors, the server's own view."""
    from modelpod.bench.sweep import BenchSettings, run_bench

    if concurrency is not None and rate is not None:
        raise typer.BadParameter("give --concurrency or --rate, not both", param_hint="--rate")
    settings = BenchSettings(
        url=url, mode="open" if rate is not None else "closed",
        start=rate if rate is not None else float(concurrency or 1),
        duration_s=duration, warmup_s=warmup, sweep=sweep, factor=factor, max_steps=steps,
        max_p99_ms=max_p99, max_error_rate=max_error_rate, timeout_s=timeout, max_connections=max_connections,
    )  # fmt: skip
    workload = _workload(spec, profile, requests, endpoint)
    with _LiveProgress(settings.duration_s + settings.warmup_s) as progress:
        result = run_bench(settings, workload, on_step=progress.step, on_progress=progress.update)
    _table_console().print(result_table(result))
    _print_knee(result)
    if json_file is not None:
        from modelpod.bench.report import write_json

        write_json(result, json_file)
        out.print(f"wrote {escape(str(json_file))}")
    if plot is not None:
        from modelpod.bench.plot import write_plot

        write_plot(result, plot)
        out.print(f"wrote {escape(str(plot))}")


def _workload(spec: Path | None, profile: str | None, requests: Path | None, endpoint: str) -> Workload:
    from modelpod.bench.workload import workload_from_examples, workload_from_file

    if requests is not None:
        return workload_from_file(requests, endpoint)
    from modelpod.specfile import load_spec
    from modelpod.specfile.example_answers import example_request

    resolved = load_spec(spec or Path(), profile, require_model=False)
    return workload_from_examples([example_request(example) for example in resolved.examples])


class _LiveProgress:
    """A progress bar per step, with the answers and errors so far."""

    def __init__(self, total_s: float) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.total_s = total_s
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                            console=err, transient=False)  # fmt: skip
        self.task: Any = None
        self.label = ""

    def __enter__(self) -> _LiveProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def step(self, index: int, load: Any) -> None:
        self.label = f"step {index + 1}: {load.describe()}"
        self.task = self.bar.add_task(self.label, total=self.total_s)

    def update(self, progress: Any) -> None:
        phase = "warm-up" if progress.warming_up else f"{progress.ok} ok, {progress.errors} errors"
        self.bar.update(self.task, completed=progress.elapsed_s, description=f"{self.label}  {phase}")


def _table_console() -> Console:
    """stdout; when it is not a terminal, wide enough for every column (Rich would assume 80)."""
    return out if out.is_terminal else Console(width=160, soft_wrap=True)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def result_table(result: dict[str, Any]) -> Table:
    closed = result["mode"] == "closed"
    generation = any(step["generation"] for step in result["steps"])
    caption = (
        "latency in ms; queue: the server's mean time outside the model (queue, batching, decoding, "
        "encoding); model: its mean batch time; batch: mean rows per batch"
    )
    table = Table(title=f"{result['endpoint']} at {result['url']}", title_justify="left", caption=caption)
    columns = ["callers" if closed else "offered/s", "ok/s", "p50", "p90", "p99", "p99.9", "errors", "queue",
               "model", "batch"]  # fmt: skip
    if generation:
        columns += ["TTFT p50", "TTFT p99", "ITL p50", "tok/s"]
    for column in columns:
        table.add_column(column, justify="right")
    for index, step in enumerate(result["steps"]):
        latency, server = step["latency_ms"], step["server"] or {}
        errors = ", ".join(f"{n} x {kind}" for kind, n in step["errors"].items()) or "0"
        row = [f"{step['load']:g}", f"{step['throughput_rps']:,.1f}", *(_ms(latency[k]) for k in
               ("p50", "p90", "p99", "p99_9")), escape(errors), _ms(server.get("mean_outside_model_ms")),
               _ms(server.get("mean_batch_ms")), _ms(server.get("mean_batch_size"))]  # fmt: skip
        if generation:
            g = step["generation"] or {"ttft_ms": {}, "itl_ms": {}}
            row += [_ms(g["ttft_ms"].get("p50")), _ms(g["ttft_ms"].get("p99")), _ms(g["itl_ms"].get("p50")),
                    _ms(g.get("output_tokens_per_s"))]  # fmt: skip
        style = "bold" if index == result["knee"] else ("red" if not step["within_limits"] else None)
        table.add_row(*row, style=style)
    return table


def _print_knee(result: dict[str, Any]) -> None:
    knee, limits = result["knee"], result["limits"]
    if knee is None:
        err.print(f"[yellow]no step was within p99 {limits['max_p99_ms']:g} ms and "
                  f"{limits['max_error_rate']:.1%} errors[/]")  # fmt: skip
        return
    step = result["steps"][knee]
    p99 = _ms(step["latency_ms"]["p99"])
    out.print(f"knee: {step['load']:g} ({step['throughput_rps']:,.1f} answered/s, p99 {p99} ms)")
    if result["server"] is None:
        err.print(
            "[yellow]note:[/] the server has no modelpod /metrics: no queue, batch, CPU or memory figures"
        )


@app.command()
def plan(
    spec: OptionalSpec = None,
    bench_file: Annotated[
        Path, typer.Option("--bench", help="A result of `modelpod bench --sweep --json`.")
    ] = Path("bench.json"),
    rps: Annotated[float, typer.Option(help="Requests per second the service must take.")] = 0.0,
    p99: Annotated[float, typer.Option("--p99", help="The SLO: p99 latency in ms.")] = 0.0,
    peak_rps: Annotated[
        float | None, typer.Option(help="Peak rate max_replicas must cover; default --rps.")
    ] = None,
    max_error_rate: Annotated[
        float | None, typer.Option(help="Failed share a step may have; default the bench's limit.")
    ] = None,
    cpu_margin: Annotated[float, typer.Option(help="CPU request above the measured use (0.25: 25%).")] = 0.25,
    memory_margin: Annotated[float, typer.Option(help="Memory above the largest measured.")] = 0.25,
    startup_s: Annotated[
        float | None, typer.Option("--startup-s", help="Seconds a replica takes to start; default measured.")
    ] = None,
    write: Annotated[
        str | None, typer.Option("--write", help="Write the plan into this profile of the spec.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Write without asking.")] = False,
) -> None:
    """Replicas, resources, autoscaling targets and rollout time from a bench result and an SLO."""
    from modelpod.bench.plan import Slo, make_plan
    from modelpod.bench.report import read_json

    if rps <= 0 or p99 <= 0:
        raise typer.BadParameter("give the SLO: --rps N --p99 MS (both above 0)", param_hint="--rps/--p99")
    slo = Slo(rps=rps, p99_ms=p99, peak_rps=peak_rps, max_error_rate=max_error_rate,
              cpu_margin=cpu_margin, memory_margin=memory_margin, startup_s=startup_s)  # fmt: skip
    result = read_json(bench_file)
    made = make_plan(result, slo)
    _table_console().print(plan_table(made, slo))
    for note in made.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    if write is not None:
        _write_profile(spec or Path(), write, made, yes=yes)


def plan_table(made: Plan, slo: Any) -> Table:
    table = Table(title=f"plan for {slo.rps:g} requests/s at p99 <= {slo.p99_ms:g} ms", title_justify="left")
    table.add_column("setting")
    table.add_column("value", justify="right")
    table.add_column("from")
    unknown = "(not measured)"
    rollout = f"{made.rollout_s:.0f} s" if made.rollout_s is not None else unknown
    per_replica = f"{made.capacity_rps:,.1f} answered/s"
    rows = [
        ("operating point", f"{made.load:g}", f"{per_replica} per replica at p99 {made.p99_ms:g} ms"),
        ("scaling.replicas", str(made.replicas), f"{slo.rps:g}/s over {per_replica}, + 1 for a lost replica"),
        ("scaling.min_replicas", str(made.min_replicas), "the same"),
        ("scaling.max_replicas", str(made.max_replicas), "the peak rate, the same way"),
        ("resources.cpu", made.cpu or unknown, "CPU measured at the operating point + margin"),
        ("resources.memory", made.memory or unknown, "largest resident memory measured + margin"),
        ("scaling.target_cpu_percent", str(made.target_cpu_percent or unknown), "CPU at the operating point"),
        ("scaling.target_concurrency", f"{made.target_concurrency:g}", "requests in flight at that point"),
        (
            "rollout",
            rollout,
            f"{made.replicas} pods, one at a time: start-up {made.startup_s or 0:.1f} s + 5 s",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    return table


def _write_profile(spec: Path, profile: str, made: Plan, *, yes: bool) -> None:
    from modelpod.specfile import find_spec_file, load_spec
    from modelpod.specfile.edit import set_profile

    source = find_spec_file(spec)
    old = source.read_text(encoding="utf-8")
    new = set_profile(old, profile, made.profile_values())
    if new == old:
        out.print(f"profile {escape(profile)} already holds the plan")
        return
    candidate = source.with_name(f".{source.name}.plan")
    candidate.write_text(new, encoding="utf-8")
    try:
        load_spec(candidate, profile, require_model=False)  # the edited spec must still be valid
    finally:
        candidate.unlink()
    diff = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                str(source), f"{source} (profile {profile})")  # fmt: skip
    sys.stdout.write("".join(diff))
    if not yes:
        if not sys.stdin.isatty():
            raise ModelpodError("not writing without confirmation", hint="pass --yes to write the change")
        if not typer.confirm(f"Write this into {source}?"):
            raise typer.Exit(1)
    source.write_text(new, encoding="utf-8")
    out.print(f"wrote profile {escape(profile)} into {escape(str(source))}")
