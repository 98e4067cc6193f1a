"""The public surface of `modelpod` changes only on purpose: this test fails when it changes by accident."""

from __future__ import annotations

import pytest

import modelpod


def test_exported_members():
    assert modelpod.__all__ == [
        "__version__",
        "InferenceError",
        "InputError",
        "MissingDependencyError",
        "ModelLoadError",
        "ModelpodError",
        "Predictor",
        "Runtime",
        "Signature",
        "Spec",
        "SpecError",
        "SpecIssue",
        "TensorSpec",
        "load_runtime",
        "load_spec",
    ]
    for name in modelpod.__all__:
        assert getattr(modelpod, name) is not None


def test_every_error_is_a_modelpod_error():
    for name in ("SpecError", "ModelLoadError", "MissingDependencyError", "InputError", "InferenceError"):
        assert issubclass(getattr(modelpod, name), modelpod.ModelpodError)


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="nothing_here"):
        modelpod.nothing_here  # noqa: B018
