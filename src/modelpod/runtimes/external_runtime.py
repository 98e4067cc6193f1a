"""A language model that an external engine serves (a GGUF file under llama.cpp, a transformers
directory under vLLM): nothing is loaded in this process. It stands for the model's signature (a
prompt in, a text out) and task; the server sends its requests to the engine (server/engines/).
Predicting in process is refused with the way to do it instead."""

from __future__ import annotations

from modelpod.errors import InferenceError
from modelpod.runtimes.base import BaseRuntime, Batch, reconcile
from modelpod.signature import Signature, TensorSpec
from modelpod.specfile.resolved import ResolvedModel

SIGNATURE = Signature(
    inputs=(TensorSpec(name="prompt", dtype="string", shape=()),),
    outputs=(TensorSpec(name="text", dtype="string", shape=()),),
)


class ExternalEngineRuntime(BaseRuntime):
    task = "text-generation"

    def __init__(self, signature: Signature, engine: str) -> None:
        super().__init__(signature)
        self.engine = engine

    def predict(self, batch: Batch) -> Batch:
        raise InferenceError(
            f"this model is served by the {self.engine} engine, which runs beside `modelpod serve`, not "
            "in this process",
            hint="serve it (`modelpod serve`) and send the request there: `modelpod predict --url URL`",
        )

    def warmup(self) -> None:
        """Nothing to warm up here: the engine warms itself up before it answers its health route."""


def load(model: ResolvedModel, *, threads: int, engine: str = "llamacpp") -> ExternalEngineRuntime:
    return ExternalEngineRuntime(reconcile(model.signature, SIGNATURE, fmt=model.format), engine)
