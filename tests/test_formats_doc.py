"""docs/formats.md's snippets as a user runs them: each saves a model the way its framework does, then
`modelpod init`, `validate` and `predict` (the spec's example, in-process) must work on the file it saved
(the three commands run in one process, one after the other, see `commands`).
The TorchScript one must first be refused, until the doc's signature replaces init's placeholder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOC = ROOT / "docs" / "formats.md"
SNIPPET = re.compile(r"```python\n# saves: (\S+)\n(.*?)```", re.DOTALL)


def snippets() -> dict[str, str]:
    """What each snippet saves -> its code."""
    return dict(SNIPPET.findall(DOC.read_text(encoding="utf-8")))


def declared_signature() -> str:
    """The doc's YAML block: the signature to declare for the TorchScript model."""
    block = re.search(r"```yaml\n(  signature:\n.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert block is not None, "docs/formats.md should show the signature to declare for TorchScript"
    return block.group(1)


def test_the_doc_has_a_snippet_for_every_framework():
    saved = set(snippets())
    assert saved == {
        "model.skops",
        "model.joblib",
        "model.pkl",
        "model.pt2",
        "model.pt",
        "model.keras",
        "saved_model",
        "sentiment",
    }


@pytest.mark.slow
@pytest.mark.parametrize("saved", sorted(snippets()))
def test_a_snippet_saves_a_model_that_modelpod_serves(tmp_path: Path, saved: str):
    (tmp_path / "save.py").write_text(snippets()[saved], encoding="utf-8")  # a file: TorchScript reads source
    run = subprocess.run(
        [sys.executable, "save.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, f"the snippet for {saved} failed:\n{run.stdout}\n{run.stderr}"
    assert (tmp_path / saved).exists()

    if saved == "model.pt":  # TorchScript: refused until the signature is declared, as the doc says
        init, refused = commands(tmp_path, ["init", saved], ["validate"])
        assert init.returncode == 0, init.stderr
        assert refused.returncode == 2
        assert "a placeholder written by `modelpod init`" in refused.stderr
        declare(tmp_path / "modelpod.yaml", declared_signature())
        # init wrote no example beside a placeholder signature
        validated, predicted = commands(tmp_path, ["validate"], ["predict", "--input", '{"x": [1, 2, 3, 4]}'])
    else:
        init, validated, predicted = commands(tmp_path, ["init", saved], ["validate"], ["predict"])
        assert init.returncode == 0, init.stderr
        assert "\nexamples:" in (tmp_path / "modelpod.yaml").read_text()  # init wrote one to predict
    assert validated.returncode == 0, validated.stderr
    assert predicted.returncode == 0, predicted.stderr


# Runs modelpod commands one after the other in one Python process, each as `modelpod` itself runs it
# (its `main`; the exit code from SystemExit): the framework is imported once rather than once per
# command, which took this file from 144 to 80 seconds (the Keras snippet: 34 to 15).
_COMMANDS = """
import contextlib, io, json, sys
from modelpod.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


def commands(cwd: Path, *argvs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    run = subprocess.run(
        [sys.executable, "-c", _COMMANDS, json.dumps(argvs)],
        cwd=cwd, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return [
        subprocess.CompletedProcess(argv, r["code"], r["stdout"], r["stderr"])
        for argv, r in zip(argvs, json.loads(run.stdout), strict=True)
    ]


def declare(spec: Path, signature: str) -> None:
    """Put `signature` in place of init's placeholder signature and its PLACEHOLDER comment."""
    lines = spec.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "PLACEHOLDER (modelpod init)" in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("server:"))
    spec.write_text("".join([*lines[:start], signature, *lines[end:]]))
