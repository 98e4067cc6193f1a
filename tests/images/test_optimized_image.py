"""The image of minilm's `optimized` profile (issue 19): ONNX Runtime and the tokenizer, no torch and no
transformers, at most 400 MB (minilm's transformers image: 1.5 GB); built once per session, smoke-tested
with the profile's example like every image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelpod.images.pipeline import BuildResult, QuietReporter
from tests.images.conftest import copy_example, docker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

Built = tuple[Path, BuildResult, QuietReporter]
MAX_BYTES = 400 * 1000 * 1000  # as docker counts


@pytest.fixture(scope="session")
def minilm_optimized_image(
    build_example: Callable[..., Built], optimized_minilm: tuple[Path, str], tmp_path_factory
) -> Built:
    directory = copy_example(optimized_minilm[0], tmp_path_factory.mktemp("images") / "minilm")
    return build_example(directory, "modelpod-test/minilm:optimized", profile="optimized")


def test_optimized_minilm_image_has_no_torch_and_is_small(minilm_optimized_image: Built) -> None:
    directory, result, _ = minilm_optimized_image
    print(
        f"\nminilm optimized image: {result.size / 1e6:.1f} MB, built in {result.seconds:.1f}s; "
        f"groups {result.groups}"
    )
    assert result.size <= MAX_BYTES
    assert result.smoke is not None
    assert result.smoke.examples == ("sentence",)
    assert result.smoke.exit_code == 0
    # the weights layer is the optimised directory alone, not the original safetensors
    optimised = directory / "model" / "optimized"
    assert result.groups["weights"] == sum(f.stat().st_size for f in optimised.iterdir())
    for module in ("torch", "transformers", "sentence_transformers"):
        found = docker(
            "run", "--rm", "--network", "none", "--entrypoint", "python", result.image,
            "-c", f"import {module}",
        )  # fmt: skip
        assert found.returncode != 0, f"{module} is importable in the optimized image"
        assert f"No module named '{module}'" in found.stderr
    present = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", result.image,
        "-c", "import onnxruntime, tokenizers",
    )  # fmt: skip
    assert present.returncode == 0, present.stderr
