"""The batcher as a state machine: hypothesis submits, cancels, lets time pass, finishes batches, drains
and closes in any order, and checks after every step what must always hold:

- every request's future resolves exactly once (its task ends with its outputs or one of the batcher's
  errors, and no callback ever finds a future already resolved);
- no request is handed to the model at or after its deadline, nor after its caller went away;
- a request gets back exactly its own rows (the model returns its inputs, tagged with the request);
- a failing item fails only its own request; a drain that reports success leaves nothing queued.

In the style of Cog's worker state-machine test. Time is virtual (the event loop's clock moves only when
the machine says so) and the model runs only when the machine finishes a batch, so every interleaving is
reproducible and hypothesis can shrink a failure to its shortest sequence.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from modelpod.server.scheduling.batcher import Batcher
from modelpod.server.scheduling.errors import DeadlineError, DrainingError, QueueFullError

BAD = -1.0  # an item holding this value makes the model raise


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when told to: timers (deadlines, max_wait) fire on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def time(self) -> float:
        return self.now


class ManualExecutor(concurrent.futures.Executor):
    """Holds each batch handed to it until the machine runs it, and notes the (virtual) time of hand-off."""

    def __init__(self, loop: VirtualClockLoop, handed_off: list[tuple[float, list[int]]]) -> None:
        self.loop = loop
        self.pending: list[tuple[concurrent.futures.Future[Any], Any, tuple[Any, ...]]] = []
        self.handed_off = handed_off  # (time, request ids of the batch), shared by the instances, in order

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.pending.append((future, fn, args))
        batch = args[1]  # _run_isolated(predict, batch)
        self.handed_off.append((self.loop.now, [int(request.inputs["x"][0, 0]) for request in batch]))
        return future

    def run_oldest(self) -> None:
        future, fn, args = self.pending.pop(0)
        if future.set_running_or_notify_cancel():
            future.set_result(fn(*args))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            for future, _, _ in self.pending:
                future.cancel()
            self.pending.clear()


def echo_model(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    x = batch["x"]
    if (x == BAD).any():
        raise ValueError("an item holds the bad value")
    return {"y": x.copy()}


@dataclass
class Submitted:
    rid: int
    inputs: np.ndarray
    deadline: float
    bad: bool
    task: asyncio.Task[Any]
    after_close: bool
    cancelled_after: int | None = None  # how many batches had been handed off when its caller went away


class BatcherMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualClockLoop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.requests: list[Submitted] = []
        self.handed_off: list[tuple[float, list[int]]] = []
        self.drains: list[asyncio.Task[bool]] = []
        self.closed = False
        self.batcher: Batcher | None = None
        self.executors: list[ManualExecutor] = []

    @initialize(
        instances=st.integers(1, 2),
        max_batch_size=st.integers(1, 4),
        max_wait_ms=st.sampled_from([0.0, 5.0]),
        max_queue=st.integers(1, 6),
        refill_fraction=st.sampled_from([0.0, 0.5]),
    )
    def start(
        self, instances: int, max_batch_size: int, max_wait_ms: float, max_queue: int, refill_fraction: float
    ) -> None:
        self.executors = [ManualExecutor(self.loop, self.handed_off) for _ in range(instances)]
        self.batcher = Batcher(
            [echo_model] * instances,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_queue=max_queue,
            refill_fraction=refill_fraction,
            executors=self.executors,  # type: ignore[arg-type]
        )
        self.run(self._start())

    async def _start(self) -> None:
        assert self.batcher is not None
        self.batcher.start()

    def run(self, coroutine: Any = None) -> Any:
        """Run `coroutine` (if any), then every callback that is ready, with the clock standing still."""

        async def settle() -> Any:
            result = await coroutine if coroutine is not None else None
            for _ in range(30):
                await asyncio.sleep(0)
            return result

        return self.loop.run_until_complete(settle())

    # --- rules ---------------------------------------------------------------------------------------

    @rule(rows=st.integers(1, 3), timeout=st.sampled_from([0.004, 0.02, 1000.0]), bad=st.booleans())
    def submit(self, rows: int, timeout: float, bad: bool) -> None:
        assert self.batcher is not None
        rid = len(self.requests)
        inputs = np.array([[rid, row] for row in range(rows)], dtype=np.float64)
        if bad:
            inputs[-1, 1] = BAD
        task = self.loop.create_task(self.batcher.submit({"x": inputs}, timeout=timeout))
        self.requests.append(Submitted(rid, inputs, self.loop.now + timeout, bad, task, self.closed))
        self.run()

    @precondition(lambda self: any(not r.task.done() for r in self.requests))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        waiting = [r for r in self.requests if not r.task.done()]
        request = data.draw(st.sampled_from(waiting))
        request.cancelled_after = len(self.handed_off)
        request.task.cancel()
        self.run()

    @rule(seconds=st.sampled_from([0.001, 0.005, 0.02]))
    def advance(self, seconds: float) -> None:
        self.loop.now += seconds
        self.run()

    @precondition(lambda self: any(e.pending for e in self.executors))
    @rule(data=st.data())
    def finish_batch(self, data: st.DataObject) -> None:
        executor = data.draw(st.sampled_from([e for e in self.executors if e.pending]))
        executor.run_oldest()
        self.run()

    @precondition(lambda self: not self.closed)
    @rule(timeout=st.sampled_from([0.0, 0.01, 1000.0]))
    def drain(self, timeout: float) -> None:
        assert self.batcher is not None
        self.drains.append(self.loop.create_task(self.batcher.drain(timeout)))
        self.run()

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        assert self.batcher is not None
        self.closed = True
        self.run(self.batcher.close())

    # --- what always holds ---------------------------------------------------------------------------

    @invariant()
    def no_callback_failed(self) -> None:
        # a future resolved twice raises InvalidStateError in a timer or a worker: it lands here
        assert self.loop_errors == []
        for worker in self.batcher._workers if self.batcher else []:
            if worker.done() and not worker.cancelled():
                assert worker.exception() is None, worker.exception()

    @invariant()
    def nothing_computed_late_or_abandoned(self) -> None:
        for index, (handed_at, rids) in enumerate(self.handed_off):
            for rid in rids:
                request = self.requests[rid]
                assert handed_at < request.deadline, f"request {rid} handed to the model at its deadline"
                gone = request.cancelled_after
                assert gone is None or index < gone, f"request {rid} handed over after its caller left"

    @invariant()
    def outcomes_are_each_requests_own(self) -> None:
        for request in self.requests:
            if not request.task.done() or request.task.cancelled():
                continue
            error = request.task.exception()
            if error is None:
                assert not request.bad, f"request {request.rid} holds a bad item yet succeeded"
                np.testing.assert_array_equal(request.task.result()["y"], request.inputs)
            elif isinstance(error, ValueError):
                assert request.bad, f"request {request.rid} failed for another request's bad item"
            else:
                assert isinstance(error, QueueFullError | DeadlineError | DrainingError), repr(error)

    @invariant()
    def a_successful_drain_leaves_nothing_behind(self) -> None:
        assert self.batcher is not None
        for drain in self.drains:
            if drain.done() and drain.result() and not self.closed:
                assert self.batcher.queue_depth == 0
                assert all(r.task.done() for r in self.requests if not r.after_close)

    @invariant()
    def a_drain_ends_once_no_caller_waits(self) -> None:
        if self.closed or any(not r.task.done() for r in self.requests):
            return
        assert all(drain.done() for drain in self.drains), "a drain still waits with no request left"

    def teardown(self) -> None:
        try:
            if self.batcher is not None and not self.closed:
                self.close()
            # after close every request has its one outcome: nothing is left waiting
            assert all(r.task.done() for r in self.requests)
            self.outcomes_are_each_requests_own()
            self.no_callback_failed()
        finally:
            self.loop.close()


BatcherMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_batcher_state_machine = BatcherMachine.TestCase
