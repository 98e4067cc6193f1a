"""modelpod.yaml: parse -> validate -> resolve, and one clear message per malformed field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from modelpod.errors import SpecError
from modelpod.specfile import json_schema, load_spec, spec_digest

MINIMAL = """
    name: demo
    model:
      path: model.onnx
"""


def issues_of(path: Path, profile: str | None = None) -> list:
    with pytest.raises(SpecError) as caught:
        load_spec(path, profile)
    return list(caught.value.issues)


def only_issue(path: Path, profile: str | None = None):
    issues = issues_of(path, profile)
    assert len(issues) == 1, [i.render() for i in issues]
    return issues[0]


def test_minimal_spec_resolves_with_defaults(write_spec):
    spec = load_spec(write_spec(MINIMAL))
    assert spec.name == "demo"
    assert spec.model.format == "onnx"  # detected from the suffix
    assert spec.model.path == (spec.root / "model.onnx")
    assert spec.model.path.is_absolute()
    assert spec.server.port == 8080
    assert spec.server.max_body_bytes is None  # the server derives it from resources.memory
    assert spec.image.repository == "demo"  # defaults to the name
    assert spec.image.base == "python:3.11-slim"
    assert spec.scaling.replicas == 1
    assert spec.profile is None


def test_resolved_spec_is_frozen(write_spec):
    spec = load_spec(write_spec(MINIMAL))
    with pytest.raises(ValueError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


def test_directory_or_file_both_work(write_spec):
    path = write_spec(MINIMAL)
    assert load_spec(path.parent) == load_spec(path)


def test_wrong_type_names_field_line_and_value(write_spec):
    path = write_spec(
        """
        name: demo
        model:
          path: model.onnx
        server:
          port: eighty
        """
    )
    issue = only_issue(path)
    assert issue.path == "server.port"
    assert issue.line == 5
    assert issue.value == "eighty"
    assert "integer" in issue.message


def test_unknown_key_suggests_the_right_one(write_spec):
    path = write_spec(
        """
        name: demo
        model:
          path: model.onnx
        server:
          max_batch: 4
        """
    )
    issue = only_issue(path)
    assert issue.path == "server.max_batch"
    assert issue.message == "unknown key 'max_batch'"
    assert issue.hint == "did you mean 'max_batch_size'?"
    assert issue.line == 5


def test_unknown_top_level_key(write_spec):
    issue = only_issue(write_spec(MINIMAL + "    sever: {port: 1}\n"))
    assert issue.path == "sever"
    assert issue.hint == "did you mean 'server'?"


def test_missing_model_file(write_spec):
    path = write_spec(MINIMAL, model_file=None)
    issue = only_issue(path)
    assert issue.path == "model.path"
    assert "not found" in issue.message
    assert str(path.parent / "model.onnx") in issue.message
    assert "train or export" in issue.hint
    assert issue.line == 3
    # the same spec is fine for tasks that do not need the file
    assert load_spec(path, require_model=False).model.format == "onnx"


def test_unknown_profile_lists_known_ones(write_spec):
    path = write_spec(MINIMAL + "    profiles:\n      canary: {}\n")
    issue = only_issue(path, profile="canery")
    assert issue.message == "unknown profile 'canery'"
    assert "did you mean 'canary'?" in issue.hint
    assert "dev, prod, staging" in issue.hint.replace("canary, ", "")


@pytest.mark.parametrize(
    ("signature", "path", "needle"),
    [
        ("{name: x, dtype: float, shape: [4]}", "model.signature.inputs[0].dtype", "did you mean 'float32'?"),
        ("{name: x, dtype: float32, shape: [0]}", "model.signature.inputs[0].shape", "dimension 0"),
        ("{name: x, dtype: float32, shape: four}", "model.signature.inputs[0].shape", "tuple"),
        ("{dtype: float32, shape: [4]}", "model.signature.inputs[0].name", "required field is missing"),
        (
            "{name: x, dtype: float32, shape: [4], color: red}",
            "model.signature.inputs[0].color",
            "unknown key",
        ),
    ],
)
def test_bad_signature_names_the_tensor_field(write_spec, signature, path, needle):
    spec = write_spec(
        f"""
        name: demo
        model:
          path: model.onnx
          signature:
            inputs:
              - {signature}
            outputs:
              - {{name: y, dtype: float32, shape: [2]}}
        """
    )
    issue = only_issue(spec)
    assert issue.path == path
    assert needle in issue.render()
    assert issue.line == 6


def test_duplicate_tensor_names(write_spec):
    spec = write_spec(
        """
        name: demo
        model:
          path: model.onnx
          signature:
            inputs: [{name: x, dtype: float32}, {name: x, dtype: int64}]
            outputs: [{name: y, dtype: float32}]
        """
    )
    issue = only_issue(spec)
    assert issue.path == "model.signature"
    assert "repeated: x" in issue.message


def test_several_problems_are_reported_together(write_spec):
    spec = write_spec(
        """
        name: Demo_Model
        model:
          path: model.onnx
        server: {port: 70000, max_queue: 0}
        """
    )
    paths = sorted(i.path for i in issues_of(spec))
    assert paths == ["name", "server.max_queue", "server.port"]


def test_yaml_syntax_error_has_a_line(write_spec):
    issue = only_issue(write_spec("name: demo\nmodel:\n  path: [model.onnx\n"))
    assert issue.message.startswith("not valid YAML")
    assert issue.line is not None


@pytest.mark.parametrize(("text", "needle"), [("", "empty"), ("- a\n- b\n", "mapping")])
def test_empty_or_non_mapping_file(write_spec, text, needle):
    assert needle in only_issue(write_spec(text)).message


def test_no_spec_in_directory(tmp_path):
    issue = only_issue(tmp_path)
    assert "no modelpod.yaml" in issue.message
    assert "modelpod init" in issue.hint


def test_undetectable_format_asks_for_one(write_spec):
    path = write_spec("name: demo\nmodel:\n  path: weights.bin\n", model_file="weights.bin")
    issue = only_issue(path)
    assert issue.path == "model.format"
    assert "onnx" in issue.hint


def test_custom_class_needs_signature(write_spec):
    issue = only_issue(write_spec('name: demo\nmodel:\n  class: "my_model:Model"\n', model_file=None))
    assert issue.path == "model.signature"


def test_class_must_look_like_module_colon_class(write_spec):
    issue = only_issue(write_spec('name: demo\nmodel:\n  class: "my_model.Model"\n', model_file=None))
    assert issue.path == "model.class"
    assert issue.value == "my_model.Model"


def test_builtin_prod_profile_defaults_to_three_replicas(write_spec):
    path = write_spec(MINIMAL)
    assert load_spec(path, "prod").scaling.replicas == 3
    assert load_spec(path, "dev").scaling.replicas == 1
    assert load_spec(path).scaling.replicas == 1


def test_profile_merges_onto_base_and_file_overrides_builtin(write_spec):
    path = write_spec(
        """
        name: demo
        model:
          path: model.onnx
        server: {max_batch_size: 8, port: 9000}
        resources: {cpu: "1", memory: 1Gi}
        profiles:
          prod:
            server: {max_batch_size: 64}
            resources: {memory: 4Gi}
            scaling: {replicas: 5}
          staging:
            server: {port: null}
        """
    )
    prod = load_spec(path, "prod")
    assert prod.profile == "prod"
    assert prod.server.max_batch_size == 64
    assert prod.server.port == 9000  # untouched keys of a section stay
    assert (prod.resources.cpu, prod.resources.memory) == ("1", "4Gi")
    assert prod.scaling.replicas == 5
    assert prod.scaling.min_replicas == 3  # still the built-in prod default
    assert load_spec(path, "staging").server.port == 8080  # null restores the default


def test_error_inside_a_profile_points_into_the_profile(write_spec):
    path = write_spec(
        """
        name: demo
        model:
          path: model.onnx
        profiles:
          prod:
            server:
              port: high
        """
    )
    load_spec(path)  # the base is fine
    issue = only_issue(path, "prod")
    assert issue.path == "profiles.prod.server.port"
    assert issue.line == 7


def test_profile_cannot_rename(write_spec):
    issue = only_issue(write_spec(MINIMAL + "    profiles:\n      prod: {name: other}\n"), "prod")
    assert issue.path == "profiles.prod.name"


def test_replicas_out_of_order(write_spec):
    issue = only_issue(write_spec(MINIMAL + "    scaling: {min_replicas: 4, max_replicas: 2}\n"))
    assert issue.path == "scaling"
    assert "min_replicas (4) is above max_replicas (2)" in issue.message


def test_example_file_is_read_and_checked_against_the_signature(write_spec):
    path = write_spec(
        """
        name: demo
        model:
          path: model.onnx
          signature:
            inputs: [{name: x, dtype: float32, shape: [2]}]
            outputs: [{name: y, dtype: float32, shape: []}]
        examples:
          - {name: good, file: good.json}
          - {name: inline, inputs: {x: [1, 2]}, expected: {y: 3}}
        """
    )
    (path.parent / "good.json").write_text(json.dumps({"inputs": {"x": [1.0, 2.0]}, "expected": {"y": 3.0}}))
    spec = load_spec(path)
    assert [e.name for e in spec.examples] == ["good", "inline"]
    assert spec.examples[0].inputs == {"x": [1.0, 2.0]}

    (path.parent / "good.json").write_text(json.dumps({"inputs": {"x": [1.0, 2.0, 3.0]}}))
    issue = only_issue(path)
    assert issue.path == "examples[0].inputs"
    assert "wrong shape" in issue.message


def test_missing_example_file(write_spec):
    issue = only_issue(write_spec(MINIMAL + "    examples: [{file: nowhere.json}]\n"))
    assert issue.path == "examples[0].file"
    assert issue.value == "nowhere.json"


def test_example_needs_inputs_or_file(write_spec):
    issue = only_issue(write_spec(MINIMAL + "    examples: [{name: empty}]\n"))
    assert issue.path == "examples[0]"


def test_error_text_is_complete_for_a_person(write_spec):
    path = write_spec(MINIMAL + "    server: {max_batch: 4}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: 1 problem\n")
    assert f"{path}:4: server.max_batch: unknown key 'max_batch'" in text
    assert "Hint: did you mean 'max_batch_size'?" in text


def test_digest_is_stable_and_tracks_content(write_spec):
    path = write_spec(MINIMAL)
    first = spec_digest(load_spec(path))
    assert first == spec_digest(load_spec(path))
    assert first.startswith("sha256:")
    path.write_text(path.read_text() + "server: {port: 9000}\n")
    assert spec_digest(load_spec(path)) != first


def test_schema_validates_the_examples_and_rejects_typos():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    root = Path(__file__).resolve().parents[1] / "examples"
    for spec in sorted(root.glob("*/modelpod.yaml")):
        data = yaml.safe_load(spec.read_text())
        assert not list(validator.iter_errors(data)), spec
    assert list(validator.iter_errors({"name": "x", "model": {"path": "m.onnx"}, "sever": {}}))


def test_every_key_of_the_schema_has_a_description():
    """`modelpod schema` and the docs describe every key: a property without a description fails here."""
    schema = json_schema()
    missing = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                if "description" not in prop:
                    missing.append(f"{path}.{name}")
            for key, value in node.items():
                visit(value, f"{path}.{key}" if key not in ("properties", "$defs") else path)
        elif isinstance(node, list):
            for item in node:
                visit(item, path)

    visit(schema, "")
    assert len(schema["properties"]) > 10  # the schema was walked, not an empty one
    assert missing == [], f"keys without a description: {missing}"
