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


def test_every_public_name_and_its_public_methods_are_documented():
    import inspect

    undocumented = []
    for name in modelpod.__all__[1:]:
        value = getattr(modelpod, name)
        own = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
        if not own:
            undocumented.append(name)
        if inspect.isclass(value) and not issubclass(value, Exception):
            for member, attribute in vars(value).items():
                if member.startswith("_") or not (callable(attribute) or isinstance(attribute, property)):
                    continue
                target = attribute.fget if isinstance(attribute, property) else attribute
                if not getattr(target, "__doc__", None) and not getattr(
                    getattr(target, "__func__", None), "__doc__", None
                ):
                    undocumented.append(f"{name}.{member}")
    assert undocumented == []


def test_functions_and_constructors_document_each_parameter():
    """lightkube's style: a **Parameters** list naming every parameter."""
    import inspect

    documented = {
        "load_spec": modelpod.load_spec,
        "load_runtime": modelpod.load_runtime,
        "Predictor": modelpod.Predictor,
        "Predictor.from_spec": modelpod.Predictor.from_spec,
        "Predictor.predict": modelpod.Predictor.predict,
        "Predictor.predict_items": modelpod.Predictor.predict_items,
        "Signature.coerce_inputs": modelpod.Signature.coerce_inputs,
    }
    for label, function in documented.items():
        doc = inspect.getdoc(function) or ""
        target = function.__init__ if inspect.isclass(function) else function
        for parameter in inspect.signature(target).parameters:
            if parameter not in ("self", "cls"):
                assert f"**{parameter}**" in doc, f"{label}: parameter {parameter!r} is not documented"
