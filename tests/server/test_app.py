"""The app in-process: httpx.ASGITransport with the lifespan run by asgi-lifespan; real models."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import subprocess
import time
from collections.abc import AsyncIterator

import httpx
import jsonschema
import numpy as np
import onnxruntime as ort
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from modelpod.errors import ModelpodError
from modelpod.server import create_app
from modelpod.specfile import Spec, load_spec
from tests.server.conftest import with_server
from tests.tools import need_tool

pytestmark = pytest.mark.anyio

WAIT = 30  # seconds any wait for readiness may take before the test fails


@contextlib.asynccontextmanager
async def serving(spec: Spec, *, ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(spec)
    async with LifespanManager(app, startup_timeout=WAIT, shutdown_timeout=WAIT) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://modelpod.test", timeout=WAIT
        ) as client:
            if ready:
                await wait_ready(client)
            yield client


async def wait_ready(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + WAIT
    while (await client.get("/v2/health/ready")).status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError("not ready in time")
        await asyncio.sleep(0.02)


async def until_metric(client: httpx.AsyncClient, *lines: str) -> None:
    """Wait until /metrics shows every one of `lines` (the scrape itself counts as one request in flight)."""
    deadline = time.monotonic() + WAIT
    while True:
        text = (await client.get("/metrics")).text
        if all(line in text for line in lines):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never showed {lines}:\n{text}")
        await asyncio.sleep(0.01)


@pytest.fixture
def digits_spec(digits_dir) -> Spec:
    return load_spec(digits_dir)


@pytest.fixture
def digits_example(digits_dir) -> dict:
    return json.loads((digits_dir / "example.json").read_text())


def onnx_reference(digits_dir, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(digits_dir / "model" / "digits.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"image": images.astype(np.float32)})[0]


async def test_predict_single_and_instances_match_onnxruntime(digits_spec, digits_dir, digits_example):
    image = np.asarray(digits_example["inputs"]["image"], dtype=np.float32)
    images = np.stack([image, image * 0.5, np.zeros_like(image)])
    expected = onnx_reference(digits_dir, images)
    async with serving(digits_spec) as client:
        one = await client.post("/predict", json={"inputs": {"image": image.tolist()}})
        many = await client.post("/predict", json={"instances": [{"image": i.tolist()} for i in images]})
    assert one.status_code == 200
    np.testing.assert_allclose(one.json()["outputs"]["probabilities"], expected[0], rtol=0, atol=1e-6)
    assert many.status_code == 200
    got = np.array([p["probabilities"] for p in many.json()["predictions"]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


async def test_v2_metadata(digits_spec):
    async with serving(digits_spec) as client:
        server = (await client.get("/v2")).json()
        model = (await client.get("/v2/models/digits")).json()
        versioned = await client.get("/v2/models/digits/versions/1")
        ready = await client.get("/v2/models/digits/ready")
    assert server["name"] == "modelpod"
    assert "binary_tensor_data" in server["extensions"]
    assert model["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert model["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert versioned.json() == model
    assert ready.status_code == 200


async def test_v2_infer_json_flat_and_nested(digits_spec, digits_dir, digits_example):
    images = np.stack([np.asarray(digits_example["inputs"]["image"], dtype=np.float32)] * 2)
    expected = onnx_reference(digits_dir, images)
    async with serving(digits_spec) as client:
        for data in (images.reshape(-1).tolist(), images.tolist()):
            body = {
                "id": "abc",
                "inputs": [{"name": "image", "shape": [2, 8, 8, 1], "datatype": "FP32", "data": data}],
            }
            response = await client.post("/v2/models/digits/infer", json=body)
            assert response.status_code == 200, response.text
            result = response.json()
            assert result["id"] == "abc"
            assert result["model_name"] == "digits"
            (output,) = result["outputs"]
            assert (output["name"], output["datatype"], output["shape"]) == ("probabilities", "FP32", [2, 10])
            np.testing.assert_allclose(np.reshape(output["data"], (2, 10)), expected, rtol=0, atol=1e-6)


async def test_v2_infer_binary_tensor_extension(digits_spec, digits_dir, digits_example):
    images = np.stack([np.asarray(digits_example["inputs"]["image"], dtype=np.float32)] * 3)
    raw = images.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [3, 8, 8, 1],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    async with serving(digits_spec) as client:
        response = await client.post(
            "/v2/models/digits/infer",
            content=header + raw,
            headers={
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
            },
        )
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:json_length])
    (output,) = meta["outputs"]
    assert output["parameters"]["binary_data_size"] == 3 * 10 * 4
    got = np.frombuffer(response.content[json_length:], dtype="<f4").reshape(3, 10)
    np.testing.assert_allclose(got, onnx_reference(digits_dir, images), rtol=0, atol=1e-6)


async def test_v2_bytes_tensors_in_binary(tmp_path):
    """BYTES inputs (length-prefixed) reach a text model as strings, and come back the same way."""
    (tmp_path / "upper.py").write_text(
        "import numpy as np\n"
        "class Upper:\n"
        "    def predict(self, batch):\n"
        "        return {'out': np.array([t.upper() for t in batch['text']], dtype=object)}\n"
    )
    (tmp_path / "modelpod.yaml").write_text(
        "name: upper\nmodel:\n  class: 'upper:Upper'\n  signature:\n"
        "    inputs: [{name: text, dtype: string, shape: []}]\n"
        "    outputs: [{name: out, dtype: string, shape: []}]\n"
    )
    texts = ["héllo", "world"]
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    async with serving(load_spec(tmp_path)) as client:
        response = await client.post(
            "/v2/models/upper/infer",
            content=header + raw,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        as_json = await client.post(
            "/v2/models/upper/infer",
            json={"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}]},
        )
    assert response.status_code == 200, response.text
    body = response.content[int(response.headers["inference-header-content-length"]) :]
    assert body == b"".join(struct.pack("<I", len(t.upper().encode())) + t.upper().encode() for t in texts)
    assert as_json.json()["outputs"][0]["data"] == ["HÉLLO", "WORLD"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"inputs": {"image": [[1, 2]]}},
            422,
            "input 'image': wrong shape; expected float32[8, 8, 1], got shape [1, 2]",
        ),
        ({"inputs": {"picture": []}}, 422, "input 'picture': unknown input; expected one of ['image']"),
        ({"inputs": {}}, 422, "input 'image': missing input; expected float32[8, 8, 1]"),
        (
            {"inputs": {"image": "seven"}},
            422,
            "input 'image': wrong dtype; expected float32 numbers, got strings",
        ),
        ({"instances": []}, 400, 'expected {"inputs": {name: value}} or {"instances": [{name: value}, ...]}'),
        ([1, 2], 400, 'expected {"inputs": {name: value}} or {"instances": [{name: value}, ...]}'),
    ],
)
async def test_predict_bad_inputs_name_the_problem(digits_spec, body, status, message):
    async with serving(digits_spec) as client:
        response = await client.post("/predict", json=body)
    assert response.status_code == status
    assert response.json() == {"error": message}


@pytest.mark.parametrize(
    ("entry", "status", "needle"),
    [
        (
            {"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 10},
            422,
            "holds 64 values but the data has 10",
        ),
        ({"name": "image", "shape": [1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}, 422, "wrong shape"),
        (
            {"name": "image", "shape": [1, 8, 8, 1], "datatype": "BYTES", "data": ["a"] * 64},
            422,
            "wrong datatype; expected FP32, got BYTES",
        ),
        (
            {"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP99", "data": [0.0] * 64},
            422,
            "unknown datatype",
        ),
        (
            {"name": "nope", "shape": [1], "datatype": "FP32", "data": [0.0]},
            422,
            "input 'nope': unknown input",
        ),
        (
            {"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32"},
            400,
            "neither data nor parameters.binary_data_size",
        ),
    ],
)
async def test_v2_bad_inputs(digits_spec, entry, status, needle):
    async with serving(digits_spec) as client:
        response = await client.post("/v2/models/digits/infer", json={"inputs": [entry]})
    assert response.status_code == status
    assert needle in response.json()["error"]


async def test_unknown_model_route_and_method(digits_spec):
    async with serving(digits_spec) as client:
        model = await client.post("/v2/models/cats/infer", json={"inputs": []})
        route = await client.get("/v3/anything")
        method = await client.get("/predict")
        bad_json = await client.post("/predict", content=b"{not json")
    assert model.status_code == 404
    assert model.json() == {"error": "model 'cats' not found; this server serves 'digits'"}
    assert route.status_code == 404
    assert route.json()["error"].startswith("no route GET /v3/anything")
    assert method.status_code == 405
    assert method.json() == {"error": "GET is not allowed on /predict"}
    assert bad_json.status_code == 400
    assert bad_json.json()["error"].startswith("body is not valid JSON")


async def test_body_over_the_limit_is_413(digits_spec):
    spec = with_server(digits_spec, max_body_bytes=1000)
    async with serving(spec) as client:
        big = await client.post("/predict", content=b"x" * 1001, headers={"content-type": "application/json"})
        small = await client.post("/predict", json={"inputs": {"image": [[[0.0]] * 8] * 8}})
        metrics = (await client.get("/metrics")).text
    assert big.status_code == 413
    assert big.json() == {
        "error": "request body is larger than the limit of 1000 bytes (server.max_body_bytes)"
    }
    assert small.status_code == 200
    assert 'modelpod_rejected_requests_total{model="digits",reason="body_too_large"} 1.0' in metrics


async def test_bearer_token_guards_inference_but_not_health(digits_spec, monkeypatch):
    monkeypatch.setenv("DIGITS_TOKEN", "s3cret")
    spec = with_server(digits_spec, auth_token_env="DIGITS_TOKEN")
    body = {"inputs": {"image": [[[0.0]] * 8] * 8}}
    async with serving(spec) as client:
        missing = await client.post("/predict", json=body)
        wrong = await client.post("/predict", json=body, headers={"Authorization": "Bearer nope"})
        right = await client.post("/predict", json=body, headers={"Authorization": "Bearer s3cret"})
        health = await client.get("/v2/health/ready")
        metrics = await client.get("/metrics")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert health.status_code == 200
    assert metrics.status_code == 200


def test_token_variable_must_be_set(digits_spec, monkeypatch):
    monkeypatch.delenv("DIGITS_TOKEN", raising=False)
    with pytest.raises(ModelpodError, match=r"server\.auth_token_env names DIGITS_TOKEN, which is not set"):
        create_app(with_server(digits_spec, auth_token_env="DIGITS_TOKEN"))


async def test_model_error_is_500_with_request_id_and_serving_goes_on(echo_spec):
    async with serving(echo_spec) as client:
        bad = await client.post(
            "/predict", json={"inputs": {"x": [-1, 0]}}, headers={"X-Request-ID": "req-42"}
        )
        good = await client.post("/predict", json={"inputs": {"x": [1, 2]}})
    assert bad.status_code == 500
    assert bad.headers["x-request-id"] == "req-42"
    assert bad.json() == {"error": "the model raised ValueError: a row contains -1 (request id req-42)"}
    assert good.status_code == 200
    assert good.json() == {"outputs": {"y": [2.0, 4.0]}}


async def test_deadline_is_504(echo_spec, monkeypatch):
    monkeypatch.setenv("ECHO_DELAY", "1.0")
    spec = with_server(echo_spec, request_timeout_s=0.2)
    async with serving(spec) as client:
        response = await client.post("/predict", json={"inputs": {"x": [1, 2]}})
    assert response.status_code == 504
    assert response.json() == {"error": "no answer within the request timeout of 0.2s"}


async def test_saturated_server_rejects_with_503_and_still_answers_health(echo_spec, monkeypatch):
    monkeypatch.setenv("ECHO_DELAY", "0.5")
    spec = with_server(echo_spec, max_batch_size=1, max_queue=2)
    async with serving(spec) as client:
        first = asyncio.ensure_future(client.post("/predict", json={"inputs": {"x": [0, 0]}}))
        await until_metric(
            client, 'modelpod_busy_instances{model="echo"} 1.0', 'modelpod_queue_depth{model="echo"} 0.0'
        )
        # the model now holds the first request: 2 more fit in the queue, the other 3 are the excess
        requests = [first] + [
            asyncio.ensure_future(client.post("/predict", json={"inputs": {"x": [i, i]}}))
            for i in range(1, 6)
        ]
        await until_metric(client, 'modelpod_queue_depth{model="echo"} 2.0')
        live = await client.get("/v2/health/live")
        ready = await client.get("/v2/health/ready")
        metrics = await client.get("/metrics")
        responses = await asyncio.gather(*requests)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 200, 503, 503, 503]
    rejected = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" for r in rejected)
    assert rejected[0].json() == {"error": "the queue is full (2 requests waiting)"}
    assert (live.status_code, ready.status_code, metrics.status_code) == (200, 200, 200)
    assert 'modelpod_queue_depth{model="echo"} 2.0' in metrics.text


async def test_starting_state_while_the_model_loads(echo_spec, monkeypatch):
    monkeypatch.setenv("ECHO_LOAD_DELAY", "1.0")
    async with serving(echo_spec, ready=False) as client:
        live = await client.get("/v2/health/live")
        ready = await client.get("/v2/health/ready")
        predict = await client.post("/predict", json={"inputs": {"x": [1, 2]}})
        models = await client.get("/v1/models")  # what OpenAI clients poll before their first request
        await wait_ready(client)
        after = await client.post("/predict", json={"inputs": {"x": [1, 2]}})
        models_after = await client.get("/v1/models")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "state": "starting"}
    assert predict.status_code == 503
    assert predict.headers["retry-after"] == "1"
    assert (models.status_code, models.headers["retry-after"]) == (503, "1")
    assert after.status_code == 200
    assert models_after.status_code == 200
    assert models_after.json()["data"][0]["id"] == "echo"


async def test_failed_load_turns_liveness_off(echo_spec, monkeypatch):
    monkeypatch.setenv("ECHO_FAIL_LOAD", "1")
    async with serving(echo_spec, ready=False) as client:
        deadline = time.monotonic() + WAIT
        while (live := await client.get("/v2/health/live")).status_code == 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        ready = await client.get("/v2/health/ready")
    assert live.status_code == 503
    assert ready.json() == {"ready": False, "state": "failed"}


async def test_metrics_are_the_documented_ones(digits_spec):
    async with serving(digits_spec) as client:
        await client.post("/predict", json={"inputs": {"image": [[[0.0]] * 8] * 8}})
        await client.post("/predict", json={"inputs": {"image": 1}})
        text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {
        "modelpod_request_duration_seconds",
        "modelpod_requests",
        "modelpod_inflight_requests",
        "modelpod_queue_depth",
        "modelpod_batch_size",
        "modelpod_inference_duration_seconds",
        "modelpod_model_load_seconds",
        "modelpod_rejected_requests",
    } <= set(families)
    counts = {
        (s.labels["endpoint"], s.labels["code"]): s.value
        for s in families["modelpod_requests"].samples
        if s.name == "modelpod_requests_total"
    }
    assert counts[("/predict", "200")] == 1
    assert counts[("/predict", "422")] == 1
    batches = [s for s in families["modelpod_batch_size"].samples if s.name == "modelpod_batch_size_count"]
    assert batches[0].value == 1  # the 422 never reached the model


async def test_promtool_accepts_the_metrics_exposition(digits_spec, digits_example):
    # Prometheus' own linter: names, types, help texts and units as Prometheus expects them
    promtool = need_tool("promtool", "install Debian's prometheus package (../shared/ci/engine-up does)")
    async with serving(digits_spec) as client:
        await client.post("/predict", json={"inputs": digits_example["inputs"]})
        await client.post("/predict", json={"inputs": {"image": 1}})
        text = (await client.get("/metrics")).text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""  # no lint warning either


async def test_openapi_describes_the_signature(digits_spec, digits_example):
    async with serving(digits_spec) as client:
        document = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert document["openapi"] == "3.1.0"
    image = document["components"]["schemas"]["Inputs"]["properties"]["image"]
    float32 = 3.4028234663852886e38
    assert (image["minItems"], image["items"]["minItems"], image["items"]["items"]["items"]) == (
        8,
        8,
        {"type": "number", "minimum": -float32, "maximum": float32},
    )
    validator = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/PredictRequest", **document})
    assert validator.is_valid({"inputs": digits_example["inputs"]})
    assert not validator.is_valid({"inputs": {"image": [[1, 2]]}})
    assert not validator.is_valid({"instances": [digits_example["inputs"]] * 257})  # max_request_items
    v2 = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/V2InferRequest", **document})
    flat = np.asarray(digits_example["inputs"]["image"]).reshape(-1).tolist()
    entry = {"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": flat}
    assert v2.is_valid({"inputs": [entry]})
    assert not v2.is_valid({"inputs": [{**entry, "shape": [2, 8, 8, 1]}]})  # one item: see openapi.py
    assert "/v1/embeddings" not in document["paths"]  # digits is not an embedding model
    assert docs.status_code == 200
    assert "<code>image</code>" in docs.text
    assert "float32[8, 8, 1]" in docs.text
