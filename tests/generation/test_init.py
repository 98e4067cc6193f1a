"""`modelpod init` on language models: GPT-2's `*LMHeadModel` is told apart as text generation, and
`--task` writes the task for a model whose config does not say it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from modelpod.specfile import load_spec
from tests.generation.tiny_models import build_tiny_model


def init(model: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "modelpod",
            "init",
            str(model),
            "-o",
            str(model.parent / "modelpod.yaml"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_gpt2_is_detected_as_text_generation(smollm2_dir: Path, tmp_path: Path) -> None:
    model = build_tiny_model("gpt2", tmp_path / "gpt2", smollm2_dir)
    result = init(model)
    assert result.returncode == 0, result.stderr
    spec = load_spec(tmp_path)
    assert spec.model.footprint is not None  # render sizes its pod from config.json, GPT-2's names too
    assert [t.name for t in spec.model.signature.inputs] == ["prompt"]  # type: ignore[union-attr]


def test_an_unknown_task_names_the_init_flag_and_task_writes_it(smollm2_dir: Path, tmp_path: Path) -> None:
    model = build_tiny_model("llama", tmp_path / "model", smollm2_dir)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "architectures": ["SomethingNew"]}))
    refused = init(model)
    assert refused.returncode != 0
    assert "cannot tell the task of model" in refused.stderr
    assert "modelpod init --task" in refused.stderr
    assert "Traceback" not in refused.stderr
    written = init(model, "--task", "text-generation")
    assert written.returncode == 0, written.stderr
    text = (tmp_path / "modelpod.yaml").read_text()
    assert yaml.safe_load(text)["model"]["options"] == {"task": "text-generation"}
    assert load_spec(tmp_path).model.options == {"task": "text-generation"}
