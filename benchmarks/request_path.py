"""A small model's request path against its ceiling, in one run (issue 19, part 4).

    .venv/bin/python benchmarks/request_path.py [--rounds 3] [--duration 10] [--warmup 2]
        [--concurrency 64] [--out benchmarks/results/request_path.json]

For digits, whose model computes in microseconds, the server's own work per request is the whole cost.
The ceiling is a bare ASGI app under the same uvicorn, uvloop and httptools (benchmarks/peer_services/
bare_asgi.py: read the body, answer a fixed 150-byte JSON). Each round runs, alternately, the ceiling and
`modelpod serve examples/digits` (access log on, as by default) on `/predict` and on v2 infer (JSON, and
with the binary tensor data extension), under wrk's closed loop at --concurrency; each modelpod run's
ratio is over the mean of the ceiling runs of its round, and the figure is the median over rounds. Each
server runs on CPU 0 and wrk on CPU 1 (where the machine has two). wrk is required (`apt-get install
wrk`): a Python client would take the core the server needs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks import wrk_client  # noqa: E402
from benchmarks.serving import machine  # noqa: E402
from benchmarks.targets import free_port, stop, wait_ready  # noqa: E402

TARGET = 0.35  # modelpod's share of the ceiling


# Server on CPU 0, wrk on CPU 1, for the ceiling and modelpod alike: left to the scheduler, where each
# lands moved single runs of the same server by up to a third on this 2-core machine.
SERVER_CPUS, CLIENT_CPUS = {0}, {1}


def _pinned() -> set[int] | None:
    """The client's CPUs when pinning is possible (Linux, 2 CPUs or more); else None."""
    return CLIENT_CPUS if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2 else None


def started(command: list[str], ready_url: str, log: Path) -> subprocess.Popen[bytes]:
    pin = None if _pinned() is None else (lambda: os.sched_setaffinity(0, SERVER_CPUS))
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=pin
        )
    wait_ready(ready_url, process, log)
    return process


def run_load(url: str, body: bytes, args: argparse.Namespace, headers: dict[str, str] | None = None) -> float:
    result = wrk_client.closed_loop(
        url, [body], concurrency=args.concurrency, duration=args.duration, warmup=args.warmup,
        headers=headers, cpus=_pinned(),
    )  # fmt: skip
    if result.errors:
        raise RuntimeError(f"{result.errors} errors against {url}")
    return result.throughput


def ceiling_run(body: bytes, args: argparse.Namespace) -> float:
    """One load run against a fresh bare ASGI app."""
    port = free_port()
    ceiling = started(
        [sys.executable, str(HERE / "peer_services" / "bare_asgi.py"), str(port)],
        f"http://127.0.0.1:{port}/",
        HERE / "results" / "request_path-bare.log",
    )
    try:
        return run_load(f"http://127.0.0.1:{port}/", body, args)
    finally:
        stop(ceiling)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "request_path.json")
    args = parser.parse_args()
    if not wrk_client.available():
        print("request_path: wrk is required (apt-get install wrk)", file=sys.stderr)
        return 2
    digits = ROOT / "examples" / "digits"
    example = json.loads((digits / "example.json").read_text())["inputs"]
    predict_body = json.dumps({"inputs": example}).encode()
    v2_body = json.dumps(
        {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": example["image"]}]}
    ).encode()
    # the binary tensor data extension: a JSON header, then the image's 64 float32 values as raw bytes
    pixels = struct.pack("<64f", *(value for row in example["image"] for cell in row for value in cell))
    tensor = {"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32",
              "parameters": {"binary_data_size": len(pixels)}}  # fmt: skip
    binary_header = json.dumps({"inputs": [tensor]}).encode()
    binary_body = binary_header + pixels
    binary_headers = {"Content-Type": "application/octet-stream",
                      "Inference-Header-Content-Length": str(len(binary_header))}  # fmt: skip
    logs = HERE / "results"
    rounds: list[dict[str, float]] = []
    for index in range(args.rounds):
        bare = [ceiling_run(predict_body, args)]
        port = free_port()
        modelpod = started(
            [sys.executable, "-m", "modelpod", "serve", str(digits), "--port", str(port)],
            f"http://127.0.0.1:{port}/v2/health/ready",
            logs / "request_path-modelpod.log",
        )
        try:
            base = f"http://127.0.0.1:{port}"
            predict = run_load(f"{base}/predict", predict_body, args)
            v2 = run_load(f"{base}/v2/models/digits/infer", v2_body, args)
            binary = run_load(f"{base}/v2/models/digits/infer", binary_body, args, binary_headers)
        finally:
            stop(modelpod)
        bare.append(ceiling_run(predict_body, args))
        limit = statistics.mean(bare)
        rounds.append({"ceiling": limit, "predict": predict, "v2_json": v2, "v2_binary": binary,
                       "predict_share": predict / limit, "v2_json_share": v2 / limit,
                       "v2_binary_share": binary / limit})  # fmt: skip
        print(f"round {index + 1}: ceiling {bare} /s; /predict {predict} /s ({predict / limit:.1%}); "
              f"v2 JSON {v2} /s ({v2 / limit:.1%}); v2 binary {binary} /s ({binary / limit:.1%})",
              flush=True)  # fmt: skip
    keys = ("ceiling", "predict", "v2_json", "v2_binary", "predict_share", "v2_json_share", "v2_binary_share")
    summary = {key: round(statistics.median(r[key] for r in rounds), 3) for key in keys}
    report = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds,
              "median": summary, "target_share": TARGET, "pid": os.getpid()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
