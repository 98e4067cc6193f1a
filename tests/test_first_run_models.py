"""Models saved the ways users save them (issue 21): `modelpod init` says at once what cannot be served,
`validate` refuses the placeholders init had to write, and an ONNX graph with a fixed batch size is
served in batches of that size. Commands run as a user runs them (a subprocess); servers on a real socket."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server_process import ServerProcess
from tests.test_cli import modelpod

WAIT = 30


# a user's training script: a small PyTorch model, saved as argv[1] says
_SAVE_MLP = """
import sys
import torch

class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.layer(x).softmax(-1)

torch.manual_seed(0)
model = MLP().eval()
how, path = sys.argv[1:]
if how == "state_dict":
    torch.save(model.state_dict(), path)
elif how == "module":
    torch.save(model, path)
else:
    torch.jit.save(torch.jit.script(model), path)
    print(model(torch.tensor([[1.0, 2, 3, 4]])).detach().numpy()[0].tolist())
"""


def save_mlp(how: str, path: Path) -> str:
    script = path.parent / "train.py"  # a file: TorchScript reads the class's source
    script.write_text(_SAVE_MLP)
    result = subprocess.run(
        [sys.executable, str(script), how, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize(
    ("save", "what"),
    [
        ("state_dict", "is a state_dict saved with torch.save(model.state_dict())"),
        ("module", "is a whole module pickled with torch.save(model)"),
    ],
)
def test_init_refuses_a_torch_save_pickle_and_says_how_to_save(tmp_path, save, what):
    save_mlp(save, tmp_path / "model.pt")
    result = modelpod("init", "model.pt", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"model.pt {what}" in result.stderr
    assert "which cannot be served" in result.stderr
    assert "torch.export.save(torch.export.export(model" in result.stderr
    assert "torch.jit.save(torch.jit.script(model)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "modelpod.yaml").exists()


def test_a_torchscript_placeholder_signature_is_refused_until_declared(tmp_path):
    expected = json.loads(save_mlp("torchscript", tmp_path / "model.pt"))
    result = modelpod("init", "model.pt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "declare model.signature by hand" in result.stderr
    for command in (["validate"], ["predict"]):
        refused = modelpod(*command, cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert "model.signature: a placeholder written by `modelpod init`" in refused.stderr
        assert "Traceback" not in refused.stderr

    spec = tmp_path / "modelpod.yaml"
    text = spec.read_text()
    lines = [line for line in text.splitlines() if "PLACEHOLDER (modelpod init)" not in line]
    declared = "\n".join(lines).replace(
        "{name: input, dtype: float32, shape: [-1]}", "{name: x, dtype: float32, shape: [4]}"
    )
    spec.write_text(
        declared.replace(
            "{name: output, dtype: float32, shape: [-1]}", "{name: p, dtype: float32, shape: [3]}"
        )
    )
    assert modelpod("validate", cwd=tmp_path).returncode == 0
    predicted = modelpod("predict", "--input", '{"x": [1, 2, 3, 4]}', cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    np.testing.assert_allclose(json.loads(predicted.stdout)["outputs"]["p"], expected, rtol=1e-6)

    wrong = modelpod("predict", "--input", '{"x": [[1, 2, 3, 4]]}', cwd=tmp_path)  # one dim too many
    assert wrong.returncode == 1
    assert "Traceback" not in wrong.stderr


def fixed_batch_onnx(path: Path, batch: int = 2) -> Path:
    """An ONNX graph y = x + [1, 2, 3] whose batch dimension is fixed at `batch`, made with onnx's helper,
    with an unused initializer that makes ONNX Runtime log a warning when it loads the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        "fixed-batch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [
            numpy_helper.from_array(np.array([1, 2, 3], dtype=np.float32), "bias"),
            numpy_helper.from_array(np.zeros(4, dtype=np.float32), "unused"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def fixed_batch_project(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fixed-batch")
    fixed_batch_onnx(directory / "model.onnx")
    result = modelpod("init", "model.onnx", cwd=directory)
    assert result.returncode == 0, result.stderr
    assert "the graph fixes its batch size at 2: requests run in batches of 2" in result.stderr
    assert "the graph fixes its batch size at 2" in (directory / "modelpod.yaml").read_text()
    return directory


def test_a_fixed_batch_onnx_model_predicts_one_item(fixed_batch_project):
    assert modelpod("validate", cwd=fixed_batch_project).returncode == 0
    result = modelpod("predict", "--input", '{"x": [1, 1, 1]}', cwd=fixed_batch_project)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["y"] == [2.0, 3.0, 4.0]


def test_a_fixed_batch_onnx_model_serves_any_number_and_logs_only_json(fixed_batch_project):
    rows = [[float(i), 0.0, -1.0] for i in range(5)]  # 5 rows: batches of 2, 2 and 1 padded
    with ServerProcess(fixed_batch_project) as server:
        response = httpx.post(
            f"{server.url}/predict", json={"instances": [{"x": row} for row in rows]}, timeout=WAIT
        )
        assert response.status_code == 200, response.text
        got = [p["y"] for p in response.json()["predictions"]]
        np.testing.assert_allclose(got, np.asarray(rows) + np.array([1, 2, 3]))
    lines = [line for line in server.log.splitlines() if line.strip()]
    assert lines
    for line in lines:  # ONNX Runtime's "Removing initializer 'unused'" warning is not among them
        assert isinstance(json.loads(line), dict), f"not a JSON log line: {line!r}"
