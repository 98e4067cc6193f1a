"""Models for the text-generation tests: SmolLM2-135M-Instruct (converted on first use) and a tiny Llama.

SmolLM2 answers sensibly but is slow for a unit test: a 538 MB load and about 11 tokens/s for one
sequence on 2 busy CPUs. The tiny Llama (3.2M random weights, SmolLM2's tokenizer, 13 MB) loads in
0.06 s, for tests of the batching itself rather than of the answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.generation.tiny_llama import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer, built once per session."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_dir)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server runs on asyncio (uvloop)
