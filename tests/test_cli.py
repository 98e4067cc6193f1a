"""The `modelpod` command as a user runs it: a real subprocess, exit codes, messages without tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

FRAMEWORKS = (
    "torch",
    "tensorflow",
    "onnxruntime",
    "keras",
    "sklearn",
    "transformers",
    "sentence_transformers",
    "jax",
)


def modelpod(*args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelpod", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def imported_modules(code: str) -> set[str]:
    """Top-level modules imported by running `code`, from Python's own -X importtime report."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}


def test_import_modelpod_imports_no_ml_framework():
    modules = imported_modules(
        "import modelpod, modelpod.specfile, modelpod.runtimes, modelpod.predictor, modelpod.server"
    )
    assert "modelpod" in modules
    assert not modules & set(FRAMEWORKS)


def test_the_server_imports_no_engine_client():
    """The image of a model no external engine serves has no httpx: the server imports the external
    engines' modules (which use it) only for a spec that names one (server/engines/__init__.py)."""
    modules = imported_modules("import modelpod.server.run, modelpod.server.app")
    assert "starlette" in modules
    assert "httpx" not in modules


def test_help_imports_no_ml_framework_nor_server():
    code = "import sys; sys.argv = ['modelpod', '--help']\nfrom modelpod.cli import main\n"
    modules = imported_modules(code + "try: main()\nexcept SystemExit: pass")
    assert "typer" in modules
    assert not modules & {*FRAMEWORKS, "numpy", "starlette", "uvicorn"}


def test_help_lists_the_commands():
    result = modelpod("--help")
    assert result.returncode == 0
    for command in ("init", "validate", "schema", "serve", "predict"):
        assert command in result.stdout


def test_validate_good_spec(digits_dir):
    result = modelpod("validate", str(digits_dir))
    assert result.returncode == 0, result.stderr
    assert "(base): digits, onnx model, 1 example(s)" in result.stdout
    assert "(profile keras): digits, keras model" in result.stdout


def test_validate_bad_spec_exits_2_with_the_field_and_no_traceback(tmp_path):
    (tmp_path / "modelpod.yaml").write_text(
        "name: demo\nmodel:\n  path: model.onnx\nserver:\n  port: eighty\n"
    )
    (tmp_path / "model.onnx").write_bytes(b"")
    result = modelpod("validate", str(tmp_path))
    assert result.returncode == 2
    assert "modelpod.yaml:5: server.port: Input should be a valid integer" in result.stderr
    assert "(got 'eighty')" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_unknown_profile_exits_2(digits_dir):
    result = modelpod("validate", str(digits_dir), "--profile", "prdo")
    assert result.returncode == 2
    assert "unknown profile 'prdo'" in result.stderr
    assert "did you mean 'prod'?" in result.stderr


