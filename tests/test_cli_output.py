"""What the CLI prints: user text (names, paths, messages quoting a spec) is shown as written, never read
as Rich markup. Run in-process through Typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelpod.cli.app import app
from modelpod.cli.images import ConsoleReporter

LINK = "[link=https://example.com/x]click[/link]"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_a_spec_error_quoting_markup_is_printed_as_written(write_spec):
    path = write_spec(f"name: '{LINK}'\nmodel: {{path: model.onnx}}\n")
    code, _, stderr = invoke("validate", str(path))
    assert code == 2, stderr
    assert LINK in stderr
    # what the field takes, in words rather than pydantic's regular expression
    assert "lowercase letters, digits and '-'" in stderr
    assert "^[a-z0-9]" not in stderr
    assert "Traceback" not in stderr


def test_other_errors_exit_1_and_are_printed_as_written(tmp_path: Path, monkeypatch):
    from modelpod.cli import images
    from modelpod.images.errors import EngineNotFoundError

    def no_engine(name: str | None) -> None:
        raise EngineNotFoundError(f"container engine {name!r} is not installed")

    monkeypatch.setattr(images, "connect_engine", no_engine)
    (tmp_path / "model.onnx").write_bytes(b"")
    (tmp_path / "modelpod.yaml").write_text("name: demo\nmodel: {path: model.onnx}\n")
    code, _, stderr = invoke("run", str(tmp_path), "--engine", LINK)
    assert code == 1, stderr
    assert f"error: container engine {LINK!r} is not installed" in stderr


def test_success_lines_show_paths_as_written(tmp_path: Path):
    project = tmp_path / "[bold]proj"
    project.mkdir()
    (project / "model.onnx").write_bytes(b"")
    (project / "modelpod.yaml").write_text("name: demo\nmodel: {path: model.onnx}\n")
    code, stdout, stderr = invoke("validate", str(project))
    assert code == 0, stderr
    assert f"ok {project / 'modelpod.yaml'} (base)" in stdout


@pytest.mark.parametrize("method", ["event", "line"])
def test_build_output_is_printed_as_written(method: str, capsys):
    getattr(ConsoleReporter(), method)(f"tagged {LINK} and [red]not red[/red]")
    assert f"tagged {LINK} and [red]not red[/red]" in capsys.readouterr().err
