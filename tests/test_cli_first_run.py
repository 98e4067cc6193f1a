"""What a new user meets in the first hour (issue 21): missing extras, bad flags, bad spec values and
inputs each get one clear message and an exit code, never a traceback. Commands run as a user runs them
(a subprocess), or through Typer's CliRunner where only the printed help is looked at."""

from __future__ import annotations

import re
import socket
import sys
import textwrap
from importlib.metadata import metadata

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from modelpod.cli.app import COMMAND_EXTRAS, ModelFormat, app
from modelpod.errors import InputError
from modelpod.signature import TensorSpec
from modelpod.specfile.model import FORMATS
from tests.conftest import ROOT
from tests.test_cli import modelpod

DIGEST = "sha256:" + "a" * 64

# Runs the CLI with some top-level modules made unimportable, as on a machine without their extra.
_WITHOUT_MODULES = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    class Uninstalled(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in sys.argv[1].split(","):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Uninstalled())
    from modelpod.cli import main
    main(sys.argv[2:])
""")


def command_names() -> list[str]:
    return list(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def modelpod_without(modules: str, *args: str) -> tuple[int, str]:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_MODULES, modules, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("args", "missing", "extra"),
    [
        (["build", "{spec}"], "packaging", "build"),  # the lock reads requirements with packaging
        (["build", "{spec}", "--no-smoke-test"], "jinja2", "build"),  # the Dockerfile template
        (["deploy", "{spec}", "--image", f"m@{DIGEST}"], "lightkube", "cluster"),
        (["status", "{spec}"], "lightkube", "cluster"),
    ],
)
def test_a_command_without_its_extra_names_the_extra(digits_dir, args, missing, extra):
    code, stderr = modelpod_without(missing, *(a.format(spec=digits_dir) for a in args))
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert f"`modelpod {args[0]}` needs the Python package {missing!r}" in stderr
    assert f"pip install 'modelpod[{extra}]'" in stderr


def test_a_runtime_without_its_framework_names_the_extra(digits_dir):
    code, stderr = modelpod_without("onnxruntime", "predict", str(digits_dir))
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert 'pip install "modelpod[onnx]"' in stderr


def test_the_readme_lists_the_extra_of_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ((?:`modelpod \w+`(?:, )?)+) \| `(\w+)` \|", readme, flags=re.MULTILINE)
    listed = {
        command: extra for commands, extra in rows for command in re.findall(r"`modelpod (\w+)`", commands)
    }
    assert {c: e for c, e in listed.items() if e != "cli"} == COMMAND_EXTRAS
    extras = metadata("modelpod").get_all("Provides-Extra") or []
    assert set(listed.values()) <= set(extras)
    assert set(listed) <= set(command_names())  # no command the CLI lacks


def test_init_format_choices_are_the_spec_formats():
    assert ModelFormat.__args__ == FORMATS  # type: ignore[attr-defined]


WIDE = {"COLUMNS": "200"}  # Rich wraps help to the terminal; wide enough for one line per option


def test_help_names_formats_and_required_options_and_no_flag_types():
    runner = CliRunner()
    helps = {name: runner.invoke(app, [name, "--help"], env=WIDE).stdout for name in command_names()}
    assert len(helps) >= 18
    helps["(root)"] = runner.invoke(app, ["--help"], env=WIDE).stdout
    for name, text in helps.items():
        assert "Usage" in text, name
        assert "<bool>" not in text, f"`modelpod {name} --help` shows a type beside a flag:\n{text}"
    assert "<onnx|sklearn|torch|keras|tensorflow|transformers|gguf|custom>" in helps["init"]
    image_line = next(line for line in helps["render"].splitlines() if "--image" in line)
    assert "*" in image_line  # Typer's mark of a required option
    assert "[required]" in helps["render"]


def test_render_without_image_says_it_is_required(digits_dir):
    result = modelpod("render", str(digits_dir))
    assert result.returncode == 2
    assert "Missing option '--image'" in result.stderr


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_serve_refuses_a_port_out_of_range(digits_dir, port):
    result = modelpod("serve", str(digits_dir), "--port", port)
    assert result.returncode == 2
    assert "Invalid value for '--port'" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_taken_port_says_which_and_how_to_choose_another(digits_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = modelpod("serve", str(digits_dir), "--port", str(port), timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: it is taken" in result.stderr
    assert "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_input_from_a_missing_file(digits_dir, tmp_path):
    result = modelpod("predict", str(digits_dir), "--input", "@missing.json", cwd=tmp_path)
    assert result.returncode == 2
    message = " ".join(result.stderr.replace("│", " ").split())  # unwrapped from Rich's box
    assert "Invalid value for --input: cannot read missing.json: No such file or directory" in message
    assert "Traceback" not in result.stderr


def test_bad_name_and_memory_say_what_is_allowed_with_an_example(write_spec):
    spec = write_spec("""
        name: My_Model
        model: {path: model.onnx}
        resources: {memory: 1GB, cpu: 2 cores}
    """)
    result = modelpod("validate", str(spec))
    assert result.returncode == 2
    assert "name: not a value this field takes (got 'My_Model')" in result.stderr
    assert "e.g. digits-v2" in result.stderr
    assert "resources.memory: not a value this field takes (got '1GB')" in result.stderr
    assert "e.g. 512Mi or 1Gi (not 1GB)" in result.stderr
    assert '"500m"' in result.stderr  # cpu
    assert "pattern" not in result.stderr
    assert "^[" not in result.stderr


def test_null_input_is_reported_as_null(digits_dir, minilm_dir):
    result = modelpod("predict", str(digits_dir), "--input", '{"image": null}')
    assert result.returncode == 1
    assert "input 'image': wrong dtype; expected float32 numbers, got null" in result.stderr
    result = modelpod("predict", str(minilm_dir), "--input", '{"text": [null]}')
    assert result.returncode == 1
    assert "input 'text': wrong dtype; expected strings, got null" in result.stderr


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (np.array([None, None], dtype=object), "got null"),
        (np.array([1.5, None], dtype=object), "got floating-point numbers and null"),
        (np.array(["a", "b"]), "got strings"),
    ],
)
def test_an_array_of_python_objects_is_described_by_what_it_holds(value, got):
    with pytest.raises(InputError, match=got):
        TensorSpec(name="x", dtype="float32", shape=(-1,)).coerce(value, batched=False)


def test_readme_quickstart_starts_with_a_command_that_works_from_a_clone():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    first = re.search(r"```bash\n(.+?)\n", quickstart)
    assert first is not None
    assert first.group(1).startswith(("make setup ", "make serve ")), first.group(1)
    assert "pip install '.[cli,onnx]'" in quickstart  # from the clone
    assert "pip install dist/modelpod-" in quickstart  # from a built wheel
    assert (ROOT / "Makefile").read_text().count("\nsetup:") == 1
