"""ONNX models on ONNX Runtime.

`model.path` is a .onnx file, or a directory holding `model.onnx`. A directory that also holds
`tokenizer.json` is a text encoder (what `modelpod optimize` writes for sentence-transformers models):
the runtime serves one string input, `text`, and turns it into the graph's token tensors itself
(`_onnx_text.py`).

Options (model.options): `providers` (list, default: what ONNX Runtime offers, CUDA first when present);
`allow_spinning` (default false: idle intra-op threads sleep rather than spin on a core the server's
event loop needs; true trades that CPU for a little latency between operators).
A graph exported with a fixed batch dimension (say 2) is run in batches of exactly that size, the last
one padded with copies of its last row whose outputs are dropped. ONNX Runtime's own log (the C++
logger, which writes coloured text to stderr, outside the JSON log) is limited to errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelpod.errors import ModelLoadError
from modelpod.runtimes._onnx_text import TOKENIZER_FILE, TextFeeds, load_text_feeds
from modelpod.runtimes.base import BaseRuntime, Batch, reconcile, require
from modelpod.signature import Signature, TensorSpec
from modelpod.specfile.resolved import ResolvedModel

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


# ONNX Runtime's severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
_ORT_ERRORS_ONLY = 3


class OnnxRuntime(BaseRuntime):
    def __init__(
        self,
        session: Any,
        signature: Signature,
        *,
        fixed_batch_size: int | None,
        text: TextFeeds | None = None,
    ) -> None:
        super().__init__(signature)
        self._session = session
        self.fixed_batch_size = fixed_batch_size  # the batch size the graph fixes, if it fixes one
        self._text = text
        self._output_names = [t.name for t in signature.outputs]
        if text is not None:  # a sentence encoder: /v1/embeddings serves it
            self.task = "embeddings"

    def predict(self, batch: Batch) -> Batch:
        if self._text is not None:
            batch = self._text(batch[_TEXT.name])
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

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens a text encoder reads for `texts`, for usage reports such as OpenAI's (0 for other
        graphs). Safe on any thread while `predict` runs on another."""
        return self._text.count_tokens(texts) if self._text is not None else 0


def load(model: ResolvedModel, *, threads: int) -> OnnxRuntime:
    ort = require("onnxruntime", runtime="ONNX", extra="onnx")
    ort.set_default_logger_severity(_ORT_ERRORS_ONLY)
    options = ort.SessionOptions()
    options.log_severity_level = _ORT_ERRORS_ONLY
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not model.options.get("allow_spinning", False):
        # idle intra-op threads sleep instead of spinning (ONNX Runtime's default): a spinning thread
        # holds a core that the server's event loop needs. Digits at concurrency 64 cost the process 330
        # microseconds of CPU a request with spinning, 150 without; minilm's batches took as long.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
    return OnnxRuntime(
        session,
        reconcile(model.signature, detected, fmt="ONNX"),
        fixed_batch_size=_fixed_batch_size(model, {batch for _, batch in inputs}),
        text=text,
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
