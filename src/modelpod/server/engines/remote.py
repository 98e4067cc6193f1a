"""The routes' `TextEngine` over an external engine's OpenAI API, on its private loopback port.

A request is sent streamed (`stream: true`, usage included) whatever the client asked, and read event by
event: modelpod's own routes then stream or gather it as for the built-in engine, with the same bodies,
errors, limits and metrics. So modelpod measures time to first token and between tokens itself, counts
the prompt and generated tokens from the engine's usage, bounds what waits (`max_running_sequences` +
`server.max_queue` in flight, then 503), ends a request past `server.request_timeout_s`, and frees it in
the engine when its client goes away (closing the engine's connection makes both engines drop it).

Every sampling field is sent with a value, OpenAI's defaults included: llama.cpp's own defaults differ
(top_k 40, top_p 0.95, min_p 0.05), and a request must mean the same whatever serves it. A field an
engine cannot honour is refused by name (`UNSUPPORTED`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import orjson

from modelpod.errors import InferenceError, ModelpodError
from modelpod.server.core.metrics import GenerationMetrics
from modelpod.server.scheduling.errors import (
    BadPromptError,
    DeadlineError,
    DrainingError,
    QueueFullError,
    UnsupportedFieldError,
)
from modelpod.server.scheduling.generation_request import Chunk, Generation
from modelpod.server.scheduling.text_engine import TextRequest

# engine -> TextRequest fields it cannot honour, with the value that asks for nothing
UNSUPPORTED: dict[str, dict[str, Any]] = {
    "llamacpp": {"stop_token_ids": ()},
    "vllm": {},
}


class RemoteTextEngine:
    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        served_name: str,
        max_in_flight: int,
        default_max_tokens: int,
        timeout_s: float,
        metrics: GenerationMetrics,
    ) -> None:
        self.name = name
        self.client = client
        self.served_name = served_name
        self.max_in_flight = max_in_flight
        self.default_max_tokens = default_max_tokens
        self.timeout_s = timeout_s
        self.metrics = metrics
        self._streams: dict[Generation, asyncio.Task[None]] = {}
        # the engine's own figures, polled from its metrics (server/engines/external.py)
        self.running = 0
        self.waiting = 0
        self.kv_usage = 0.0

    async def start(self, request: TextRequest) -> Generation:
        for field, neutral in UNSUPPORTED[self.name].items():
            if getattr(request, field) != neutral:
                raise UnsupportedFieldError(
                    f"{field} is not supported by the {self.name} engine; leave it out"
                )
        if len(self._streams) >= self.max_in_flight:
            raise QueueFullError(f"{len(self._streams)} requests are with the model already; retry later")
        path, body = self._body(request)
        handle = Generation(lambda: self._cancel(handle))
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._stream(handle, path, body, opened))
        self._streams[handle] = task
        task.add_done_callback(lambda _: self._streams.pop(handle, None))
        await opened  # the engine's refusal of the request (a 400, say) is this request's error
        return handle

    def abort_all(self, message: str) -> None:
        for handle, task in list(self._streams.items()):
            handle.put(Chunk("", None, DrainingError(message), handle.completion_tokens))
            task.cancel()

    def _cancel(self, handle: Generation) -> None:
        task = self._streams.get(handle)
        if task is not None and handle.cancelled:
            task.cancel()  # closes the engine's connection: the engine drops the request

    def _body(self, request: TextRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.served_name,
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "min_p": request.min_p,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if request.ignore_eos:
            body["ignore_eos"] = True
        if self.name == "llamacpp":
            body["top_k"] = request.top_k  # 0: no cut
            body["repeat_penalty"] = request.repetition_penalty
        else:
            body["top_k"] = request.top_k or -1  # vLLM: -1 for no cut
            body["repetition_penalty"] = request.repetition_penalty
            if request.stop_token_ids:
                body["stop_token_ids"] = list(request.stop_token_ids)
        if request.messages is not None:
            return "/v1/chat/completions", {**body, "messages": [dict(m) for m in request.messages]}
        prompt = list(request.prompt) if isinstance(request.prompt, tuple) else request.prompt
        return "/v1/completions", {**body, "prompt": prompt}

    async def _stream(
        self, handle: Generation, path: str, body: dict[str, Any], opened: asyncio.Future[None]
    ) -> None:
        reader = _Reader(handle, self.metrics, time.monotonic())
        try:
            await asyncio.wait_for(self._read(path, body, reader, opened), self.timeout_s)
            reader.end()
        except asyncio.TimeoutError:
            reader.fail(
                DeadlineError(
                    f"the request did not finish within {self.timeout_s:g} s (server.request_timeout_s); "
                    f"{handle.completion_tokens} tokens were generated"
                ),
                opened,
            )
        except ModelpodError as exc:
            reader.fail(exc, opened)
        except httpx.HTTPError as exc:
            reader.fail(InferenceError(f"the {self.name} engine did not answer: {exc}"), opened)
        except asyncio.CancelledError:
            if not opened.done():
                opened.set_exception(DrainingError("the request was cancelled"))
            raise

    async def _read(
        self, path: str, body: dict[str, Any], reader: _Reader, opened: asyncio.Future[None]
    ) -> None:
        headers = {"content-type": "application/json"}  # vLLM refuses a body without it
        async with self.client.stream("POST", path, content=orjson.dumps(body), headers=headers) as response:
            if response.status_code != 200:
                raise _refusal(response.status_code, await response.aread())
            opened.set_result(None)
            # lines split from the bytes as they come, without httpx's text decoding and line splitting:
            # this process shares the CPUs with the engine, so its time per token is the engine's loss
            pending = b""
            async for data in response.aiter_bytes():
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    if line.startswith(b"data:") and reader.event(line[5:].strip()):
                        return


class _Reader:
    """One stream's events turned into chunks, and its metrics."""

    def __init__(self, handle: Generation, metrics: GenerationMetrics, started: float) -> None:
        self.handle = handle
        self.metrics = metrics
        self.started = started
        self.last_at: float | None = None
        self.chunks = 0
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def event(self, payload: bytes) -> bool:
        """Read one event; True at the end of the stream."""
        if payload == b"[DONE]":
            return True
        event = orjson.loads(payload)
        if "error" in event:
            error = event["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise InferenceError(f"the engine failed: {message}")
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        choices = event.get("choices") or []
        if not choices:
            return False
        choice = choices[0]
        delta = choice.get("delta") or {}
        text = delta.get("content") if "delta" in choice else choice.get("text")
        if text:
            now = time.monotonic()
            if self.last_at is None:
                self.metrics.first_token(now - self.started)
            else:
                self.metrics.next_token(now - self.last_at)
            self.last_at = now
            self.chunks += 1
            self.metrics.generated_tokens(1)
            self.handle.put(Chunk(text, None, None, self.chunks))
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        return False

    def end(self) -> None:
        usage = self.usage or {}
        completion = int(usage.get("completion_tokens") or self.chunks)
        prompt = int(usage.get("prompt_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        self.handle.prompt_tokens = prompt
        self.metrics.prompt_tokens(prompt, cached)
        if completion > self.chunks:  # chunks that held more than one token
            self.metrics.generated_tokens(completion - self.chunks)
        reason = "length" if self.finish_reason == "length" else "stop"
        self.handle.put(Chunk("", reason, None, completion))

    def fail(self, error: ModelpodError, opened: asyncio.Future[None]) -> None:
        if not opened.done():  # refused before it streamed: the request's own error
            opened.set_exception(error)
            return
        self.handle.put(Chunk("", None, error, self.handle.completion_tokens))


def _refusal(status: int, body: bytes) -> ModelpodError:
    """The engine's answer to a request it refused, as modelpod's error."""
    with contextlib.suppress(ValueError):
        data = orjson.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else str(error)
        body = str(message or body).encode()
    text = body.decode(errors="replace")[:2000]
    if status in (400, 422):
        return BadPromptError(text)
    if status == 503:
        return QueueFullError(f"the engine is busy: {text}")
    return InferenceError(f"the engine answered {status}: {text}")
