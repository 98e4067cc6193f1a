"""The PyTorch runtime against the eager nn.Module, for torch.export programs (.pt2) and TorchScript (.pt)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelpod.errors import ModelLoadError
from modelpod.runtimes import load_runtime
from modelpod.signature import Signature

MLP_SIGNATURE = Signature.model_validate(
    {
        "inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
        "outputs": [{"name": "output", "dtype": "float32", "shape": [3]}],
    }
)
TWO_INPUTS_SIGNATURE = Signature.model_validate(
    {
        "inputs": [
            {"name": "features", "dtype": "float32", "shape": [4]},
            {"name": "extra", "dtype": "float32", "shape": [3]},
        ],
        "outputs": [
            {"name": "output_0", "dtype": "float32", "shape": [2]},
            {"name": "output_1", "dtype": "float32", "shape": [2]},
        ],
    }
)


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(11, 4)).astype(np.float32)


def eager(module: torch.nn.Module, *arrays: np.ndarray) -> list[np.ndarray]:
    """The nn.Module's own outputs, computed eagerly: the reference for every comparison here."""
    with torch.no_grad():
        result = module(*(torch.from_numpy(a) for a in arrays))
    results = result if isinstance(result, tuple) else (result,)
    return [r.numpy() for r in results]


def test_exported_program_detects_its_signature_and_matches_eager(
    torch_mlp, torch_mlp_pt2, resolve, rows, assert_outputs_follow_signature
):
    runtime = load_runtime(resolve(torch_mlp_pt2, "torch"))

    # the input name comes from forward(self, x); the batch dimension was exported dynamic
    assert runtime.signature == MLP_SIGNATURE
    ours = runtime.predict({"x": rows})
    (theirs,) = eager(torch_mlp, rows)
    # The exported graph runs the same aten kernels as eager mode: float32 rounding only.
    np.testing.assert_allclose(ours["output"], theirs, rtol=0, atol=1e-6)
    assert_outputs_follow_signature(runtime.signature, ours, len(rows))


def test_exported_program_accepts_any_batch_size(torch_mlp, torch_mlp_pt2, resolve, rows):
    runtime = load_runtime(resolve(torch_mlp_pt2, "torch"))
    for size in (1, 5, 11):  # exported with an example of 2 rows
        (theirs,) = eager(torch_mlp, rows[:size])
        np.testing.assert_allclose(runtime.predict({"x": rows[:size]})["output"], theirs, rtol=0, atol=1e-6)


def test_torchscript_without_a_signature_is_refused_with_a_hint(torch_mlp_torchscript, resolve):
    with pytest.raises(ModelLoadError, match="does not describe its inputs and outputs") as caught:
        load_runtime(resolve(torch_mlp_torchscript, "torch"))
    assert "model.signature" in str(caught.value)


def test_torchscript_with_a_declared_signature_matches_eager(
    torch_mlp, torch_mlp_torchscript, resolve, rows, assert_outputs_follow_signature
):
    declared = {
        "inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [3]}],
    }
    runtime = load_runtime(resolve(torch_mlp_torchscript, "torch", signature=declared))

    assert runtime.signature == Signature.model_validate(declared)
    ours = runtime.predict({"x": rows})
    (theirs,) = eager(torch_mlp, rows)
    # The traced graph runs the same kernels: float32 rounding only.
    np.testing.assert_allclose(ours["logits"], theirs, rtol=0, atol=1e-6)
    assert_outputs_follow_signature(runtime.signature, ours, len(rows))


def test_two_inputs_and_two_outputs(torch_two_inputs, torch_two_inputs_pt2, resolve, rows):
    extra = np.random.default_rng(1).normal(size=(len(rows), 3)).astype(np.float32)
    runtime = load_runtime(resolve(torch_two_inputs_pt2, "torch"))

    # outputs of a program are unnamed: modelpod numbers them
    assert runtime.signature == TWO_INPUTS_SIGNATURE
    ours = runtime.predict({"features": rows, "extra": extra})
    combined, from_features = eager(torch_two_inputs, rows, extra)
    np.testing.assert_allclose(ours["output_0"], combined, rtol=0, atol=1e-6)  # float32 rounding only
    np.testing.assert_allclose(ours["output_1"], from_features, rtol=0, atol=1e-6)


