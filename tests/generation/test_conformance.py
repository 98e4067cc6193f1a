"""Every architecture the built-in engine serves gives exactly what transformers gives.

For each tiny random model of tests/generation/tiny_models.py (Llama, Qwen2 plain and with a window,
Qwen3, Phi3, OPT, GPT-NeoX, GPT-2, Mistral with a window, Gemma 2 with soft-capping and hybrid layers,
Gemma 3 with hybrid layers), a real `modelpod serve` gets four concurrent greedy completions whose token
prompts (10 to 70 tokens) are mostly longer than the 16-token window, prefilled in chunks of 16 beside
the others' decode tokens. Each answer must be the text of `generate` run alone on the same tokens with
transformers' reference ("eager") attention. A random model rarely says EOS and `ignore_eos` keeps each
to its length; its text is token soup, so an answer that differs in one token differs in its text.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import pytest

from tests.generation.tiny_models import ARCHITECTURES, WINDOW, build_tiny_model
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PROMPT_LENGTHS = (10, 40, 70, 25)
MAX_TOKENS = 20
WAIT_S = 60.0


def reference_texts(model_dir: Path, prompts: list[list[int]]) -> list[str]:
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    texts = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=MAX_TOKENS, min_new_tokens=MAX_TOKENS)  # fmt: skip
        texts.append(tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True))
    return texts


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_concurrent_answers_equal_generate_alone(
    architecture: str, smollm2_dir: Path, tmp_path: Path
) -> None:
    import torch

    model_dir = build_tiny_model(architecture, tmp_path / "model", smollm2_dir)
    spec = ("name: tiny\nmodel: {path: model, options: {task: text-generation}}\n"
            "generation: {max_tokens_per_step: 16, max_running_sequences: 4}\n")  # fmt: skip
    (tmp_path / "modelpod.yaml").write_text(spec, encoding="utf-8")
    generator = torch.Generator().manual_seed(1)
    prompts = [[int(t) for t in torch.randint(100, 40000, (n,), generator=generator)] for n in PROMPT_LENGTHS]
    assert max(PROMPT_LENGTHS) > WINDOW
    expected = reference_texts(model_dir, prompts)
    with ServerProcess(tmp_path) as server:

        def complete(prompt: list[int]) -> str:
            body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True}
            answer = httpx.post(f"{server.url}/v1/completions", json=body, timeout=WAIT_S)
            assert answer.status_code == 200, answer.text
            assert answer.json()["usage"]["completion_tokens"] == MAX_TOKENS
            return str(answer.json()["choices"][0]["text"])

        with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
            answers = list(pool.map(complete, prompts))
    assert answers == expected
