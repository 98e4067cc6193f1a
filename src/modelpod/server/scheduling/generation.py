"""Continuous batching: the scheduler of text generation, one decode step at a time.

The engine runs on the model's thread. Each step:

1. drops sequences whose client went away (`Generation.cancel`) and fails those past their deadline;
2. admits waiting sequences, oldest first, while the running ones number fewer than
   `max_running_sequences`, their prompts fit in `max_tokens_per_step`, and their KV-cache reservations
   (prompt + max_tokens each) fit in the `kv_cache_tokens` budget;
3. prefills the admitted ones in one forward pass (they join the running batch) and hands their first
   tokens to the event loop at once, so a new request's first token does not wait for a decode pass;
4. decodes one token for every running sequence in one forward pass;
5. turns tokens into text, applies stop strings, EOS and length limits, and removes finished sequences,
   so the next step runs without them.

So a request joins the batch at the next step and leaves it the step it ends, and prefill and decode
share the model. The event loop side is `Generation`: `submit` queues a request (or refuses it when
`max_queue` wait already), and `chunks()` yields its text as it is produced. Chunks reach the event loop
through `call_soon_threadsafe`, one call per phase of a step for all sequences.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelpod.errors import InferenceError, ModelpodError
from modelpod.server.scheduling.errors import DeadlineError, DrainingError, OverBudgetError, QueueFullError
from modelpod.server.scheduling.text import Detokenizer, StopMatcher

log = logging.getLogger("modelpod.server")

# an idle engine still wakes this often, so that a lost notification costs at most this long
_IDLE_WAKE_S = 1.0


@dataclass(frozen=True)
class GenerationLimits:
    max_running_sequences: int
    max_tokens_per_step: int
    max_context_tokens: int
    kv_cache_tokens: int  # tokens reserved by running sequences, at most
    max_queue: int  # waiting sequences, at most


@dataclass(frozen=True)
class GenerationRequest:
    prompt: tuple[int, ...]
    max_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Chunk:
    text: str
    finish_reason: str | None = None  # "stop" or "length" on the last chunk
    error: ModelpodError | None = (
        None  # set on the last chunk of a failed generation (SchedulingError, InferenceError)
    )
    completion_tokens: int = 0  # tokens generated so far


class Model(Protocol):
    """What the engine needs of a text-generation runtime (runtimes/generation_runtime.py)."""

    tokenizer: Any
    eos_token_ids: frozenset[int]

    def chat_prompt(self, messages: Sequence[Any]) -> list[int]: ...
    def text_prompt(self, text: str) -> list[int]: ...
    def start_batch(self, max_rows: int) -> None: ...
    def prefill(self, prompts: Sequence[Sequence[int]]) -> Any: ...
    def decode(self, tokens: Sequence[int]) -> Any: ...
    def remove(self, row: int) -> int | None: ...
    def clear(self) -> None: ...
    def sample(self, logits: Any, sampling: Sequence[Any]) -> list[int]: ...
    def sampling(self, temperature: float, top_p: float, seed: int | None) -> Any: ...


class Observer(Protocol):
    """The generation metrics the engine feeds (server/core/metrics.py GenerationMetrics)."""

    def first_token(self, seconds: float) -> None: ...
    def next_token(self, seconds: float) -> None: ...
    def prompt_tokens(self, count: int) -> None: ...
    def generated_tokens(self, count: int) -> None: ...
    def step(self, tokens: int) -> None: ...


class Generation:
    """One request's side of a generation, on the event loop."""

    def __init__(self, request: GenerationRequest, wake: Callable[[], None]) -> None:
        self.request = request
        self.prompt_tokens = len(request.prompt)
        self.completion_tokens = 0
        self.cancelled = False  # read by the engine thread at its next step
        self._queue: asyncio.Queue[Chunk] = asyncio.Queue()
        self._wake = wake
        self.finished = False

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

    def _put(self, chunk: Chunk) -> None:
        self.completion_tokens = chunk.completion_tokens
        if chunk.finish_reason is not None or chunk.error is not None:
            self.finished = True
        self._queue.put_nowait(chunk)


@dataclass(eq=False)
class _Sequence:
    handle: Generation
    deadline: float
    arrived: float
    detokenizer: Detokenizer
    stopper: StopMatcher
    sampling: Any
    generated: int = 0
    last_token: int = 0
    last_token_at: float | None = None
    done: bool = False

    @property
    def request(self) -> GenerationRequest:
        return self.handle.request

    @property
    def reservation(self) -> int:
        return len(self.request.prompt) + self.request.max_tokens


@dataclass
class _Step:
    """Chunks to hand over at the end of a phase, and the tokens this step computed."""

    chunks: list[tuple[Generation, Chunk]] = field(default_factory=list)
    tokens: int = 0


