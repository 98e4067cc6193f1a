"""The custom-class runtime: a user's scaler_model.py imported from the spec directory (see conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from modelpod.errors import InferenceError, ModelLoadError
from modelpod.predictor import Predictor
from modelpod.runtimes import load_runtime
from modelpod.signature import Signature

SCALER_SIGNATURE = {
    "inputs": [{"name": "features", "dtype": "float64", "shape": [3]}],
    "outputs": [{"name": "scaled", "dtype": "float64", "shape": [3]}],
}
# What scaler.json holds, written by the custom_code_dir fixture
MEAN = np.array([1.0, 2.0, 3.0])
SCALE = np.array([2.0, 4.0, 0.5])


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(6, 3))


@pytest.fixture
def custom_model(custom_code_dir, resolve):
    """The spec of one class in scaler_model.py, reading scaler.json, with the scaler's signature."""

    def make(class_name: str, *, signature=SCALER_SIGNATURE):
        return resolve(
            custom_code_dir / "scaler.json",
            "custom",
            class_name=f"scaler_model:{class_name}",
            signature=signature,
            code_dir=custom_code_dir,
        )

    return make


def test_scaler_predictions(custom_model, rows, assert_outputs_follow_signature):
    runtime = load_runtime(custom_model("Scaler"))

    ours = runtime.predict({"features": rows})
    # The class does the same float64 arithmetic as this line; no tolerance is needed.
    np.testing.assert_array_equal(ours["scaled"], (rows - MEAN) / SCALE)
    assert_outputs_follow_signature(runtime.signature, ours, len(rows))


def test_predictor_runs_the_class_end_to_end(custom_model):
    predictor = Predictor("scaler", load_runtime(custom_model("Scaler")))

    # JSON-like lists, as a request carries them: coerced to float64 and stacked into one batch
    results = predictor.predict_items([{"features": [1, 2, 3]}, {"features": [3.0, 6.0, 3.5]}])
    np.testing.assert_array_equal(results[0]["scaled"], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(results[1]["scaled"], [1.0, 1.0, 1.0])


def test_class_without_a_signature_is_refused_with_a_hint(custom_model):
    with pytest.raises(ModelLoadError, match="custom model does not describe its inputs") as caught:
        load_runtime(custom_model("Scaler", signature=None))
    assert "model.signature" in str(caught.value)


def test_signature_carried_by_the_class_is_used(custom_model, rows):
    runtime = load_runtime(custom_model("SelfDescribingScaler", signature=None))

    assert runtime.signature == Signature.model_validate(SCALER_SIGNATURE)
    np.testing.assert_array_equal(runtime.predict({"features": rows})["scaled"], (rows - MEAN) / SCALE)


def test_declared_signature_that_disagrees_with_the_class_is_refused(custom_model):
    declared = {
        "inputs": [{"name": "features", "dtype": "float32", "shape": [3]}],
        "outputs": SCALER_SIGNATURE["outputs"],
    }
    with pytest.raises(ModelLoadError, match="'features' is declared float32 but the model has float64"):
        load_runtime(custom_model("SelfDescribingScaler", signature=declared))


def test_wrong_number_of_rows_is_an_inference_error(custom_model, rows):
    predictor = Predictor("scaler", load_runtime(custom_model("DropsLastRow")))

    with pytest.raises(InferenceError, match="one item per input") as caught:
        predictor.predict({"features": rows})
    assert "'scaled' has 5 rows for a batch of 6" in str(caught.value)


def test_load_that_raises_is_a_model_load_error(custom_model):
    with pytest.raises(ModelLoadError, match=r"BrokenLoad failed to load: ValueError: checksum mismatch"):
        load_runtime(custom_model("BrokenLoad"))


def test_unknown_class_and_module_are_model_load_errors(custom_model, custom_code_dir, resolve):
    with pytest.raises(ModelLoadError, match="has no class 'Normalizer'"):
        load_runtime(custom_model("Normalizer"))
    missing_module = resolve(None, "custom", class_name="no_such_module:Model", code_dir=custom_code_dir)
    with pytest.raises(ModelLoadError, match="cannot import module 'no_such_module'"):
        load_runtime(missing_module)


def test_warmup(custom_model):
    # The scaler has no warmup() of its own: the runtime's default runs a batch of zeros through predict.
    runtime = load_runtime(custom_model("Scaler"))
    assert runtime.warmup() is None
