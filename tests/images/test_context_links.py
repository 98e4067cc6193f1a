"""Symlinks in the spec's directory: a link that leaves it never brings a file from outside into the
build context (and so into the image). The build refuses and names each link, or, with
--keep-symlinks, keeps them as links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelpod import __version__
from modelpod.cli.app import app
from modelpod.images.context import ContextOptions, render_context
from modelpod.images.errors import BuildContextError
from modelpod.specfile import load_spec

WHEEL = f"modelpod-{__version__}-py3-none-any.whl"
SECRET = b"root:$6$secret-hash:19000:0:99999:7:::\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A spec directory beside a directory of secrets it must not take into the image."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shadow").write_bytes(SECRET)
    (tmp_path / "outside" / "keys").mkdir()
    (tmp_path / "outside" / "keys" / "id_rsa").write_bytes(SECRET)
    spec_dir = tmp_path / "app"
    (spec_dir / "model").mkdir(parents=True)
    (spec_dir / "model" / "m.onnx").write_bytes(b"onnx")
    (spec_dir / "helper.py").write_text("X = 1\n")
    (spec_dir / "modelpod.yaml").write_text("name: m\nmodel:\n  path: model/m.onnx\n")
    (tmp_path / WHEEL).write_bytes(b"a wheel")
    return spec_dir


def render(spec_dir: Path, **options: object):
    wheel = spec_dir.parent / WHEEL
    return render_context(load_spec(spec_dir), ContextOptions(modelpod_wheel=wheel, **options))  # type: ignore[arg-type]


def context_holds(spec_dir: Path, data: bytes) -> list[str]:
    found = []
    for current, _dirs, names in os.walk(spec_dir / ".modelpod" / "build"):
        for name in names:
            path = Path(current) / name
            if not path.is_symlink() and path.read_bytes() == data:
                found.append(str(path))
    return found


def test_a_link_to_a_file_outside_is_refused_and_named(project: Path) -> None:
    (project / "shadow").symlink_to(project.parent / "outside" / "shadow")
    with pytest.raises(BuildContextError) as caught:
        render(project)
    message = str(caught.value)
    assert f"shadow -> {project.parent / 'outside' / 'shadow'}" in message
    assert "--keep-symlinks" in message
    assert context_holds(project, SECRET) == []


def test_a_relative_link_out_and_a_linked_directory_out_are_refused(project: Path) -> None:
    (project / "up").symlink_to("../outside/shadow")
    (project / "keys").symlink_to(project.parent / "outside" / "keys")
    with pytest.raises(BuildContextError) as caught:
        render(project)
    assert "up -> ../outside/shadow" in str(caught.value)
    assert f"keys -> {project.parent / 'outside' / 'keys'}" in str(caught.value)


def test_a_link_out_inside_the_model_directory_is_refused(project: Path) -> None:
    (project / "model" / "m.onnx").unlink()
    (project / "modelpod.yaml").write_text("name: m\nmodel:\n  path: model\n  format: onnx\n")
    (project / "model" / "model.onnx").write_bytes(b"onnx")
    (project / "model" / "tokenizer.json").symlink_to(project.parent / "outside" / "shadow")
    with pytest.raises(BuildContextError, match=r"model/tokenizer\.json -> "):
        render(project)


def test_keep_symlinks_keeps_them_as_links_and_copies_nothing_from_outside(project: Path) -> None:
    (project / "shadow").symlink_to("/etc/shadow")
    (project / "keys").symlink_to(project.parent / "outside" / "keys")
    context = render(project, keep_symlinks=True)
    assert str((context.directory / "code" / "shadow").readlink()) == "/etc/shadow"
    assert str((context.directory / "code" / "keys").readlink()) == str(project.parent / "outside" / "keys")
    assert context_holds(project, SECRET) == []
    assert any("kept as symlinks" in note and "shadow -> /etc/shadow" in note for note in context.notes)
    # and back to a regular build once the links are gone
    (project / "shadow").unlink()
    (project / "keys").unlink()
    context = render(project)
    assert not (context.directory / "code" / "shadow").exists()
    assert not (context.directory / "code" / "keys").is_symlink()


def test_links_that_stay_inside_are_copied_as_before(project: Path) -> None:
    (project / "alias.py").symlink_to("helper.py")
    context = render(project)
    assert (context.directory / "code" / "alias.py").read_text() == "X = 1\n"
    assert not (context.directory / "code" / "alias.py").is_symlink()


def test_a_broken_link_is_left_out_with_a_note(project: Path) -> None:
    (project / "gone.py").symlink_to("nowhere.py")
    context = render(project)
    assert not (context.directory / "code" / "gone.py").exists()
    assert any("gone.py" in note for note in context.notes)


def test_build_refuses_before_it_needs_an_engine(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelpod.cli import images
    from modelpod.images.engine import Engine

    (project / "shadow").symlink_to(project.parent / "outside" / "shadow")
    monkeypatch.setattr(images, "connect_engine", lambda name: Engine("docker", "/bin/false"))
    result = CliRunner().invoke(app, ["build", str(project)])
    assert result.exit_code == 1, result.output
    assert "shadow -> " in result.stderr
    assert "--keep-symlinks" in result.stderr


def test_build_keep_symlinks_option_reaches_the_context(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelpod.cli import images
    from modelpod.images import pipeline
    from modelpod.images.engine import Engine

    seen = []

    def stop_after_context(engine, spec, options, reporter):  # type: ignore[no-untyped-def]
        seen.append(options.context.keep_symlinks)
        raise BuildContextError("stop here")

    (project / "shadow").symlink_to(project.parent / "outside" / "shadow")
    monkeypatch.setattr(images, "connect_engine", lambda name: Engine("docker", "/bin/false"))
    monkeypatch.setattr(pipeline, "build_image", stop_after_context)
    result = CliRunner().invoke(app, ["build", str(project), "--keep-symlinks"])
    assert result.exit_code == 1, result.output
    assert seen == [True]


def test_a_build_arg_name_cannot_add_a_dockerfile_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelpod.cli import images

    monkeypatch.setattr(images, "connect_engine", lambda name: pytest.fail("the argument was accepted"))
    result = CliRunner().invoke(app, ["build", str(project), "--build-arg", "X\nRUN curl example.com"])
    assert result.exit_code == 2, result.output
    assert "--build-arg" in result.stderr
    assert "is not a variable" in result.stderr
