"""Model format detection from file names and directory contents, without importing any framework."""

from __future__ import annotations

import zipfile
from pathlib import Path

_BY_SUFFIX = {
    ".onnx": "onnx",
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".skops": "sklearn",
    ".pt2": "torch",
    ".pt": "torch",
    ".pth": "torch",
    ".ts": "torch",
    ".torchscript": "torch",
    ".keras": "keras",
    ".gguf": "gguf",
}


def detect_format(path: Path) -> str | None:
    """The modelpod format of a model file or directory, or None when it cannot tell."""
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "tensorflow"
        if (path / "config.json").exists() or (path / "modules.json").exists():
            return "transformers"
        if (path / "model.onnx").is_file():  # an ONNX model directory (graph, maybe tokenizer.json)
            return "onnx"
        return None
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None and path.is_file() and zipfile.is_zipfile(path):
        # Keras 3 files are zips with a config.json; TorchScript archives hold a constants.pkl.
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if "config.json" in names and "metadata.json" in names:
            return "keras"
        if any(name.endswith(("/constants.pkl", "/code/")) for name in names):
            return "torch"
    return fmt