class GenerationEngine:
    def __init__(
        self,
        model: Model,
        limits: GenerationLimits,
        *,
        loop: asyncio.AbstractEventLoop,
        observer: Observer | None = None,
    ) -> None:
        self.model = model
        self.limits = limits
        self._loop = loop
        self._observer = observer
        self._cond = threading.Condition()
        self._waiting: collections.deque[_Sequence] = collections.deque()  # guarded by _cond
        self._rows: list[_Sequence] = []  # running sequences by their row in the model's batch
        self._kv_reserved = 0
        self._closed = False
        self._abort: str | None = None

    # --- the event loop's side ---------------------------------------------------------------------

    def check(self, prompt_tokens: int, max_tokens: int) -> None:
        """Raise OverBudgetError when a request can never run: too long for the context or the KV-cache
        budget (both numbers in the message)."""
        context, needed = self.limits.max_context_tokens, prompt_tokens + max_tokens
        if needed > context:
            raise OverBudgetError(
                f"this model's context is {context} tokens, but the request needs {needed} "
                f"({prompt_tokens} in the prompt, {max_tokens} to generate); shorten the prompt or lower "
                "max_tokens",
            )
        if prompt_tokens + max_tokens > self.limits.kv_cache_tokens:
            raise OverBudgetError(
                f"the request needs {prompt_tokens + max_tokens} tokens of KV cache ({prompt_tokens} in the "
                f"prompt, {max_tokens} to generate), more than the server's budget of "
                f"{self.limits.kv_cache_tokens} (generation.kv_cache_tokens)",
            )

    def submit(self, request: GenerationRequest) -> Generation:
        """Queue `request`; raises QueueFullError when max_queue requests wait already, DrainingError
        when the engine is closed."""
        self.check(len(request.prompt), request.max_tokens)
        handle = Generation(request, self._wake)
        now = time.monotonic()
        sequence = _Sequence(
            handle=handle,
            deadline=now + request.timeout_s,
            arrived=now,
            detokenizer=Detokenizer(self.model.tokenizer, request.prompt),
            stopper=StopMatcher(request.stop),
            sampling=self.model.sampling(request.temperature, request.top_p, request.seed),
        )
        with self._cond:
            if self._closed:
                raise DrainingError("the server is shutting down")
            if len(self._waiting) >= self.limits.max_queue:
                raise QueueFullError(
                    f"{len(self._waiting)} requests are waiting for the model already; retry later"
                )
            self._waiting.append(sequence)
            self._cond.notify()
        return handle

    @property
    def running(self) -> int:
        return len(self._rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_usage(self) -> float:
        """Share of the KV-cache budget that running sequences have reserved."""
        return self._kv_reserved / self.limits.kv_cache_tokens

    def abort_all(self, message: str) -> None:
        """End every running and waiting generation with a DrainingError (the drain budget ran out)."""
        with self._cond:
            self._abort = message
            self._cond.notify()

    def close(self) -> None:
        """Stop `run` after the step in progress; what is left fails with a DrainingError."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # --- the model thread's side -------------------------------------------------------------------

    def run(self) -> None:
        """Step until closed. Runs on the model's thread."""
        self.model.start_batch(self.limits.max_running_sequences)
        while True:
            with self._cond:
                while not (self._closed or self._rows or self._waiting or self._abort):
                    self._cond.wait(timeout=_IDLE_WAKE_S)
                closed = self._closed
            if closed:
                break
            try:
                self.step()
            except Exception:  # a bug of ours: fail what runs and keep serving
                log.exception("generation step failed")
                self._fail_running(InferenceError("internal error in the generation step"))
        self._fail_everything(DrainingError("the server is shutting down"))

    def step(self) -> None:
        now = time.monotonic()
        step = _Step()
        with self._cond:
            abort, self._abort = self._abort, None
        if abort is not None:
            self._fail_everything(DrainingError(abort))
            return
        self._retire(now, step)
        admitted = self._admit(step)
        if admitted:
            self._prefill(admitted, step)
            self._hand_over(step.chunks)
            step.chunks = []
        if self._rows:
            self._decode(step)
        self._hand_over(step.chunks)
        if self._observer is not None and step.tokens:
            self._observer.step(step.tokens)

    def _retire(self, now: float, step: _Step) -> None:
        for sequence in self._rows:
            if sequence.handle.cancelled:
                sequence.done = True
            elif now > sequence.deadline:
                self._fail(sequence, self._timeout(sequence), step)
        with self._cond:
            kept: collections.deque[_Sequence] = collections.deque()
            for sequence in self._waiting:
                if sequence.handle.cancelled:
                    continue
                if now > sequence.deadline:
                    self._fail(sequence, self._timeout(sequence), step)
                else:
                    kept.append(sequence)
            self._waiting = kept
        self._remove_done()

    def _admit(self, step: _Step) -> list[_Sequence]:
        admitted: list[_Sequence] = []
        prompt_tokens = 0
        with self._cond:
            while self._waiting and len(self._rows) + len(admitted) < self.limits.max_running_sequences:
                sequence = self._waiting[0]
                size = len(sequence.request.prompt)
                if self._kv_reserved + sequence.reservation > self.limits.kv_cache_tokens:
                    break
                if admitted and prompt_tokens + size > self.limits.max_tokens_per_step:
                    break
                self._waiting.popleft()
                admitted.append(sequence)
                prompt_tokens += size
                self._kv_reserved += sequence.reservation
        step.tokens += prompt_tokens
        if self._observer is not None and prompt_tokens:
            self._observer.prompt_tokens(prompt_tokens)
        return admitted

    def _prefill(self, admitted: list[_Sequence], step: _Step) -> None:
        try:
            logits = self.model.prefill([s.request.prompt for s in admitted])
        except Exception as exc:  # the model's failure fails these requests, not the server
            log.exception("prefill of %d sequences failed", len(admitted))
            for sequence in admitted:
                self._kv_reserved -= sequence.reservation
                self._fail(sequence, _model_error(exc), step)
            return
        self._rows.extend(admitted)
        tokens = self.model.sample(logits, [s.sampling for s in admitted])
        now = time.monotonic()
        for sequence, token in zip(admitted, tokens, strict=True):
            self._accept(sequence, token, now, step)
        self._remove_done()

    def _decode(self, step: _Step) -> None:
        try:
            logits = self.model.decode([s.last_token for s in self._rows])
        except Exception as exc:
            log.exception("decode step of %d sequences failed", len(self._rows))
            self._fail_running(_model_error(exc), step)
            return
        step.tokens += len(self._rows)
        tokens = self.model.sample(logits, [s.sampling for s in self._rows])
        now = time.monotonic()
        for sequence, token in zip(self._rows, tokens, strict=True):
            self._accept(sequence, token, now, step)
        self._remove_done()

    def _accept(self, sequence: _Sequence, token: int, now: float, step: _Step) -> None:
        request = sequence.request
        sequence.generated += 1
        sequence.last_token = token
        if self._observer is not None:
            self._observer.generated_tokens(1)
            if sequence.last_token_at is None:
                self._observer.first_token(now - sequence.arrived)
            else:
                self._observer.next_token(now - sequence.last_token_at)
        sequence.last_token_at = now
        finish = None
        if token in self.model.eos_token_ids and not request.ignore_eos:
            text, finish = sequence.stopper.flush(), "stop"
        else:
            text = sequence.stopper.feed(sequence.detokenizer.push(token))
            if sequence.stopper.stopped:
                finish = "stop"
            elif (
                sequence.generated >= request.max_tokens
                or len(request.prompt) + sequence.generated >= self.limits.max_context_tokens
            ):
                text, finish = text + sequence.stopper.flush(), "length"
        if finish is not None:
            sequence.done = True
        if text or finish is not None:
            step.chunks.append((sequence.handle, Chunk(text, finish, None, sequence.generated)))

    def _remove_done(self) -> None:
        for row in range(len(self._rows) - 1, -1, -1):
            sequence = self._rows[row]
            if not sequence.done:
                continue
            self._kv_reserved -= sequence.reservation
            moved = self.model.remove(row)
            last = self._rows.pop()
            if moved is not None:
                self._rows[row] = last

    def _fail(self, sequence: _Sequence, error: ModelpodError, step: _Step) -> None:
        sequence.done = True
        step.chunks.append((sequence.handle, Chunk("", None, error, sequence.generated)))

    def _fail_running(self, error: ModelpodError, step: _Step | None = None) -> None:
        chunks = step if step is not None else _Step()
        for sequence in self._rows:
            self._fail(sequence, error, chunks)
        self._rows = []
        self._kv_reserved = 0
        self.model.clear()
        if step is None:
            self._hand_over(chunks.chunks)

    def _fail_everything(self, error: ModelpodError) -> None:
        step = _Step()
        with self._cond:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for sequence in waiting:
            self._fail(sequence, error, step)
        self._fail_running(error, step)
        self._hand_over(step.chunks)

    def _timeout(self, sequence: _Sequence) -> DeadlineError:
        return DeadlineError(
            f"the request did not finish within {sequence.request.timeout_s:g} s "
            f"(server.request_timeout_s); {sequence.generated} tokens were generated",
        )

    def _hand_over(self, chunks: list[tuple[Generation, Chunk]]) -> None:
        if chunks:
            with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody waits any more
                self._loop.call_soon_threadsafe(_deliver, chunks)


def _deliver(chunks: list[tuple[Generation, Chunk]]) -> None:
    for handle, chunk in chunks:
        handle._put(chunk)


def _model_error(exc: BaseException) -> InferenceError:
    return InferenceError(f"the model raised {type(exc).__name__}: {exc}")
