"""Chunked prefill and prefix caching of the built-in engine, measured on examples/smollm2.

    .venv/bin/python benchmarks/engine_features.py [--source DIR] [--label NAME] [--rounds 3]
        [--out benchmarks/results/engine-features-NAME.json]

`--source` serves with another checkout's `src/` (for the engine before a change: `git worktree add
/tmp/before <commit>`); the default is this tree. Each scenario runs `--rounds` times on a fresh server
(`modelpod serve examples/smollm2`, the spec's settings plus the scenario's), and the medians are reported.

- chunked prefill: 8 streaming completions generate (200 tokens each, EOS ignored); 3 s in, a prompt of
  2,000 tokens arrives (1 token to generate). The gaps between the 8 streams' tokens while it is
  prefilled, from its arrival to its answer, are the inter-token latency it causes: p50, p99, max; and
  the long prompt's time to first token. Before chunked prefill a long prompt was prefilled in one pass
  and every stream waited for it.
- prefix caching: a chat of a 600-token system prompt and a question; its answer (48 tokens); then the
  second turn (the first turn, its answer, a new question). The second turn's time to first token, with
  `generation.prefix_caching` on and off; each round is its own conversation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from modelpod.bench.sse import Stream, stream_one

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "smollm2"
WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
    "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
]  # fmt: skip


class Server:
    """`modelpod serve` of examples/smollm2 with `settings` merged over the spec, from `source`."""

    def __init__(self, source: Path, settings: dict[str, Any], port: int = 8771) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.source = source
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        import yaml

        spec = yaml.safe_load((EXAMPLE / "modelpod.yaml").read_text())
        for section, values in self.settings.items():
            spec.setdefault(section, {}).update(values)
        project = ROOT / ".bench" / "engine-features"
        project.mkdir(parents=True, exist_ok=True)
        model = project / "model"
        if not model.exists():  # hard links: a spec's paths may not lead out of its directory
            shutil.copytree(EXAMPLE / "model", model, copy_function=os.link)
        spec.pop("examples", None)
        (project / "modelpod.yaml").write_text(yaml.safe_dump(spec))
        env = {**os.environ, "PYTHONPATH": str(self.source / "src")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelpod", "serve", str(project), "--port", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=(project / "server.log").open("w"),
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError("the server did not become ready in 180 s")

    def __exit__(self, *args: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(60)


def words(count: int, offset: int = 0) -> str:
    return " ".join(WORDS[(i * 7 + offset) % len(WORDS)] for i in range(count))


async def chunked_prefill_round(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        stream_body = orjson.dumps({"prompt": words(40), "max_tokens": 200, "temperature": 0,
                                    "ignore_eos": True, "stream": True})  # fmt: skip
        streams = [asyncio.ensure_future(stream_one(session, f"{url}/v1/completions", stream_body))
                   for _ in range(8)]  # fmt: skip
        await asyncio.sleep(3.0)
        long_body = orjson.dumps({"prompt": words(2000, 3), "max_tokens": 1, "temperature": 0,
                                  "ignore_eos": True, "stream": True})  # fmt: skip
        long: Stream = await stream_one(session, f"{url}/v1/completions", long_body)
        done = await asyncio.gather(*streams)
    arrived, answered = long.sent, long.chunk_times[0]
    gaps = [b - a for s in done for a, b in zip(s.chunk_times, s.chunk_times[1:], strict=False)
            if b > arrived and a < answered]  # fmt: skip
    if long.prompt_tokens is not None:
        assert long.prompt_tokens >= 1900, long.prompt_tokens
    return {"itl_p50_ms": 1000 * percentile(gaps, 50), "itl_p99_ms": 1000 * percentile(gaps, 99),
            "itl_max_ms": 1000 * max(gaps), "long_ttft_s": answered - arrived,
            "gaps": len(gaps)}  # fmt: skip


async def second_turn_ttft(url: str, conversation: int) -> float:
    system = {"role": "system", "content": f"Conversation {conversation}. " + words(560, conversation)}
    first = [system, {"role": "user", "content": "Name three colours."}]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        answer = await session.post(
            f"{url}/v1/chat/completions",
            data=orjson.dumps({"messages": first, "max_tokens": 48, "temperature": 0}),
            headers={"content-type": "application/json"},
        )
        reply = (await answer.json())["choices"][0]["message"]["content"]
        second = [
            *first,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "And three more?"},
        ]
        body = orjson.dumps({"messages": second, "max_tokens": 8, "temperature": 0, "stream": True})
        stream = await stream_one(session, f"{url}/v1/chat/completions", body)
    return stream.chunk_times[0] - stream.sent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=ROOT)
    parser.add_argument("--label", default="after")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenarios", nargs="+", default=["chunked", "prefix"])
    parser.add_argument("--max-tokens-per-step", type=int, help="generation.max_tokens_per_step (chunked)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result: dict[str, Any] = {"label": args.label, "source": str(args.source), "rounds": args.rounds,
                              "max_tokens_per_step": args.max_tokens_per_step}  # fmt: skip
    if "chunked" in args.scenarios:
        rounds = []
        for _ in range(args.rounds):
            step = {"max_tokens_per_step": args.max_tokens_per_step} if args.max_tokens_per_step else {}
            with Server(args.source, {"generation": step} if step else {}) as server:
                rounds.append(asyncio.run(chunked_prefill_round(server.url)))
        result["chunked_prefill"] = {"rounds": rounds, "median": medians(rounds)}
        print("chunked prefill:", result["chunked_prefill"]["median"], flush=True)
    if "prefix" in args.scenarios:
        for caching in (True, False):
            with Server(args.source, {"generation": {"prefix_caching": caching}}) as server:
                ttfts = [asyncio.run(second_turn_ttft(server.url, c)) for c in range(args.rounds)]
            key = f"second_turn_ttft_s_prefix_caching_{'on' if caching else 'off'}"
            result[key] = {"rounds": ttfts, "median": statistics.median(ttfts)}
            print(key, result[key], flush=True)
    out = args.out or ROOT / "benchmarks" / "results" / f"engine-features-{args.label}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", out)


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in rounds), 3) for key in rounds[0]}


if __name__ == "__main__":
    main()
