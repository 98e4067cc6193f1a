"""A user's own Python class, named in the spec as `model.class: "module:Class"`.

The class is imported with the spec's directory on sys.path, created with no arguments, then:
- `load(self, path)` is called once with the absolute `model.path` (None when the spec has none);
- `predict(self, batch)` receives a dict of input name -> numpy array with the batch dimension first, and
  returns a dict of output name -> array-like with one row per input row (or, for a single output,
  the array itself).
The spec must declare `model.signature`. An optional `warmup(self)` replaces the default warm-up.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

import numpy as np

from modelpod.errors import InferenceError, ModelLoadError
from modelpod.runtimes.base import BaseRuntime, Batch, reconcile
from modelpod.signature import Signature
from modelpod.specfile.resolved import ResolvedModel


class CustomRuntime(BaseRuntime):
    def __init__(self, instance: Any, signature: Signature) -> None:
        super().__init__(signature)
        self._instance = instance

    def predict(self, batch: Batch) -> Batch:
        result = self._instance.predict(batch)
        names = [t.name for t in self.signature.outputs]
        if isinstance(result, dict):
            return {name: np.asarray(value) for name, value in result.items()}
        if len(names) == 1:
            return {names[0]: np.asarray(result)}
        raise InferenceError(
            f"predict() returned a {type(result).__name__} but the signature has outputs {names}",
            hint="return a dict of output name -> values, one row per input row",
        )

    def warmup(self) -> None:
        custom = getattr(self._instance, "warmup", None)
        if callable(custom):
            custom()
        else:
            super().warmup()


def load(model: ResolvedModel, *, threads: int) -> CustomRuntime:
    class_name = model.class_name or ""
    module_name, _, attribute = class_name.partition(":")
    code_dir = str(model.code_dir)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot import module {module_name!r} of model.class: {exc}",
            hint=f"put {module_name.replace('.', '/')}.py beside modelpod.yaml ({code_dir}) or install it",
        ) from exc
    cls = getattr(module, attribute, None)
    if cls is None or not inspect.isclass(cls):
        raise ModelLoadError(f"module {module_name!r} has no class {attribute!r}", hint="check model.class")
    if not callable(getattr(cls, "predict", None)):
        raise ModelLoadError(f"class {class_name} has no predict(self, batch) method")
    try:
        instance: Any = cls()
        if callable(getattr(instance, "load", None)):
            instance.load(str(model.path) if model.path is not None else None)
    except Exception as exc:
        raise ModelLoadError(f"{class_name} failed to load: {type(exc).__name__}: {exc}") from exc
    declared_by_class = getattr(instance, "signature", None)
    detected = declared_by_class if isinstance(declared_by_class, Signature) else None
    return CustomRuntime(instance, reconcile(model.signature, detected, fmt="custom"))
