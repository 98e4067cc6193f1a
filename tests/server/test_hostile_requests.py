"""Requests a careless or hostile client sends: each is a 4xx naming the field, never a 500 or a wrong 200.

In-process (httpx.ASGITransport) on the digits model, and on small models of the test's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpod.specfile import load_spec
from modelpod.specfile.resolved import Spec
from tests.server.conftest import with_server
from tests.server.test_app import serving

pytestmark = pytest.mark.anyio

IMAGE = [[[0.5]] * 8] * 8  # one digits item, float32[8, 8, 1]
FLAT = [0.5] * 64


def v2(entry: dict[str, Any] | None = None, **body: Any) -> dict[str, Any]:
    """A v2 request for one digits image, with the input entry's fields and the body's replaced."""
    image = {"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": FLAT, **(entry or {})}
    return {"inputs": [image], **body}


@pytest.fixture
def digits_spec(digits_dir) -> Spec:
    return load_spec(digits_dir)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"inputs": {"image": [[[1e308]] * 8] * 8}},
            "input 'image': value out of range; "
            "expected finite float32 numbers within ±3.403e+38, got 1e+308",
        ),
        (
            {"inputs": {"image": [[[True]] * 8] * 8}},
            "input 'image': wrong dtype; expected float32 numbers, got booleans",
        ),
        (
            {"inputs": {"image": [[["nan"]] * 8] * 8}},
            "input 'image': wrong dtype; expected float32 numbers, got strings",
        ),
        (
            {"inputs": {"image": [[[0.5]] * 8] * 7 + [[[0.5]] * 7]}},
            "input 'image': ragged nested lists; expected lists of equal length at each level",
        ),
    ],
    ids=["float32-overflow", "booleans", "nan-string", "ragged"],
)
async def test_predict_values_that_would_change_the_answer_are_422(digits_spec, body, message):
    async with serving(digits_spec) as client:
        response = await client.post("/predict", json=body)
    assert (response.status_code, response.json()) == (422, {"error": message})


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (v2({"data": [1e308] * 64}), 422, "input 'image': value out of range"),
        (
            v2({"data": ["nan"] * 64}),
            422,
            "input 'image': wrong dtype; expected float32 numbers, got strings",
        ),
        (
            v2({"data": [True] * 64}),
            422,
            "input 'image': wrong dtype; expected float32 numbers, got booleans",
        ),
        (v2(outputs=5), 400, 'outputs must be a list of {"name": ...} objects, not a number'),
        (v2(outputs=[{"name": "probabilities", "parameters": []}]), 400, "outputs[0].parameters must be"),
        (v2(outputs=[{"name": "nope"}]), 400, "outputs[0].name: unknown output 'nope'"),
        (v2(parameters=[1]), 400, "parameters must be an object, not a list"),
        (v2(parameters={"binary_data_output": "yes"}), 400, "parameters.binary_data_output must be"),
        (v2({"parameters": "binary"}), 400, "inputs[0].parameters must be an object, not a string"),
        (
            v2({"parameters": {"binary_data_size": "abc"}}),
            400,
            "inputs[0].parameters.binary_data_size must be a whole number of bytes, not 'abc'",
        ),
        (v2({"parameters": {"binary_data_size": 2.5}}), 400, "binary_data_size must be a whole number"),
        (v2({"parameters": {"binary_data_size": True}}), 400, "binary_data_size must be a whole number"),
        (v2({"shape": [True, 8, 8, 1]}), 422, "input 'image': bad shape"),
        (v2({"shape": [1, 8, 8, 2**62]}), 422, "input 'image': shape [1, 8, 8, 4611686018427387904] holds"),
        (v2({"shape": [2**62, 8, 8, 1]}), 413, "at most 256 in one request (server.max_request_items)"),
        (v2({"shape": [0, 8, 8, 1], "data": []}), 422, "input 'image': no items"),
        (v2(id=5), 400, "id must be a string, not a number"),
        ({"inputs": [v2()["inputs"][0]] * 2}, 400, "inputs[1]: input 'image' is given twice"),
    ],
    ids=[
        "float32-overflow",
        "nan-string",
        "booleans",
        "outputs-not-a-list",
        "output-parameters-not-an-object",
        "unknown-output",
        "parameters-not-an-object",
        "binary_data_output-not-a-boolean",
        "input-parameters-not-an-object",
        "binary_data_size-a-string",
        "binary_data_size-a-fraction",
        "binary_data_size-a-boolean",
        "shape-boolean",
        "shape-huge-item-dimension",
        "shape-huge-batch",
        "zero-items",
        "id-not-a-string",
        "input-twice",
    ],
)
async def test_v2_malformed_fields_are_4xx_naming_the_field(digits_spec, body, status, needle):
    async with serving(digits_spec) as client:
        response = await client.post("/v2/models/digits/infer", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert needle in response.json()["error"]


async def test_v2_binary_header_longer_than_the_body_is_400(digits_spec):
    async with serving(digits_spec) as client:
        response = await client.post(
            "/v2/models/digits/infer",
            content=json.dumps(v2()).encode(),
            headers={"Inference-Header-Content-Length": "100000"},
        )
    assert response.status_code == 400
    assert "inference-header-content-length is 100000 but the body holds only" in response.json()["error"]


async def test_a_non_ascii_bearer_token_is_401(digits_spec, monkeypatch):
    monkeypatch.setenv("DIGITS_TOKEN", "s3cret")
    spec = with_server(digits_spec, auth_token_env="DIGITS_TOKEN")
    async with serving(spec) as client:
        odd = await client.post(
            "/predict", json={"inputs": {"image": IMAGE}}, headers={"Authorization": b"Bearer \xff\xfe"}
        )
        right = await client.post(
            "/predict", json={"inputs": {"image": IMAGE}}, headers={"Authorization": "Bearer s3cret"}
        )
    assert odd.status_code == 401
    assert odd.json() == {"error": "missing or wrong bearer token"}
    assert right.status_code == 200


async def test_405_names_the_allowed_methods(digits_spec):
    async with serving(digits_spec) as client:
        direct = await client.get("/predict")
        starlette = await client.post("/v2/health/live")
    assert direct.status_code == 405
    assert direct.headers["allow"] == "POST"
    assert starlette.status_code == 405
    assert set(starlette.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    assert starlette.json() == {"error": "POST is not allowed on /v2/health/live"}


def _nan_model(directory: Path) -> Spec:
    (directory / "nan_model.py").write_text(
        "import numpy as np\n"
        "class NaN:\n"
        "    def predict(self, batch):\n"
        "        x = batch['x']\n"
        "        return {'y': np.where(x == 7, np.nan, x)}\n"
    )
    (directory / "modelpod.yaml").write_text(
        "name: nan\nmodel:\n  class: 'nan_model:NaN'\n  signature:\n"
        "    inputs: [{name: x, dtype: float32, shape: [1]}]\n"
        "    outputs: [{name: y, dtype: float32, shape: [1]}]\n"
    )
    return load_spec(directory)


async def test_outputs_that_are_not_finite_are_a_500_with_the_request_id(tmp_path):
    async with serving(_nan_model(tmp_path)) as client:
        bad = await client.post("/predict", json={"inputs": {"x": [7]}}, headers={"X-Request-ID": "r-7"})
        v2_bad = await client.post(
            "/v2/models/nan/infer",
            json={"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1, 7]}]},
            headers={"X-Request-ID": "r-8"},
        )
        good = await client.post("/predict", json={"inputs": {"x": [1]}})
    assert bad.status_code == 500
    assert bad.json() == {"error": "the model returned NaN or infinite values in output 'y' (request id r-7)"}
    assert v2_bad.status_code == 500
    assert "(request id r-8)" in v2_bad.json()["error"]
    assert (good.status_code, good.json()) == (200, {"outputs": {"y": [1.0]}})


@pytest.mark.parametrize(
    ("dtype", "data", "needle"),
    [
        ("INT32", [2**40], "value out of range; expected int32 numbers in [-2147483648, 2147483647]"),
        ("INT32", [1.5], "wrong dtype; expected int32 numbers, got floating-point numbers"),
        ("UINT8", [-1], "value out of range; expected uint8 numbers in [0, 255], got -1"),
        ("INT64", [2**70], "got floating-point numbers"),  # the parser reads it as a float
        ("BOOL", [1], "wrong dtype; expected booleans, got integers"),
        ("FP16", [70000.0], "value out of range; expected finite float16 numbers"),
    ],
)
async def test_v2_integers_and_booleans_are_checked_against_their_dtype(tmp_path, dtype, data, needle):
    from modelpod.signature import dtype_from_v2

    name = dtype_from_v2(dtype)
    (tmp_path / "same.py").write_text(
        "class Same:\n    def predict(self, batch):\n        return {'y': batch['x']}\n"
    )
    (tmp_path / "modelpod.yaml").write_text(
        f"name: same\nmodel:\n  class: 'same:Same'\n  signature:\n"
        f"    inputs: [{{name: x, dtype: {name}, shape: [1]}}]\n"
        f"    outputs: [{{name: y, dtype: {name}, shape: [1]}}]\n"
    )
    async with serving(load_spec(tmp_path)) as client:
        response = await client.post(
            "/v2/models/same/infer",
            json={"inputs": [{"name": "x", "shape": [1, 1], "datatype": dtype, "data": data}]},
        )
    assert response.status_code == 422, response.text
    assert needle in response.json()["error"]


async def test_v2_binary_float64_beyond_float32_is_422(digits_spec):
    raw = np.full(64, 1e300, dtype="<f8").tobytes()
    entry = {
        "name": "image",
        "shape": [1, 8, 8, 1],
        "datatype": "FP64",
        "parameters": {"binary_data_size": 512},
    }
    header = json.dumps({"inputs": [entry]}).encode()
    async with serving(digits_spec) as client:
        response = await client.post(
            "/v2/models/digits/infer",
            content=header + raw,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
    assert response.status_code == 422
    assert response.json()["error"].startswith("input 'image': value out of range; expected finite float32")


async def test_v2_json_numbers_are_converted_to_the_models_dtype_whatever_the_declared_one(digits_spec):
    async with serving(digits_spec) as client:
        declared_int = await client.post("/v2/models/digits/infer", json=v2({"datatype": "INT32"}))
    assert declared_int.status_code == 200  # 0.5 stays 0.5: it used to become 0 as an INT32
    float_input = await _digits_probabilities(digits_spec, v2())
    assert declared_int.json()["outputs"][0]["data"] == float_input


async def _digits_probabilities(spec: Spec, body: dict[str, Any]) -> list[float]:
    async with serving(spec) as client:
        response = await client.post("/v2/models/digits/infer", json=body)
    return response.json()["outputs"][0]["data"]
