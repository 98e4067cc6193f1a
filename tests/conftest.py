"""Shared fixtures: the example projects (trained or prepared on first use) and a spec-writing helper."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.server_process import ServerProcess

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# example -> (script that makes its model, the files that script writes)
_PREPARE = {
    "digits": ("train.py", ("model/digits.onnx", "example.json")),
    "sklearn": ("train.py", ("model/digits-pipeline.skops", "example.json")),
    "minilm": ("prepare.py", ("model/model.safetensors", "example.json")),
    "smollm2": ("prepare.py", ("model/model.safetensors",)),  # its example is a chat in the spec
    "smollm2-gguf": ("prepare.py", ("model/SmolLM2-135M-Instruct.Q4_1.gguf",)),
}


def prepare_example(name: str) -> Path:
    """The example's directory, running its training or preparation script first if its model is missing."""
    script, products = _PREPARE[name]
    directory = EXAMPLES / name
    if not all((directory / product).exists() for product in products):
        result = subprocess.run(
            [sys.executable, str(directory / script)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"{name}/{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return directory


@pytest.fixture(scope="session")
def digits_dir() -> Path:
    return prepare_example("digits")


@pytest.fixture(scope="session")
def digits_server(digits_dir: Path) -> Iterator[ServerProcess]:
    """`modelpod serve examples/digits` on port 0, started once for every test that only sends it
    requests and reads its log (tests/test_serve_socket.py, tests/server/test_socket.py, test_memory.py,
    test_schemathesis.py): each start loads ONNX Runtime and the model."""
    with ServerProcess(digits_dir) as server:
        yield server


@pytest.fixture(scope="session")
def sklearn_dir() -> Path:
    return prepare_example("sklearn")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return prepare_example("minilm")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """examples/smollm2/model, converted by examples/smollm2/prepare.py if it is missing."""
    return prepare_example("smollm2") / "model"


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a modelpod.yaml (dedented) into a fresh directory with an empty model.onnx beside it."""

    def write(text: str, *, model_file: str | None = "model.onnx") -> Path:
        if model_file:
            (tmp_path / model_file).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / model_file).write_bytes(b"")
        path = tmp_path / "modelpod.yaml"
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def optimized_digits(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the digits example after `modelpod optimize` (int8, checked on the held-out digits),
    and the command's output."""
    from tests.optimized_examples import held_out_digits, optimized, write_items

    work = tmp_path_factory.mktemp("optimized-digits")
    held_out = write_items(work / "held-out.json", "image", held_out_digits()[0])
    return optimized(digits_dir, work / "digits", "--eval", str(held_out), "--min-top1", "0.995")


@pytest.fixture(scope="session")
def optimized_minilm(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the minilm example after `modelpod optimize` (int8), and the command's output."""
    from tests.optimized_examples import optimized

    work = tmp_path_factory.mktemp("optimized-minilm")
    return optimized(minilm_dir, work / "minilm", "--eval-items", "64", "--measure-seconds", "0.5")
