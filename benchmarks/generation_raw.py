"""The raw limit of text generation: transformers `generate` on a static batch, no server in the way.

In a child process (torch.set_num_threads(2), the allocator `modelpod serve` runs with), the model
directory is loaded with transformers and, on demand, measured:

- output tokens/s at each batch size: `generate` on a left-padded batch of the benchmark's prompts
  (chat template applied), greedy, min_new_tokens = max_new_tokens, so every row yields exactly
  max_new_tokens; batch size x max_new_tokens over the call's wall time, prefill included. The sizes
  take turns, `passes` times, each call on the next group of prompts; the median per size counts.
- the prefill of one prompt (the first): one forward pass over it, building the KV cache and the last
  position's logits as `generate` does; the median of `prefill_reps`. The reference for time to first
  token at concurrency 1.

The child stays loaded and idle between measurements, so the benchmark measures the limit at the start
and at the end of every round, around the servers' runs.

Child protocol (`python -m benchmarks.generation_raw MODEL_DIR PROMPTS_JSON MAX_TOKENS THREADS`): one
JSON line when loaded, then for each line "BATCH,BATCH,... PASSES PREFILL_REPS" read from stdin, one
JSON line with the measurements.
"""

from __future__ import annotations

import json
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOAD_TIMEOUT = 300.0


class RawGeneration:
    """The child process: `measure(batch_sizes, passes, prefill_reps)` on demand, `info` from its start."""

    def __init__(self, model_dir: Path, prompts_file: Path, max_tokens: int, threads: int) -> None:
        command = [sys.executable, "-m", "benchmarks.generation_raw", str(model_dir), str(prompts_file)]
        self._process = subprocess.Popen(
            [*command, str(max_tokens), str(threads)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = self._read(LOAD_TIMEOUT)

    def measure(self, batch_sizes: list[int], passes: int, prefill_reps: int) -> dict[str, Any]:
        assert self._process.stdin is not None
        line = f"{','.join(map(str, batch_sizes))} {passes} {prefill_reps}\n"
        self._process.stdin.write(line)
        self._process.stdin.flush()
        return self._read(600.0 * passes)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)

    def __enter__(self) -> RawGeneration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        line = self._process.stdout.readline() if ready else ""
        if not line:
            self._process.kill()
            raise RuntimeError(f"the raw-limit process gave no answer within {timeout:.0f}s")
        return dict(json.loads(line))


def main(argv: list[str]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modelpod.server.http.allocator import keep_freed_memory

    keep_freed_memory()  # as `modelpod serve` does; MODELPOD_MALLOC_TUNING=0 leaves glibc's defaults
    model_dir, prompts_file, max_tokens, threads = argv[0], argv[1], int(argv[2]), int(argv[3])
    torch.set_num_threads(threads)
    prompts = json.loads(Path(prompts_file).read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        for prompt in prompts
    ]

    def batch(size: int, start: int) -> Any:
        rows = [texts[(start + i) % len(texts)] for i in range(size)]
        return tokenizer(rows, padding=True, return_tensors="pt", add_special_tokens=False)

    def tokens_per_s(size: int, start: int) -> float:
        inputs = batch(size, start)
        began = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=pad_id,
            )
        elapsed = time.perf_counter() - began
        new = output.shape[1] - inputs["input_ids"].shape[1]
        if new != max_tokens:
            raise RuntimeError(f"generate made {new} tokens, not {max_tokens}")
        return size * max_tokens / elapsed

    def prefill_s() -> float:
        inputs = batch(1, 0)
        began = time.perf_counter()
        with torch.inference_mode():
            model(**inputs, use_cache=True, logits_to_keep=1)
        return time.perf_counter() - began

    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    tokens_per_s(1, 0)  # the first call pays for lazy initialisation
    print(
        json.dumps(
            {
                "prompt_tokens": lengths,
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "max_new_tokens": max_tokens,
            }
        ),
        flush=True,
    )
    warm = {1}
    for line in sys.stdin:  # idle (blocked here) while the servers are measured
        sizes_text, passes_text, reps_text = line.split()
        sizes = [int(s) for s in sizes_text.split(",")]
        for size in set(sizes) - warm:  # one unmeasured call per new size: its first call is slower
            tokens_per_s(size, 0)
            warm.add(size)
        by_pass = [
            {str(size): round(tokens_per_s(size, index * size), 2) for size in sizes}
            for index in range(int(passes_text))
        ]
        prefill = [prefill_s() for _ in range(int(reps_text) + 1)][1:]
        medians = {str(s): round(statistics.median(p[str(s)] for p in by_pass), 2) for s in sizes}
        result = {
            "tokens_per_s": medians,
            "tokens_per_s_best": {str(s): max(p[str(s)] for p in by_pass) for s in sizes},
            "tokens_per_s_by_pass": by_pass,
            "prefill_ms": round(statistics.median(prefill) * 1000, 2),
            "prefill_ms_all": [round(p * 1000, 2) for p in prefill],
            "prefill_prompt_tokens": lengths[0],
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
