"""The llamacpp engine's image, built by a real engine: llama.cpp compiled from its pinned source in a stage
of its own (images/llama_cpp.py), the GGUF example served by it in a hardened container that answers its
chat example (the build's smoke test), and a rebuild after a code change that does not recompile.

The first build compiles llama.cpp (about 10 minutes on 2 cores); BuildKit keeps that stage, so a later
run on the same machine reuses it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from modelpod.images.pipeline import BuildResult, QuietReporter
from tests.conftest import prepare_example
from tests.images.conftest import copy_example, docker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
Built = tuple[Path, BuildResult, QuietReporter]
COMPILE = "build-llama-server.sh"  # the step that compiles llama.cpp


@pytest.fixture(scope="module")
def gguf_image(build_example: Callable[..., Built], tmp_path_factory: pytest.TempPathFactory) -> Built:
    directory = copy_example(
        prepare_example("smollm2-gguf"), tmp_path_factory.mktemp("images") / "smollm2-gguf"
    )
    return build_example(directory, "modelpod-test/smollm2-gguf:buildkit")


def test_the_gguf_example_is_served_by_llama_cpp_in_a_hardened_container(gguf_image: Built) -> None:
    directory, result, _ = gguf_image
    print(
        f"\nsmollm2-gguf image: {result.size / 1e6:.1f} MB, built in {result.seconds:.1f}s; {result.groups}"
    )
    assert result.smoke is not None
    assert result.smoke.examples == ("capital",)  # the smoke test sent the chat example and found Paris
    assert result.smoke.exit_code == 0  # and SIGTERM stopped the server and its engine cleanly
    gguf = next((directory / "model").glob("*.gguf"))
    assert result.groups["weights"] == gguf.stat().st_size  # the file as it is, in a layer of its own
    assert 10e6 < result.groups["engine"] < 60e6  # llama.cpp's server, libraries and six CPU backends
    listing = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", result.image, "-c",
        "import os, glob; print(sorted(os.listdir('/opt/llama.cpp'))); "
        "print(glob.glob('/opt/venv/lib/python*/site-packages/llama*'))",
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines() == [
        "['LICENSE.llama.cpp', 'LICENSE.nlohmann-json', 'bin', 'lib']",
        "[]",  # llama.cpp's own build, and not the AGPL wrapper package that carried its source
    ]


def test_a_code_change_rebuilds_without_recompiling_llama_cpp(
    gguf_image: Built, build_example: Callable[..., Built]
) -> None:
    directory, _, _ = gguf_image
    with (directory / "prepare.py").open("a") as script:
        script.write(f"# edited by the rebuild test {secrets.token_hex(4)}\n")
    _, second, _ = build_example(directory, "modelpod-test/smollm2-gguf:rebuilt")
    compile_steps = [step for step in second.steps if COMPILE in step.instruction]
    assert len(compile_steps) == 1, [step.instruction for step in second.steps]
    assert compile_steps[0].cached is True
    rebuilt = [step.instruction for step in second.rebuilt]
    assert any(instruction.startswith("COPY code/") for instruction in rebuilt), rebuilt
    assert not any("llama" in instruction for instruction in rebuilt), rebuilt
    assert second.smoke is not None
    assert second.smoke.exit_code == 0
