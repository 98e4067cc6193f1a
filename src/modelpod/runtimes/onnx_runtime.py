"""ONNX models on ONNX Runtime.

Options (model.options): `providers` (list, default: what ONNX Runtime offers, CUDA first when present).
A graph exported with a fixed batch dimension of 1 is run one item at a time.
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


class OnnxRuntime(BaseRuntime):
    def __init__(self, session: Any, signature: Signature, *, one_at_a_time: bool) -> None:
        super().__init__(signature)
        self._session = session
        self._one_at_a_time = one_at_a_time
        self._output_names = [t.name for t in signature.outputs]

    def predict(self, batch: Batch) -> Batch:
        if self._one_at_a_time:
            size = len(next(iter(batch.values())))
            rows = [self._run({k: v[i : i + 1] for k, v in batch.items()}) for i in range(size)]
            return {name: np.concatenate([r[name] for r in rows]) for name in self._output_names}
        return self._run(batch)

    def _run(self, feeds: Batch) -> Batch:
        results = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, results, strict=True))


def load(model: ResolvedModel, *, threads: int) -> OnnxRuntime:
    ort = require("onnxruntime", runtime="ONNX", extra="onnx")
    options = ort.SessionOptions()
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
    fixed_batch = {batch for _, batch in inputs}
    return OnnxRuntime(
        session,
        reconcile(model.signature, detected, fmt="ONNX"),
        one_at_a_time=fixed_batch == {1},
    )


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
