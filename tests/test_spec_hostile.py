"""Hostile and careless spec files: each is refused quickly with one issue naming the field, the line
and a hint, and every command exits 2 on it (never a traceback, a hang or gigabytes of memory)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelpod.cli.app import app
from modelpod.errors import SpecError, SpecIssue
from modelpod.specfile import load_spec
from modelpod.specfile._yaml import MAX_ALIASES, MAX_DEPTH, MAX_SPEC_BYTES

MINIMAL = "name: demo\nmodel:\n  path: model.onnx\n"
DIGEST = "sha256:" + "ab" * 32
BOMB = (
    "  options:\n"
    + '    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i > 1 else '*a'] * 9)}]\n" for i in range(1, 10))
)


def only_issue(path: Path, profile: str | None = None) -> SpecIssue:
    started = time.monotonic()
    with pytest.raises(SpecError) as caught:
        load_spec(path, profile, require_model=False)
    assert time.monotonic() - started < 10
    issues = caught.value.issues
    assert len(issues) == 1, [i.render() for i in issues]
    assert issues[0].hint, issues[0]
    return issues[0]


# the message of a value outside a field's pattern (its hint says in words what the field takes)
PATTERN_MISMATCH = "not a value this field takes"

# (spec text after MINIMAL's model: line, the issue's path, its line, a word of its message)
CASES = {
    "alias bomb": (BOMB, "model.options.l6[0]", 11, "every alias expanded"),
    "too many aliases": (
        "  options:\n    a: &a 1\n    b: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n",
        "model.options.b[100]",
        6,
        "more than 100 aliases",
    ),
    "recursive anchor": ("  options: &o\n    self: *o\n", "model.options.self", 5, "recursive"),
    "deep nesting": (
        "  options:\n    x: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n",
        "model.options.x" + "[0]" * (MAX_DEPTH - 3),
        5,
        "nesting deeper than 64",
    ),
    "5000-digit integer": ("server:\n  port: " + "9" * 5000 + "\n", "server.port", 5, "5000 digits"),
    "duplicate key": ("server: {port: 8000}\nserver: {port: 9000}\n", "server", 5, "appears twice"),
    "nested duplicate key": ("server:\n  port: 8000\n  port: 9000\n", "server.port", 6, "first on line 5"),
    "infinite timeout": ("server: {drain_timeout_s: .inf}\n", "server.drain_timeout_s", 4, "finite"),
    "nan timeout": ("server: {request_timeout_s: .nan}\n", "server.request_timeout_s", 4, "finite"),
    "newline in the base image": (
        'image: {base: "python:3.11-slim\\nRUN curl https://example.com/x | sh"}\n',
        "image.base",
        4,
        PATTERN_MISMATCH,
    ),
    "base image with a variable": ("image: {base: '${BASE}'}\n", "image.base", 4, PATTERN_MISMATCH),
    "repository with a space": ("image: {repository: 'a b'}\n", "image.repository", 4, PATTERN_MISMATCH),
    "shell in a system package": (
        "python:\n  system_packages: [curl, 'libgomp1; rm -rf /']\n",
        "python.system_packages[1]",
        5,
        PATTERN_MISMATCH,
    ),
    "option as a system package": (
        "python: {system_packages: [--allow-unauthenticated]}\n",
        "python.system_packages[0]",
        4,
        PATTERN_MISMATCH,
    ),
    "pip option as a requirement": (
        "python: {requirements: ['--index-url http://example.com/simple']}\n",
        "python.requirements[0]",
        4,
        PATTERN_MISMATCH,
    ),
    "newline in a requirement": (
        "python: {requirements: ['numpy\\n-r /etc/passwd']}\n",
        "python.requirements[0]",
        4,
        PATTERN_MISMATCH,
    ),
    "environment name": ("train: {env: {'A B': x}}\n", "train.env.A B", 4, "the key"),
    "NUL in an environment value": ('train: {env: {A: "x\\0y"}}\n', "train.env.A", 4, PATTERN_MISMATCH),
    "label value": (
        "kubernetes: {monitoring: {labels: {release: 'prom etheus'}}}\n",
        "kubernetes.monitoring.labels.release",
        4,
        PATTERN_MISMATCH,
    ),
    "pull secret": (
        "kubernetes: {image_pull_secrets: ['a b']}\n",
        "kubernetes.image_pull_secrets[0]",
        4,
        PATTERN_MISMATCH,
    ),
    "node selector": (
        "kubernetes: {gpu: {node_selector: {'bad key!': 'true'}}}\n",
        "kubernetes.gpu.node_selector.bad key!",
        4,
        "the key",
    ),
    "huge replica count": ("scaling: {max_replicas: 99999999999}\n", "scaling.max_replicas", 4, "less than"),
    "prometheus URL with a newline": (
        'scaling: {prometheus_url: "http://p:9090\\nx"}\n',
        "scaling.prometheus_url",
        4,
        PATTERN_MISMATCH,
    ),
    "output dir outside": ("train: {output_dir: ../elsewhere}\n", "train.output_dir", 4, "outside"),
    "example file outside": ("examples: [{file: ../secret.json}]\n", "examples[0].file", 4, "outside"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_hostile_value_is_one_clear_issue(write_spec, case):
    text, path, line, needle = CASES[case]
    issue = only_issue(write_spec(MINIMAL + text))
    assert issue.path == path
    assert issue.line == line
    assert needle in issue.message


def test_the_issue_names_the_bad_value(write_spec):
    issue = only_issue(write_spec(MINIMAL + "python: {system_packages: ['a;b']}\n"))
    assert issue.value == "a;b"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image: {base: %s}", "python"),
        ("image: {base: %s}", "python:3.11-slim"),
        ("image: {base: %s}", f"registry.example.com:5000/team/python:3.11-slim@{DIGEST}"),
        ("image: {base: %s}", f"localhost/python@{DIGEST}"),
        ("image: {repository: %s}", "127.0.0.1:5000/demo"),
        ("python: {system_packages: [%s]}", "libgomp1"),
        ("python: {system_packages: [%s]}", "libstdc++6"),
        ("python: {system_packages: [%s]}", "'curl=7.88.1-10+deb12u5'"),
        ("python: {requirements: [%s]}", "scikit-learn>=1.3"),
        ("python: {requirements: [%s]}", "torch==2.3.0+cpu"),
        ("python: {requirements: [%s]}", "\"foo[bar,baz]>=1,<2; python_version < '3.13'\""),
        ("python: {requirements: [%s]}", "'pkg @ https://example.com/pkg-1.0-py3-none-any.whl'"),
        ("train: {env: {%s: '1'}}", "OMP_NUM_THREADS"),
        ("kubernetes: {monitoring: {labels: {%s: prometheus}}}", "example.com/release"),
    ],
)
def test_ordinary_values_still_pass(write_spec, field, value):
    load_spec(write_spec(MINIMAL + field % value + "\n"), require_model=False)


def test_merge_keys_are_not_duplicates(write_spec):
    spec = load_spec(
        write_spec(
            MINIMAL
            + "server: &s {port: 9000, max_batch_size: 4}\n"
            + "profiles:\n  prod:\n    server:\n      <<: *s\n      port: 9001\n"
        ),
        "prod",
    )
    assert (spec.server.port, spec.server.max_batch_size) == (9001, 4)


def test_a_file_over_the_size_limit_is_refused_before_parsing(write_spec):
    path = write_spec(MINIMAL)
    with path.open("a") as stream:
        stream.write(("# padding\n" * 1024) * (MAX_SPEC_BYTES // 10240 + 1))
    issue = only_issue(path)
    assert (issue.path, issue.line) == ("", None)
    assert "larger than 1024 KiB" in issue.message


def test_bytes_that_are_not_utf8(write_spec):
    path = write_spec(MINIMAL)
    path.write_bytes(MINIMAL.encode() + b"description: caf\xe9\n")
    issue = only_issue(path)
    assert issue.line == 4
    assert "not UTF-8" in issue.message


def test_control_characters(write_spec):
    path = write_spec(MINIMAL + "description: a\x00b\n")
    issue = only_issue(path)
    assert issue.line == 4
    assert "#x0000" in issue.message


def test_a_model_path_outside_the_directory_is_refused_without_reading_it(write_spec, tmp_path):
    issue = only_issue(write_spec("name: demo\nmodel: {path: ../elsewhere/model.onnx}\n"))
    assert (issue.path, issue.line) == ("model.path", 2)
    assert "outside" in issue.message


def test_an_absolute_model_path_outside_the_directory(write_spec):
    issue = only_issue(write_spec("name: demo\nmodel: {path: /etc/passwd}\n"))
    assert issue.path == "model.path"


def test_a_model_path_that_is_a_link_out_of_the_directory(write_spec, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "model.onnx"
    outside.write_bytes(b"")
    path = write_spec("name: demo\nmodel: {path: linked.onnx}\n", model_file=None)
    (path.parent / "linked.onnx").symlink_to(outside)
    issue = only_issue(path)
    assert issue.path == "model.path"
    assert str(outside) in issue.message


def test_a_symlink_loop(write_spec):
    path = write_spec("name: demo\nmodel: {path: loop.onnx}\n", model_file=None)
    (path.parent / "loop.onnx").symlink_to("loop.onnx")
    issue = only_issue(path)
    assert issue.path == "model.path"


def test_a_profile_cannot_point_outside_either(write_spec):
    path = write_spec(MINIMAL + "profiles: {prod: {model: {path: ../x.onnx}}}\n")
    load_spec(path)  # the base is fine
    issue = only_issue(path, "prod")
    assert issue.path == "profiles.prod.model.path"
    assert issue.line == 4


def test_a_link_inside_the_directory_is_fine(write_spec):
    path = write_spec("name: demo\nmodel: {path: current.onnx}\n")
    (path.parent / "current.onnx").symlink_to("model.onnx")
    assert load_spec(path).model.path == path.parent / "model.onnx"


def test_an_example_file_over_the_body_limit(write_spec):
    path = write_spec(MINIMAL + "server: {max_body_bytes: 1KiB}\nexamples: [{file: big.json}]\n")
    (path.parent / "big.json").write_text(json.dumps({"inputs": {"x": [0.5] * 1000}}))
    issue = only_issue(path)
    assert issue.path == "examples[0].file"
    assert "max_body_bytes" in issue.message


def test_an_example_file_nested_too_deep(write_spec):
    path = write_spec(MINIMAL + "examples: [{file: deep.json}]\n")
    (path.parent / "deep.json").write_text('{"inputs": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    issue = only_issue(path)
    assert issue.path == "examples[0].file"


def test_profile_names_match_in_full(write_spec):
    issue = only_issue(write_spec(MINIMAL + 'profiles: {"prod\\n": {}}\n'))
    assert issue.path == "profiles"


# --- every command: exit 2 with the message, never a traceback ----------------------------------


@pytest.mark.parametrize("case", ["alias bomb", "recursive anchor", "duplicate key", "infinite timeout"])
@pytest.mark.parametrize("command", ["validate", "render"])
def test_commands_exit_2(write_spec, case, command):
    path = write_spec(MINIMAL + CASES[case][0])
    args = [command, str(path)] + (["--image", f"demo@{DIGEST}"] if command == "render" else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"{path}:{CASES[case][2]}: {CASES[case][1]}" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["validate", "render", "build"])
def test_every_command_refuses_a_model_outside(write_spec, command, monkeypatch):
    from modelpod.cli import images

    monkeypatch.setattr(images, "connect_engine", lambda name: pytest.fail("the spec was accepted"))
    path = write_spec("name: demo\nmodel: {path: ../model.onnx}\n")
    (path.parent.parent / "model.onnx").write_bytes(b"")
    args = [command, str(path)] + (["--image", f"demo@{DIGEST}"] if command == "render" else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"{path}:2: model.path" in result.stderr
