"""OpenAI's `POST /v1/chat/completions` and `POST /v1/completions`, over the generation engine.

Both are served on the direct path (server/http/asgi.py) with `watch_disconnect`: a client that goes away
cancels its handler, and the handler's clean-up cancels its sequence, which the engine frees at its next
step. With `stream: true` the answer is server-sent events, one `data: {chunk}` per piece of text, a
usage chunk when `stream_options.include_usage` asks for it, and `data: [DONE]` at the end; a stream
that fails after it started (the request timeout, the drain budget running out at shutdown, the model
raising) ends with an error event in OpenAI's shape and then `data: [DONE]`, never a cut connection.

Prompts are tokenized on the event loop when short and on a worker thread when long, as the embeddings
route counts its tokens.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from http import HTTPStatus
from typing import Any

import numpy as np

from modelpod import contract
from modelpod.runtimes.base import Batch
from modelpod.server.core import gate
from modelpod.server.core.state import ServerState
from modelpod.server.http.asgi import Call, InferenceRoute, Reply
from modelpod.server.http.errors import ApiError, api_error
from modelpod.server.http.logs import request_id
from modelpod.server.http.responses import json_body, openai_error_body
from modelpod.server.protocols.openai.params import GenerationParams, parse_body, parse_chat, parse_completion
from modelpod.server.scheduling.generation_request import Generation
from modelpod.server.scheduling.text_engine import TextEngine, TextRequest

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_DONE = b"data: [DONE]\n\n"


def inference_routes(state: ServerState) -> list[InferenceRoute]:
    async def chat(call: Call) -> Reply:
        engine = _engine(state)
        params = parse_chat(await parse_body(call.body), state.name)
        return await _generate(state, engine, call, params)

    async def completions(call: Call) -> Reply:
        engine = _engine(state)
        params = parse_completion(await parse_body(call.body), state.name)
        return await _generate(state, engine, call, params)

    return [
        InferenceRoute(contract.CHAT_COMPLETIONS, chat, openai_errors=True, watch_disconnect=True),
        InferenceRoute(contract.COMPLETIONS, completions, openai_errors=True, watch_disconnect=True),
    ]


def texts_for_prompts(engine: TextEngine) -> Callable[[Batch], Any]:
    """`/predict` and v2 infer on a text-generation model: each prompt through the engine, greedy, with
    the default max_tokens; a coroutine function from a batch of prompts to a batch of texts."""

    async def generate(inputs: Batch) -> Batch:
        handles: list[Generation] = []
        try:  # what the engine raises reaches ServerApp, which answers it (server/http/errors.py)
            for prompt in inputs["prompt"]:
                handles.append(await engine.start(TextRequest(prompt=str(prompt))))
            texts = [(await handle.result())[0] for handle in handles]
        finally:
            for handle in handles:
                handle.cancel()
        return {"text": np.asarray(texts, dtype=object)}

    return generate


def _engine(state: ServerState) -> TextEngine:
    gate.loaded(state)  # 503 while loading or draining
    if state.engine is None:
        raise ApiError(
            HTTPStatus.NOT_FOUND,
            f"model {state.name} does not generate text; use /predict or /v2/models/{state.name}/infer",
        )
    return state.engine


async def _generate(state: ServerState, engine: TextEngine, call: Call, params: GenerationParams) -> Reply:
    handle = await engine.start(params.request)
    answer = _Answer(state.name, params)
    if params.stream:
        events = answer.events(handle, call)
        return Reply(b"", content_type="text/event-stream", headers=_SSE_HEADERS, stream=events)
    try:
        text, finish = await handle.result()
    finally:
        handle.cancel()  # when this handler is cancelled (the client left): free the sequence
        _log_tokens(call, handle)
    return Reply(json_body(answer.whole(text, finish, handle)))


def _log_tokens(call: Call, handle: Generation) -> None:
    call.log["prompt_tokens"] = handle.prompt_tokens
    call.log["completion_tokens"] = handle.completion_tokens


class _Answer:
    """The response bodies of one request, in OpenAI's shapes for chat or text completions."""

    def __init__(self, model: str, params: GenerationParams) -> None:
        self.chat = params.kind == "chat"
        self.params = params
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{time.time_ns():x}"
        self.base = {"id": self.id, "created": int(time.time()), "model": model}

    def whole(self, text: str, finish: str, handle: Generation) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text}
        choice |= {"finish_reason": finish, "logprobs": None}
        kind = "chat.completion" if self.chat else "text_completion"
        return {**self.base, "object": kind, "choices": [choice], "usage": _usage(handle)}

    async def events(self, handle: Generation, call: Call) -> AsyncGenerator[bytes, None]:
        try:
            if self.chat:
                yield self._event([self._choice({"role": "assistant", "content": ""}, None)])
            async for chunk in handle.chunks():
                if chunk.error is not None:
                    error = api_error(chunk.error, request_id=request_id.get())
                    yield b"data: " + openai_error_body(error.status, error.message) + b"\n\n"
                    break
                content = {"content": chunk.text} if self.chat else chunk.text
                yield self._event([self._choice(content, chunk.finish_reason)])
            else:
                if self.params.include_usage:
                    yield self._event([], usage=_usage(handle))
            yield _DONE
        finally:
            handle.cancel()
            _log_tokens(call, handle)

    def _choice(self, content: Any, finish: str | None) -> dict[str, Any]:
        body = {"delta": content} if self.chat else {"text": content}
        return {"index": 0, **body, "finish_reason": finish, "logprobs": None}

    def _event(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        chunk: dict[str, Any] = {**self.base, "object": kind, "choices": choices}
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + json_body(chunk) + b"\n\n"


def _usage(handle: Generation) -> dict[str, int]:
    prompt, completion = handle.prompt_tokens, handle.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
