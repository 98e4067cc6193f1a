"""Which `max_batch_size` serves an example closest to its raw limit: modelpod alone, settings interleaved.

    .venv/bin/python benchmarks/batch_size.py [--example minilm] [--sizes 32 64] [--concurrency 64]
        [--passes 3] [--duration 6] [--raw-batch 64]
        [--out benchmarks/results/batch-size-minilm-c64.json]

One server per size is started and kept loaded (idle while another is measured). Each pass loads every
server in turn with wrk at one concurrency (the order reverses between passes), and the raw limit is
measured at `--raw-batch` for as long between load runs, so every run is bracketed by two raw windows.
A fixed raw batch size, rather than the best of a sweep, compares the settings against one yardstick.

Reported per run, each against the mean of its bracket:
- `ratio`: the server's throughput.
- `in_model`: the model's own rate inside the server (rows over seconds of inference, from /metrics):
  below 1 when something slows the model while it computes.
- `busy`: seconds of inference over wall time: below 1 when the model waits between batches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks import wrk_client  # noqa: E402
from benchmarks.raw_throughput import RawLimit  # noqa: E402
from benchmarks.serving import ITEMS, machine  # noqa: E402
from benchmarks.targets import free_port, stop, wait_ready  # noqa: E402


class Server:
    """`modelpod serve` on a copy of the example's spec with another max_batch_size."""

    def __init__(self, example: str, size: int, workdir: Path) -> None:
        source = ROOT / "examples" / example
        spec_dir = workdir / f"{example}-{size}"
        spec_dir.mkdir()
        for entry in source.iterdir():  # the model and example files are shared, the spec is not
            if entry.name != "modelpod.yaml":
                (spec_dir / entry.name).symlink_to(entry)
        spec = yaml.safe_load((source / "modelpod.yaml").read_text())
        spec.setdefault("server", {})["max_batch_size"] = size
        (spec_dir / "modelpod.yaml").write_text(yaml.safe_dump(spec))
        self.size = size
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{example}-{size}.log"
        with self.log.open("w") as log:
            command = [sys.executable, "-m", "modelpod", "serve", str(spec_dir), "--port", str(self.port)]
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def inference_totals(self) -> tuple[float, float, float]:
        """(seconds of inference, rows computed, batches) so far, from the server's own metrics."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        totals = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                totals[sample.name] = sample.value
        return (
            totals["modelpod_inference_duration_seconds_sum"],
            totals["modelpod_batch_size_sum"],
            totals["modelpod_batch_size_count"],
        )


def measure(server: Server, bodies: list[bytes], concurrency: int, duration: float) -> dict[str, Any]:
    seconds_before, rows_before, batches_before = server.inference_totals()
    began = time.perf_counter()
    result = wrk_client.closed_loop(
        f"{server.url}/predict", bodies, concurrency=concurrency, duration=duration, warmup=0
    )
    wall = time.perf_counter() - began
    seconds_after, rows_after, batches_after = server.inference_totals()
    inference = seconds_after - seconds_before
    return {
        **result.as_dict(),
        "in_model_items_per_s": round((rows_after - rows_before) / inference, 1),
        "mean_batch": round((rows_after - rows_before) / (batches_after - batches_before), 1),
        # wall time includes starting and stopping wrk, so this reads slightly low
        "busy": round(inference / wall, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--example", default="minilm", choices=sorted(ITEMS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per load run and raw window")
    parser.add_argument("--raw-batch", type=int, default=64, help="batch size of the raw measurements")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not wrk_client.available():
        parser.error("wrk is needed (apt-get install wrk): a Python client would take the server's CPU")
    out = args.out or HERE / "results" / f"batch-size-{args.example}-c{args.concurrency}.json"

    items = ITEMS[args.example]()
    bodies = [orjson.dumps({"inputs": item}) for item in items]
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in args.sizes}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        items_file = workdir / "items.json"
        items_file.write_text(json.dumps(items))
        servers = [Server(args.example, size, workdir) for size in args.sizes]
        try:
            for server in servers:
                wait_ready(f"{server.url}/v2/health/ready", server.process, server.log)
                wrk_client.closed_loop(  # warm-up, not measured
                    f"{server.url}/predict", bodies, concurrency=args.concurrency, duration=3, warmup=0
                )
            # the sweep is of no use here (the raw batch size is given): as short as it goes
            with RawLimit(ROOT / "examples" / args.example, items_file, sweep_seconds=0.3) as raw:
                before = raw.measure(args.duration, batch_size=args.raw_batch)
                for index in range(args.passes):
                    for server in servers if index % 2 == 0 else servers[::-1]:
                        run = measure(server, bodies, args.concurrency, args.duration)
                        after = raw.measure(args.duration, batch_size=args.raw_batch)
                        limit = (before + after) / 2
                        run.update(
                            raw_before=before,
                            raw_after=after,
                            ratio=round(run["throughput"] / limit, 3),
                            in_model=round(run["in_model_items_per_s"] / limit, 3),
                        )
                        runs[server.size].append(run)
                        print(
                            f"max_batch_size {server.size}: {run['throughput']}/s, raw {before} and {after};"
                            f" ratio {run['ratio']}, in-model {run['in_model']}, busy {run['busy']},"
                            f" mean batch {run['mean_batch']}",
                            flush=True,
                        )
                        before = after
        finally:
            for server in servers:
                stop(server.process)
    summary = {
        size: {
            key: statistics.median(r[key] for r in rs) for key in ("ratio", "in_model", "busy", "throughput")
        }
        for size, rs in runs.items()
    }
    report = {
        "machine": machine(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "runs": runs,
        "summary": summary,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"{args.example} at concurrency {args.concurrency}, raw limit at batch {args.raw_batch}"
        f" ({report['machine']['date']}, {args.passes} passes of {args.duration:g} s; medians)",
        "",
        "| max_batch_size | req/s | vs raw limit (by pass) | model's rate in the server | model busy |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size, medians in summary.items():
        by_pass = ", ".join(f"{r['ratio']:.3f}" for r in runs[size])
        lines.append(
            f"| {size} | {medians['throughput']:.1f} | {medians['ratio']:.3f} ({by_pass}) |"
            f" {medians['in_model']:.3f} | {medians['busy']:.3f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
