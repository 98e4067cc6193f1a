"""Load failures every runtime shares: a framework that is not installed, and a file that is not a model.

`load_runtime` promises ModelLoadError (MissingDependencyError for a missing framework) so that the CLI
and the server can report the problem in one line instead of a framework traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelpod.errors import MissingDependencyError, ModelLoadError
from modelpod.runtimes import load_runtime


def model_location(where: str, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A fixture's real model directory (names ending in _dir), else a file name under tmp_path."""
    return request.getfixturevalue(where) if where.endswith("_dir") else tmp_path / where


@pytest.mark.parametrize(
    ("fmt", "hidden_module", "where", "package", "extra"),
    [
        pytest.param("onnx", "onnxruntime", "model.onnx", "onnxruntime", "onnx", id="onnx"),
        pytest.param("sklearn", "sklearn", "model.joblib", "scikit-learn", "sklearn", id="sklearn"),
        pytest.param("sklearn", "skops.io", "model.skops", "skops", "sklearn", id="sklearn-skops"),
        pytest.param("torch", "torch", "model.pt2", "torch", "torch", id="torch"),
        pytest.param("keras", "keras", "model.keras", "keras", "keras", id="keras"),
        pytest.param("tensorflow", "tensorflow", "saved_model", "tensorflow", "tensorflow", id="tensorflow"),
        pytest.param(
            "transformers", "torch", "minilm_model_dir", "torch", "transformers", id="transformers-torch"
        ),
        pytest.param(
            "transformers",
            "sentence_transformers",
            "minilm_model_dir",
            "sentence-transformers",
            "transformers",
            id="transformers-sentence-transformers",
        ),
        pytest.param(
            "transformers",
            "transformers",
            "text_classifier_dir",
            "transformers",
            "transformers",
            id="transformers-transformers",
        ),
    ],
)
def test_missing_framework_names_the_extra_to_install(
    fmt, hidden_module, where, package, extra, monkeypatch, request, tmp_path, resolve
):
    location = model_location(where, request, tmp_path)
    # A None entry in sys.modules makes `import hidden_module` raise ImportError, as when the package is
    # not installed; monkeypatch puts the real module back after the test.
    monkeypatch.setitem(sys.modules, hidden_module, None)

    with pytest.raises(MissingDependencyError) as caught:
        load_runtime(resolve(location, fmt))
    assert f'pip install "modelpod[{extra}]"' in str(caught.value)
    assert repr(package) in str(caught.value)
    assert caught.value.extra == extra


def write_garbage(path: Path) -> None:
    """Bytes that no framework can read, where the model (file, or a directory's main file) belongs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a model\n")


@pytest.mark.parametrize(
    ("fmt", "garbage_file", "model_path"),
    [
        ("onnx", "model.onnx", "model.onnx"),
        ("sklearn", "model.joblib", "model.joblib"),
        ("sklearn", "model.skops", "model.skops"),
        ("torch", "model.pt2", "model.pt2"),
        ("torch", "model.pt", "model.pt"),
        ("keras", "model.keras", "model.keras"),
        ("tensorflow", "saved/saved_model.pb", "saved"),
        ("transformers", "embedder/modules.json", "embedder"),
    ],
    ids=["onnx", "joblib", "skops", "pt2", "torchscript", "keras", "tensorflow", "transformers"],
)
def test_corrupt_model_file_is_a_model_load_error(fmt, garbage_file, model_path, tmp_path, resolve):
    write_garbage(tmp_path / garbage_file)
    with pytest.raises(ModelLoadError) as caught:
        load_runtime(resolve(tmp_path / model_path, fmt))
    assert str(tmp_path / model_path) in str(caught.value)  # the message says which file
