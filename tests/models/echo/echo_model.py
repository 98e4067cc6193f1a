"""A test model served through modelpod's custom-class runtime: y = 2 * x.

Environment knobs, so that tests can shape its behaviour without code:
- ECHO_DELAY: seconds each predict() call sleeps (a slow model, to fill queues)
- ECHO_GATE: a file path; each predict() call waits until that file exists (at most 60 s), so a test
  holds the model busy for exactly as long as it needs, and releases it by creating the file.
  The warm-up is never held, so the server gets ready.
- ECHO_LOAD_DELAY: seconds load() sleeps (a slow start)
- ECHO_FAIL_LOAD: when set, load() raises (a model that cannot load)
A row containing -1 makes predict() raise: a bad item.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

GATE_TIMEOUT_S = 60.0


class Echo:
    def load(self, path):
        time.sleep(float(os.environ.get("ECHO_LOAD_DELAY", "0")))
        if os.environ.get("ECHO_FAIL_LOAD"):
            raise RuntimeError("weights are corrupt (ECHO_FAIL_LOAD is set)")
        self.delay = float(os.environ.get("ECHO_DELAY", "0"))
        gate = os.environ.get("ECHO_GATE")
        self.gate = Path(gate) if gate else None
        self.batch_sizes = []  # rows per call, for in-process tests
        self.seen = []  # every row the model computed
        self.lock = threading.Lock()

    def warmup(self):
        self.compute({"x": np.zeros((1, 2), dtype=np.float32)})

    def predict(self, batch):
        if self.gate is not None:
            deadline = time.monotonic() + GATE_TIMEOUT_S
            while not self.gate.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ECHO_GATE {self.gate} was not created within {GATE_TIMEOUT_S:g}s")
                time.sleep(0.005)
        return self.compute(batch)

    def compute(self, batch):
        x = batch["x"]
        with self.lock:
            self.batch_sizes.append(len(x))
            self.seen.extend(x[:, 0].tolist())
        if (x == -1).any():
            raise ValueError("a row contains -1")
        time.sleep(self.delay)
        return {"y": x * 2}
