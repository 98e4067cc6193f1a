"""modelpod in front of each external engine (llama.cpp, vLLM), through the `openai` SDK and raw requests:
the same routes, limits and metrics as the built-in engine, and the engine's life tied to the server's.

Each test runs once per engine (tests/engines/conftest.py). SmolLM2 is real, so the example's question
gets its real answer ("Paris").
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from modelpod.specfile import load_spec
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
WAIT_S = 120.0
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=WAIT_S, max_retries=0)


def metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{")]
    return sum(values)


def until(condition: object, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def engine_pids(server: ServerProcess) -> list[int]:
    """The processes of the server's engine: the server's children, with theirs."""
    assert server.process is not None
    found, frontier = [], [server.process.pid]
    while frontier:
        parent = frontier.pop()
        for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            found.append(int(child))
            frontier.append(int(child))
    return found


def test_the_example_answers_streamed_and_whole_through_the_sdk(served: ServerProcess, engine: str) -> None:
    sdk = client(served)
    whole = sdk.chat.completions.create(
        model=load_name(served), messages=QUESTION, max_tokens=24, temperature=0
    )
    assert "Paris" in (whole.choices[0].message.content or "")
    assert whole.usage is not None
    assert whole.usage.prompt_tokens > 10
    pieces = []
    stream = sdk.chat.completions.create(
        model=load_name(served), messages=QUESTION, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(pieces) == whole.choices[0].message.content
    assert usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens
    completion = sdk.completions.create(
        model=load_name(served), prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
    )
    assert "Paris" in "".join(c.choices[0].text for c in completion if c.choices)
    # the access log has the token counts, as for the built-in engine
    assert '"completion_tokens":' in served.log
    assert engine in served.log  # the engine's own lines, passed on as JSON


def load_name(server: ServerProcess) -> str:
    return load_spec(server.project).name


def test_eight_concurrent_streams_finish_and_the_metrics_are_modelpods(served: ServerProcess) -> None:
    sdk = client(served)

    def stream(i: int) -> int:
        chunks = sdk.completions.create(
            model=load_name(served), prompt=f"Story number {i}: once upon a time", max_tokens=32,
            temperature=0, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        tokens = 0
        for chunk in chunks:
            tokens = chunk.usage.completion_tokens if chunk.usage else tokens
        return tokens

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(stream, range(8))) == [32] * 8
    assert metric(served, "modelpod_time_to_first_token_seconds_count") >= 8
    assert metric(served, "modelpod_inter_token_latency_seconds_count") >= 8 * 30
    assert metric(served, "modelpod_generation_tokens_total") >= 8 * 32
    assert metric(served, "modelpod_prompt_tokens_total") > 0


def test_a_disconnected_stream_stops_generating(served: ServerProcess) -> None:
    body = {"prompt": "Count to a thousand:", "max_tokens": 3000, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{served.url}/v1/completions", json=body, timeout=WAIT_S) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        until(lambda: metric(served, "modelpod_running_sequences") == 1, "the engine runs the stream")
    # the client is gone: the engine's own count of running sequences drops
    until(lambda: metric(served, "modelpod_running_sequences") == 0, "the engine dropped the stream", 30)
    generated = metric(served, "modelpod_generation_tokens_total")
    time.sleep(1.5)  # not a wait for an event: to see that no more tokens come
    assert metric(served, "modelpod_generation_tokens_total") == generated


def test_fields_the_engine_cannot_honour_are_refused_by_name(served: ServerProcess, engine: str) -> None:
    body = {"prompt": "Hello", "max_tokens": 2, "stop_token_ids": [2]}
    answer = httpx.post(f"{served.url}/v1/completions", json=body, timeout=WAIT_S)
    if engine == "llamacpp":
        assert answer.status_code == 400
        assert "stop_token_ids is not supported by the llamacpp engine" in answer.json()["error"]["message"]
    else:
        assert answer.status_code == 200, answer.text
    refused = httpx.post(
        f"{served.url}/v1/completions", json={"prompt": "Hi", "typical_p": 0.5}, timeout=WAIT_S
    )
    assert refused.status_code == 400
    assert "typical_p is not supported" in refused.json()["error"]["message"]


def test_sigterm_lets_streams_in_flight_finish_and_stops_the_engine(
    start_server: object, engine: str
) -> None:
    server: ServerProcess = start_server(server={"drain_timeout_s": 60})  # type: ignore[operator]
    pids = engine_pids(server)
    assert pids, "the server runs its engine as a child process"
    results: list[tuple[int, str]] = []

    def stream() -> None:
        body = {"prompt": "Tell a story:", "max_tokens": 48, "stream": True, "ignore_eos": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=WAIT_S) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        results.append((response.status_code, "\n".join(lines[-2:])))

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for thread in threads:
        thread.start()
    until(lambda: metric(server, "modelpod_running_sequences") >= 1, "the streams run")
    assert server.terminate(timeout=WAIT_S) == 0
    for thread in threads:
        thread.join(WAIT_S)
    assert [status for status, _ in results] == [200] * 4
    for _, last in results:  # every stream complete: its usage chunk, then [DONE], and no error event
        assert last.endswith("data: [DONE]"), last
        assert '"completion_tokens":48' in last.replace(" ", ""), last
    until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), "the engine's processes end", 30)


def test_a_dead_engine_fails_readiness_and_the_server_exits(start_server: object) -> None:
    server: ServerProcess = start_server()  # type: ignore[operator]
    assert server.process is not None
    guard, engine, *_ = pids = engine_pids(server)  # the group's guard (group_guard.py), then the engine
    assert "group_guard.py" in Path(f"/proc/{guard}/cmdline").read_text()
    os.kill(engine, signal.SIGKILL)
    code = server.process.wait(60)
    assert code == 1  # Kubernetes restarts the container
    assert "stopped:" in server.log
    assert "exited with code -9" in server.log or "exited with code 137" in server.log
    until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), "the engine's processes end", 30)


def test_a_killed_server_leaves_no_engine_process_behind(start_server: object) -> None:
    """SIGKILL gives the server no chance to stop its engine: the guard, told by the kernel, stops the
    engine's whole process group (vLLM's engine core and workers included)."""
    server: ServerProcess = start_server()  # type: ignore[operator]
    assert server.process is not None
    pids = engine_pids(server)
    server.process.kill()
    server.process.wait(10)
    until(lambda: not any(_alive(pid) for pid in pids), f"the engine's processes {pids} end", 30)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_auth_predict_v2_the_queue_bound_and_the_access_log_hold_for_the_engine(
    start_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rest of what modelpod promises in front of any engine: bearer auth, /predict and v2 infer of
    a prompt, 503 with Retry-After past running + queued requests, access lines with token counts."""
    monkeypatch.setenv("ENGINE_TEST_TOKEN", "s3cret")
    server: ServerProcess = start_server(  # type: ignore[operator]
        server={"auth_token_env": "ENGINE_TEST_TOKEN", "max_queue": 1},
        generation={"max_running_sequences": 1},
    )
    token = {"authorization": "Bearer s3cret"}
    name = load_name(server)
    refused = httpx.post(f"{server.url}/v1/completions", json={"prompt": "Hi"}, timeout=WAIT_S)
    assert refused.status_code == 401
    predicted = httpx.post(f"{server.url}/predict", json={"inputs": {"prompt": "The capital of France is"}},
                           headers=token, timeout=WAIT_S)  # fmt: skip
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["outputs"]["text"].strip()
    v2 = {"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [2], "data": ["Hello", "Bye"]}]}
    inferred = httpx.post(f"{server.url}/v2/models/{name}/infer", json=v2, headers=token, timeout=WAIT_S)
    assert inferred.status_code == 200, inferred.text
    assert inferred.json()["outputs"][0]["shape"] == [2]

    # one running and one queued fill max_running_sequences + max_queue: the next one gets 503
    url = f"{server.url}/v1/completions"
    long = {"prompt": "Count to a thousand:", "max_tokens": 1000, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=WAIT_S, headers=token) as http, http.stream("POST", url, json=long) as first:
        lines = first.iter_lines()  # kept: a dropped iterator closes the connection
        assert next(lines).startswith("data: ")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            queued = pool.submit(http.post, url, json={"prompt": "Hi", "max_tokens": 2})
            until(lambda: metric(server, "modelpod_inflight_requests") >= 2, "the second request waits")
            over = http.post(url, json={"prompt": "Hi", "max_tokens": 2})
            assert over.status_code == 503, over.text
            assert over.headers["retry-after"]
            first.close()  # the running stream leaves: the queued request runs
            assert queued.result(WAIT_S).status_code == 200
    until(lambda: metric(server, "modelpod_running_sequences") == 0, "the engine is idle", 30)
    done = httpx.post(url, json={"prompt": "Hi", "max_tokens": 3, "ignore_eos": True}, headers=token,
                      timeout=WAIT_S)  # fmt: skip
    assert done.status_code == 200, done.text
    request_id = done.headers["x-request-id"]
    until(lambda: request_id in server.log, "the access line is written")
    (line,) = [orjson.loads(x) for x in server.lines if request_id in x and '"path":"/v1/completions"' in x]
    assert line["completion_tokens"] == 3
    assert line["prompt_tokens"] > 0
