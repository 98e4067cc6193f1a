"""The scikit-learn runtime against the estimators' own predict and predict_proba, from joblib and skops."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio

from modelpod.errors import ModelLoadError
from modelpod.runtimes import load_runtime
from modelpod.signature import Signature

# The only type in a fitted HistGradientBoostingClassifier that skops does not trust by default.
TREE_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"

CLASSIFIER_SIGNATURE = Signature.model_validate(
    {
        "inputs": [{"name": "input", "dtype": "float64", "shape": [64]}],
        "outputs": [
            {"name": "label", "dtype": "int64", "shape": []},
            {"name": "probabilities", "dtype": "float64", "shape": [10]},
        ],
    }
)


@pytest.mark.parametrize("fixture", ["digits_pipeline_joblib", "digits_pipeline_skops"])
def test_pipeline_matches_predict_and_predict_proba(
    fixture, request, digits, digits_pipeline, resolve, assert_outputs_follow_signature
):
    runtime = load_runtime(resolve(request.getfixturevalue(fixture), "sklearn"))

    assert runtime.signature == CLASSIFIER_SIGNATURE
    ours = runtime.predict({"input": digits.x_test})
    np.testing.assert_array_equal(ours["label"], digits_pipeline.predict(digits.x_test))  # labels: exact
    # The same float64 arithmetic on a deserialised copy; 1e-12 allows a BLAS thread split, nothing more.
    np.testing.assert_allclose(
        ours["probabilities"], digits_pipeline.predict_proba(digits.x_test), rtol=0, atol=1e-12
    )
    assert_outputs_follow_signature(runtime.signature, ours, len(digits.x_test))
    assert len(set(ours["label"].tolist())) > 1  # held-out rows of several digits, not one class repeated


def test_regressor_has_only_a_float64_label(
    digits, digits_ridge, digits_ridge_skops, resolve, assert_outputs_follow_signature
):
    runtime = load_runtime(resolve(digits_ridge_skops, "sklearn"))

    assert runtime.signature == Signature.model_validate(
        {
            "inputs": [{"name": "input", "dtype": "float64", "shape": [64]}],
            "outputs": [{"name": "label", "dtype": "float64", "shape": []}],
        }
    )
    ours = runtime.predict({"input": digits.x_test})
    assert sorted(ours) == ["label"]
    # A linear model on a deserialised copy: float64 rounding only.
    np.testing.assert_allclose(ours["label"], digits_ridge.predict(digits.x_test), rtol=0, atol=1e-12)
    assert_outputs_follow_signature(runtime.signature, ours, len(digits.x_test))


def test_skops_file_with_an_untrusted_type_is_refused_naming_it(digits_boosting_skops, resolve):
    # Precondition: the model really holds a type outside skops' defaults, and only that one.
    assert sio.get_untrusted_types(file=digits_boosting_skops) == [TREE_PREDICTOR]

    with pytest.raises(ModelLoadError, match="trusted_types") as caught:
        load_runtime(resolve(digits_boosting_skops, "sklearn"))
    assert TREE_PREDICTOR in str(caught.value)


def test_skops_file_loads_once_its_types_are_trusted(
    digits, digits_boosting, digits_boosting_skops, resolve, assert_outputs_follow_signature
):
    model = resolve(digits_boosting_skops, "sklearn", options={"trusted_types": [TREE_PREDICTOR]})
    runtime = load_runtime(model)

    ours = runtime.predict({"input": digits.x_test})
    np.testing.assert_array_equal(ours["label"], digits_boosting.predict(digits.x_test))  # labels: exact
    # Tree traversal and a softmax over the same leaf values: float64 rounding only.
    np.testing.assert_allclose(
        ours["probabilities"], digits_boosting.predict_proba(digits.x_test), rtol=0, atol=1e-12
    )
    assert_outputs_follow_signature(runtime.signature, ours, len(digits.x_test))


def test_trusting_an_unrelated_type_is_not_enough(digits_boosting_skops, resolve):
    model = resolve(digits_boosting_skops, "sklearn", options={"trusted_types": ["collections.OrderedDict"]})
    with pytest.raises(ModelLoadError, match=TREE_PREDICTOR.replace(".", r"\.")):
        load_runtime(model)


def test_declared_label_only_skips_probabilities(digits, digits_pipeline, digits_pipeline_skops, resolve):
    declared = {
        "inputs": [{"name": "input", "dtype": "float64", "shape": [64]}],
        "outputs": [{"name": "label", "dtype": "int64", "shape": []}],
    }
    runtime = load_runtime(resolve(digits_pipeline_skops, "sklearn", signature=declared))

    ours = runtime.predict({"input": digits.x_test})
    assert sorted(ours) == ["label"]
    np.testing.assert_array_equal(ours["label"], digits_pipeline.predict(digits.x_test))


@pytest.mark.parametrize(
    ("input_tensor", "expected_message"),
    [
        ({"name": "pixels", "dtype": "float64", "shape": [64]}, r"inputs \['pixels'\] do not match"),
        ({"name": "input", "dtype": "float64", "shape": [8, 8]}, r"'input' has shape \[8, 8\]"),
        ({"name": "input", "dtype": "string", "shape": [64]}, r"'input' is declared string"),
    ],
    ids=["wrong-name", "wrong-shape", "wrong-dtype"],
)
def test_declared_input_that_disagrees_with_the_estimator_is_refused(
    digits_pipeline_skops, resolve, input_tensor, expected_message
):
    declared = {"inputs": [input_tensor], "outputs": [{"name": "label", "dtype": "int64", "shape": []}]}
    with pytest.raises(ModelLoadError, match=expected_message):
        load_runtime(resolve(digits_pipeline_skops, "sklearn", signature=declared))


def test_declared_label_dtype_that_disagrees_is_refused(digits_pipeline_skops, resolve):
    declared = {
        "inputs": [{"name": "input", "dtype": "float64", "shape": [64]}],
        "outputs": [{"name": "label", "dtype": "string", "shape": []}],
    }
    with pytest.raises(ModelLoadError, match=r"output 'label' is declared string but the model has int64"):
        load_runtime(resolve(digits_pipeline_skops, "sklearn", signature=declared))


@pytest.mark.parametrize("fixture", ["digits_pipeline_joblib", "digits_pipeline_skops", "digits_ridge_skops"])
def test_warmup(fixture, request, resolve):
    runtime = load_runtime(resolve(request.getfixturevalue(fixture), "sklearn"))
    assert runtime.warmup() is None
