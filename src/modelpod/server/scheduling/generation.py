"""Continuous batching: the scheduler of text generation, one forward pass a step.

The engine runs on the model's thread. Each step:

1. drops sequences whose client went away (`Generation.cancel`) and fails those past their deadline;
2. admits waiting sequences, oldest first, while fewer than `max_running_sequences` run and the model
   can give each a slab of its KV pool as long as its reservation (prompt + max_tokens): the pool is the
   spec's `kv_cache_tokens` and never grows, so a request that does not fit yet waits, and none can run
   the process out of memory. A prompt that begins like an earlier one starts with that prefix's keys
   and values copied in (prefix caching, runtimes/_kv_store.py);
3. plans one packed forward pass of at most `max_tokens_per_step` tokens: one decode token for every
   sequence that has its first token, then chunks of the prompts being prefilled, oldest first (chunked
   prefill: a long prompt is split across steps, so the running streams keep getting a token a step);
4. runs it, samples a token for every decoding sequence and every prompt whose last chunk ran, turns
   tokens into text, applies stop strings, stop tokens, EOS and length limits, and ends finished
   sequences, so the next step runs without them.

So a request joins at the next step and leaves the step it ends, and prefill and decode share every
pass. The event loop side is `Generation` (generation_request.py): `submit` queues a request (or refuses
it when `max_queue` wait already), and `chunks()` yields its text as it is produced. Chunks reach the
event loop through one `call_soon_threadsafe` per step, for all sequences.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from modelpod.errors import InferenceError, ModelpodError
from modelpod.runtimes.generation_runtime import Piece
from modelpod.server.scheduling.errors import DeadlineError, DrainingError, OverBudgetError, QueueFullError
from modelpod.server.scheduling.generation_request import (
    Chunk,
    Generation,
    GenerationLimits,
    GenerationRequest,
    Model,
    Observer,
)
from modelpod.server.scheduling.text import Detokenizer, StopMatcher

log = logging.getLogger("modelpod.server")

# an idle engine still wakes this often, so that a lost notification costs at most this long
_IDLE_WAKE_S = 1.0


@dataclass(eq=False)
class _Sequence:
    handle: Generation
    deadline: float
    arrived: float
    detokenizer: Detokenizer
    stopper: StopMatcher
    sampling: Any
    kv: Any = None  # the model's slab, once admitted
    computed: int = 0  # tokens (prompt, then generated) whose keys and values are in the slab
    generated: list[int] = field(default_factory=list)
    last_token_at: float | None = None
    done: bool = False

    @property
    def request(self) -> GenerationRequest:
        return self.handle.request

    @property
    def prefilling(self) -> bool:
        return self.computed < len(self.request.prompt)

    def history(self) -> tuple[tuple[int, ...], list[int]] | None:
        """What its penalties look at (its prompt and its tokens so far), when it has any."""
        return (self.request.prompt, self.generated) if self.request.penalised else None


@dataclass
class _Step:
    """Chunks to hand over at the end of the step, and the tokens it computed."""

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
        self._running: list[_Sequence] = []  # in the order they were admitted
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
        if needed > self.limits.kv_cache_tokens:
            raise OverBudgetError(
                f"the request needs {needed} tokens of KV cache ({prompt_tokens} in the prompt, "
                f"{max_tokens} to generate), more than the server's budget of "
                f"{self.limits.kv_cache_tokens} (generation.kv_cache_tokens)",
            )

    def submit(self, request: GenerationRequest) -> Generation:
        """Queue `request`; raises QueueFullError when max_queue requests wait already, DrainingError
        when the engine is closed."""
        self.check(len(request.prompt), request.max_tokens)
        handle = Generation(self._wake, request=request)
        now = time.monotonic()
        sequence = _Sequence(
            handle=handle,
            deadline=now + request.timeout_s,
            arrived=now,
            detokenizer=Detokenizer(self.model.tokenizer, request.prompt),
            stopper=StopMatcher(request.stop),
            sampling=self.model.sampling(**request.sampling_settings()),
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
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_usage(self) -> float:
        """Share of the KV pool that running sequences hold (their reservations)."""
        capacity = self.model.kv_capacity
        return self.model.kv_reserved / capacity if capacity else 0.0

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
        self.model.start_engine(self.limits.kv_cache_tokens, prefix_caching=self.limits.prefix_caching)
        while True:
            with self._cond:
                while not (self._closed or self._running or self._waiting or self._abort):
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
        self._admit()
        pieces, sampled = self._plan()
        if pieces:
            self._run(pieces, sampled, step)
        self._end_done()
        self._hand_over(step.chunks)
        if self._observer is not None and step.tokens:
            self._observer.step(step.tokens)

    def _retire(self, now: float, step: _Step) -> None:
        for sequence in self._running:
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
        self._end_done()

    def _admit(self) -> None:
        """Give waiting sequences, oldest first, a slab of the KV pool while there is room."""
        while len(self._running) < self.limits.max_running_sequences:
            with self._cond:
                if not self._waiting:
                    return
                sequence = self._waiting[0]
            request = sequence.request
            kv = self.model.open_sequence(request.prompt, request.reservation)
            if kv is None:
                return  # the pool is held by running sequences; the oldest waits for the first to end
            with self._cond:
                self._waiting.popleft()
            sequence.kv = kv
            sequence.computed = kv.reused
            self._running.append(sequence)
            if self._observer is not None:
                self._observer.prompt_tokens(len(request.prompt), kv.reused)

    def _plan(self) -> tuple[list[Any], list[_Sequence]]:
        """The pass's pieces: a decode token for each sequence that has its first token, then prompt chunks
        within `max_tokens_per_step`; and the sequences that get a token from it, in the pieces' order."""
        pieces: list[Any] = []
        sampled: list[_Sequence] = []
        budget = self.limits.max_tokens_per_step
        for sequence in self._running:
            if not sequence.prefilling and not sequence.done:
                pieces.append(Piece(sequence.kv, sequence.computed, [sequence.generated[-1]], logits=True))
                sampled.append(sequence)
                budget -= 1
        for sequence in self._running:
            if budget <= 0:
                break
            if sequence.prefilling and not sequence.done:
                prompt = sequence.request.prompt
                count = min(len(prompt) - sequence.computed, budget)
                last = sequence.computed + count == len(prompt)
                tokens = prompt[sequence.computed : sequence.computed + count]
                pieces.append(Piece(sequence.kv, sequence.computed, tokens, logits=last))
                if last:
                    sampled.append(sequence)
                budget -= count
        return pieces, sampled

    def _run(self, pieces: list[Any], sampled: list[_Sequence], step: _Step) -> None:
        try:
            logits = self.model.forward(pieces)
        except Exception as exc:  # the model's failure fails these requests, not the server
            log.exception("forward pass of %d sequences failed", len(self._running))
            self._fail_running(_model_error(exc), step)
            return
        by_kv = {id(s.kv): s for s in self._running}
        for piece in pieces:
            by_kv[id(piece.kv)].computed += len(piece.tokens)
            step.tokens += len(piece.tokens)
        tokens = self.model.sample(logits, [s.sampling for s in sampled], [s.history() for s in sampled])
        now = time.monotonic()
        for sequence, token in zip(sampled, tokens, strict=True):
            self._accept(sequence, token, now, step)

    def _accept(self, sequence: _Sequence, token: int, now: float, step: _Step) -> None:
        request = sequence.request
        sequence.generated.append(token)
        generated = len(sequence.generated)
        if self._observer is not None:
            self._observer.generated_tokens(1)
            if sequence.last_token_at is None:
                self._observer.first_token(now - sequence.arrived)
            else:
                self._observer.next_token(now - sequence.last_token_at)
        sequence.last_token_at = now
        finish = None
        stopper = sequence.stopper
        if (token in self.model.eos_token_ids and not request.ignore_eos) or token in request.stop_token_ids:
            text = stopper.feed(sequence.detokenizer.flush())
            finish = "stop"
        else:
            text = stopper.feed(sequence.detokenizer.push(token))
            if stopper.stopped:
                finish = "stop"
            elif (
                generated >= request.max_tokens
                or len(request.prompt) + generated >= self.limits.max_context_tokens
            ):
                text += stopper.feed(sequence.detokenizer.flush())
                finish = "stop" if stopper.stopped else "length"
        if finish is not None and not stopper.stopped:
            text += stopper.flush()
        if finish is not None:
            sequence.done = True
        if text or finish is not None:
            step.chunks.append((sequence.handle, Chunk(text, finish, None, generated)))

    def _end_done(self) -> None:
        """Give the slabs of ended sequences back; their computed tokens stay as a cached prefix."""
        kept = []
        for sequence in self._running:
            if sequence.done:
                tokens = (*sequence.request.prompt, *sequence.generated)[: sequence.computed]
                self.model.close_sequence(sequence.kv, tokens)
            else:
                kept.append(sequence)
        self._running = kept

    def _fail(self, sequence: _Sequence, error: ModelpodError, step: _Step) -> None:
        sequence.done = True
        step.chunks.append((sequence.handle, Chunk("", None, error, len(sequence.generated))))

    def _fail_running(self, error: ModelpodError, step: _Step | None = None) -> None:
        chunks = step if step is not None else _Step()
        for sequence in self._running:
            self._fail(sequence, error, chunks)
        self._running = []
        self.model.clear()  # what the slabs hold can no longer be trusted
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
            f"(server.request_timeout_s); {len(sequence.generated)} tokens were generated",
        )

    def _hand_over(self, chunks: list[tuple[Generation, Chunk]]) -> None:
        if chunks:
            with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody waits any more
                self._loop.call_soon_threadsafe(_deliver, chunks)


def _deliver(chunks: list[tuple[Generation, Chunk]]) -> None:
    for handle, chunk in chunks:
        handle.put(chunk)


def _model_error(exc: BaseException) -> InferenceError:
    return InferenceError(f"the model raised {type(exc).__name__}: {exc}")
