"""Latency percentiles and throughput against load, one above the other, with the knee marked.

Latency rises slowly and then steeply once the server's queue grows; throughput rises and then flattens
at the server's capacity. The knee (the last step within the limits) is drawn as a vertical line on
both, and the latency limit as a horizontal one, so that a person sees where the server stops coping.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpod.bench._deps import require

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# (result key, label, colour): no colour twice on a panel, none the throughput's green or the knee's black
LATENCY_CURVES = (
    ("p50", "p50", "tab:blue"),
    ("p90", "p90", "tab:orange"),
    ("p99", "p99", "tab:red"),
    ("p99_9", "p99.9", "tab:purple"),
)


def figure(result: dict[str, Any]) -> Figure:
    require("matplotlib")
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    steps = result["steps"]
    loads = [step["load"] for step in steps]
    closed = result["mode"] == "closed"
    fig = Figure(figsize=(8, 7), layout="constrained")
    latency, throughput = fig.subplots(2, 1, sharex=True)
    for key, label, colour in LATENCY_CURVES:
        values = [step["latency_ms"][key] for step in steps]
        latency.plot(loads, values, marker="o", color=colour, label=label)
    latency.axhline(result["limits"]["max_p99_ms"], color="grey", linestyle=":", label="p99 limit")
    latency.set_yscale("log")
    latency.set_ylabel("latency (ms)")
    latency.set_title(f"{result['endpoint']} at {result['url']}")
    throughput.plot(loads, [s["throughput_rps"] for s in steps], marker="o", color="tab:green",
                    label="answered per second (200)")  # fmt: skip
    if not closed:
        throughput.plot(loads, loads, color="grey", linestyle=":", label="offered per second")
    throughput.set_ylabel("requests per second")
    throughput.set_xlabel("concurrent callers (closed loop)" if closed else "offered requests per second")
    throughput.set_ylim(bottom=0)
    if len(loads) > 1 and loads[-1] / loads[0] >= 8:
        throughput.set_xscale("log", base=2)
        throughput.xaxis.set_major_formatter(ScalarFormatter())  # 16, not 2^4
    knee = result.get("knee")
    for axes in (latency, throughput):
        if knee is not None:
            axes.axvline(loads[knee], color="black", linestyle="--", label=f"knee ({loads[knee]:.4g})")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc="upper left", fontsize="small")
    return fig


def write_plot(result: dict[str, Any], path: Path) -> None:
    figure(result).savefig(path, dpi=100)
