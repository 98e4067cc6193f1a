"""The `optimized` profile written into modelpod.yaml as text: comments and order kept, a previous one
replaced, the result checked before it replaces the file."""

from __future__ import annotations

import pytest

from modelpod.optimize.profile import loosened_atol, write_profile
from modelpod.specfile import load_spec

BASE = """\
# the digits model
name: digits  # a comment that must stay
model:
  path: model.onnx
"""


@pytest.fixture
def spec_with_optimized_model(write_spec):
    def write(text: str):
        path = write_spec(text)
        (path.parent / "opt").mkdir()
        (path.parent / "opt" / "model.onnx").write_bytes(b"")
        return path

    return write


def test_a_spec_without_profiles_gets_the_section(spec_with_optimized_model):
    path = spec_with_optimized_model(BASE)
    write_profile(path, "opt", "written by a test", None)
    assert path.read_text() == BASE + (
        "profiles:\n"
        "  optimized:  # written by a test\n"
        "    model:\n"
        "      path: opt\n"
        "      format: onnx\n"
        "      options: null\n"
    )
    assert load_spec(path, "optimized").model.path == path.parent / "opt"


def test_an_earlier_optimized_profile_is_replaced_and_the_others_kept(spec_with_optimized_model):
    path = spec_with_optimized_model(
        BASE
        + "profiles:\n"
        + "    optimized:  # old\n"
        + "        model: {path: old}\n"
        + "    # prod runs bigger\n"
        + "    prod:\n"
        + "        resources: {cpu: '2'}\n"
        + "examples: []  # after the profiles\n"
    )
    write_profile(path, "opt", "new", [{"name": "seven", "inputs": {"x": 1}, "atol": 0.01}])
    text = path.read_text()
    assert "# old" not in text
    assert "path: old" not in text
    assert "    # prod runs bigger\n    prod:\n        resources: {cpu: '2'}\n" in text
    assert text.endswith("examples: []  # after the profiles\n")
    assert "    optimized:  # new\n      model:\n        path: opt\n" in text
    assert load_spec(path, "prod").resources.cpu == "2"


def test_profiles_in_flow_style_stay_in_flow_style(spec_with_optimized_model):
    path = spec_with_optimized_model(BASE + "profiles: {prod: {resources: {cpu: '2'}}}  # kept\n")
    write_profile(path, "opt", "new", None)
    assert path.read_text() == BASE + (
        "profiles: {prod: {resources: {cpu: '2'}}, "
        "optimized: {model: {path: opt, format: onnx, options: null}}}  # kept\n"
    )
    assert load_spec(path, "optimized").model.path == path.parent / "opt"
    assert load_spec(path, "prod").resources.cpu == "2"


@pytest.mark.parametrize(
    ("atol", "difference", "expected"),
    [(1e-4, 1e-5, 1e-4), (1e-4, 0.0114, 0.023), (1e-4, 0.002, 0.004), (0.5, 0.1, 0.5)],
)
def test_a_loosened_tolerance_covers_twice_the_difference(atol, difference, expected):
    assert loosened_atol(atol, difference) == pytest.approx(expected)
