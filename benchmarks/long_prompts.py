"""Resident memory of a text-generation server under long prompts (the workload of
tests/generation/test_memory.py, with the figures printed instead of asserted).

    .venv/bin/python benchmarks/long_prompts.py URL PID

against a server already running (`modelpod serve examples/smollm2`, or another engine), PID its
process: one prompt of 7,800 tokens (SmolLM2's context is 8,192), then 16 concurrent prompts of about
1,900. Prints each phase's time and the process's resident memory (VmRSS) and peak (VmHWM) after it.
"""

from __future__ import annotations

import concurrent.futures
import sys
import time
from pathlib import Path

import httpx

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "and", "runs", "far", "away"]


def memory(pid: int) -> str:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return f"VmRSS {fields['VmRSS'].strip()}, VmHWM {fields['VmHWM'].strip()}"


def complete(url: str, words: int, max_tokens: int) -> float:
    text = " ".join(WORDS[i % len(WORDS)] for i in range(words))
    started = time.perf_counter()
    answer = httpx.post(f"{url}/v1/completions", json={"prompt": text, "max_tokens": max_tokens,
                                                       "temperature": 0}, timeout=900)  # fmt: skip
    answer.raise_for_status()
    return time.perf_counter() - started


def main(url: str, pid: int) -> None:
    print("idle:", memory(pid), flush=True)
    print(f"one prompt of 7,800 tokens: {complete(url, 7800, 8):.1f} s;", memory(pid), flush=True)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        started = time.perf_counter()
        list(pool.map(lambda i: complete(url, 1900 + i, 16), range(16)))
    print(f"16 concurrent of 1,900: {time.perf_counter() - started:.1f} s;", memory(pid), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
