"""`modelpod optimize` on the digits CNN (already ONNX: int8 static) and the minilm encoder (exported from
PyTorch with its tokenizer: int8 dynamic), each served beside its original and compared answer for
answer; the refusal path; the profile written into modelpod.yaml."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnx
import openai
import pytest
import tritonclient.http as triton

from modelpod.inference import predict_examples
from modelpod.specfile import load_spec
from tests.optimized_examples import copy_project, held_out_digits, run_optimize
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SENTENCES = [
    "The weather is lovely today.",
    "Stock markets fell sharply after the announcement.",
    "A quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "Quantum computers use qubits.",
    "x",
    "Das ist ein deutscher Satz.",
    "The committee will meet again next week to discuss the budget, the schedule and the new hires. " * 8,
]
OPTIMIZED = ("--profile", "optimized")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def maps_torch(server: ServerProcess) -> bool:
    """Whether the server process has PyTorch's library loaded."""
    assert server.process is not None
    return "libtorch" in Path(f"/proc/{server.process.pid}/maps").read_text()


def served_pair(directory: Path):
    """The original and the `optimized` profile of `directory`, each served by a process of its own."""
    with (
        ServerProcess(directory) as original,
        ServerProcess(directory, "--profile", "optimized") as optimised,
    ):
        yield original, optimised


@pytest.fixture(scope="module")
def digits_pair(optimized_digits):
    yield from served_pair(optimized_digits[0])


@pytest.fixture(scope="module")
def minilm_pair(optimized_minilm):
    yield from served_pair(optimized_minilm[0])


def test_digits_optimize_reports_and_writes_an_int8_profile(optimized_digits):
    directory, output = optimized_digits
    assert "top-1 agreement" in output
    assert "1 example(s) + 360 from held-out.json" in output
    spec = load_spec(directory, "optimized")
    assert spec.model.format == "onnx"
    assert spec.model.path == directory / "model" / "optimized"
    graph = onnx.load(str(directory / "model" / "optimized" / "model.onnx"))
    assert "QuantizeLinear" in {node.op_type for node in graph.graph.node}
    assert load_spec(directory).model.path == directory / "model" / "digits.onnx"  # the base is untouched


def test_optimised_digits_served_agree_with_the_original_on_held_out_digits(optimized_digits, digits_pair):
    directory, _ = optimized_digits
    original, optimised = digits_pair
    images, labels = held_out_digits()
    body = {"instances": [{"image": image.tolist()} for image in images[:200]]}
    answers = [httpx.post(f"{s.url}/predict", json=body, timeout=30) for s in (original, optimised)]
    assert [a.status_code for a in answers] == [200, 200], answers[1].text
    theirs, ours = (np.array([p["probabilities"] for p in a.json()["predictions"]]) for a in answers)
    agreement = float(np.mean(theirs.argmax(1) == ours.argmax(1)))
    assert agreement >= 0.995, agreement
    assert float(np.mean(ours.argmax(1) == labels[:200])) >= 0.95
    # the v2 protocol through a real client, binary tensors
    results = []
    for server in (original, optimised):
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        tensor = triton.InferInput("image", [8, 8, 8, 1], "FP32")
        tensor.set_data_from_numpy(images[:8], binary_data=True)
        results.append(client.infer("digits", [tensor]).as_numpy("probabilities"))
    assert (results[0].argmax(1) == results[1].argmax(1)).all()
    # the profile's example (its tolerance widened by optimize) passes against the optimised server
    reports = list(predict_examples(load_spec(directory, "optimized"), url=optimised.url, timeout=30))
    assert [r.problems for r in reports] == [[]]


