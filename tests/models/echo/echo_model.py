"""A test model served through modelpod's custom-class runtime: y = 2 * x.

Environment knobs, so that tests can shape its behaviour without code:
- ECHO_DELAY: seconds each predict() call sleeps (a slow model, to fill queues)
- ECHO_LOAD_DELAY: seconds load() sleeps (a slow start)
- ECHO_FAIL_LOAD: when set, load() raises (a model that cannot load)
A row containing -1 makes predict() raise: a bad item.
"""

from __future__ import annotations

import os
import threading
import time


class Echo:
    def load(self, path):
        time.sleep(float(os.environ.get("ECHO_LOAD_DELAY", "0")))
        if os.environ.get("ECHO_FAIL_LOAD"):
            raise RuntimeError("weights are corrupt (ECHO_FAIL_LOAD is set)")
        self.delay = float(os.environ.get("ECHO_DELAY", "0"))
        self.batch_sizes = []  # rows per call, for in-process tests
        self.seen = []  # every row the model computed
        self.lock = threading.Lock()

    def predict(self, batch):
        x = batch["x"]
        with self.lock:
            self.batch_sizes.append(len(x))
            self.seen.extend(x[:, 0].tolist())
        if (x == -1).any():
            raise ValueError("a row contains -1")
        time.sleep(self.delay)
        return {"y": x * 2}
