"""The real example, SmolLM2-135M-Instruct, served by `modelpod serve examples/smollm2` and asked through
the `openai` SDK: the answers must be right, not only well formed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(smollm2_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(smollm2_dir.parent, start_timeout=300) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=120, max_retries=0)


def test_the_sdk_streams_the_right_answer_to_a_chat(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=24, temperature=0, stream=True
    )
    chunks = list(stream)
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in answer
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # streamed, not at once
    assert chunks[-1].choices[0].finish_reason == "stop"  # the model ended its answer itself


def test_the_sdk_streams_a_completion(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model="smollm2",
        prompt="The capital of France is the city of",
        max_tokens=4,
        temperature=0,
        stream=True,
    )
    assert "Paris" in "".join(c.choices[0].text for c in stream)


def test_modelpod_predict_checks_the_spec_example_against_the_server(server: ServerProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelpod", "predict", str(Path(server.command[4])), "--url", server.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Paris" in result.stdout
