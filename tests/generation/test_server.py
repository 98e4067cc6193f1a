"""OpenAI chat and completions from a real `modelpod serve` on a socket, through the `openai` SDK and raw
server-sent events, on a tiny random Llama (fast; its text is nonsense, so the tests compare answers
with each other, never with words; tests/generation/test_smollm2.py checks a real answer)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.generation.tiny_llama import build_tiny_llama
from tests.server.test_openapi_routes import app_routes, documented_routes, served_routes
from tests.server_process import ServerProcess

WAIT_S = 30.0
LONG = 3000  # tokens: several seconds of the tiny model, longer than any test waits for


def make_project(root: Path, tokenizer_dir: Path, settings: str) -> Path:
    build_tiny_llama(root / "model", tokenizer_dir, context=4096)
    (root / "modelpod.yaml").write_text(f"name: tiny\nmodel: {{path: model}}\n{settings}", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Iterator[ServerProcess]:
    project = make_project(
        tmp_path_factory.mktemp("tiny"),
        smollm2_dir,
        # /predict and v2 generate default_max_tokens: a random model rarely ends sooner, so keep it short
        "generation: {max_running_sequences: 16, default_max_tokens: 32}\nserver: {max_body_bytes: 64KiB}\n",
    )
    with ServerProcess(project) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=WAIT_S, max_retries=0)


def metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics:\n{text}"
    return float(match.group(1))


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


CHAT = [{"role": "user", "content": "Say something."}]
GREEDY: dict[str, Any] = {"temperature": 0, "extra_body": {"ignore_eos": True}}


def test_the_sdk_streams_a_chat_completion_equal_to_the_whole_answer(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny",
        messages=CHAT,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        **GREEDY,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, **GREEDY)
    assert whole.choices[0].message.content == streamed
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 12
    assert whole.usage.prompt_tokens == chunks[-1].usage.prompt_tokens > 5  # the chat template's tokens


def test_the_sdk_streams_a_completion_and_a_stop_string_cuts_it(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=16, stream=True, **GREEDY
    )
    pieces = [c.choices[0].text for c in stream]
    text = "".join(pieces)
    assert len(pieces) >= 8
    assert text.strip()
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=16, stop=[stop], **GREEDY
    )
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"n": 2}, openai.BadRequestError, "n must be 1"),
        ({"temperature": 3}, openai.BadRequestError, "temperature must be in [0, 2]"),
        ({"stop": ["a", "b", "c", "d", "e"]}, openai.BadRequestError, "at most 4"),
        ({"logprobs": True}, openai.BadRequestError, "logprobs is not supported"),
        # other servers' sampling fields that modelpod does not implement: refused by name, never ignored
        ({"extra_body": {"typical_p": 0.5}}, openai.BadRequestError, "typical_p is not supported"),
        (
            {"extra_body": {"use_beam_search": True}},
            openai.BadRequestError,
            "use_beam_search is not supported",
        ),
        ({"extra_body": {"top_k": 1.5}}, openai.BadRequestError, "top_k must be a whole number"),
        ({"extra_body": {"min_p": 2}}, openai.BadRequestError, "min_p must be in [0, 1]"),
        ({"presence_penalty": 3}, openai.BadRequestError, "presence_penalty must be in [-2, 2]"),
        ({"max_tokens": 4090}, openai.BadRequestError, "context is 4096 tokens, but the request needs"),
        ({"model": "other"}, openai.NotFoundError, "model 'other' not found"),
    ],
)
def test_bad_requests_are_refused_in_openai_shape(
    client: openai.OpenAI, fields: dict[str, Any], error: type[Exception], message: str
) -> None:
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 4} | fields
    with pytest.raises(error) as refused:
        client.chat.completions.create(**body)
    assert message in str(refused.value)


def test_sampling_fields_are_honoured(client: openai.OpenAI, server: ServerProcess) -> None:
    """top_k 1 at temperature 1 is the greedy answer; a stop token id ends the answer at that token; a
    repetition penalty changes a greedy answer (the tiny model repeats one token)."""
    prompt = "Once upon a time"
    greedy = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, **GREEDY)
    top1 = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=12, temperature=1.0, extra_body={"top_k": 1}
    )
    assert top1.choices[0].text == greedy.choices[0].text
    assert (greedy.choices[0].finish_reason, greedy.usage and greedy.usage.completion_tokens) == (
        "length",
        12,
    )
    first = greedy_token_ids(server.project / "model", prompt, 1)[0]
    cut = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=12, temperature=0, extra_body={"stop_token_ids": [first]}
    )
    assert (cut.choices[0].finish_reason, cut.usage and cut.usage.completion_tokens) == ("stop", 1)
    assert cut.choices[0].text == ""  # the stop token is not shown, as with EOS
    penalised = client.completions.create(
        model="tiny",
        prompt=prompt,
        max_tokens=12,
        temperature=0,
        extra_body={"ignore_eos": True, "repetition_penalty": 5.0},
    )
    assert penalised.choices[0].text != greedy.choices[0].text


def greedy_token_ids(model_dir: Path, prompt: str, count: int) -> list[int]:
    """The tokens the model generates greedily for `prompt`, by transformers in this process."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=count)
    return [int(t) for t in out[0, ids.shape[1] :]]


