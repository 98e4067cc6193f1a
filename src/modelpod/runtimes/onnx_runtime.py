"""ONNX models on ONNX Runtime.

`model.path` is a .onnx file, or a directory holding `model.onnx`. A directory that also holds
`tokenizer.json` is a text encoder (what `modelpod optimize` writes for sentence-transformers models):
the runtime serves one string input, `text`, and turns it into the graph's token tensors itself
(`_onnx_text.py`).

Options (model.options): `providers` (list, default: what ONNX Runtime offers, CUDA first when present).
A graph exported with a fixed batch dimension of 1 is run one item at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelpod.errors import ModelLoadError
from modelpod.runtimes._onnx_text import TOKENIZER_FILE, TextFeeds, load_text_feeds
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
MODEL_FILE = "model.onnx"  # the graph inside an ONNX model directory
_TEXT = TensorSpec(name="text", dtype="string", shape=())


class OnnxRuntime(BaseRuntime):
    def __init__(
        self, session: Any, signature: Signature, *, one_at_a_time: bool, text: TextFeeds | None = None
    ) -> None:
        super().__init__(signature)
        self._session = session
        self._one_at_a_time = one_at_a_time
        self._text = text
        self._output_names = [t.name for t in signature.outputs]

    def predict(self, batch: Batch) -> Batch:
        if self._text is not None:
            return self._run(self._text(batch[_TEXT.name]))
        if self._one_at_a_time:
            size = len(next(iter(batch.values())))
            rows = [self._run({k: v[i : i + 1] for k, v in batch.items()}) for i in range(size)]
            return {name: np.concatenate([r[name] for r in rows]) for name in self._output_names}
        return self._run(batch)

    def _run(self, feeds: Batch) -> Batch:
        results = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, results, strict=True))

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens a text encoder reads for `texts`, for usage reports such as OpenAI's (0 for other
        graphs). Safe on any thread while `predict` runs on another."""
        return self._text.count_tokens(texts) if self._text is not None else 0


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
    graph = _graph_file(model.path)
    try:
        session = ort.InferenceSession(str(graph), options, providers=providers)
    except Exception as exc:
        raise ModelLoadError(
            f"ONNX Runtime could not load {graph}: {exc}",
            hint="check that the file is a valid ONNX graph",
        ) from exc
    inputs = [_tensor(arg) for arg in session.get_inputs()]
    outputs = tuple(t for t, _ in (_tensor(arg) for arg in session.get_outputs()))
    text = None
    if (graph.parent / TOKENIZER_FILE).is_file() and graph.name == MODEL_FILE:
        text = load_text_feeds(graph.parent, {t.name: t.dtype for t, _ in inputs})
        detected = Signature(inputs=(_TEXT,), outputs=outputs)
    else:
        detected = Signature(inputs=tuple(t for t, _ in inputs), outputs=outputs)
    fixed_batch = {batch for _, batch in inputs}
    return OnnxRuntime(
        session,
        reconcile(model.signature, detected, fmt="ONNX"),
        one_at_a_time=fixed_batch == {1},
        text=text,
    )


def _graph_file(path: Path | None) -> Path:
    if path is not None and path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise ModelLoadError(
                f"the ONNX model directory {path} holds no {MODEL_FILE}",
                hint=f"point model.path at the .onnx file, or name the graph {MODEL_FILE}",
            )
        return path / MODEL_FILE
    if path is None:
        raise ModelLoadError("an ONNX model needs model.path", hint="point model.path at the .onnx file")
    return path


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
