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
from modelpod.specfile.resolved import ResolvedModel

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
            try:
                result = self._module(*args)
            except RuntimeError as exc:  # TorchScript's are a page of its own traceback; the end says why
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                raise InferenceError(
                    f"the model raised: {lines[-1] if lines else type(exc).__name__}",
                    hint="check model.signature (names in the order the model takes them, dtypes, shapes)",
                ) from exc
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
        raise _not_servable(torch, path, exc) from exc
    module.to(device)
    kind = "torch.export (.pt2)" if path is not None and path.suffix == ".pt2" else "TorchScript"
    signature = reconcile(model.signature, detected, fmt=kind)
    input_names = [t.name for t in (detected or signature).inputs]
    output_names = [t.name for t in (detected or signature).outputs]
    return TorchRuntime(torch, module, signature, input_names, output_names, device)


# how to save a model so that it can be served (docs/formats.md has the whole snippets)
SAVE_HINT = (
    "save the model itself, not a pickle: torch.export.save(torch.export.export(model, (example_input,)), "
    '"model.pt2") records its inputs and outputs; or TorchScript, torch.jit.save(torch.jit.script(model), '
    '"model.pt"), with model.signature declared in the spec (docs/formats.md)'
)


def _not_servable(torch: Any, path: Any, error: Exception) -> ModelLoadError:
    """Why a file PyTorch cannot run as a program is not servable, saying what the file is when it is one
    of torch.save's pickles: a state_dict (weights without the code that uses them) or a whole module
    (which only loads beside the code that defined its class)."""
    what = None
    if path is not None and path.suffix != ".pt2":
        try:  # weights_only: reads tensors and containers, never runs code from the file
            content = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure only means it is no plain state_dict
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                what = "a whole module pickled with torch.save(model)"
        else:
            if isinstance(content, dict):
                what = (
                    "a state_dict saved with torch.save(model.state_dict()): weights without the model's code"
                )
            else:
                what = f"a {type(content).__name__} saved with torch.save"
    if what is not None:
        return ModelLoadError(f"{path} is {what}, which cannot be served", hint=SAVE_HINT)
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelLoadError(f"PyTorch could not load {path}: {first_line}", hint=SAVE_HINT)


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