def test_a_prompt_longer_than_the_context_gets_400_with_both_numbers(server: ServerProcess) -> None:
    answer = httpx.post(f"{server.url}/v1/completions", json={"prompt": list(range(5000))}, timeout=WAIT_S)
    assert answer.status_code == 400
    assert "the prompt has 5000 tokens" in answer.json()["error"]["message"]
    assert "context of 4096 tokens" in answer.json()["error"]["message"]


def test_concurrent_streams_share_forward_passes(server: ServerProcess, client: openai.OpenAI) -> None:
    steps_before = metric(server, "modelpod_step_tokens_count")
    singles_before = metric(server, 'modelpod_step_tokens_bucket{le="1.0",model="tiny"}')
    texts: list[str] = []

    def stream(i: int) -> None:
        chunks = client.completions.create(
            model="tiny", prompt=f"Story number {i}:", max_tokens=48, stream=True, **GREEDY
        )
        texts.append("".join(c.choices[0].text for c in chunks))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert len(texts) == 8
    steps = metric(server, "modelpod_step_tokens_count") - steps_before
    singles = metric(server, 'modelpod_step_tokens_bucket{le="1.0",model="tiny"}') - singles_before
    # 8 x 48 tokens took far fewer steps than tokens: most steps decoded several sequences at once
    assert steps < 8 * 48 / 2
    assert singles < steps / 2


def test_a_disconnected_stream_frees_its_sequence(server: ServerProcess) -> None:
    body = {"prompt": "Go on", "max_tokens": LONG, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=WAIT_S) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        until(lambda: metric(server, "modelpod_running_sequences") == 1, "the stream runs")
    until(lambda: metric(server, "modelpod_running_sequences") == 0, "the sequence is freed")
    generated = metric(server, "modelpod_generation_tokens_total")
    time.sleep(0.2)  # not a wait for an event: to see that no token comes after
    assert metric(server, "modelpod_generation_tokens_total") == generated
    assert metric(server, "modelpod_kv_cache_usage_ratio") == 0


