"""ONNX models on ONNX Runtime.

Options (model.options): `providers` (list, default: what ONNX Runtime offers, CUDA first when present).
A graph exported with a fixed batch dimension (say 2) is run in batches of exactly that size, the last
one padded with copies of its last row whose outputs are dropped. ONNX Runtime's own log (the C++
logger, which writes coloured text to stderr, outside the JSON log) is limited to errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelpod.errors import ModelLoadError
from modelpod.runtimes.base import BaseRuntime, Batch, reconcile, require
from modelpod.signature import Signature, TensorSpec
from modelpod.spec.resolved import ResolvedModel

_ORT_DTYPES = {
    "tensor(bool)": "bool",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(float16)": "float16",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(string)": "string",
}


# ONNX Runtime's severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
_ORT_ERRORS_ONLY = 3


class OnnxRuntime(BaseRuntime):
    def __init__(self, session: Any, signature: Signature, *, fixed_batch_size: int | None) -> None:
        super().__init__(signature)
        self._session = session
        self.fixed_batch_size = fixed_batch_size  # the batch size the graph fixes, if it fixes one
        self._output_names = [t.name for t in signature.outputs]

    def predict(self, batch: Batch) -> Batch:
        step = self.fixed_batch_size
        if step is None:
            return self._run(batch)
        size = len(next(iter(batch.values())))
        chunks = [
            self._run_padded({k: v[i : i + step] for k, v in batch.items()}, step)
            for i in range(0, size, step)
        ]
        return {name: np.concatenate([c[name] for c in chunks]) for name in self._output_names}

    def _run_padded(self, feeds: Batch, size: int) -> Batch:
        """Run fewer rows than `size`, the batch size the graph fixes, padded with copies of the last."""
        rows = len(next(iter(feeds.values())))
        if rows < size:
            feeds = {k: np.concatenate([v, np.repeat(v[-1:], size - rows, axis=0)]) for k, v in feeds.items()}
        return {name: values[:rows] for name, values in self._run(feeds).items()}

    def _run(self, feeds: Batch) -> Batch:
        results = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, results, strict=True))


def load(model: ResolvedModel, *, threads: int) -> OnnxRuntime:
    ort = require("onnxruntime", runtime="ONNX", extra="onnx")
    ort.set_default_logger_severity(_ORT_ERRORS_ONLY)
    options = ort.SessionOptions()
    options.log_severity_level = _ORT_ERRORS_ONLY
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    providers = model.options.get("providers") or [
        p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
    ]
    try:
        session = ort.InferenceSession(str(model.path), options, providers=providers)
    except Exception as exc:
        raise ModelLoadError(
            f"ONNX Runtime could not load {model.path}: {exc}",
            hint="check that the file is a valid ONNX graph",
        ) from exc
    inputs = [_tensor(arg) for arg in session.get_inputs()]
    outputs = [_tensor(arg) for arg in session.get_outputs()]
    detected = Signature(inputs=tuple(t for t, _ in inputs), outputs=tuple(t for t, _ in outputs))
    return OnnxRuntime(
        session,
        reconcile(model.signature, detected, fmt="ONNX"),
        fixed_batch_size=_fixed_batch_size(model, {batch for _, batch in inputs}),
    )


def _fixed_batch_size(model: ResolvedModel, sizes: set[int | None]) -> int | None:
    """The one batch size the graph's inputs fix, or None when every input takes any batch size."""
    fixed = sorted(size for size in sizes if size is not None)
    if len(set(fixed)) > 1:
        raise ModelLoadError(
            f"the inputs of {model.path} fix different batch sizes {fixed}: no batch fits them all",
            hint="export the model with a dynamic batch dimension (dynamic_axes / dynamic_shapes)",
        )
    return fixed[0] if fixed else None


def _tensor(arg: Any) -> tuple[TensorSpec, int | None]:
    """A TensorSpec without the batch dimension, and the batch size when the graph fixes it."""
    dtype = _ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadError(f"ONNX tensor {arg.name!r} has unsupported type {arg.type}")
    shape = list(arg.shape or [])
    if not shape:
        raise ModelLoadError(
            f"ONNX tensor {arg.name!r} has no batch dimension",
            hint="export the model with a leading (dynamic) batch dimension",
        )
    batch = shape[0] if isinstance(shape[0], int) else None
    dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape[1:])
    return TensorSpec(name=arg.name, dtype=dtype, shape=dims), batch