def test_missing_directory_exits_2(tmp_path):
    result = modelpod("validate", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_schema_is_json_schema():
    result = modelpod("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert {"name", "model"} <= set(schema["required"])
    assert schema["additionalProperties"] is False


def test_predict_runs_the_examples_in_process(digits_dir):
    result = modelpod("predict", str(digits_dir))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["example"] == "seven"
    assert int(np.argmax(report["outputs"]["probabilities"])) == 7


def test_predict_with_inputs(digits_dir):
    example = json.loads((digits_dir / "example.json").read_text())
    result = modelpod("predict", str(digits_dir), "--input", json.dumps(example["inputs"]))
    assert result.returncode == 0, result.stderr
    probabilities = json.loads(result.stdout)["outputs"]["probabilities"]
    np.testing.assert_allclose(probabilities, example["expected"]["probabilities"], atol=1e-6)


def test_predict_bad_input_is_a_clear_error(digits_dir):
    result = modelpod("predict", str(digits_dir), "--input", '{"image": [[1, 2]]}')
    assert result.returncode == 1
    assert "input 'image': wrong shape; expected float32[8, 8, 1], got shape [1, 2]" in result.stderr
    assert "Traceback" not in result.stderr


def linked_copy(source: Path, target: Path) -> Path:
    """A copy of a model file or directory (hard links where possible): a spec's paths stay inside its
    directory."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system
            shutil.copy2(src, dst)

    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, copy_function=link)
    else:
        link(str(source), str(target))
    return target


def test_predict_reports_a_mismatching_example(digits_dir, tmp_path):
    spec = yaml.safe_load((digits_dir / "modelpod.yaml").read_text())
    linked_copy(digits_dir / "model" / "digits.onnx", tmp_path / "model" / "digits.onnx")
    example = json.loads((digits_dir / "example.json").read_text())
    example["expected"]["probabilities"] = [0.1] * 10
    spec["examples"] = [{"name": "wrong", **example}]
    (tmp_path / "modelpod.yaml").write_text(yaml.safe_dump(spec))
    result = modelpod("predict", str(tmp_path))
    assert result.returncode == 1
    assert "mismatch wrong: output 'probabilities' differs by up to" in result.stderr


@pytest.mark.parametrize(
    ("example", "model", "fmt"),
    [
        ("digits", "model/digits.onnx", "onnx"),
        ("digits", "model/digits.keras", "keras"),
        ("sklearn", "model/digits-pipeline.skops", "sklearn"),
        ("minilm", "model", "transformers"),
    ],
)
def test_init_writes_a_spec_that_validates_and_predicts(request, tmp_path, example, model, fmt):
    directory = request.getfixturevalue(f"{example}_dir")
    spec_path = tmp_path / "modelpod.yaml"
    result = modelpod(
        "init", str(linked_copy(directory / model, tmp_path / model)), "--output", str(spec_path)
    )
    assert result.returncode == 0, result.stderr
    assert f"({fmt} model)" in result.stdout
    written = yaml.safe_load(spec_path.read_text())
    assert written["model"]["format"] == fmt
    assert written["model"]["signature"]["inputs"]  # detected, not a placeholder
    assert "TODO" not in spec_path.read_text()
    assert modelpod("validate", str(tmp_path)).returncode == 0
    if "examples" in written:  # small inputs get a placeholder example that must run
        result = modelpod("predict", str(tmp_path))
        assert result.returncode == 0, result.stderr


def test_init_detected_signature_matches_the_model(digits_dir, tmp_path):
    model = linked_copy(digits_dir / "model/digits.onnx", tmp_path / "digits.onnx")
    assert modelpod("init", str(model), "-o", str(tmp_path / "modelpod.yaml")).returncode == 0
    signature = yaml.safe_load((tmp_path / "modelpod.yaml").read_text())["model"]["signature"]
    assert signature == {
        "inputs": [{"name": "image", "dtype": "float32", "shape": [8, 8, 1]}],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [10]}],
    }


def test_init_refuses_to_overwrite(digits_dir, tmp_path):
    target = tmp_path / "modelpod.yaml"
    target.write_text("keep me")
    result = modelpod("init", str(digits_dir / "model/digits.onnx"), "-o", str(target))
    assert result.returncode == 2
    assert "--force" in result.stderr
    assert target.read_text() == "keep me"


def test_init_refuses_a_model_outside_the_spec_directory(digits_dir, tmp_path):
    result = modelpod("init", str(digits_dir / "model/digits.onnx"), "-o", str(tmp_path / "modelpod.yaml"))
    assert result.returncode == 2
    assert "model.path" in result.stderr
    assert f"-o {digits_dir / 'model' / 'modelpod.yaml'}" in result.stderr
    assert not (tmp_path / "modelpod.yaml").exists()


def test_init_unknown_format(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    result = modelpod("init", str(tmp_path / "weights.bin"), "-o", str(tmp_path / "modelpod.yaml"))
    assert result.returncode == 2
    assert "--format" in result.stderr