def test_predict_and_v2_infer_generate_through_the_engine(server: ServerProcess) -> None:
    predicted = httpx.post(f"{server.url}/predict", json={"inputs": {"prompt": "Hello"}}, timeout=WAIT_S)
    assert predicted.status_code == 200, predicted.text
    assert isinstance(predicted.json()["outputs"]["text"], str)
    v2 = {"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [2], "data": ["Hello", "Bye"]}]}
    inferred = httpx.post(f"{server.url}/v2/models/tiny/infer", json=v2, timeout=WAIT_S)
    assert inferred.status_code == 200, inferred.text
    assert inferred.json()["outputs"][0]["shape"] == [2]


def test_metrics_and_access_log_tell_tokens(server: ServerProcess, client: openai.OpenAI) -> None:
    client.completions.create(model="tiny", prompt="Count", max_tokens=5, **GREEDY)
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    for name in (
        "modelpod_time_to_first_token_seconds_bucket",
        "modelpod_inter_token_latency_seconds_bucket",
        "modelpod_prompt_tokens_total",
        "modelpod_generation_tokens_total",
        "modelpod_running_sequences",
        "modelpod_waiting_sequences",
        "modelpod_kv_cache_usage_ratio",
        "modelpod_step_tokens_bucket",
        'modelpod_requests_total{code="200",endpoint="/v1/completions"',
    ):
        assert name in text
    until(lambda: '"path":"/v1/completions"' in server.log, "the access line is written")
    lines = [orjson.loads(line) for line in server.lines if '"path":"/v1/completions"' in line]
    assert any(line.get("completion_tokens") == 5 and line.get("prompt_tokens", 0) > 0 for line in lines)


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Iterator[ServerProcess]:
    settings = "generation: {max_running_sequences: 1}\nserver: {max_queue: 1, request_timeout_s: 60}\n"
    with ServerProcess(make_project(tmp_path_factory.mktemp("tiny1"), smollm2_dir, settings)) as process:
        yield process


def test_a_full_queue_gives_503_with_retry_after(one_at_a_time: ServerProcess) -> None:
    url = f"{one_at_a_time.url}/v1/completions"
    long = {"prompt": "Go", "max_tokens": LONG, "stream": True, "ignore_eos": True}
    with (
        httpx.stream("POST", url, json=long, timeout=WAIT_S) as running,
        httpx.stream("POST", url, json=long, timeout=WAIT_S) as waiting,
    ):
        assert running.status_code == waiting.status_code == 200
        until(lambda: metric(one_at_a_time, "modelpod_waiting_sequences") == 1, "one waits")
        refused = httpx.post(url, json={"prompt": "Go", "max_tokens": 2}, timeout=WAIT_S)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "waiting for the model already" in refused.json()["error"]["message"]
    until(lambda: metric(one_at_a_time, "modelpod_running_sequences") == 0, "both are freed")


def sse(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if line.startswith("data: "):
            yield line[len("data: ") :]


def test_the_request_timeout_ends_a_stream_with_an_error_event(
    tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path
) -> None:
    project = make_project(
        tmp_path_factory.mktemp("tiny-t"), smollm2_dir, "server: {request_timeout_s: 0.5}\n"
    )
    with ServerProcess(project) as server:
        url = f"{server.url}/v1/completions"
        whole = httpx.post(url, json={"prompt": "Go", "max_tokens": LONG, "ignore_eos": True}, timeout=WAIT_S)
        assert whole.status_code == 504
        assert "did not finish within 0.5 s" in whole.json()["error"]["message"]
        body = {"prompt": "Go", "max_tokens": LONG, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", url, json=body, timeout=WAIT_S) as response:
            events = list(sse(response.iter_lines()))
        assert events[-1] == "[DONE]"
        assert orjson.loads(events[-2])["error"]["code"] == 504


def test_sigterm_lets_streams_finish_within_the_drain_budget_and_cuts_the_rest_cleanly(
    tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path
) -> None:
    project = make_project(tmp_path_factory.mktemp("tiny-d"), smollm2_dir, "server: {drain_timeout_s: 1}\n")
    server = ServerProcess(project).start()
    try:
        url = f"{server.url}/v1/completions"
        cut_body = {"prompt": "Go", "max_tokens": LONG, "ignore_eos": True, "stream": True}
        short_body = {"prompt": "Go", "max_tokens": 8, "ignore_eos": True, "stream": True}
        with (
            httpx.stream("POST", url, json=cut_body, timeout=WAIT_S) as cut,
            httpx.stream("POST", url, json=short_body, timeout=WAIT_S) as short,
        ):
            cut_events, short_events = sse(cut.iter_lines()), sse(short.iter_lines())
            assert next(cut_events)
            assert next(short_events)
            exit_code: list[int] = []
            stopper = threading.Thread(target=lambda: exit_code.append(server.terminate(WAIT_S)))
            stopper.start()
            rest_short, rest_cut = list(short_events), list(cut_events)
            stopper.join(WAIT_S)
        assert rest_short[-1] == "[DONE]"
        assert orjson.loads(rest_short[-2])["choices"][0]["finish_reason"] == "length"
        assert rest_cut[-1] == "[DONE]"
        error = orjson.loads(rest_cut[-2])["error"]
        assert error["code"] == 503
        assert "drain budget ran out" in error["message"]
        assert exit_code == [0]
        assert "Traceback" not in server.log
    finally:
        server.stop()


def test_the_openapi_document_lists_the_generation_endpoints(server: ServerProcess) -> None:
    document = httpx.get(f"{server.url}/openapi.json", timeout=5).json()
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["required"] == ["messages"]
    assert "/v1/completions" in document["paths"]


def test_a_body_over_the_limit_gets_413_in_openai_shape(client: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "x" * 70_000}]
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="tiny", messages=long, max_tokens=4)
    assert refused.value.status_code == 413
    assert "larger than the limit of 65536 bytes" in str(refused.value)


def test_openapi_paths_are_the_served_routes_of_a_language_model(server: ServerProcess):
    served = served_routes(server.url, "tiny", app_routes(server.project))
    assert {("POST", "/v1/chat/completions"), ("POST", "/v1/completions")} <= served
    assert documented_routes(server.url) == served


def test_embeddings_on_a_language_model_names_the_generation_routes(server: ServerProcess) -> None:
    answer = httpx.post(f"{server.url}/v1/embeddings", json={"input": "hello"}, timeout=WAIT_S)
    assert answer.status_code == 404
    message = answer.json()["error"]["message"]
    assert "a text-generation model" in message
    assert "POST /v1/chat/completions or POST /v1/completions" in message
