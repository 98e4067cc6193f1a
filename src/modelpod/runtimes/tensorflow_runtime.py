"""TensorFlow SavedModel directories, served through one of their signatures.

Options: `signature` (the SavedModel signature key, default "serving_default").
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from modelpod.errors import ModelLoadError
from modelpod.runtimes.base import BaseRuntime, Batch, reconcile, require
from modelpod.signature import Signature, TensorSpec, dtype_from_numpy
from modelpod.specfile.resolved import ResolvedModel


class TensorflowRuntime(BaseRuntime):
    def __init__(self, tf: Any, loaded: Any, function: Any, signature: Signature) -> None:
        super().__init__(signature)
        self._tf = tf
        self._loaded = loaded  # keeps the variables the concrete function reads alive
        self._function = function

    def predict(self, batch: Batch) -> Batch:
        tf = self._tf
        feeds = {t.name: tf.constant(_to_tf(batch[t.name])) for t in self.signature.inputs}
        result = self._function(**feeds)
        return {t.name: _from_tf(result[t.name].numpy()) for t in self.signature.outputs if t.name in result}


def _to_tf(array: np.ndarray) -> Any:
    return array.astype(str) if array.dtype == object else array


def _from_tf(array: np.ndarray) -> np.ndarray:
    if array.dtype == object:  # tf.string comes back as bytes
        decoded: np.ndarray = np.vectorize(lambda b: b.decode("utf-8", errors="replace"), otypes=[object])(
            array
        )
        return decoded
    return array


def load(model: ResolvedModel, *, threads: int) -> TensorflowRuntime:
    # TensorFlow's C++ log writes plain text to stderr, outside the server's JSON lines: errors only
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = require("tensorflow", runtime="TensorFlow", extra="tensorflow")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow was already initialised in this process; keep its settings
        pass
    key = str(model.options.get("signature", "serving_default"))
    try:
        loaded = tf.saved_model.load(str(model.path))
    except Exception as exc:
        raise ModelLoadError(f"TensorFlow could not load {model.path}: {exc}") from exc
    if key not in loaded.signatures:
        raise ModelLoadError(
            f"the SavedModel has no signature {key!r}; it has {sorted(loaded.signatures)}",
            hint="set model.options.signature to one of them",
        )
    function = loaded.signatures[key]
    detected = _detect(tf, function)
    return TensorflowRuntime(tf, loaded, function, reconcile(model.signature, detected, fmt="TensorFlow"))


def _detect(tf: Any, function: Any) -> Signature:
    _, named_inputs = function.structured_input_signature
    outputs = function.structured_outputs
    return Signature(
        inputs=tuple(_spec(tf, name, spec) for name, spec in sorted(named_inputs.items())),
        outputs=tuple(_spec(tf, name, spec) for name, spec in sorted(outputs.items())),
    )


def _spec(tf: Any, name: str, spec: Any) -> TensorSpec:
    dtype = "string" if spec.dtype == tf.string else dtype_from_numpy(np.dtype(spec.dtype.as_numpy_dtype))
    dims = tuple(-1 if d is None else int(d) for d in spec.shape.as_list()[1:])
    return TensorSpec(name=name, dtype=dtype, shape=dims)