def test_minilm_optimize_writes_onnx_with_its_tokenizer(optimized_minilm):
    directory, output = optimized_minilm
    assert "cosine (mean / min)" in output
    assert "latency, batch 1" in output
    optimised_dir = directory / "model" / "optimized"
    assert sorted(p.name for p in optimised_dir.iterdir()) == ["model.onnx", "tokenizer.json"]
    graph = onnx.load(str(optimised_dir / "model.onnx"), load_external_data=False)
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.graph.output] == ["embedding"]
    assert "DynamicQuantizeLinear" in {node.op_type for node in graph.graph.node}
    assert load_spec(directory, "optimized").model.options == {}


def test_optimised_minilm_serves_the_same_endpoints_and_answers_without_torch(minilm_pair):
    original, optimised = minilm_pair
    assert maps_torch(original)
    assert not maps_torch(optimised)
    embeddings, tokens = [], []
    for server in (original, optimised):
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=60, max_retries=0)
        answer = client.embeddings.create(model="minilm", input=SENTENCES)
        embeddings.append(np.array([item.embedding for item in answer.data]))
        tokens.append(answer.usage.prompt_tokens)
    assert tokens[0] == tokens[1]
    # the threshold optimize applies is on the mean; a one-letter text ("x") came out at 0.986
    assert cosines(*embeddings).mean() >= 0.99
    assert cosines(*embeddings).min() >= 0.98
    # /predict, one sentence
    answers = [
        httpx.post(f"{s.url}/predict", json={"inputs": {"text": SENTENCES[1]}}, timeout=30).json()
        for s in (original, optimised)
    ]
    vectors = [np.array(a["outputs"]["embedding"])[None] for a in answers]
    assert cosines(*vectors)[0] >= 0.99
    # v2 through tritonclient, strings as BYTES
    results = []
    for server in (original, optimised):
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        tensor = triton.InferInput("text", [3], "BYTES")
        tensor.set_data_from_numpy(np.array(SENTENCES[:3], dtype=object), binary_data=True)
        results.append(client.infer("minilm", [tensor]).as_numpy("embedding"))
    assert results[1].shape == (3, 384)
    assert cosines(*results).min() >= 0.99
    np.testing.assert_allclose(np.linalg.norm(results[1], axis=1), 1.0, atol=1e-3)  # normalised in the graph


def test_a_threshold_the_quantised_model_cannot_meet_writes_nothing(minilm_dir, tmp_path):
    directory = copy_project(minilm_dir, tmp_path / "minilm")
    spec_before = (directory / "modelpod.yaml").read_text()
    result = run_optimize(
        directory, "--min-cosine", "0.999999", "--eval-items", "8", "--measure-seconds", "0"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cosine (mean / min)" in result.stdout  # the figures
    assert "mean cosine" in result.stderr
    assert "below 0.999999" in result.stderr
    assert "nothing was written" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (directory / "model" / "optimized").exists()
    assert (directory / "modelpod.yaml").read_text() == spec_before
    assert list((directory / ".modelpod").iterdir()) == []  # the scratch directory is gone too


def test_keras_is_exported_with_the_signature_names(digits_dir, tmp_path):
    directory = copy_project(digits_dir, tmp_path / "digits")
    result = run_optimize(directory, "--profile", "keras", "--quantize", "none", "--measure-seconds", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "top-1 agreement" in result.stdout
    graph = onnx.load(str(directory / "model" / "optimized" / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["image"]
    assert [o.name for o in graph.graph.output] == ["probabilities"]
    assert "QuantizeLinear" not in {node.op_type for node in graph.graph.node}
    reports = list(predict_examples(load_spec(directory, "optimized"), url=None, timeout=30))
    assert [r.problems for r in reports] == [[]]


def test_a_format_optimize_cannot_export_is_refused_with_a_hint(sklearn_dir, tmp_path):
    directory = copy_project(sklearn_dir, tmp_path / "sklearn")
    result = run_optimize(directory, "--measure-seconds", "0")
    assert result.returncode == 1
    assert "cannot export a sklearn model to ONNX" in result.stderr
    assert "Hint: optimize takes ONNX, PyTorch" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (directory / "model" / "optimized").exists()
