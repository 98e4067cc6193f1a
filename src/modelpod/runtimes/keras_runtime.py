"""Keras 3 models (`.keras`).

The backend is the KERAS_BACKEND environment variable when set, else `model.options.backend`, else torch
(the backend the `keras` extra installs). It must be chosen before Keras is first imported in the process.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from modelpod.errors import ModelLoadError
from modelpod.runtimes.base import BaseRuntime, Batch, reconcile, require
from modelpod.signature import Signature, TensorSpec, dtype_from_numpy
from modelpod.specfile.resolved import ResolvedModel


class KerasRuntime(BaseRuntime):
    def __init__(
        self, keras: Any, model: Any, signature: Signature, input_names: list[str], output_names: list[str]
    ) -> None:
        super().__init__(signature)
        self._input_names = input_names  # the model's inputs in the order it takes them
        self._keras = keras
        self._model = model
        self._output_names = output_names  # the model's outputs in the order it returns them

    def predict(self, batch: Batch) -> Batch:
        args = [batch[name] for name in self._input_names]
        result = self._model(args[0] if len(args) == 1 else args, training=False)
        convert = self._keras.ops.convert_to_numpy
        if isinstance(result, dict):
            return {name: np.asarray(convert(value)) for name, value in result.items()}
        values = result if isinstance(result, list | tuple) else [result]
        return {name: np.asarray(convert(v)) for name, v in zip(self._output_names, values, strict=True)}


def load(model: ResolvedModel, *, threads: int) -> KerasRuntime:
    os.environ.setdefault("KERAS_BACKEND", str(model.options.get("backend", "torch")))
    keras = require("keras", runtime="Keras", extra="keras")
    _limit_threads(keras.backend.backend(), threads)
    try:
        loaded = keras.saving.load_model(str(model.path), compile=False)
    except Exception as exc:
        raise ModelLoadError(
            f"Keras could not load {model.path}: {exc}", hint="save the model with model.save('name.keras')"
        ) from exc
    detected = _detect(loaded)
    signature = reconcile(model.signature, detected, fmt="Keras")
    input_names = [t.name for t in (detected or signature).inputs]
    output_names = [t.name for t in (detected or signature).outputs]
    return KerasRuntime(keras, loaded, signature, input_names, output_names)


def _limit_threads(backend: str, threads: int) -> None:
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)


def _detect(model: Any) -> Signature | None:
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):  # subclassed models that were never called have no graph
        return None
    if not inputs or not outputs:
        return None
    output_names = list(getattr(model, "output_names", None) or [_layer_name(t) for t in outputs])
    if len(set(output_names)) != len(outputs) or not all(output_names):
        output_names = [f"output_{i}" for i in range(len(outputs))]
    return Signature(
        inputs=tuple(_spec(tensor.name, tensor) for tensor in inputs),
        outputs=tuple(_spec(name, tensor) for name, tensor in zip(output_names, outputs, strict=True)),
    )


def _layer_name(tensor: Any) -> str:
    """The name of the layer that produces `tensor` (Sequential models have no output_names)."""
    history = getattr(tensor, "_keras_history", None)
    return str(getattr(getattr(history, "operation", None), "name", "") or "")


def _spec(name: str, tensor: Any) -> TensorSpec:
    dims = tuple(-1 if d is None else int(d) for d in tensor.shape[1:])
    return TensorSpec(name=name, dtype=dtype_from_numpy(np.dtype(tensor.dtype)), shape=dims)
