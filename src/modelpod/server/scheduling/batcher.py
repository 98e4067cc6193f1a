"""Adaptive batching: requests queue up while the model is busy and run together when it is free.

A request is a small batch of its own (one row for /predict, N rows for a v2 infer). `Batcher.submit`
queues it and waits for its rows of the result. Whenever a worker is free it takes everything queued
that can be stacked with the oldest request (same per-item shapes), up to `max_batch_size` rows,
waiting up to `max_wait_ms` for more under light load. Each worker owns one model instance and runs one
batch at a time on its own thread, so the event loop keeps parsing requests meanwhile.

Refill: when a batch finishes, the callers it answered tend to send their next requests within a few
milliseconds. A free worker that took only the first of them would split one cohort into a small batch
and a large one that then alternate (seen on minilm at concurrency 64: batches of about 32 rows instead of
64, or alternating 1 and 63). So until it holds as many requests as were queued when the last batch
ended plus those that batch answered, the worker waits for more, at most `refill_fraction` of the last
batch's run time (0 turns this off). With one caller, nothing waits; under open-loop load, a partial
batch waits at most that fraction, trading a bounded latency for fuller batches.

Inline batches: for a model whose batches take microseconds (digits: about 0.1 ms for 44 rows), handing
each batch to the model thread and back costs the event loop more than the batch itself, and leaves it
idle while the batch runs. While the worker's last batch took less than `inline_below_ms`, the next one
runs on the event loop itself; a batch that takes longer sends the next back to the thread. The first
batch always runs on the thread, which loaded and warmed the model up. On digits at concurrency 64 this
answered 19% more requests a second (mean of five alternating runs).

Limits: a full queue rejects at once (`QueueFullError`, 503); a request still queued at its deadline is
dropped without being computed (`DeadlineError`, 504). When a batch fails, each of its requests is run
alone, so a bad item fails only the request that carried it.

No HTTP here: the batcher is tested by feeding it arrays directly.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from modelpod.runtimes.base import Batch
from modelpod.server.scheduling.errors import DeadlineError, DrainingError, QueueFullError

PredictFn = Callable[[Batch], Batch]


@dataclass
class BatchStats:
    """What a finished batch reports to metrics."""

    rows: int
    requests: int
    seconds: float


class _Request:
    """One submitted request; compared by identity. A plain class with slots: one is made per request."""

    __slots__ = ("deadline", "future", "inputs", "rows", "shapes")

    def __init__(self, inputs: Batch, rows: int, deadline: float, future: asyncio.Future[Batch]) -> None:
        self.inputs = inputs
        self.rows = rows
        self.deadline = deadline
        self.future = future
        self.shapes = tuple([array.shape[1:] for array in inputs.values()])


class Batcher:
    def __init__(
        self,
        predict_fns: Sequence[PredictFn],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        refill_fraction: float = 0.0,
        on_batch: Callable[[BatchStats], None] | None = None,
        executors: Sequence[concurrent.futures.ThreadPoolExecutor] | None = None,
        inline_below_ms: float = 0.0,
    ) -> None:
        """`predict_fns`: one function per model instance; each runs on a thread of its own. Pass
        `executors` (one single-thread executor per instance, `model_thread`) to run each instance on the
        thread that loaded it. `inline_below_ms`: run a batch on the event loop while the last one took
        less (module docstring); 0 never does."""
        self._predict_fns = list(predict_fns)
        self._executors: list[concurrent.futures.ThreadPoolExecutor] = list(executors or [])
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.refill_fraction = refill_fraction
        self._on_batch = on_batch
        self.inline_below = inline_below_ms / 1000
        self._queue: collections.deque[_Request] = collections.deque()
        self._arrived = asyncio.Event()
        self._submitted = 0  # requests ever queued: a refilling worker waits for this count to reach a target
        self._refill_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0
        # requests a worker has taken from the queue whose callers still wait for them (a partial batch
        # waiting for more is in neither the queue nor a running batch); the drain waits for this and the
        # queue to empty
        self._taken: set[_Request] = set()
        self._drained: asyncio.Event | None = None  # set when both are empty while `drain` waits
        self._accepting = True

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def busy_workers(self) -> int:
        return self._busy

    def start(self) -> None:
        if not self._executors:
            self._executors = [model_thread(i) for i in range(len(self._predict_fns))]
        for index, (predict, executor) in enumerate(zip(self._predict_fns, self._executors, strict=True)):
            self._workers.append(asyncio.create_task(self._work(predict, executor), name=f"batcher-{index}"))

    async def submit(self, inputs: Batch, *, timeout: float) -> Batch:
        """Queue one request (arrays with a leading batch dimension) and wait for its outputs."""
        if not self._accepting:
            raise DrainingError("the server is shutting down")
        if len(self._queue) >= self.max_queue:
            raise QueueFullError(f"the queue is full ({self.max_queue} requests waiting)")
        loop = asyncio.get_running_loop()
        rows = len(next(iter(inputs.values())))
        request = _Request(inputs, rows, loop.time() + timeout, loop.create_future())
        self._queue.append(request)
        self._arrived.set()
        self._submitted += 1
        if self._refill_waiters:
            self._wake_refills()
        # a timer on the request's own future rather than asyncio.wait_for, which wraps it in more futures
        # and callbacks per request; a batch of 64 answers 64 of them while the model waits
        expiry = loop.call_at(request.deadline, self._expire, request, timeout)
        try:
            return await request.future
        except asyncio.CancelledError:  # the caller went away
            self._abandon(request)
            raise
        finally:
            expiry.cancel()

    def _expire(self, request: _Request, timeout: float) -> None:
        if request.future.done():
            return
        self._forget(request)  # never started: no worker computes it
        request.future.set_exception(DeadlineError(f"no answer within the request timeout of {timeout:g}s"))

    def _abandon(self, request: _Request) -> None:
        self._forget(request)
        request.future.cancel()

    def _forget(self, request: _Request) -> None:
        """Drop a request whose caller has its answer: from the queue, or from a batch not yet run (see
        `_still_wanted`)."""
        if request in self._queue:
            self._queue.remove(request)
        self._taken.discard(request)
        self._wake_drain()

    async def drain(self, timeout: float) -> bool:
        """Stop taking requests and wait up to `timeout` for queued and running ones. True if all finished."""
        self._accepting = False
        if self._drained is None:  # one event for every caller of drain
            self._drained = asyncio.Event()
        if not self._idle():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
        return self._idle()

    def _idle(self) -> bool:
        return not (self._queue or self._taken)

    def _wake_drain(self) -> None:
        if self._drained is not None and self._idle():
            self._drained.set()

    async def close(self) -> None:
        """Cancel the workers; anything still queued or held by a worker fails with DrainingError."""
        self._accepting = False
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for request in [*self._queue, *self._taken]:
            if not request.future.done():
                request.future.set_exception(DrainingError("the server shut down before this request ran"))
        self._queue.clear()
        self._taken.clear()
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)

    async def _work(self, predict: PredictFn, executor: concurrent.futures.Executor) -> None:
        loop = asyncio.get_running_loop()
        # what the refill may wait for: the requests queued while the last batch ran, plus the callers that
        # batch answered (who may send again), for at most a fraction of its run time
        expected, budget = 0, 0.0
        inline = False  # the first batch runs on the model's own thread
        while True:
            batch = await self._next_batch(loop, expected, budget)
            # a request may have expired or been abandoned while the batch waited to fill: never compute it
            batch = self._still_wanted(batch)
            if not batch:
                continue
            self._busy += 1
            started = time.perf_counter()
            try:
                if inline:
                    outcomes = _run_isolated(predict, batch)
                else:
                    outcomes = await loop.run_in_executor(executor, _run_isolated, predict, batch)
            finally:
                self._busy -= 1
            stats = BatchStats(sum(r.rows for r in batch), len(batch), time.perf_counter() - started)
            inline = stats.seconds < self.inline_below
            expected, budget = len(self._queue) + stats.requests, stats.seconds * self.refill_fraction
            if self._on_batch is not None:
                self._on_batch(stats)
            for request, outcome in zip(batch, outcomes, strict=True):
                self._taken.discard(request)
                if request.future.done():  # timed out while running; its caller has answered 504
                    continue
                if isinstance(outcome, BaseException):
                    request.future.set_exception(outcome)
                else:
                    request.future.set_result(outcome)
            self._wake_drain()

    @staticmethod
    def _still_wanted(batch: list[_Request]) -> list[_Request]:
        return [request for request in batch if not request.future.done()]

    async def _next_batch(
        self, loop: asyncio.AbstractEventLoop, expected: int, budget: float
    ) -> list[_Request]:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        batch = self._take(loop)
        if self.max_wait > 0 and batch and sum(r.rows for r in batch) < self.max_batch_size:
            # light load: give a partial batch a moment to fill, then take what came
            await asyncio.sleep(self.max_wait)
            batch += self._take(loop, batch)
        elif budget > 0 and batch:
            await self._refill(loop, batch, expected=expected, budget=budget)
        if self._queue:
            self._arrived.set()  # wake another free worker for what is left
        return batch

    async def _refill(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Request], *, expected: int, budget: float
    ) -> None:
        """Add arriving requests to `batch` until it holds `expected` requests or is full, for at most
        `budget` seconds (see the module docstring).

        There is no early stop when requests pause: measured on minilm at concurrency 64, the callers of a
        63-row batch came back more than 10 ms after the first of them (their answers are written first),
        and stopping at a 1 ms pause gave alternating batches of 1 and 63 rows."""
        deadline = loop.time() + budget
        while len(batch) < expected and sum(r.rows for r in batch) < self.max_batch_size:
            if loop.time() >= deadline:
                return
            # what is still queued after a take does not stack with this batch, so wait for new arrivals
            await self._arrivals(loop, self._submitted + expected - len(batch), deadline)
            batch += self._take(loop, batch)

    async def _arrivals(self, loop: asyncio.AbstractEventLoop, target: int, deadline: float) -> None:
        """Wait until `target` requests have ever been submitted, or until `deadline`.

        Woken by `submit` the moment the last of them is queued: the batch then starts at once, where
        looking every half millisecond started it 0.25 ms late on average, with every caller of the
        batch waiting (minilm at concurrency 64: 64 callers, about 7 ms between batches)."""
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (target, waiter)
        self._refill_waiters.append(entry)
        timer = loop.call_at(deadline, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._refill_waiters.remove(entry)

    def _wake_refills(self) -> None:
        for target, waiter in self._refill_waiters:
            if self._submitted >= target:
                _resolve(waiter)

    def _take(self, loop: asyncio.AbstractEventLoop, batch: list[_Request] | None = None) -> list[_Request]:
        """Pop queued requests that stack with the batch's first one, up to max_batch_size rows."""
        taken: list[_Request] = []
        current = batch or []
        rows = sum(r.rows for r in current)
        shapes = current[0].shapes if current else None
        now = loop.time()
        kept: list[_Request] = []
        while self._queue:
            request = self._queue.popleft()
            if request.future.done() or request.deadline <= now:
                continue  # its caller has given up (504); never compute it
            if shapes is None:
                shapes = request.shapes
            elif request.shapes != shapes or rows + request.rows > self.max_batch_size:
                kept.append(request)
                if rows >= self.max_batch_size:
                    break
                continue
            taken.append(request)
            self._taken.add(request)
            rows += request.rows
            if rows >= self.max_batch_size:
                break
        self._queue.extendleft(reversed(kept))
        return taken


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def model_thread(index: int) -> concurrent.futures.ThreadPoolExecutor:
    """The one thread a model instance is loaded on and runs its batches on (but those short enough to
    run on the event loop, see "Inline batches" above).

    Frameworks keep their intra-op thread pools per calling thread (OpenMP teams): a model loaded and
    warmed up on one thread and run on another ran about 20% slower (minilm, batch 64, medians of 5).
    """
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"modelpod-model-{index}")


def _run_isolated(predict: PredictFn, batch: list[_Request]) -> list[Batch | BaseException]:
    """Run the batch as one call; if that fails, run each request alone so only bad ones fail."""
    if len(batch) == 1:
        return [_run_one(predict, batch[0].inputs)]
    inputs = {name: np.concatenate([r.inputs[name] for r in batch]) for name in batch[0].inputs}
    try:
        outputs = predict(inputs)
    except Exception:  # noqa: BLE001 - any failure is retried request by request below
        return [_run_one(predict, r.inputs) for r in batch]
    results: list[Batch | BaseException] = []
    start = 0
    for request in batch:
        end = start + request.rows
        results.append({name: values[start:end] for name, values in outputs.items()})
        start = end
    return results


def _run_one(predict: PredictFn, inputs: Batch) -> Batch | BaseException:
    try:
        return predict(inputs)
    except Exception as exc:  # noqa: BLE001 - returned to that request's caller, not raised here
        return exc
