"""The digits and minilm examples on KServe's Python model server (v1 protocol), as its docs show:
one kserve.Model with load() and predict(); framework threads set to the 2 cores. KServe's Python server
has no in-process batching (KServe batches in a separate agent container), so none is configured.

    python kserve_server.py --example digits --http_port 8080
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from kserve import Model, ModelServer

EXAMPLES = Path(os.environ.get("MODELPOD_EXAMPLES", Path(__file__).resolve().parents[2] / "examples"))
THREADS = int(os.environ.get("PEER_THREADS", "2"))


class Digits(Model):
    def __init__(self) -> None:
        super().__init__("digits")
        self.load()

    def load(self) -> bool:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        path = EXAMPLES / "digits" / "model" / "digits.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        images = np.asarray(payload["instances"], dtype=np.float32)
        return {"predictions": self.session.run(None, {"image": images})[0].tolist()}


class Minilm(Model):
    def __init__(self) -> None:
        super().__init__("minilm")
        self.load()

    def load(self) -> bool:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(THREADS)
        self.model = SentenceTransformer(
            str(EXAMPLES / "minilm" / "model"), device="cpu", local_files_only=True
        )
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        sentences = payload["instances"]
        return {"predictions": self.model.encode(sentences, batch_size=len(sentences)).tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", choices=["digits", "minilm"], required=True)
    known, rest = parser.parse_known_args()
    sys.argv = [sys.argv[0], *rest]  # KServe parses its own flags (--http_port, ...) from sys.argv
    model = Digits() if known.example == "digits" else Minilm()
    ModelServer(workers=1, enable_grpc=False).start([model])
