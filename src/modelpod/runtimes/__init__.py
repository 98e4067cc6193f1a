"""Model runtimes, one module per format, loaded lazily so `import modelpod` imports no framework."""

from __future__ import annotations

import importlib

from modelpod.runtimes._threads import default_threads
from modelpod.runtimes.base import BaseRuntime, Batch, Runtime, reconcile, sample_batch
from modelpod.specfile.resolved import ResolvedModel

# format -> module under modelpod.runtimes; each exposes load(model, threads) -> Runtime
_MODULES = {
    "onnx": "onnx_runtime",
    "sklearn": "sklearn_runtime",
    "torch": "torch_runtime",
    "keras": "keras_runtime",
    "tensorflow": "tensorflow_runtime",
    "transformers": "transformers_runtime",
    "gguf": "external_runtime",  # served by llama.cpp beside the server (server/engines/)
    "custom": "custom_runtime",
}


def load_runtime(model: ResolvedModel, *, threads: int | None = None) -> Runtime:
    """Load a model with the runtime of its format, importing that framework only now.

    **Parameters**

    * **model** `ResolvedModel` - the spec's model section as resolved (`load_spec(...).model`): its path,
      format, signature and options.
    * **threads** `int` - *(optional)* intra-op threads for the framework; by default the CPU quota of the
      container (`default_threads()`).

    Raises `ModelLoadError`, or `MissingDependencyError` naming the extra to install.
    """
    module = importlib.import_module(f"modelpod.runtimes.{_MODULES[model.format]}")
    runtime: Runtime = module.load(model, threads=threads or default_threads())
    return runtime


__all__ = ["BaseRuntime", "Batch", "Runtime", "default_threads", "load_runtime", "reconcile", "sample_batch"]
