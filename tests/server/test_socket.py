"""`modelpod serve` as a real process on a real socket, with clients no one here wrote."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as triton
from sentence_transformers import SentenceTransformer

from modelpod.runtimes import default_threads
from tests.server_process import ServerProcess

WAIT = 30  # bound on every wait for the server


def metrics_show(server: ServerProcess, *lines: str) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
        if all(line in text for line in lines):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never showed {lines}:\n{text}\n--- server log ---\n{server.log}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def minilm_server(minilm_dir):
    with ServerProcess(minilm_dir) as server:
        yield server


@pytest.fixture(scope="module")
def minilm_reference(minilm_dir):
    return SentenceTransformer(str(minilm_dir / "model"), device="cpu", local_files_only=True)


def test_tritonclient_against_digits(digits_server, digits_dir):
    example = json.loads((digits_dir / "example.json").read_text())
    image = np.asarray(example["inputs"]["image"], dtype=np.float32)
    images = np.stack([image, image])
    client = triton.InferenceServerClient(url=digits_server.url.removeprefix("http://"), network_timeout=WAIT)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("digits")
        assert client.get_server_metadata()["name"] == "modelpod"
        metadata = client.get_model_metadata("digits")
        assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
        for binary in (True, False):
            tensor = triton.InferInput("image", list(images.shape), "FP32")
            tensor.set_data_from_numpy(images, binary_data=binary)
            requested = triton.InferRequestedOutput("probabilities", binary_data=binary)
            result = client.infer("digits", [tensor], outputs=[requested], request_id="r1")
            probabilities = result.as_numpy("probabilities")
            assert probabilities.shape == (2, 10)
            np.testing.assert_allclose(
                probabilities[0], example["expected"]["probabilities"], rtol=0, atol=1e-6
            )
        with pytest.raises(triton.InferenceServerException, match="not found"):
            client.infer("cats", [tensor])
    finally:
        client.close()


def test_tritonclient_bytes_against_minilm(minilm_server, minilm_reference):
    sentences = ["A man is eating food.", "The new movie is awesome"]
    client = triton.InferenceServerClient(url=minilm_server.url.removeprefix("http://"), network_timeout=WAIT)
    try:
        tensor = triton.InferInput("text", [2], "BYTES")
        tensor.set_data_from_numpy(np.array([s.encode() for s in sentences], dtype=object))
        result = client.infer("minilm", [tensor])
        np.testing.assert_allclose(
            result.as_numpy("embedding"), minilm_reference.encode(sentences), rtol=0, atol=1e-5
        )
    finally:
        client.close()


def test_openai_sdk_embeddings(minilm_server, minilm_reference):
    client = openai.OpenAI(
        base_url=f"{minilm_server.url}/v1", api_key="not-needed", timeout=WAIT, max_retries=0
    )
    sentences = ["A man is eating food.", "Someone is playing the guitar.", "héllo"]
    expected = minilm_reference.encode(sentences)
    # the SDK asks for base64 unless told otherwise; check both encodings
    default = client.embeddings.create(model="minilm", input=sentences)
    floats = client.embeddings.create(model="minilm", input=sentences[0], encoding_format="float")
    assert [d.index for d in default.data] == [0, 1, 2]
    np.testing.assert_allclose([d.embedding for d in default.data], expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(floats.data[0].embedding, expected[0], rtol=0, atol=1e-5)
    tokens = sum(len(ids) for ids in minilm_reference.tokenizer(sentences)["input_ids"])
    assert default.usage.prompt_tokens == tokens
    assert default.model == "minilm"
    assert [m.id for m in client.models.list()] == ["minilm"]
    with pytest.raises(openai.NotFoundError, match="model 'gpt-4' not found"):
        client.embeddings.create(model="gpt-4", input="x")
    with pytest.raises(openai.BadRequestError, match="input must be a string or a non-empty list"):
        client.embeddings.create(model="minilm", input=[])


def test_twenty_thousand_strings_are_refused_at_once(minilm_server):
    """Issue 17: 20,000 strings in one 300 KB request kept minilm busy for 89 s; now 413 at once."""
    texts = [f"sentence number {i}" for i in range(20_000)]
    started = time.monotonic()
    embeddings = httpx.post(f"{minilm_server.url}/v1/embeddings", json={"input": texts}, timeout=WAIT)
    instances = httpx.post(
        f"{minilm_server.url}/predict", json={"instances": [{"text": t} for t in texts]}, timeout=WAIT
    )
    assert time.monotonic() - started < 5
    assert embeddings.status_code == 413
    assert "(server.max_request_items)" in embeddings.json()["error"]["message"]
    assert instances.status_code == 413


def test_one_access_log_line_per_request_with_its_request_id(digits_server, digits_dir):
    example = json.loads((digits_dir / "example.json").read_text())
    response = httpx.post(
        f"{digits_server.url}/predict",
        json={"inputs": example["inputs"]},
        headers={"X-Request-ID": "access-log-1"},
        timeout=WAIT,
    )
    assert response.headers["x-request-id"] == "access-log-1"
    deadline = time.monotonic() + WAIT
    while not (lines := [line for line in digits_server.lines if '"access-log-1"' in line]):
        assert time.monotonic() < deadline, digits_server.log
        time.sleep(0.01)
    (line,) = [json.loads(text) for text in lines]
    assert (line["logger"], line["level"], line["msg"]) == ("modelpod.access", "info", "POST /predict 200")
    assert (line["status"], line["method"], line["path"]) == (200, "POST", "/predict")
    assert line["request_id"] == "access-log-1"
    assert line["duration_ms"] > 0


def test_the_model_threads_are_pinned_one_to_each_cpu_when_they_fill_the_cpus(minilm_server):
    pid = minilm_server.process.pid
    cpus = sorted(os.sched_getaffinity(pid))
    expected = default_threads() == len(cpus) >= 2  # runtimes/_pinning.py: only where threads fill the CPUs
    allowed = {
        tid: (Path(f"/proc/{pid}/task/{tid}/status").read_text().split("Cpus_allowed_list:")[1].split()[0])
        for tid in os.listdir(f"/proc/{pid}/task")
    }
    single = sorted(int(cpu) for cpu in allowed.values() if cpu.isdigit())
    assert single == (cpus if expected else []), allowed
    assert ("intra-op threads pinned, one to each CPU" in minilm_server.log) == expected


def test_embeddings_refused_for_a_non_text_model(digits_server):
    response = httpx.post(f"{digits_server.url}/v1/embeddings", json={"input": "x"}, timeout=WAIT)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        "model digits is not an embedding model: /v1/embeddings serves embedding models only; "
        "use POST /predict or POST /v2/models/digits/infer"
    )


def test_chunked_body_over_the_limit_is_413(echo_project):
    project = echo_project(max_body_bytes=4096)

    def chunks():
        for _ in range(100):
            yield b" " * 1000  # 100 kB in 1 kB chunks, no Content-Length

    with ServerProcess(project) as server:
        response = httpx.post(f"{server.url}/predict", content=chunks(), timeout=WAIT)
        after = httpx.post(f"{server.url}/predict", json={"inputs": {"x": [1, 2]}}, timeout=WAIT)
    assert response.status_code == 413
    assert "larger than the limit of 4096 bytes" in response.json()["error"]
    assert after.status_code == 200


def test_overload_rejects_exactly_the_excess_and_health_answers(echo_project):
    project = echo_project(max_batch_size=1, max_queue=3)
    gate = project / "gate"  # the model holds every request until the test creates this file
    with (
        ServerProcess(project, env={"ECHO_GATE": str(gate)}) as server,
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):

        def predict(value: int) -> httpx.Response:
            return httpx.post(f"{server.url}/predict", json={"inputs": {"x": [value, value]}}, timeout=WAIT)

        first = pool.submit(predict, 0)
        # the model holds the first request and nothing waits: 3 more fit in the queue, 4 are the excess
        metrics_show(
            server, 'modelpod_busy_instances{model="echo"} 1.0', 'modelpod_queue_depth{model="echo"} 0.0'
        )
        rest = [pool.submit(predict, v) for v in range(1, 8)]
        # the model stays busy until the gate opens, so the queue stays full and every excess request
        # is refused, however long the 7 requests take to arrive
        metrics_show(
            server,
            'modelpod_queue_depth{model="echo"} 3.0',
            'modelpod_rejected_requests_total{model="echo",reason="queue_full"} 4.0',
        )
        # saturated: the queue is full and the model busy; health and metrics still answer at once
        live = httpx.get(f"{server.url}/v2/health/live", timeout=2)
        ready = httpx.get(f"{server.url}/v2/health/ready", timeout=2)
        gate.touch()
        responses = [first.result(WAIT)] + [f.result(WAIT) for f in rest]
        metrics = httpx.get(f"{server.url}/metrics", timeout=WAIT).text
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 4 + [503] * 4, server.log
    assert (live.status_code, ready.status_code) == (200, 200)
    assert 'modelpod_rejected_requests_total{model="echo",reason="queue_full"} 4.0' in metrics


def test_sigterm_lets_in_flight_requests_finish_and_exits_0(echo_project):
    project = echo_project(max_batch_size=2, drain_timeout_s=20)
    server = ServerProcess(project, env={"ECHO_DELAY": "1.0"}).start()
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            pending = [
                pool.submit(httpx.post, f"{server.url}/predict", json={"inputs": {"x": [v, v]}}, timeout=WAIT)
                for v in range(5)
            ]
            metrics_show(server, 'modelpod_inflight_requests{model="echo"} 6.0')  # five, and this scrape
            assert server.process is not None
            server.process.send_signal(15)
            # readiness turns at once, on a listener that is still open
            deadline = time.monotonic() + WAIT
            while (ready := httpx.get(f"{server.url}/v2/health/ready", timeout=5)).status_code == 200:
                assert time.monotonic() < deadline, server.log
            live = httpx.get(f"{server.url}/v2/health/live", timeout=5)
            late = httpx.post(f"{server.url}/predict", json={"inputs": {"x": [9, 9]}}, timeout=5)
            responses = [p.result(WAIT) for p in pending]
        code = server.process.wait(WAIT)
    finally:
        server.stop()
    assert ready.json() == {"ready": False, "state": "draining"}
    assert live.status_code == 200
    assert late.status_code == 503
    assert [r.status_code for r in responses] == [200] * 5
    assert [r.json()["outputs"]["y"][0] for r in responses] == [0, 2, 4, 6, 8]
    assert code == 0, server.log
    assert '"msg":"drained: no request in flight"' in server.log


def test_a_model_that_fails_to_load_exits_1_with_one_clear_line(echo_project):
    result = subprocess.run(
        [sys.executable, "-m", "modelpod", "serve", str(echo_project()), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "ECHO_FAIL_LOAD": "1"},
        check=False,
    )
    assert result.returncode == 1
    errors = [json.loads(line) for line in result.stderr.splitlines() if '"level":"error"' in line]
    assert len(errors) == 1, result.stderr
    assert errors[0]["msg"] == (
        "model echo failed to load: "
        "echo_model:Echo failed to load: RuntimeError: weights are corrupt (ECHO_FAIL_LOAD is set)"
    )
    assert "Traceback" not in result.stderr
