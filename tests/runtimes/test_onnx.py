"""The ONNX runtime against onnxruntime itself, on a dynamic-batch graph and on one fixed to batch 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from modelpod.errors import ModelLoadError
from modelpod.runtimes import load_runtime
from modelpod.signature import Signature

DETECTED = Signature.model_validate(
    {
        "inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
        "outputs": [
            {"name": "logits", "dtype": "float32", "shape": [3]},
            {"name": "probabilities", "dtype": "float32", "shape": [3]},
        ],
    }
)


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)


def ort_predict(path: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    """onnxruntime's own answer, row by row so that it works for the fixed-batch graph too."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    per_row = [session.run(["logits", "probabilities"], {"x": row[None]}) for row in rows]
    return {
        "logits": np.concatenate([logits for logits, _ in per_row]),
        "probabilities": np.concatenate([probabilities for _, probabilities in per_row]),
    }


def test_dynamic_batch_matches_onnxruntime(onnx_dynamic_path, resolve, rows, assert_outputs_follow_signature):
    runtime = load_runtime(resolve(onnx_dynamic_path, "onnx"))

    assert runtime.signature == DETECTED
    ours = runtime.predict({"x": rows})
    session = ort.InferenceSession(str(onnx_dynamic_path), providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(["logits", "probabilities"], {"x": rows})
    # Same graph, same kernels; 1e-6 leaves room only for a different thread split of the reductions.
    np.testing.assert_allclose(ours["logits"], logits, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours["probabilities"], probabilities, rtol=0, atol=1e-6)
    assert_outputs_follow_signature(runtime.signature, ours, len(rows))


def test_fixed_batch_graph_runs_a_batch_one_row_at_a_time(
    onnx_fixed_batch_path, resolve, rows, assert_outputs_follow_signature
):
    session = ort.InferenceSession(str(onnx_fixed_batch_path), providers=["CPUExecutionProvider"])
    # Precondition: onnxruntime itself refuses a batch of 9 rows for this graph.
    with pytest.raises(InvalidArgument, match="Got invalid dimensions for input: x"):
        session.run(None, {"x": rows})
    runtime = load_runtime(resolve(onnx_fixed_batch_path, "onnx"))

    assert runtime.signature == DETECTED  # the fixed batch dimension is not part of the per-item shape
    ours = runtime.predict({"x": rows})
    theirs = ort_predict(onnx_fixed_batch_path, rows)
    # Row by row on both sides: identical computations, 1e-6 as above.
    np.testing.assert_allclose(ours["logits"], theirs["logits"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours["probabilities"], theirs["probabilities"], rtol=0, atol=1e-6)
    assert_outputs_follow_signature(runtime.signature, ours, len(rows))


def test_fixed_and_dynamic_batch_graphs_agree(onnx_dynamic_path, onnx_fixed_batch_path, resolve, rows):
    batched = load_runtime(resolve(onnx_dynamic_path, "onnx")).predict({"x": rows})
    one_at_a_time = load_runtime(resolve(onnx_fixed_batch_path, "onnx")).predict({"x": rows})
    # Same weights (same seed); a batched MatMul may sum in another order than a 1-row one: 1e-6.
    np.testing.assert_allclose(one_at_a_time["probabilities"], batched["probabilities"], rtol=0, atol=1e-6)


def test_declared_signature_may_serve_a_subset_of_outputs(onnx_dynamic_path, resolve, rows):
    declared = {
        "inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [3]}],
    }
    runtime = load_runtime(resolve(onnx_dynamic_path, "onnx", signature=declared))

    assert [t.name for t in runtime.signature.outputs] == ["probabilities"]
    ours = runtime.predict({"x": rows})
    assert sorted(ours) == ["probabilities"]
    theirs = ort_predict(onnx_dynamic_path, rows)
    np.testing.assert_allclose(ours["probabilities"], theirs["probabilities"], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("tensor", "expected_message"),
    [
        (
            {"name": "features", "dtype": "float32", "shape": [4]},
            r"inputs \['features'\] do not match .*\['x'\]",
        ),
        (
            {"name": "x", "dtype": "float64", "shape": [4]},
            r"'x' is declared float64 but the model has float32",
        ),
        ({"name": "x", "dtype": "float32", "shape": [5]}, r"'x' has shape \[5\] but the model has \[4\]"),
        (
            {"name": "x", "dtype": "float32", "shape": [2, 2]},
            r"'x' has shape \[2, 2\] but the model has \[4\]",
        ),
    ],
    ids=["wrong-name", "wrong-dtype", "wrong-size", "wrong-rank"],
)
def test_declared_input_that_disagrees_with_the_graph_is_refused(
    onnx_dynamic_path, resolve, tensor, expected_message
):
    declared = {"inputs": [tensor], "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [3]}]}
    with pytest.raises(ModelLoadError, match=expected_message):
        load_runtime(resolve(onnx_dynamic_path, "onnx", signature=declared))


def test_declared_output_that_the_graph_lacks_is_refused(onnx_dynamic_path, resolve):
    declared = {
        "inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
        "outputs": [{"name": "embedding", "dtype": "float32", "shape": [3]}],
    }
    with pytest.raises(ModelLoadError, match=r"output 'embedding' is not one of the model's outputs"):
        load_runtime(resolve(onnx_dynamic_path, "onnx", signature=declared))


@pytest.mark.parametrize("fixture", ["onnx_dynamic_path", "onnx_fixed_batch_path"])
def test_warmup(fixture, request, resolve):
    runtime = load_runtime(resolve(request.getfixturevalue(fixture), "onnx"))
    assert runtime.warmup() is None


@pytest.mark.parametrize(("options", "spinning"), [({}, "0"), ({"allow_spinning": True}, None)])
def test_idle_threads_sleep_unless_spinning_is_allowed(onnx_dynamic_path, resolve, options, spinning):
    """A spinning intra-op thread holds a core that the server's event loop needs (digits at concurrency
    64: twice the CPU a request); model.options.allow_spinning gives ONNX Runtime's default back."""
    runtime = load_runtime(resolve(onnx_dynamic_path, "onnx", options=options), threads=2)
    config = runtime._session.get_session_options()
    try:
        entry = config.get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # not set: ONNX Runtime's default, which spins
        entry = None
    assert entry == spinning
