"""PyTorch models: torch.export programs (`.pt2`) and TorchScript archives (`.pt`, `.ts`).

A `.pt2` program describes its inputs and outputs; a dimension exported as dynamic becomes -1. TorchScript
does not, so its spec must declare `model.signature`. Inputs are passed positionally in signature order;
outputs (a tensor, a tuple or a dict of tensors) are matched to the signature's outputs in order or by key.
Options: `device` ("cpu" by default, or "cuda"), `output_names` for a `.pt2` program's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelpod.errors import InferenceError, ModelLoadError
from modelpod.runtimes._pinning import pin_torch_threads
from modelpod.runtimes.base import BaseRuntime, Batch, reconcile, require
from modelpod.signature import Signature, TensorSpec
from modelpod.spec.resolved import ResolvedModel

_TORCH_DTYPES = {
    "bool": "bool",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "float16": "float16",
    "float32": "float32",
    "float64": "float64",
}


class TorchRuntime(BaseRuntime):
    def __init__(
        self,
        torch: Any,
        module: Any,
        signature: Signature,
        input_names: list[str],
        output_names: list[str],
        device: str,
    ) -> None:
        super().__init__(signature)
        self._input_names = input_names  # the module's arguments in the order it takes them
        self._torch = torch
        self._module = module
        self._output_names = output_names  # the module's outputs in the order it returns them
        self._device = device

    def predict(self, batch: Batch) -> Batch:
        torch = self._torch
        args = [
            torch.from_numpy(np.ascontiguousarray(batch[name])).to(self._device) for name in self._input_names
        ]
        with torch.inference_mode():
            result = self._module(*args)
        return _name_outputs(result, self._output_names)


def _name_outputs(result: Any, names: Sequence[str]) -> Batch:
    if isinstance(result, dict):
        return {name: _to_numpy(value) for name, value in result.items()}
    values = list(result) if isinstance(result, list | tuple) else [result]
    if len(values) != len(names):
        raise InferenceError(
            f"the model returned {len(values)} outputs but the signature has {len(names)}",
            hint="declare one signature output per returned tensor, in order",
        )
    return {name: _to_numpy(v) for name, v in zip(names, values, strict=True)}


def _to_numpy(value: Any) -> np.ndarray:
    return np.asarray(value.detach().cpu().numpy())


def load(model: ResolvedModel, *, threads: int) -> TorchRuntime:
    torch = require("torch", runtime="PyTorch", extra="torch")
    torch.set_num_threads(threads)
    pin_torch_threads(torch, threads)
    device = str(model.options.get("device", "cpu"))
    path = model.path
    try:
        if path is not None and path.suffix == ".pt2":
            program = torch.export.load(str(path))
            detected = _detect_exported(program, model.options.get("output_names"))
            module = program.module()
        else:
            module = torch.jit.load(str(path), map_location=device)
            module.eval()
            detected = None
    except Exception as exc:
        raise ModelLoadError(
            f"PyTorch could not load {path}: {exc}",
            hint="save with torch.export.save (.pt2) or torch.jit.save (TorchScript); "
            "pickled modules are not loaded",
        ) from exc
    module.to(device)
    kind = "torch.export (.pt2)" if path is not None and path.suffix == ".pt2" else "TorchScript"
    signature = reconcile(model.signature, detected, fmt=kind)
    input_names = [t.name for t in (detected or signature).inputs]
    output_names = [t.name for t in (detected or signature).outputs]
    return TorchRuntime(torch, module, signature, input_names, output_names, device)


def _detect_exported(program: Any, output_names: Sequence[str] | None) -> Signature | None:
    """Inputs and outputs of a torch.export program, from the fake tensors recorded on its graph."""
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    inputs = []
    for name in program.graph_signature.user_inputs:
        value = placeholders[name].meta.get("val")
        spec = _tensor_spec(name, value)
        if spec is None:
            return None
        inputs.append(spec)
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    values = [arg.meta.get("val") for arg in output_node.args[0]]
    user_count = len(program.graph_signature.user_outputs)
    values = values[len(values) - user_count :]
    if output_names is None:
        output_names = ["output"] if len(values) == 1 else [f"output_{i}" for i in range(len(values))]
    if len(output_names) != len(values):
        raise ModelLoadError(
            f"model.options.output_names has {len(output_names)} names "
            f"but the program returns {len(values)} outputs"
        )
    outputs = []
    for name, value in zip(output_names, values, strict=True):
        spec = _tensor_spec(name, value)
        if spec is None:
            return None
        outputs.append(spec)
    return Signature(inputs=tuple(inputs), outputs=tuple(outputs))


def _tensor_spec(name: str, value: Any) -> TensorSpec | None:
    if value is None or not hasattr(value, "shape"):
        return None
    dtype = _TORCH_DTYPES.get(str(value.dtype).removeprefix("torch."))
    if dtype is None or len(value.shape) == 0:
        return None
    dims = tuple(d if isinstance(d, int) else -1 for d in value.shape[1:])
    return TensorSpec(name=name, dtype=dtype, shape=dims)
