"""What the text-generation routes talk to, whatever engine generates: the built-in one in this process
(`LocalTextEngine`, over `GenerationEngine`), or an external one in a child process
(server/engines/remote.py). Every engine takes a `TextRequest` (a chat or a prompt, and how to sample)
and answers a `Generation` handle whose chunks the routes stream; the routes, limits, metrics and error
answers are the same for all of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from modelpod.server.scheduling.errors import BadPromptError
from modelpod.server.scheduling.generation import GenerationEngine
from modelpod.server.scheduling.generation_request import Generation, GenerationRequest

# prompts up to this many characters are tokenized on the event loop (well under a millisecond)
TOKENIZE_IN_PLACE_CHARS = 2000


@dataclass(frozen=True)
class TextRequest:
    """A generation as a client asks for it: a chat (`messages`) or a prompt (text or token ids)."""

    messages: tuple[Mapping[str, Any], ...] | None = None
    prompt: str | tuple[int, ...] | None = None
    max_tokens: int | None = None  # None: the server's default, within the context
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    ignore_eos: bool = False


class TextEngine(Protocol):
    """An engine as the routes and the server's life cycle see it."""

    name: str  # builtin, llamacpp, vllm

    async def start(self, request: TextRequest) -> Generation: ...
    @property
    def running(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    @property
    def kv_usage(self) -> float: ...
    def abort_all(self, message: str) -> None: ...


class LocalTextEngine:
    """The built-in engine behind the routes: tokenizes (long texts off the event loop), fills in the
    default max_tokens and queues a `GenerationRequest`."""

    name = "builtin"

    def __init__(self, engine: GenerationEngine, *, default_max_tokens: int, timeout_s: float) -> None:
        self.engine = engine
        self.default_max_tokens = default_max_tokens
        self.timeout_s = timeout_s

    async def start(self, request: TextRequest) -> Generation:
        model = self.engine.model
        if request.messages is not None:
            messages = list(request.messages)
            size = sum(len(str(m.get("content", ""))) for m in messages)
            prompt = await _tokenize(lambda: model.chat_prompt(messages), size)
        elif isinstance(request.prompt, tuple):
            prompt = list(request.prompt)
        else:
            text = str(request.prompt)
            prompt = await _tokenize(lambda: model.text_prompt(text), len(text))
        if not prompt:
            raise BadPromptError("the prompt is empty after tokenizing")
        return self.engine.submit(self._request(request, prompt))

    def _request(self, request: TextRequest, prompt: list[int]) -> GenerationRequest:
        sampling = {
            field.name: getattr(request, field.name)
            for field in dataclasses.fields(request)
            if field.name not in ("messages", "prompt", "max_tokens")
        }
        max_tokens = request.max_tokens or self._default_max_tokens(len(prompt))
        return GenerationRequest(tuple(prompt), max_tokens, timeout_s=self.timeout_s, **sampling)

    def _default_max_tokens(self, prompt: int) -> int:
        context = self.engine.limits.max_context_tokens
        if context - prompt < 1:
            raise BadPromptError(
                f"the prompt has {prompt} tokens, which leaves no room in this model's context of "
                f"{context} tokens; shorten it"
            )
        return min(self.default_max_tokens, context - prompt)

    @property
    def running(self) -> int:
        return self.engine.running

    @property
    def waiting(self) -> int:
        return self.engine.waiting

    @property
    def kv_usage(self) -> float:
        return self.engine.kv_usage

    def abort_all(self, message: str) -> None:
        self.engine.abort_all(message)


async def _tokenize(encode: Callable[[], list[int]], chars: int) -> list[int]:
    try:
        if chars <= TOKENIZE_IN_PLACE_CHARS:
            return encode()
        return await asyncio.to_thread(encode)
    except ValueError as exc:  # e.g. no chat template
        raise BadPromptError(str(exc)) from None
