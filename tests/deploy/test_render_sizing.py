"""A language model's Deployment is sized from the model: memory for its weights, its KV-cache budget and
the runtime; a startup probe and a rollout deadline long enough to load its weights. The model directories
here are a config.json and a sparse weights file of a chosen size: rendering reads no weights."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from modelpod.deploy.render import render_manifests
from modelpod.deploy.render.sizing import MIB, RUNTIME_BYTES, RUNTIME_BYTES_BY_ENGINE
from modelpod.specfile import load_spec
from tests.conftest import prepare_example
from tests.deploy.conftest import RENDER_IMAGE

# SmolLM2-135M's shape: 30 layers, 9 heads of 64 (576 wide), 3 KV heads, 8k context
SMOLLM2 = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "num_hidden_layers": 30,
    "max_position_embeddings": 8192,
}
KV_PER_TOKEN = 2 * 30 * 3 * 64 * 4  # keys and values, float32


def project(tmp_path: Path, *, weights: int, config: dict[str, Any] = SMOLLM2, extra: str = "") -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with (model / "model.safetensors").open("wb") as sparse:
        sparse.truncate(weights)
    (tmp_path / "modelpod.yaml").write_text(
        "name: lm\nmodel: {path: model}\nresources: {cpu: '2', memory: 512Mi}\n" + textwrap.dedent(extra),
        encoding="utf-8",
    )
    return tmp_path


def deployment(directory: Path) -> dict[str, Any]:
    manifests = render_manifests(load_spec(directory), image=RENDER_IMAGE)
    return next(m for m in manifests if m["kind"] == "Deployment")


def server(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_memory_covers_weights_kv_budget_and_runtime(tmp_path: Path) -> None:
    rendered = server(deployment(project(tmp_path, weights=538_090_408)))
    # default budget: 16 running sequences x 2,048 tokens (more than one 8,192-token sequence)
    needed = 538_090_408 + 16 * 2048 * KV_PER_TOKEN + RUNTIME_BYTES
    expected = f"{-(-needed // MIB)}Mi"
    assert rendered["resources"]["requests"]["memory"] == expected
    assert rendered["resources"]["limits"]["memory"] == expected


def test_a_smaller_kv_budget_and_bfloat16_weights_change_the_size(tmp_path: Path) -> None:
    config = SMOLLM2 | {"torch_dtype": "bfloat16"}
    extra = "generation: {kv_cache_tokens: 8192}\n"
    rendered = server(deployment(project(tmp_path, weights=269_045_204, config=config, extra=extra)))
    # bfloat16 on disk, float32 in memory on a CPU: the weights take twice their files
    needed = 2 * 269_045_204 + 8192 * KV_PER_TOKEN + RUNTIME_BYTES
    assert rendered["resources"]["limits"]["memory"] == f"{-(-needed // MIB)}Mi"


def test_the_vllm_engine_is_sized_for_its_own_processes(tmp_path: Path) -> None:
    extra = "generation: {engine: vllm}\n"
    rendered = server(deployment(project(tmp_path, weights=538_090_408, extra=extra)))
    needed = 538_090_408 + 16 * 2048 * KV_PER_TOKEN + RUNTIME_BYTES_BY_ENGINE["vllm"]
    assert rendered["resources"]["limits"]["memory"] == f"{-(-needed // MIB)}Mi"


def test_a_gguf_file_is_sized_from_its_header(tmp_path: Path) -> None:
    gguf = next((prepare_example("smollm2-gguf") / "model").glob("*.gguf"))
    (tmp_path / gguf.name).hardlink_to(gguf)
    (tmp_path / "modelpod.yaml").write_text(f"name: chat\nmodel: {{path: {gguf.name}}}\n")
    rendered = server(deployment(tmp_path))
    # the file as llama.cpp maps it, and float16 keys and values: 30 layers x 3 KV heads x 64 x 2 x 2 bytes
    needed = gguf.stat().st_size + 16 * 2048 * (30 * 3 * 64 * 2 * 2) + RUNTIME_BYTES
    assert rendered["resources"]["limits"]["memory"] == f"{-(-needed // MIB)}Mi"


def test_a_spec_asking_for_more_memory_keeps_it(tmp_path: Path) -> None:
    directory = project(tmp_path, weights=538_090_408)
    spec_file = directory / "modelpod.yaml"
    spec_file.write_text(spec_file.read_text().replace("512Mi", "16Gi"), encoding="utf-8")
    assert server(deployment(directory))["resources"]["limits"]["memory"] == "16Gi"


def test_a_large_model_gets_a_startup_budget_and_rollout_deadline_to_load(tmp_path: Path) -> None:
    rendered = deployment(project(tmp_path, weights=60_000_000_000))
    probe = server(rendered)["startupProbe"]
    budget = 60_000_000_000 // 50_000_000 + 120  # 1,320 s at 50 MB/s, more than the default 600 s
    assert probe["periodSeconds"] * probe["failureThreshold"] == budget
    assert rendered["spec"]["progressDeadlineSeconds"] == budget + 300  # the default gap of 900 - 600


def test_a_model_that_is_not_a_language_model_is_not_resized(tmp_path: Path) -> None:
    config = {"architectures": ["BertForSequenceClassification"], "hidden_size": 8}
    rendered = deployment(project(tmp_path, weights=10**9, config=config))
    assert server(rendered)["resources"]["limits"]["memory"] == "512Mi"
    assert server(rendered)["startupProbe"]["failureThreshold"] == 600 // 5
