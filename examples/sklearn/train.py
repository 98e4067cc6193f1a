"""Train a scikit-learn pipeline on the bundled digits and save it with skops (safe to load).

    python examples/sklearn/train.py [--out examples/sklearn/model]

StandardScaler -> LogisticRegression on the 64 flattened pixels, 80/20 stratified split. Writes
model/digits-pipeline.skops, model/metrics.json and example.json (one held-out image of a 3 with the
pipeline's own label and probabilities).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "model")
    parser.add_argument("--example", type=Path, default=HERE / "example.json")
    args = parser.parse_args()

    import numpy as np
    import skops.io as sio
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    pipeline.fit(x_train, y_train)
    accuracy = float(pipeline.score(x_test, y_test))

    args.out.mkdir(parents=True, exist_ok=True)
    sio.dump(pipeline, args.out / "digits-pipeline.skops")
    three = x_test[int(np.flatnonzero(y_test == 3)[0])]
    example = {
        "inputs": {"input": three.tolist()},
        "expected": {
            "label": int(pipeline.predict(three[None])[0]),
            "probabilities": pipeline.predict_proba(three[None])[0].tolist(),
        },
    }
    args.example.write_text(json.dumps(example) + "\n")
    metrics = {"held_out_accuracy": round(accuracy, 4), "held_out_images": len(x_test)}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
