"""What transformers' own continuous batching gives on CPU, against `generate` on a static batch and alone.

    .venv/bin/python benchmarks/transformers_cb_probe.py [--model examples/smollm2/model] [--rounds 3]
        [--new-tokens 64] [--threads 2] [--note "..."] [--out benchmarks/results/transformers-cb-probe.json]

The model is examples/smollm2 (SmolLM2-135M-Instruct, float32; examples/smollm2/prepare.py makes it), on
--threads torch threads. 16 different chat prompts, greedy, each asked for exactly --new-tokens tokens:
- `cb`: transformers' ContinuousBatchingManager (`model.init_continuous_batching`), all 16 added at once,
  EOS disabled per request (eos_token_id=-1). The clock runs from the first add_request to the last
  result; making the manager (and its paged KV cache) is timed apart, as a server would do it once.
- `static`: `model.generate` on the 16 prompts left-padded into one batch (min_new_tokens = max_new_tokens).
- `single`: `model.generate` on one prompt alone.
Each round runs the three in turn; the figures are medians over rounds of output tokens per second. The
load average before each run, and a small matmul's speed on 1 and 2 threads before and after the rounds,
say how busy the machine was (other processes on 2 CPUs slow 2-thread torch ops by up to 10x).

Then the API probes, each on a fresh manager: per-request max_new_tokens and EOS, per-request sampling
parameters (temperature, top_p, top_k, seed), streaming, and cancellation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a CPU does in one paragraph.",
    "List three fruits that are red.",
    "How do I boil an egg?",
    "What is 12 times 7?",
    "Give me a name for a grey cat.",
    "Why is the sky blue?",
    "Translate 'good morning' into Spanish.",
    "What is the largest planet in the solar system?",
    "Describe a rainy day in two sentences.",
    "Who wrote Romeo and Juliet?",
    "What does HTTP stand for?",
    "Suggest a healthy breakfast.",
    "How many legs does a spider have?",
    "Tell me a fun fact about octopuses.",
]
# Enough paged KV cache for 16 sequences of up to 256 tokens (prompt + 64 new); left to itself on CPU the
# manager would size the cache at 60% of the machine's RAM.
PAGE_SIZE = 256
NUM_BLOCKS = 32
MAX_BATCH_TOKENS = 1024


def load(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tokenizer


def prompt_ids(tokenizer: Any) -> list[list[int]]:
    chats = [[{"role": "user", "content": question}] for question in QUESTIONS]
    return [tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"] for chat in chats]


def make_manager(model: Any, generation: Any, **overrides: Any) -> Any:
    """A ContinuousBatchingManager with a paged cache sized for the probe (see NUM_BLOCKS), not started."""
    from transformers import ContinuousBatchingConfig

    settings: dict[str, Any] = {
        "page_size": PAGE_SIZE,
        "num_blocks": NUM_BLOCKS,
        "max_batch_tokens": MAX_BATCH_TOKENS,
        "max_requests_per_batch": len(QUESTIONS),
    }
    settings.update(overrides)
    config = ContinuousBatchingConfig(**settings)
    return model.init_continuous_batching(generation_config=generation, continuous_batching_config=config)


def collect(manager: Any, request_ids: list[str], timeout: float) -> dict[str, Any]:
    """The finished outputs of these requests, waiting at most `timeout` seconds in all."""
    results: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while len(results) < len(request_ids) and time.monotonic() < deadline:
        output = manager.get_result(timeout=0.5)
        if output is not None and output.is_finished():
            results[output.request_id] = output
    return results


def run_cb(model: Any, prompts: list[list[int]], new_tokens: int) -> dict[str, Any]:
    import torch
    from transformers import GenerationConfig

    generation = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, eos_token_id=-1)
    started = time.perf_counter()
    manager = make_manager(model, generation)
    with torch.inference_mode():
        manager.warmup()  # on CPU no graphs to capture: this makes the paged cache and the batch processor
        manager.start()
        try:
            setup_s = time.perf_counter() - started
            started = time.perf_counter()
            ids = [manager.add_request(p, max_new_tokens=new_tokens, eos_token_id=-1) for p in prompts]
            results = collect(manager, ids, timeout=600)
            elapsed = time.perf_counter() - started
        finally:
            manager.stop(block=True, timeout=30)
            manager.destroy()
    tokens = [list(results[i].generated_tokens) if i in results else [] for i in ids]
    errors = [results[i].error for i in ids if i in results and results[i].error]
    return {
        "seconds": elapsed,
        "setup_seconds": setup_s,
        "output_tokens": sum(len(t) for t in tokens),
        "finished": len(results),
        "errors": errors,
        "tokens": tokens,
        "attn_implementation": model.config._attn_implementation,
    }


def run_static(model: Any, tokenizer: Any, prompts: list[list[int]], new_tokens: int) -> dict[str, Any]:
    import torch

    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=pad,
        )
    elapsed = time.perf_counter() - started
    generated = output[:, width:]
    return {
        "seconds": elapsed,
        "output_tokens": int(generated.numel()),
        "tokens": generated.tolist(),
    }


def run_single(model: Any, tokenizer: Any, prompt: list[int], new_tokens: int) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "output_tokens": int(output.shape[1] - len(prompt))}


def agreement(cb_tokens: list[list[int]], static_tokens: list[list[int]], eos: int) -> dict[str, Any]:
    """How far the greedy continuations of the two methods agree, up to the first EOS (where `generate` had
    to pick another token, its min_new_tokens forbidding EOS)."""
    identical, common = 0, []
    for a, b in zip(cb_tokens, static_tokens, strict=True):
        stop = a.index(eos) if eos in a else len(a)
        a, b = a[:stop], b[:stop]
        identical += a == b
        common.append(next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a)))
    return {"identical_up_to_eos": identical, "sequences": len(cb_tokens), "common_prefix_tokens": common}


def probe_api(model: Any, tokenizer: Any, prompts: list[list[int]]) -> dict[str, Any]:
    """What a server would need from the manager, each tried rather than read off the signatures."""
    import torch
    from transformers import GenerationConfig

    facts: dict[str, Any] = {}
    eos = tokenizer.eos_token_id

    # per-request max_new_tokens and EOS, greedy
    generation = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=eos)
    manager = make_manager(model, generation)
    with torch.inference_mode():
        manager.start()
        try:
            short = manager.add_request(prompts[1], max_new_tokens=3, eos_token_id=-1)
            long = manager.add_request(prompts[1], max_new_tokens=20, eos_token_id=-1)
            default = manager.add_request(prompts[0])  # 16 new tokens at most, stops at EOS
            greedy = manager.add_request(prompts[5], max_new_tokens=8, eos_token_id=-1)
            results = collect(manager, [short, long, default, greedy], timeout=120)
            greedy_tokens = list(results[greedy].generated_tokens)
            facts["per_request_max_new_tokens"] = {
                "asked": [3, 20],
                "got": [len(results[short].generated_tokens), len(results[long].generated_tokens)],
            }
            facts["per_request_eos"] = {
                "default_request_tokens": len(results[default].generated_tokens),
                "default_request_ends_with_eos": results[default].generated_tokens[-1:] == [eos],
                "answer": tokenizer.decode(results[default].generated_tokens, skip_special_tokens=True),
            }

            # streaming: one output per new token, the last one finished
            streamed = manager.add_request(prompts[2], max_new_tokens=6, eos_token_id=-1, streaming=True)
            chunks = list(manager.request_id_iter(streamed))
            facts["streaming"] = {
                "outputs": len(chunks),
                "tokens_in_each": [len(c.generated_tokens) for c in chunks],
                "last_finished": chunks[-1].is_finished() if chunks else None,
            }

            # cancellation of a running request: is anything delivered for it, does the manager go on?
            victim = manager.add_request(prompts[3], max_new_tokens=200, eos_token_id=-1, streaming=True)
            first = None
            deadline = time.monotonic() + 60
            while first is None and time.monotonic() < deadline:
                first = manager.get_result(request_id=victim, timeout=0.5)
            manager.cancel_request(victim)
            cancelled_at = time.perf_counter()
            after: list[Any] = []
            while time.perf_counter() - cancelled_at < 3:
                output = manager.get_result(timeout=0.2)
                if output is not None:
                    after.append(output)
            survivor = manager.add_request(prompts[4], max_new_tokens=4, eos_token_id=-1)
            survived = collect(manager, [survivor], timeout=60)
            facts["cancel"] = {
                "tokens_before_cancel": len(first.generated_tokens) if first else None,
                "outputs_delivered_in_3s_after_cancel": len(after),
                "finished_output_delivered": any(o.request_id == victim and o.is_finished() for o in after),
                "statuses_after": sorted({o.status.name for o in after if o.request_id == victim}),
                "max_tokens_seen_after": max((len(o.generated_tokens) for o in after), default=0),
                "manager_serves_next_request": survivor in survived,
            }
        finally:
            manager.stop(block=True, timeout=30)
            manager.destroy()

    facts["sampling"] = probe_sampling(model, prompts, greedy_tokens)
    return facts


def probe_sampling(model: Any, prompts: list[list[int]], greedy_tokens: list[int]) -> dict[str, Any]:
    """Per-request temperature / top_p / top_k / seed, on a manager made for sampling. `greedy_tokens`: the
    greedy continuation of prompts[5], which a request with top_k=1 must reproduce if top_k takes effect."""
    import torch
    from transformers import GenerationConfig

    facts: dict[str, Any] = {}
    # Per-request values are read only by processors that exist: the manager's config must set each one
    # away from its neutral value (temperature 1.0, top_p 1.0), and per_request_processors must be on.
    generation = GenerationConfig(
        do_sample=True, temperature=0.7, top_p=0.9, top_k=50, max_new_tokens=8, eos_token_id=-1
    )
    manager = make_manager(model, generation, per_request_processors=True, seed=0)
    facts["supported_kwargs"] = sorted(manager.logit_processor.supported_keys)
    with torch.inference_mode():
        manager.start()
        try:
            cases = {
                "temperature": {"temperature": 0.3},
                "top_p": {"top_p": 0.5},
                "top_k": {"top_k": 5},
                "all_three": {"temperature": 0.3, "top_p": 0.5, "top_k": 5},
                "seed": {"seed": 1},
                "do_sample": {
                    "do_sample": False
                },  # greedy is ContinuousBatchProcessor.do_sample, per manager
            }
            outcome: dict[str, Any] = {}
            # does a per-request value act, or is it only accepted?
            request = manager.add_request(prompts[5], max_new_tokens=8, eos_token_id=-1, top_k=1)
            result = collect(manager, [request], timeout=60).get(request)
            facts["top_k_1_reproduces_greedy"] = (
                result is not None and result.generated_tokens == greedy_tokens
            )
            for name, kwargs in cases.items():
                try:
                    request = manager.add_request(prompts[5], max_new_tokens=8, eos_token_id=-1, **kwargs)
                    result = collect(manager, [request], timeout=60).get(request)
                    if result is None:
                        outcome[name] = "no result within 60 s"
                    elif result.error:
                        outcome[name] = f"request failed: {result.error}"
                    else:
                        outcome[name] = f"accepted, {len(result.generated_tokens)} tokens"
                except Exception as exc:
                    outcome[name] = f"add_request raised {type(exc).__name__}: {exc}"
            facts["per_request"] = outcome
        finally:
            manager.stop(block=True, timeout=30)
            manager.destroy()
    return facts


def matmul_gflops(threads: int) -> float:
    """GFLOPS of a decode-sized matmul (16 x 576 @ 576 x 1536) on `threads` threads. On a 2-CPU machine that
    other processes load, 2 threads can be 10x slower than 1 (each op's threads wait on a descheduled peer):
    measured before and after the rounds, it tells whether the figures are the method's or the machine's."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, w = torch.randn(16, 576), torch.randn(1536, 576)
        for _ in range(50):
            a @ w.T
        started = time.perf_counter()
        for _ in range(1000):
            a @ w.T
        seconds = (time.perf_counter() - started) / 1000
    finally:
        torch.set_num_threads(previous)
    return round(2 * 16 * 576 * 1536 / seconds / 1e9, 1)


def contention() -> dict[str, Any]:
    return {
        "load_average": load_average(),
        "matmul_gflops_1_thread": matmul_gflops(1),
        "matmul_gflops_2_threads": matmul_gflops(2),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "examples" / "smollm2" / "model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "transformers-cb-probe.json")
    parser.add_argument("--note", default="", help="what else the machine was doing, for the report")
    args = parser.parse_args()

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    if not (args.model / "model.safetensors").exists():
        print(f"no model in {args.model}: run examples/smollm2/prepare.py first", file=sys.stderr)
        return 1
    model, tokenizer = load(args.model)
    prompts = prompt_ids(tokenizer)
    print(f"prompt lengths {[len(p) for p in prompts]}", flush=True)

    contention_before = contention()
    print(f"contention before: {contention_before}", flush=True)
    # one untimed pass of each, so that no method pays for first-call allocations in round 1
    run_single(model, tokenizer, prompts[0], 4)
    run_static(model, tokenizer, prompts, 4)
    run_cb(model, prompts, 4)

    runs: dict[str, list[dict[str, Any]]] = {"cb": [], "static": [], "single": []}
    for round_number in range(args.rounds):
        for name in runs:
            load_before = load_average()
            if name == "cb":
                result = run_cb(model, prompts, args.new_tokens)
            elif name == "static":
                result = run_static(model, tokenizer, prompts, args.new_tokens)
            else:
                result = run_single(model, tokenizer, prompts[0], args.new_tokens)
            result["tokens_per_s"] = result["output_tokens"] / result["seconds"]
            result["load_average_before"] = load_before
            result["load_average_after"] = load_average()
            runs[name].append(result)
            print(
                f"round {round_number + 1} {name:6} {result['output_tokens']:5} tokens "
                f"{result['seconds']:6.2f} s {result['tokens_per_s']:7.1f} tokens/s load {load_before}",
                flush=True,
            )

    check = agreement(runs["cb"][0]["tokens"], runs["static"][0]["tokens"], tokenizer.eos_token_id)
    for name in ("cb", "static"):
        for result in runs[name]:
            result.pop("tokens")
    medians = {name: statistics.median(r["tokens_per_s"] for r in results) for name, results in runs.items()}
    contention_after = contention()
    print(f"contention after: {contention_after}", flush=True)
    print(f"medians (tokens/s): {json.dumps({k: round(v, 1) for k, v in medians.items()})}", flush=True)

    facts = probe_api(model, tokenizer, prompts)
    print(json.dumps(facts, indent=2), flush=True)

    report = {
        "what": __doc__.strip().splitlines()[0],
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "dtype": "float32",
        "torch_threads": args.threads,
        "prompts": len(prompts),
        "prompt_tokens": [len(p) for p in prompts],
        "new_tokens_per_sequence": args.new_tokens,
        "rounds": args.rounds,
        "cb_config": {"page_size": PAGE_SIZE, "num_blocks": NUM_BLOCKS, "max_batch_tokens": MAX_BATCH_TOKENS},
        "median_tokens_per_s": {k: round(v, 1) for k, v in medians.items()},
        "cb_vs_static": round(medians["cb"] / medians["static"], 3),
        "cb_vs_single": round(medians["cb"] / medians["single"], 3),
        "greedy_agreement_cb_vs_static": check,
        "runs": runs,
        "api": facts,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "contention_before": contention_before,
            "contention_after": contention_after,
            "note": args.note,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
