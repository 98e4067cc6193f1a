"""Serving benchmark: modelpod and its peers on the digits and minilm examples, in one run.

    .venv/bin/python benchmarks/serving.py [--examples digits minilm] [--concurrency 1 16 64]
        [--rounds 3] [--duration 15] [--warmup 3] [--servers modelpod bentoml kserve]
        [--out benchmarks/results/serving.json] [--markdown benchmarks/results/serving.md]

Each round, for each example: the raw in-process limit is swept over batch sizes in a child process that
then stays loaded and idle (benchmarks/raw_throughput.py); every server in turn (the order rotates
between rounds) is started and loaded by a closed-loop client at each concurrency: wrk when it is
installed (benchmarks/wrk_client.py; `apt-get install wrk`), else the asyncio client of
benchmarks/loadgen.py, which on 2 cores takes CPU the server needs. The raw limit is measured again, for
as long as a load run, right before and right after every load run, and each run's ratio is its
throughput over the mean of those two. On a shared 2-core VM the limit itself drifted by +-15% from one
minute to the next, so results are medians over rounds of these bracketed ratios. The load generator
shares the cores with the server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks import wrk_client  # noqa: E402
from benchmarks.loadgen import closed_loop  # noqa: E402
from benchmarks.raw_throughput import RawLimit, wait_until_quiet  # noqa: E402
from benchmarks.targets import TARGETS, bench_target  # noqa: E402

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The new movie is awesome and everyone in the theatre loved the ending.",
    "The cat sits outside.",
    "The new movie is so great.",
    "Deploying machine learning models to Kubernetes should not take a week of YAML.",
    "Latency percentiles matter more than averages when users wait for answers.",
    "It rained all day, so the match was postponed until next weekend.",
    "Please summarise the quarterly report in three sentences.",
]


def digits_items() -> list[dict[str, Any]]:
    from sklearn.datasets import load_digits

    images = (load_digits().images[:256] / 16.0).astype("float32")[..., None]
    return [{"image": image.tolist()} for image in images]


def minilm_items() -> list[dict[str, Any]]:
    return [{"text": sentence} for sentence in SENTENCES]


ITEMS = {"digits": digits_items, "minilm": minilm_items}


def bracketed_load(raw: RawLimit, last_raw: list[float]) -> Any:
    """A load function for bench_target: each concurrency's run, with the raw limit measured right after it
    (and the previous measurement, `last_raw[0]`, as the one right before it)."""

    async def load_all(
        url: str, bodies: list[bytes], concurrencies: list[int], duration: float, warmup: float
    ) -> list[dict[str, Any]]:
        results = []
        for concurrency in concurrencies:
            if wrk_client.available():
                result = wrk_client.closed_loop(
                    url, bodies, concurrency=concurrency, duration=duration, warmup=warmup
                )
            else:
                result = await closed_loop(
                    url, bodies, concurrency=concurrency, duration=duration, warmup=warmup
                )
            settle = wait_until_quiet()
            before, after = last_raw[0], raw.measure(duration)
            last_raw[0] = after
            print(
                f"      c={concurrency}: {result.throughput}/s p50 {result.p50_ms}ms p99 {result.p99_ms}ms"
                f" errors {result.errors}; raw limit {before} before, {after} after"
                f" (measured after {settle}s of settling)",
                flush=True,
            )
            results.append({**result.as_dict(), "raw_before": before, "raw_after": after, "settle_s": settle})
        return results

    return load_all


def summarise(rounds: list[dict[str, Any]], concurrencies: list[int]) -> dict[str, Any]:
    """Medians over rounds; each run's ratio to the raw limit bracketing it, and to modelpod's run at the
    same concurrency in the same round, computed first."""
    servers = sorted({name for r in rounds for name in r["servers"]}, key=lambda n: (n != "modelpod", n))
    raw_windows = [r["raw_first"] for r in rounds] + [
        run["raw_after"] for r in rounds for server in r["servers"].values() for run in server["runs"]
    ]
    summary: dict[str, Any] = {"raw_items_per_s": statistics.median(raw_windows), "servers": {}}
    for name in servers:
        rows = []
        for index, concurrency in enumerate(concurrencies):
            measured = [r for r in rounds if name in r["servers"]]
            runs = [r["servers"][name]["runs"][index] for r in measured]
            to_raw = [run["throughput"] / ((run["raw_before"] + run["raw_after"]) / 2) for run in runs]
            to_modelpod = [
                run["throughput"] / r["servers"]["modelpod"]["runs"][index]["throughput"]
                for run, r in zip(runs, measured, strict=True)
                if "modelpod" in r["servers"]
            ]
            rows.append(
                {
                    "concurrency": concurrency,
                    "throughput": round(statistics.median(run["throughput"] for run in runs), 1),
                    "p50_ms": round(statistics.median(run["p50_ms"] for run in runs), 2),
                    "p90_ms": round(statistics.median(run["p90_ms"] for run in runs), 2),
                    "p99_ms": round(statistics.median(run["p99_ms"] for run in runs), 2),
                    "errors": sum(run["errors"] for run in runs),
                    "ratio_to_raw": round(statistics.median(to_raw), 3),
                    "ratio_to_raw_by_round": [round(r, 3) for r in to_raw],
                    "ratio_to_modelpod": round(statistics.median(to_modelpod), 3) if to_modelpod else None,
                    "rounds": len(runs),
                }
            )
        rss = [r["servers"][name]["rss_mb_after"] for r in rounds if name in r["servers"]]
        summary["servers"][name] = {"runs": rows, "rss_mb_after_load": statistics.median(rss)}
    return summary


def render_markdown(report: dict[str, Any]) -> str:
    lines = []
    for example, data in report["examples"].items():
        summary = data["summary"]
        lines += [
            f"### {example}",
            "",
            "Raw in-process limit (runtime alone, best batch size; median of every measurement over "
            f"{len(data['rounds'])} rounds): **{summary['raw_items_per_s']:.1f} items/s**. Each ratio below "
            "is a run's throughput over the limit measured right before and right after it (median over "
            "rounds; by round in the JSON).",
            "",
            "| server | concurrency | throughput (req/s) | p50 ms | p90 ms | p99 ms "
            "| vs raw limit | vs modelpod | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, server in summary["servers"].items():
            for row in server["runs"]:
                versus = "1.00" if name == "modelpod" else f"{row['ratio_to_modelpod']:.2f}"
                lines.append(
                    f"| {name} | {row['concurrency']} | {row['throughput']:.1f} | {row['p50_ms']:.1f} | "
                    f"{row['p90_ms']:.1f} | {row['p99_ms']:.1f} | {row['ratio_to_raw']:.1%} | {versus} "
                    f"| {row['errors']} |"
                )
        lines += [
            "",
            "Resident memory after load (MB, whole process tree): "
            + ", ".join(f"{n} {s['rss_mb_after_load']:.0f}" for n, s in summary["servers"].items()),
            "",
        ]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    memory_gb = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    versions = {}
    for package in (
        "modelpod",
        "torch",
        "onnxruntime",
        "sentence-transformers",
        "transformers",
        "uvicorn",
        "numpy",
    ):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "cores_available": len(os.sched_getaffinity(0)),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", nargs="+", default=["digits", "minilm"], choices=sorted(ITEMS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per concurrency")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="unmeasured seconds before each measurement"
    )
    parser.add_argument(
        "--raw-seconds", type=float, default=3.0, help="seconds per batch size in the raw sweep"
    )
    parser.add_argument("--servers", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serving.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "results" / "serving.md")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    targets = []
    for name in args.servers:
        if TARGETS[name].available():
            targets.append(TARGETS[name])
        else:
            print(f"{name}: not installed ({TARGETS[name].install_hint}); left out", flush=True)
    report: dict[str, Any] = {
        "machine": machine(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "examples": {},
    }
    for example in args.examples:
        items = ITEMS[example]()
        items_file = args.out.parent / f"{example}-items.json"
        items_file.write_text(json.dumps(items))
        rounds = []
        for round_index in range(args.rounds):
            print(f"{example}, round {round_index + 1}/{args.rounds}", flush=True)
            with RawLimit(ROOT / "examples" / example, items_file, args.raw_seconds) as raw:
                last_raw = [raw.measure(args.duration)]
                print(f"  raw limit {last_raw[0]}/s at batch {raw.best_batch_size}", flush=True)
                record: dict[str, Any] = {"raw_sweep": raw.sweep, "raw_first": last_raw[0], "servers": {}}
                shift = round_index % len(targets)
                for target in targets[shift:] + targets[:shift]:  # rotate so no server always runs first
                    print(f"  {target.name}", flush=True)
                    load = bracketed_load(raw, last_raw)
                    record["servers"][target.name] = bench_target(target, example, items, args, load)
            rounds.append(record)
        items_file.unlink()
        report["examples"][example] = {"rounds": rounds, "summary": summarise(rounds, args.concurrency)}
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.markdown.write_text(render_markdown(report) + "\n")
    print(render_markdown(report))
    print(f"wrote {args.out} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