def test_output_names_option_names_a_programs_outputs(torch_two_inputs, torch_two_inputs_pt2, resolve, rows):
    extra = np.random.default_rng(1).normal(size=(len(rows), 3)).astype(np.float32)
    model = resolve(torch_two_inputs_pt2, "torch", options={"output_names": ["combined", "from_features"]})
    runtime = load_runtime(model)

    assert [t.name for t in runtime.signature.outputs] == ["combined", "from_features"]
    ours = runtime.predict({"features": rows, "extra": extra})
    combined, from_features = eager(torch_two_inputs, rows, extra)
    np.testing.assert_allclose(ours["combined"], combined, rtol=0, atol=1e-6)  # float32 rounding only
    np.testing.assert_allclose(ours["from_features"], from_features, rtol=0, atol=1e-6)


def test_output_names_option_of_the_wrong_length_is_refused(torch_two_inputs_pt2, resolve):
    model = resolve(torch_two_inputs_pt2, "torch", options={"output_names": ["only_one"]})
    with pytest.raises(ModelLoadError, match="output_names has 1 names but the program returns 2 outputs"):
        load_runtime(model)


def test_declared_inputs_in_another_order_still_reach_the_right_arguments(
    torch_two_inputs, torch_two_inputs_pt2, resolve, rows
):
    # A spec may list inputs in any order (reconcile compares the names as sets), and requests are by
    # name, so the order of model.signature.inputs must not decide which tensor goes to which argument.
    extra = np.random.default_rng(1).normal(size=(len(rows), 3)).astype(np.float32)
    declared = {
        "inputs": [TWO_INPUTS_SIGNATURE.inputs[1].model_dump(), TWO_INPUTS_SIGNATURE.inputs[0].model_dump()],
        "outputs": [t.model_dump() for t in TWO_INPUTS_SIGNATURE.outputs],
    }
    runtime = load_runtime(resolve(torch_two_inputs_pt2, "torch", signature=declared))

    ours = runtime.predict({"features": rows, "extra": extra})
    combined, _ = eager(torch_two_inputs, rows, extra)
    np.testing.assert_allclose(ours["output_0"], combined, rtol=0, atol=1e-6)  # float32 rounding only


@pytest.mark.parametrize(
    ("input_tensor", "expected_message"),
    [
        ({"name": "input", "dtype": "float32", "shape": [4]}, r"inputs \['input'\] do not match .*\['x'\]"),
        (
            {"name": "x", "dtype": "float64", "shape": [4]},
            r"'x' is declared float64 but the model has float32",
        ),
        ({"name": "x", "dtype": "float32", "shape": [3]}, r"'x' has shape \[3\] but the model has \[4\]"),
    ],
    ids=["wrong-name", "wrong-dtype", "wrong-shape"],
)
def test_declared_signature_that_disagrees_with_the_program_is_refused(
    torch_mlp_pt2, resolve, input_tensor, expected_message
):
    declared = {"inputs": [input_tensor], "outputs": [{"name": "output", "dtype": "float32", "shape": [3]}]}
    with pytest.raises(ModelLoadError, match=expected_message):
        load_runtime(resolve(torch_mlp_pt2, "torch", signature=declared))


def test_warmup(torch_mlp_pt2, torch_mlp_torchscript, torch_two_inputs_pt2, resolve):
    runtimes = [
        load_runtime(resolve(torch_mlp_pt2, "torch")),
        load_runtime(resolve(torch_mlp_torchscript, "torch", signature=MLP_SIGNATURE)),
        load_runtime(resolve(torch_two_inputs_pt2, "torch")),
    ]
    for runtime in runtimes:
        assert runtime.warmup() is None
