"""Graph optimisation and int8 quantisation of an exported graph, with ONNX Runtime's offline tools.

- A text encoder (a BERT-like transformer) gets ONNX Runtime's transformer fusions (LayerNorm, GELU and,
  where the graph matches, attention), then dynamic int8 quantisation: weights int8 per channel,
  activations quantised per batch at run time. MatMuls fed by a GELU stay in float: their inputs have
  the outliers that per-tensor activation scales round away (on all-MiniLM-L6-v2 the smallest cosine
  to the original over 128 generated sentences went from 0.989 to 0.995 for 6 of 36 MatMuls).
- Any other graph (CNNs, MLPs) gets ONNX Runtime's portable ("extended") graph optimisations; with int8,
  instead, the quantizer's own pre-processing (shape inference, basic optimisations: the extended ones
  fuse a bias into operators whose bias the quantizer then cannot scale) and static quantisation (QDQ,
  weights per channel) calibrated on sample inputs, since its activations' ranges can be learned ahead
  of time.
ONNX Runtime applies its hardware-specific optimisations again when the server loads the graph.

Both int8 schemes give the same integers on every x86 CPU, so the accuracy checked where optimize runs
holds where the model is served. ONNX Runtime's uint8 x int8 kernel on CPUs without VNNI (AVX2, and
AVX-512 without VNNI) sums pairs of products in int16 with saturation (`vpmaddubsw`); with full-range
weights those sums can overflow: the digits CNN's top-1 agreement fell from 99.72% on a VNNI CPU to
98.89% on an AVX2 one. Hence:
- dynamic: uint8 weights (U8U8), whose kernels widen to int16 before multiplying and cannot saturate;
  on all-MiniLM-L6-v2 as accurate as U8S8 on VNNI and no slower;
- static (QDQ): int8 weights in 7 bits (`reduce_range`): 2 x 255 x 64 < 32767, no pair sum overflows.
tests/optimize/test_other_cpus.py runs both under an emulated AVX2 CPU (docs/optimize.md, "CPUs").
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from modelpod.optimize.errors import OptimizeError
from modelpod.runtimes.base import Batch, require

Quantize = Literal["int8", "none"]
_GELU = {"Gelu", "BiasGelu", "FastGelu", "QuickGelu"}


def optimize_graph(
    graph: Path, *, text_encoder: bool, quantize: Quantize, calibration: Sequence[Batch]
) -> str:
    """Optimise (and quantise) `graph` in place; returns what was done, for the report."""
    try:
        return _optimize_graph(graph, text_encoder=text_encoder, quantize=quantize, calibration=calibration)
    except OptimizeError:
        raise
    except Exception as exc:  # the offline tools raise bare errors about graph internals
        raise OptimizeError(
            f"ONNX Runtime's tools could not optimise the graph: {type(exc).__name__}: {exc}",
            hint="try --quantize none; for static quantisation, give representative inputs with "
            "--calibration",
        ) from exc


def _optimize_graph(
    graph: Path, *, text_encoder: bool, quantize: Quantize, calibration: Sequence[Batch]
) -> str:
    work = graph.with_name("work.onnx")
    if text_encoder:
        steps = _fuse_transformer(graph, work)
        if quantize == "int8":
            _quantize_dynamic(work, graph)
            steps += ", int8 dynamic (uint8 weights per channel)"
        else:
            shutil.move(work, graph)
    elif quantize == "int8":
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(graph), str(work))
        _quantize_static(work, graph, calibration)
        steps = f"int8 static (QDQ, 7-bit weights per channel, calibrated on {len(calibration)} inputs)"
    else:
        steps = _ort_offline(graph, work)
        shutil.move(work, graph)
    work.unlink(missing_ok=True)
    return steps


def _fuse_transformer(source: Path, target: Path) -> str:
    require("onnx", runtime="optimize", extra="optimize")
    from onnxruntime.transformers import optimizer

    # num_heads and hidden_size 0: read from the graph
    model = optimizer.optimize_model(str(source), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    model.save_model_to_file(str(target))
    fused = {name: count for name, count in model.get_fused_operator_statistics().items() if count}
    names = ", ".join(f"{name} x{count}" for name, count in sorted(fused.items())) or "none matched"
    return f"transformer fusions ({names})"


def _ort_offline(source: Path, target: Path) -> str:
    ort = require("onnxruntime", runtime="ONNX", extra="onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return "ONNX Runtime graph optimisations (extended)"


def _weight_nodes(graph: Path) -> tuple[list[str], list[str]]:
    """MatMul and Gemm nodes with a constant operand: (to quantise, kept in float because fed by a GELU).

    Embedding tables (Gather) stay in float: quantised per tensor, on all-MiniLM-L6-v2 they halved the
    file (70 -> 35 MB) but took the smallest cosine over varied sentences from 0.991 to 0.987."""
    onnx = require("onnx", runtime="optimize", extra="optimize")
    model = onnx.load(str(graph), load_external_data=False)
    constants = {init.name for init in model.graph.initializer}
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    chosen: list[str] = []
    kept: list[str] = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and any(name in constants for name in node.input):
            after_gelu = any(producers.get(name) in _GELU for name in node.input)
            (kept if after_gelu else chosen).append(node.name)
    return chosen, kept


def _quantize_dynamic(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    chosen, _ = _weight_nodes(source)
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QUInt8,  # U8U8: no saturation on CPUs without VNNI (module docstring)
        per_channel=True,
        nodes_to_quantize=chosen,
        # fused operators (com.microsoft) carry no type the quantizer can infer: they are float
        extra_options={"DefaultTensorType": 1},
    )


def _quantize_static(source: Path, target: Path, calibration: Sequence[Batch]) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(calibration)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._batches, None)

    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=True,  # 7-bit weights: no saturation on CPUs without VNNI (module docstring)
    )
