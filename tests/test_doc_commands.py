"""The `modelpod` commands in the README's and docs' shell blocks are commands the CLI takes.

Every `modelpod ...` line of a fenced block marked bash, sh, shell or console is parsed by the real
command line (Typer's click group): the verb exists, every option is spelled as the CLI spells it, and
required arguments are there. Placeholders the docs use for what only the reader knows (REGISTRY,
REPOSITORY@sha256:..., REF) are replaced with well-formed values first. Those that need nothing beyond
this machine and the bundled examples (validate, render, schema, predict in process, on a bundled
example) are also run, and must exit 0. Synopsis blocks (no language, with [OPTIONAL] parts) are not
commands and are left alone.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer._click.exceptions import UsageError  # Typer's own copy of click, which its commands raise

from modelpod.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DIGEST = "sha256:" + "0" * 64
PLACEHOLDERS = [
    (re.compile(r"\bREPOSITORY@sha256:\S*"), f"127.0.0.1:5000/digits@{DIGEST}"),
    (re.compile(r"\bREGISTRY/(\w+)@sha256:\S*"), rf"127.0.0.1:5000/\1@{DIGEST}"),
    (re.compile(r"\bREGISTRY/"), "127.0.0.1:5000/"),
    (re.compile(r"(?<=\s)REF\b"), f"127.0.0.1:5000/digits@{DIGEST}"),
]
# verbs that read only the spec and the bundled examples: run for real, from the repository root
RUNNABLE = {"validate", "render", "schema", "predict"}


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every `modelpod` command line in a shell block."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in SHELL_BLOCK.finditer(text):
            first_line = text.count("\n", 0, block.start(1)) + 1
            lines = block.group(1).replace("\\\n", " ").splitlines()
            for offset, line in enumerate(lines):
                for command in line.removeprefix("$ ").split(" ; "):
                    words = shlex.split(_filled(command), comments=True)
                    if words and words[-1] == "&":  # started in the background: the command is the same
                        words.pop()
                    if words and Path(words[0]).name == "modelpod":
                        found.append((f"{path.relative_to(ROOT)}:{first_line + offset}", words[1:]))
    return found


def _filled(command: str) -> str:
    for pattern, value in PLACEHOLDERS:
        command = pattern.sub(value, command)
    return command


COMMANDS = documented_commands()


def test_the_docs_have_commands_to_check():
    verbs = {argv[0] for _, argv in COMMANDS}
    assert {"init", "serve", "build", "render", "deploy", "rollback"} <= verbs, verbs


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_a_documented_command_parses(where, argv):
    group = typer.main.get_command(app)
    try:
        with group.make_context("modelpod", list(argv)) as context:
            name, command, rest = group.resolve_command(context, [*context._protected_args, *context.args])
            assert command is not None, f"{where}: no command {name!r}"
            command.make_context(name, rest, parent=context)
    except UsageError as exc:
        pytest.fail(f"{where}: `modelpod {shlex.join(argv)}`: {exc.format_message()}")


# those that name a bundled example (the Quickstart's run in a user's own project directory)
RUNS = [
    (where, argv)
    for where, argv in COMMANDS
    if argv[0] in RUNNABLE and "--url" not in argv and any(a.startswith("examples/") for a in argv)
]


@pytest.mark.parametrize(("where", "argv"), RUNS, ids=[where for where, _ in RUNS])
def test_a_documented_local_command_runs(where, argv, digits_dir, tmp_path):
    if "-o" in argv or "--output" in argv:  # write into the test's directory, not the repository
        index = argv.index("-o") if "-o" in argv else argv.index("--output")
        argv = [*argv[: index + 1], str(tmp_path / "out"), *argv[index + 2 :]]
    run = subprocess.run(
        [sys.executable, "-m", "modelpod", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    command = f"modelpod {shlex.join(argv)}"
    assert run.returncode == 0, f"{where}: `{command}` exited {run.returncode}:\n{run.stderr}"
