"""The digits and minilm examples as BentoML services, configured as a careful user would:
adaptive batching on (max batch 64, as the modelpod specs), framework threads set to the 2 cores.

    bentoml serve bentoml_service:Digits --working-dir benchmarks/peer_services --port 3000
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import numpy as np

EXAMPLES = Path(os.environ.get("MODELPOD_EXAMPLES", Path(__file__).resolve().parents[2] / "examples"))
THREADS = int(os.environ.get("PEER_THREADS", "2"))


@bentoml.service(workers=1)
class Digits:
    def __init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        path = EXAMPLES / "digits" / "model" / "digits.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=10_000)
    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": images.astype(np.float32)})[0]


@bentoml.service(workers=1)
class Minilm:
    def __init__(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(THREADS)
        self.model = SentenceTransformer(
            str(EXAMPLES / "minilm" / "model"), device="cpu", local_files_only=True
        )

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=10_000)
    def encode(self, sentences: list[str]) -> np.ndarray:
        return self.model.encode(sentences, batch_size=len(sentences), convert_to_numpy=True)
