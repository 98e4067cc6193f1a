"""Outputs of a spec's model on a file of items, written as .npy: run natively, or under
`qemu-x86_64 -cpu Haswell` to get the outputs of the kernels an AVX2 CPU without VNNI runs.

usage: python -m tests.optimize.emulated_outputs SPEC_DIR PROFILE|- ITEMS.json OUT.npy
Also writes OUT.json: the CPU features numpy detected (so the test can prove what was emulated).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from modelpod.optimize.inputs import batches, read_items
from modelpod.predictor import Predictor
from modelpod.specfile import load_spec


def main(directory: str, profile: str, items_file: str, out: str) -> None:
    from numpy._core._multiarray_umath import __cpu_features__

    spec = load_spec(directory, None if profile == "-" else profile)
    predictor = Predictor.from_spec(spec, warmup=False)
    signature = predictor.runtime.signature
    items = read_items(Path(items_file), "--eval")
    outputs = [next(iter(predictor.predict(batch).values())) for batch in batches(signature, items, 16)]
    np.save(out, np.concatenate(outputs))
    features = {name: bool(on) for name, on in __cpu_features__.items()}
    Path(out).with_suffix(".json").write_text(json.dumps(features))


if __name__ == "__main__":
    main(*sys.argv[1:])
