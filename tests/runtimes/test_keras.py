"""The Keras runtime (torch backend, chosen in conftest.py) against the in-memory model's own predict()."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from modelpod.errors import ModelLoadError
from modelpod.runtimes import load_runtime
from modelpod.signature import Signature

TWO_IO_SIGNATURE = Signature.model_validate(
    {
        "inputs": [
            {"name": "numbers", "dtype": "float32", "shape": [4]},
            {"name": "grid", "dtype": "float32", "shape": [2, 3]},
        ],
        "outputs": [
            {"name": "score", "dtype": "float32", "shape": [1]},
            {"name": "classes", "dtype": "float32", "shape": [2]},
        ],
    }
)


@pytest.fixture
def two_io_batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "numbers": rng.normal(size=(7, 4)).astype(np.float32),
        "grid": rng.normal(size=(7, 2, 3)).astype(np.float32),
    }


def test_backend_is_torch():
    # conftest.py sets KERAS_BACKEND before anything imports Keras; the runtime follows that variable
    assert keras.backend.backend() == "torch"


def test_sequential_model_matches_predict(
    keras_sequential, keras_sequential_path, resolve, assert_outputs_follow_signature
):
    rows = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    runtime = load_runtime(resolve(keras_sequential_path, "keras"))

    # input named by keras.Input(name=...), output by the last layer's name
    assert runtime.signature == Signature.model_validate(
        {
            "inputs": [{"name": "features", "dtype": "float32", "shape": [6]}],
            "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [3]}],
        }
    )
    ours = runtime.predict({"features": rows})
    theirs = keras_sequential.predict(rows, verbose=0)
    # The reloaded weights are the saved ones and the ops the same: float32 rounding only.
    np.testing.assert_allclose(ours["probabilities"], theirs, rtol=0, atol=1e-6)
    assert_outputs_follow_signature(runtime.signature, ours, len(rows))


def test_two_inputs_and_two_outputs_match_predict(
    keras_two_io, keras_two_io_path, resolve, two_io_batch, assert_outputs_follow_signature
):
    runtime = load_runtime(resolve(keras_two_io_path, "keras"))

    assert runtime.signature == TWO_IO_SIGNATURE
    ours = runtime.predict(two_io_batch)
    score, classes = keras_two_io.predict([two_io_batch["numbers"], two_io_batch["grid"]], verbose=0)
    np.testing.assert_allclose(ours["score"], score, rtol=0, atol=1e-6)  # float32 rounding only
    np.testing.assert_allclose(ours["classes"], classes, rtol=0, atol=1e-6)
    assert_outputs_follow_signature(runtime.signature, ours, len(two_io_batch["numbers"]))


def test_declared_inputs_in_another_order_still_reach_the_right_inputs(
    keras_two_io, keras_two_io_path, resolve, two_io_batch
):
    # A spec may list inputs in any order (reconcile compares the names as sets) and requests are by
    # name, so the order of model.signature.inputs must not decide which array feeds which keras.Input.
    declared = {
        "inputs": [TWO_IO_SIGNATURE.inputs[1].model_dump(), TWO_IO_SIGNATURE.inputs[0].model_dump()],
        "outputs": [t.model_dump() for t in TWO_IO_SIGNATURE.outputs],
    }
    runtime = load_runtime(resolve(keras_two_io_path, "keras", signature=declared))

    ours = runtime.predict(two_io_batch)
    score, classes = keras_two_io.predict([two_io_batch["numbers"], two_io_batch["grid"]], verbose=0)
    np.testing.assert_allclose(ours["score"], score, rtol=0, atol=1e-6)  # float32 rounding only
    np.testing.assert_allclose(ours["classes"], classes, rtol=0, atol=1e-6)


def test_declared_subset_of_outputs(keras_two_io, keras_two_io_path, resolve, two_io_batch):
    declared = {
        "inputs": [t.model_dump() for t in TWO_IO_SIGNATURE.inputs],
        "outputs": [{"name": "classes", "dtype": "float32", "shape": [2]}],
    }
    runtime = load_runtime(resolve(keras_two_io_path, "keras", signature=declared))

    ours = runtime.predict(two_io_batch)
    _, classes = keras_two_io.predict([two_io_batch["numbers"], two_io_batch["grid"]], verbose=0)
    # The runtime may return more than declared; Predictor keeps the declared ones. The values must be
    # the "classes" output, not the first output relabelled.
    np.testing.assert_allclose(ours["classes"], classes, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("input_tensor", "expected_message"),
    [
        (
            {"name": "pixels", "dtype": "float32", "shape": [6]},
            r"inputs \['pixels'\] do not match .*features",
        ),
        ({"name": "features", "dtype": "int64", "shape": [6]}, r"'features' is declared int64"),
        ({"name": "features", "dtype": "float32", "shape": [7]}, r"'features' has shape \[7\]"),
    ],
    ids=["wrong-name", "wrong-dtype", "wrong-shape"],
)
def test_declared_signature_that_disagrees_with_the_model_is_refused(
    keras_sequential_path, resolve, input_tensor, expected_message
):
    declared = {
        "inputs": [input_tensor],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [3]}],
    }
    with pytest.raises(ModelLoadError, match=expected_message):
        load_runtime(resolve(keras_sequential_path, "keras", signature=declared))


@pytest.mark.parametrize("fixture", ["keras_sequential_path", "keras_two_io_path"])
def test_warmup(fixture, request, resolve):
    runtime = load_runtime(resolve(request.getfixturevalue(fixture), "keras"))
    assert runtime.warmup() is None
