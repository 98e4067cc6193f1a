"""Which engine a spec gets (`generation.engine`, the `auto` rule, the refusals), a GGUF file's footprint
read from its header, and the command lines modelpod gives llama.cpp and vLLM. Pure functions of the
spec and the real example files: no engine runs here (tests/engines/test_engines.py runs them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelpod.errors import SpecError
from modelpod.server.engines import commands
from modelpod.specfile import load_spec
from modelpod.specfile.footprint import read_gguf_footprint
from tests.conftest import prepare_example

# SmolLM2-135M: 30 layers, 3 KV heads of 64; llama.cpp keeps keys and values in float16
SMOLLM2_GGUF_KV_BYTES_PER_TOKEN = 2 * 30 * 3 * 64 * 2


@pytest.fixture(scope="module")
def gguf_file() -> Path:
    return next((prepare_example("smollm2-gguf") / "model").glob("*.gguf"))


def project(root: Path, model: Path, text: str) -> Path:
    """A spec in `root` whose model is `model` hard-linked (a file) or linked file by file (a directory)."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / model.name
    if model.is_dir():
        target.mkdir(exist_ok=True)
        for item in model.iterdir():
            if item.is_file() and not (target / item.name).exists():
                os.link(item, target / item.name)
    elif not target.exists():
        os.link(model, target)
    (root / "modelpod.yaml").write_text(f"name: chat\nmodel: {{path: {model.name}}}\n{text}")
    return root


def test_a_gguf_file_is_read_from_its_header_and_served_by_llamacpp(gguf_file: Path, tmp_path: Path) -> None:
    footprint = read_gguf_footprint(gguf_file)
    assert footprint is not None
    assert footprint.context_tokens == 8192
    assert footprint.kv_bytes_per_token == SMOLLM2_GGUF_KV_BYTES_PER_TOKEN
    assert footprint.weights_bytes == gguf_file.stat().st_size
    spec = load_spec(project(tmp_path, gguf_file, ""))
    assert (spec.model.format, spec.engine) == ("gguf", "llamacpp")


def test_auto_picks_vllm_for_gpus_and_the_builtin_engine_otherwise(smollm2_dir: Path, tmp_path: Path) -> None:
    on_cpu = load_spec(project(tmp_path / "cpu", smollm2_dir, ""))
    on_gpu = load_spec(project(tmp_path / "gpu", smollm2_dir, "resources: {gpu: 1}\n"))
    named = load_spec(project(tmp_path / "named", smollm2_dir, "generation: {engine: vllm}\n"))
    assert (on_cpu.engine, on_gpu.engine, named.engine) == ("builtin", "vllm", "vllm")


@pytest.mark.parametrize(
    ("model", "engine", "says"),
    [
        ("gguf", "builtin", "the builtin engine serves a transformers directory, not a GGUF file"),
        ("gguf", "vllm", "the vllm engine serves a transformers directory, not a GGUF file"),
        ("transformers", "llamacpp", "llama.cpp serves GGUF files"),
    ],
)
def test_an_engine_that_cannot_serve_the_model_is_refused_with_the_way_out(
    model: str, engine: str, says: str, gguf_file: Path, smollm2_dir: Path, tmp_path: Path
) -> None:
    path = gguf_file if model == "gguf" else smollm2_dir
    with pytest.raises(SpecError) as caught:
        load_spec(project(tmp_path, path, f"generation: {{engine: {engine}}}\n"))
    (issue,) = caught.value.issues
    assert issue.path == "generation.engine"
    assert says in issue.message
    assert issue.hint


def test_a_model_that_is_no_language_model_refuses_an_external_engine(write_spec: object) -> None:
    path = write_spec("name: m\nmodel: {path: model.onnx}\ngeneration: {engine: llamacpp}\n")  # type: ignore[operator]
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert "the llamacpp engine serves language models" in str(caught.value)


def test_llama_server_gets_a_slot_per_sequence_and_the_kv_budget(
    gguf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPOD_LLAMA_SERVER", "/bin/true")  # any executable: only the argv is read
    spec = load_spec(project(tmp_path, gguf_file, (
        "generation: {max_running_sequences: 4, kv_cache_tokens: 6000, engine_args: [--flash-attn, 'on']}\n"
        "server: {threads: 2}\n"
    )))  # fmt: skip
    argv = commands.command_for(spec, 18001).argv
    assert argv[0] == "/bin/true"

    def value(option: str) -> str:
        return argv[argv.index(option) + 1]

    assert value("--model") == str(spec.model.path)
    assert value("--host") == "127.0.0.1"
    assert (value("--port"), value("--parallel"), value("--threads")) == ("18001", "4", "2")
    assert argv[argv.index("--kv-unified") + 1 : argv.index("--kv-unified") + 3] == ["--ctx-size", "6000"]
    assert argv[-2:] == ["--flash-attn", "on"]  # engine_args last, so they override


def test_vllm_gets_its_sequences_the_kv_bytes_and_eager_mode_on_a_cpu(
    smollm2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPOD_VLLM_PYTHON", "/usr/bin/python3")
    cpu = load_spec(
        project(tmp_path / "cpu", smollm2_dir, "generation: {engine: vllm, max_running_sequences: 8}\n")
    )
    argv = commands.command_for(cpu, 18002).argv
    assert argv[:3] == ["/usr/bin/python3", "-m", "vllm.entrypoints.launchers.api_server.entry"]
    footprint = cpu.model.footprint
    assert footprint is not None
    budget = cpu.generation.kv_cache_tokens_for(footprint.context_tokens)
    kv_bytes = (budget + commands.VLLM_KV_MARGIN_TOKENS) * footprint.kv_bytes_per_token
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(kv_bytes)
    assert argv[argv.index("--max-num-seqs") + 1] == "8"
    assert "--enforce-eager" in argv
    assert argv[argv.index("--dtype") + 1] == "float32"
    assert "--tensor-parallel-size" not in argv
    gpu = load_spec(project(tmp_path / "gpu", smollm2_dir, "resources: {gpu: 2}\n"))
    argv = commands.command_for(gpu, 18003).argv
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert "--enforce-eager" not in argv
