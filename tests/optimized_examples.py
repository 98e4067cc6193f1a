"""Examples run through `modelpod optimize` in a temporary copy, for the optimize and image tests.

The fixtures in tests/conftest.py run each once per session: exporting and quantising minilm takes
about a minute on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

OPTIMIZE_TIMEOUT = 900  # seconds for one `modelpod optimize` (an export of minilm takes about 40 s)


def copy_project(source: Path, destination: Path) -> Path:
    """A copy of an example; its model files are hard links where the file system allows (nothing
    writes to them: optimize writes a new directory), else copies."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(
        source,
        destination,
        ignore=shutil.ignore_patterns(".modelpod", "__pycache__", "optimized"),
        copy_function=link_or_copy,
    )
    return destination


def run_optimize(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelpod", "optimize", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=OPTIMIZE_TIMEOUT,
        check=False,
        env={**os.environ, "COLUMNS": "200"},  # the table on one line per row, for the assertions
    )


def optimized(source: Path, destination: Path, *args: str) -> tuple[Path, str]:
    """`destination`, a copy of `source` with its model optimised; and optimize's output."""
    copy_project(source, destination)
    result = run_optimize(destination, *args)
    assert result.returncode == 0, f"optimize failed:\n{result.stdout}\n{result.stderr}"
    return destination, result.stdout


def held_out_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits the example's train.py held out (its split, its scaling): images and labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    _, test_images, _, test_labels = train_test_split(
        images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    return test_images, test_labels


def write_items(path: Path, name: str, values: np.ndarray) -> Path:
    path.write_text(json.dumps([{name: value.tolist()} for value in values]), encoding="utf-8")
    return path
