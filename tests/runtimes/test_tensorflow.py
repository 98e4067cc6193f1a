"""The TensorFlow runtime against the SavedModel's own signature function, on numbers and on strings.

TensorFlow and torch run in this one process (other modules of the session import torch first); they
coexist, so no subprocess is needed. The first test here pays TensorFlow's import, 5 to 12 s on two
cores when nothing imported it before, hence the slow mark on the module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelpod.errors import ModelLoadError
from modelpod.runtimes import load_runtime
from modelpod.signature import Signature

pytestmark = pytest.mark.slow


def saved_signature(path: Path, key: str = "serving_default"):
    """The SavedModel's signature function, loaded by TensorFlow itself: the reference."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    # Return the loaded object too: the concrete function reads variables that it keeps alive.
    return loaded, loaded.signatures[key]


def test_scorer_matches_its_signature_function(tf_scorer_dir, resolve, assert_outputs_follow_signature):
    import tensorflow as tf

    rows = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    runtime = load_runtime(resolve(tf_scorer_dir, "tensorflow"))

    assert runtime.signature == Signature.model_validate(
        {
            "inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
            "outputs": [{"name": "scores", "dtype": "float32", "shape": [3]}],
        }
    )
    ours = runtime.predict({"x": rows})
    _loaded, function = saved_signature(tf_scorer_dir)
    theirs = function(x=tf.constant(rows))["scores"].numpy()
    # The same function graph on the same inputs: float32 rounding only.
    np.testing.assert_allclose(ours["scores"], theirs, rtol=0, atol=1e-6)
    assert_outputs_follow_signature(runtime.signature, ours, len(rows))


def test_string_inputs_and_outputs(tf_strings_dir, resolve, assert_outputs_follow_signature):
    import tensorflow as tf

    # Non-ASCII and empty strings: modelpod must send UTF-8 and decode the bytes TensorFlow returns.
    texts = np.array(["hello", "", "naïve café", "日本語", "MiXeD 123"], dtype=object)
    runtime = load_runtime(resolve(tf_strings_dir, "tensorflow"))

    assert runtime.signature == Signature.model_validate(
        {
            "inputs": [{"name": "text", "dtype": "string", "shape": []}],
            "outputs": [
                {"name": "length", "dtype": "int32", "shape": []},
                {"name": "upper", "dtype": "string", "shape": []},
            ],
        }
    )
    ours = runtime.predict({"text": texts})
    _loaded, function = saved_signature(tf_strings_dir)
    theirs = function(text=tf.constant([t.encode("utf-8") for t in texts]))
    np.testing.assert_array_equal(ours["length"], theirs["length"].numpy())  # integers: exact
    assert ours["length"].tolist() == [5, 0, 10, 3, 9]  # characters, not UTF-8 bytes
    # strings come back as str (not bytes), equal to TensorFlow's bytes decoded as UTF-8
    assert ours["upper"].tolist() == [b.decode("utf-8") for b in theirs["upper"].numpy().tolist()]
    assert ours["upper"].tolist()[0] == "HELLO"
    assert_outputs_follow_signature(runtime.signature, ours, len(texts))


def test_unknown_signature_key_is_refused_listing_the_keys(tf_scorer_dir, resolve):
    model = resolve(tf_scorer_dir, "tensorflow", options={"signature": "predict"})
    with pytest.raises(ModelLoadError, match=r"no signature 'predict'; it has \['serving_default'\]"):
        load_runtime(model)


@pytest.mark.parametrize(
    ("input_tensor", "expected_message"),
    [
        ({"name": "inputs", "dtype": "float32", "shape": [4]}, r"inputs \['inputs'\] do not match .*\['x'\]"),
        (
            {"name": "x", "dtype": "float16", "shape": [4]},
            r"'x' is declared float16 but the model has float32",
        ),
        (
            {"name": "x", "dtype": "float32", "shape": [4, 1]},
            r"'x' has shape \[4, 1\] but the model has \[4\]",
        ),
    ],
    ids=["wrong-name", "wrong-dtype", "wrong-shape"],
)
def test_declared_signature_that_disagrees_with_the_savedmodel_is_refused(
    tf_scorer_dir, resolve, input_tensor, expected_message
):
    declared = {"inputs": [input_tensor], "outputs": [{"name": "scores", "dtype": "float32", "shape": [3]}]}
    with pytest.raises(ModelLoadError, match=expected_message):
        load_runtime(resolve(tf_scorer_dir, "tensorflow", signature=declared))


@pytest.mark.parametrize("fixture", ["tf_scorer_dir", "tf_strings_dir"])
def test_warmup(fixture, request, resolve):
    runtime = load_runtime(resolve(request.getfixturevalue(fixture), "tensorflow"))
    assert runtime.warmup() is None
