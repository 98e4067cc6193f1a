"""The runtime protocol and what every runtime shares.

A runtime is a loaded model behind four members:

    signature   named inputs and outputs (per-item shapes, see modelpod.signature)
    predict     dict of batched input arrays -> dict of batched output arrays, one row per input row
    warmup      run one small batch so the first request does not pay for lazy initialisation
    close       release what the framework holds (optional)

Each format lives in its own module exposing `load(model, threads) -> Runtime`; the framework is
imported inside `load`, never at module import.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from modelpod.errors import MissingDependencyError, ModelLoadError
from modelpod.signature import Signature, TensorSpec

Batch = dict[str, np.ndarray]


@runtime_checkable
class Runtime(Protocol):
    """A model loaded by its framework. Each format module's `load()` returns one; a custom class
    (`model.class` in the spec) may be one too, or derive from `BaseRuntime`. An optional `close()`
    releases the framework's resources."""

    @property
    def signature(self) -> Signature:
        """The inputs and outputs the model takes and gives, per item (no batch dimension)."""
        ...

    def predict(self, batch: Batch) -> Batch:
        """Run one batch.

        **Parameters**

        * **batch** `dict[str, np.ndarray]` - every input by name, batch dimension first, already of the
          signature's dtypes (strings as numpy object arrays).

        Returns every output by name with one row per input row.
        """
        ...

    def warmup(self) -> None:
        """Run the model once on placeholder inputs, before the first request."""
        ...


class BaseRuntime:
    """Convenience base: stores the signature and warms up with a batch of zeros."""

    # what the model does, where the runtime knows it: "embeddings" (a sentence encoder, which the server
    # offers at POST /v1/embeddings), "text-classification"; None for a tensor-to-tensor model
    task: str | None = None

    def __init__(self, signature: Signature) -> None:
        self._signature = signature

    @property
    def signature(self) -> Signature:
        return self._signature

    def predict(self, batch: Batch) -> Batch:
        raise NotImplementedError

    def warmup(self) -> None:
        self.predict(sample_batch(self._signature, size=1))

    def close(self) -> None:
        """Release framework resources; the default has nothing to release."""


def sample_batch(signature: Signature, size: int) -> Batch:
    """A batch of placeholder inputs (zeros, or a short sentence for text); -1 dimensions become 1."""
    batch: Batch = {}
    for tensor in signature.inputs:
        shape = (size, *(1 if d == -1 else d for d in tensor.shape))
        if tensor.dtype == "string":
            batch[tensor.name] = np.full(shape, "warm-up", dtype=object)
        else:
            batch[tensor.name] = np.zeros(shape, dtype=tensor.numpy_dtype)
    return batch


def require(module: str, *, runtime: str, extra: str, package: str | None = None) -> Any:
    """Import a framework module, or raise MissingDependencyError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the framework is there but broken; its own message says more than ours would
        raise MissingDependencyError(runtime, package or module, extra) from None


class SignatureUnknownError(ModelLoadError):
    """The model loaded, but neither it nor the spec says what its inputs and outputs are (TorchScript,
    a custom class): `modelpod init` then writes a placeholder signature to fill in."""


def reconcile(declared: Signature | None, detected: Signature | None, *, fmt: str) -> Signature:
    """The signature to serve: the declared one checked against what the model says, else the detected one."""
    if declared is None:
        if detected is None:
            raise SignatureUnknownError(
                f"the {fmt} model does not describe its inputs and outputs",
                hint="declare model.signature: its inputs and outputs, each with name, dtype and shape",
            )
        return detected
    if detected is None:
        return declared
    _check_side("input", declared.inputs, detected.inputs)
    _check_side("output", declared.outputs, detected.outputs, allow_subset=True)
    return declared


def _check_side(
    side: str,
    declared: tuple[TensorSpec, ...],
    detected: tuple[TensorSpec, ...],
    *,
    allow_subset: bool = False,
) -> None:
    found: Mapping[str, TensorSpec] = {t.name: t for t in detected}
    names = [t.name for t in declared]
    if not allow_subset and sorted(names) != sorted(found):
        raise ModelLoadError(
            f"model.signature {side}s {names} do not match the model's {side}s {sorted(found)}",
            hint=f"use the model's {side} names, or remove model.signature to read it from the model",
        )
    for tensor in declared:
        actual = found.get(tensor.name)
        if actual is None:
            raise ModelLoadError(
                f"model.signature {side} {tensor.name!r} is not one of the model's {side}s {sorted(found)}",
                hint=f"use the model's {side} names",
            )
        if actual.dtype != tensor.dtype:
            raise ModelLoadError(
                f"model.signature {side} {tensor.name!r} is declared {tensor.dtype} "
                f"but the model has {actual.dtype}",
                hint=f"set dtype: {actual.dtype}",
            )
        compatible = len(actual.shape) == len(tensor.shape) and all(
            a in (-1, d) for a, d in zip(actual.shape, tensor.shape, strict=True)
        )
        if not compatible:
            raise ModelLoadError(
                f"model.signature {side} {tensor.name!r} has shape {list(tensor.shape)} "
                f"but the model has {list(actual.shape)}",
                hint=f"set shape: {list(actual.shape)} (without the batch dimension)",
            )
