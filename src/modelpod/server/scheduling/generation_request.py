"""What a generation request is, what its caller holds while it runs, and what the engine needs of the
model and of the metrics. The engine itself is `generation.py`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from modelpod.errors import InferenceError, ModelpodError


@dataclass(frozen=True)
class GenerationLimits:
    max_running_sequences: int
    max_tokens_per_step: int  # tokens one forward pass computes at most: decodes, then prompt chunks
    max_context_tokens: int
    kv_cache_tokens: int  # the KV pool: running sequences reserve prompt + max_tokens each
    max_queue: int  # waiting sequences, at most
    prefix_caching: bool = True


@dataclass(frozen=True)
class GenerationRequest:
    prompt: tuple[int, ...]
    max_tokens: int
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
    timeout_s: float = 30.0

    @property
    def reservation(self) -> int:
        """KV-cache tokens the sequence may fill: its prompt and every token it may generate."""
        return len(self.prompt) + self.max_tokens

    def sampling_settings(self) -> dict[str, Any]:
        """The keywords of the runtime's `sampling()` (runtimes/_sampling.py `new_sampling`)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "seed": self.seed,
        }

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


@dataclass(frozen=True)
class Chunk:
    text: str
    finish_reason: str | None = None  # "stop" or "length" on the last chunk
    # set on the last chunk of a failed generation: a SchedulingError or an InferenceError
    error: ModelpodError | None = None
    completion_tokens: int = 0  # tokens generated so far


class Model(Protocol):
    """What the engine needs of a text-generation runtime (runtimes/generation_runtime.py)."""

    tokenizer: Any
    eos_token_ids: frozenset[int]

    def chat_prompt(self, messages: Sequence[Any]) -> list[int]: ...
    def text_prompt(self, text: str) -> list[int]: ...
    def start_engine(self, pool_tokens: int, *, prefix_caching: bool) -> None: ...
    def open_sequence(self, prompt: Sequence[int], reservation: int) -> Any: ...
    def close_sequence(self, kv: Any, tokens: Sequence[int]) -> None: ...
    def forward(self, pieces: Sequence[Any]) -> Any: ...
    def clear(self) -> None: ...
    @property
    def kv_capacity(self) -> int: ...
    @property
    def kv_reserved(self) -> int: ...
    def sample(self, logits: Any, sampling: Sequence[Any], histories: Sequence[Any]) -> list[int]: ...
    def sampling(self, **settings: Any) -> Any: ...


class Observer(Protocol):
    """The generation metrics the engine feeds (server/core/metrics.py GenerationMetrics)."""

    def first_token(self, seconds: float) -> None: ...
    def next_token(self, seconds: float) -> None: ...
    def prompt_tokens(self, count: int, cached: int) -> None: ...
    def generated_tokens(self, count: int) -> None: ...
    def step(self, tokens: int) -> None: ...


class Generation:
    """One request's side of a generation, on the event loop. `request` is the built-in engine's; an
    external engine's handle has none, and learns its prompt's length from the engine's usage."""

    def __init__(
        self, wake: Callable[[], None], *, request: GenerationRequest | None = None, prompt_tokens: int = 0
    ) -> None:
        self._request = request
        self.prompt_tokens = len(request.prompt) if request is not None else prompt_tokens
        self.completion_tokens = 0
        self.cancelled = False  # read by the engine thread at its next step
        self._queue: asyncio.Queue[Chunk] = asyncio.Queue()
        self._wake = wake
        self.finished = False

    @property
    def request(self) -> GenerationRequest:
        if self._request is None:
            raise RuntimeError("an external engine's generation has no GenerationRequest")
        return self._request

    def cancel(self) -> None:
        """The client is gone: the engine frees the sequence at its next step."""
        if not self.finished:
            self.cancelled = True
            self._wake()

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Text as it is generated; the last chunk has a finish_reason or an error."""
        while True:
            chunk = await self._queue.get()
            yield chunk
            if chunk.finish_reason is not None or chunk.error is not None:
                return

    async def result(self) -> tuple[str, str]:
        """The whole text and the finish reason; raises the generation's error."""
        parts = []
        async for chunk in self.chunks():
            if chunk.error is not None:
                raise chunk.error
            parts.append(chunk.text)
            if chunk.finish_reason is not None:
                return "".join(parts), chunk.finish_reason
        raise InferenceError("the generation ended without a finish reason")  # pragma: no cover

    def put(self, chunk: Chunk) -> None:
        """Called on the event loop with the engine's chunks."""
        self.completion_tokens = chunk.completion_tokens
        if chunk.finish_reason is not None or chunk.error is not None:
            self.finished = True
        self._queue.put_nowait(chunk)
