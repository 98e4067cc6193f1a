"""The batcher alone: arrays in, arrays out, no HTTP."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from modelpod.server.scheduling import batcher as batcher_module
from modelpod.server.scheduling.batcher import Batcher
from modelpod.server.scheduling.errors import DeadlineError, DrainingError, QueueFullError

pytestmark = pytest.mark.anyio

# every wait on a gate in these tests is bounded, so a bug fails the test instead of hanging it
GATE_TIMEOUT = 10


class RecordingModel:
    """y = 2x; records every call's rows; can be held at a gate to let a queue build up."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[list[float]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch):
        x = batch["x"]
        self.calls.append(x[:, 0].tolist())
        self.entered.set()
        if not self.gate.wait(GATE_TIMEOUT):
            raise TimeoutError("gate never opened")
        if (x == -1).any():
            raise ValueError("a row contains -1")
        time.sleep(self.delay)
        return {"y": x * 2}


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[v, v] for v in values], dtype=np.float32)}


async def started(batcher: Batcher) -> Batcher:
    batcher.start()
    return batcher


async def wait_for(condition, timeout: float = GATE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_each_request_gets_its_own_rows_under_concurrency():
    model = RecordingModel(delay=0.002)
    batcher = await started(Batcher([model], max_batch_size=16, max_wait_ms=0, max_queue=1000))
    values = list(range(300))
    results = await asyncio.gather(*(batcher.submit(rows(v), timeout=10) for v in values))
    for value, result in zip(values, results, strict=True):
        np.testing.assert_array_equal(result["y"], [[2 * value, 2 * value]])
    sizes = [len(call) for call in model.calls]
    assert sum(sizes) == 300
    assert max(sizes) == 16  # requests that queued while the model ran went in together
    assert len(sizes) < 300 / 4
    await batcher.close()


async def test_multi_row_requests_are_never_split():
    model = RecordingModel(delay=0.002)
    batcher = await started(Batcher([model], max_batch_size=8, max_wait_ms=0, max_queue=100))
    requests = [rows(*range(10 * i, 10 * i + n)) for i, n in enumerate([3, 5, 2, 7, 1, 4, 6])]
    results = await asyncio.gather(*(batcher.submit(r, timeout=10) for r in requests))
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
    assert all(len(call) <= 8 for call in model.calls)
    await batcher.close()


async def test_a_request_larger_than_max_batch_size_runs_alone():
    model = RecordingModel()
    batcher = await started(Batcher([model], max_batch_size=4, max_wait_ms=0, max_queue=10))
    result = await batcher.submit(rows(*range(10)), timeout=10)
    assert result["y"].shape == (10, 2)
    assert model.calls == [list(map(float, range(10)))]
    await batcher.close()


async def test_max_wait_fills_a_batch_under_light_load():
    model = RecordingModel()
    batcher = await started(Batcher([model], max_batch_size=8, max_wait_ms=200, max_queue=10))

    async def later(value: float):
        await asyncio.sleep(0.02)
        return await batcher.submit(rows(value), timeout=10)

    await asyncio.gather(batcher.submit(rows(1), timeout=10), later(2))
    assert model.calls == [[1.0, 2.0]]
    await batcher.close()


async def test_without_max_wait_a_lone_request_runs_at_once():
    model = RecordingModel()
    batcher = await started(Batcher([model], max_batch_size=8, max_wait_ms=0, max_queue=10))
    started_at = time.perf_counter()
    await batcher.submit(rows(1), timeout=10)
    assert time.perf_counter() - started_at < 1.0  # no fixed wait; a bound only to catch a hang
    assert model.calls == [[1.0]]
    await batcher.close()


async def closed_loop_batches(refill: float, clients: int = 16, rounds: int = 6) -> list[int]:
    """Batch sizes seen when `clients` callers each send their next request shortly after their answer,
    one after another (as responses are written and new requests read), like a load test at concurrency 16."""
    model = RecordingModel(delay=0.05)
    batcher = await started(
        Batcher([model], max_batch_size=clients, max_wait_ms=0, max_queue=100, refill_fraction=refill)
    )

    async def client(index: int) -> None:
        for _ in range(rounds):
            await asyncio.sleep(0.0002 * index)  # answers go out one by one, so requests come back staggered
            await batcher.submit(rows(index), timeout=10)

    await asyncio.gather(*(client(i) for i in range(clients)))
    await batcher.close()
    return [len(call) for call in model.calls]


async def test_refill_keeps_batches_whole_under_closed_loop_load():
    sizes = await closed_loop_batches(refill=0.5)
    # at start-up there is no last batch to wait for, so the first caller runs alone; from then on the
    # answered callers come back as one batch (the last one lacks the first caller, who finished first)
    assert sum(sizes) == 16 * 6
    assert sizes[0] == 1
    assert sizes[1:-1] == [16] * (len(sizes) - 2), sizes


async def test_refill_does_not_wait_for_callers_that_are_not_coming():
    # one caller: the last batch answered one request, so a lone request runs at once
    model = RecordingModel(delay=0.01)
    batcher = await started(
        Batcher([model], max_batch_size=8, max_wait_ms=0, max_queue=10, refill_fraction=1)
    )
    for value in range(3):
        await batcher.submit(rows(value), timeout=10)
    assert model.calls == [[0.0], [1.0], [2.0]]
    await batcher.close()


async def test_refill_hands_the_batch_over_as_soon_as_the_last_expected_caller_is_queued():
    model = RecordingModel()
    model.gate.clear()
    batcher = await started(
        Batcher([model], max_batch_size=4, max_wait_ms=0, max_queue=10, refill_fraction=1000)
    )
    first = asyncio.ensure_future(batcher.submit(rows(0), timeout=10))
    await wait_for(model.entered.is_set)
    waiting = [asyncio.ensure_future(batcher.submit(rows(v), timeout=10)) for v in (1, 2, 3)]
    await wait_for(lambda: batcher.queue_depth == 3)
    model.gate.set()
    await first
    # the next batch took the 3 queued requests and waits for the caller the last batch answered
    await wait_for(lambda: batcher.queue_depth == 0 and len(model.calls) == 1)
    model.gate.clear()
    last = asyncio.ensure_future(batcher.submit(rows(4), timeout=10))
    for _ in range(10):  # a few turns of the event loop, no time: a worker that polled would still wait
        await asyncio.sleep(0)
    assert batcher.busy_workers == 1
    model.gate.set()
    await asyncio.gather(last, *waiting)
    assert model.calls == [[0.0], [1.0, 2.0, 3.0, 4.0]]
    await batcher.close()


async def test_full_queue_rejects_exactly_the_excess():
    model = RecordingModel()
    model.gate.clear()
    batcher = await started(Batcher([model], max_batch_size=1, max_wait_ms=0, max_queue=5))
    running = asyncio.ensure_future(batcher.submit(rows(0), timeout=10))
    await wait_for(model.entered.is_set)  # the model holds request 0; the queue is empty again
    queued = [asyncio.ensure_future(batcher.submit(rows(v), timeout=10)) for v in range(1, 6)]
    await wait_for(lambda: batcher.queue_depth == 5)
    excess = await asyncio.gather(
        *(batcher.submit(rows(v), timeout=10) for v in range(6, 9)), return_exceptions=True
    )
    assert [type(e) for e in excess] == [QueueFullError] * 3
    model.gate.set()
    results = await asyncio.gather(running, *queued)
    assert [r["y"][0, 0] for r in results] == [0, 2, 4, 6, 8, 10]
    assert sorted(v for call in model.calls for v in call) == [0, 1, 2, 3, 4, 5]  # the rejected never ran
    await batcher.close()


async def test_deadline_drops_a_queued_request_without_computing_it():
    model = RecordingModel()
    model.gate.clear()
    batcher = await started(Batcher([model], max_batch_size=1, max_wait_ms=0, max_queue=5))
    running = asyncio.ensure_future(batcher.submit(rows(1), timeout=10))
    await wait_for(model.entered.is_set)
    with pytest.raises(DeadlineError, match=r"0\.05s"):
        await batcher.submit(rows(2), timeout=0.05)
    assert batcher.queue_depth == 0  # removed from the queue at its deadline
    model.gate.set()
    await running
    await batcher.submit(rows(3), timeout=10)
    assert model.calls == [[1.0], [3.0]]  # 2 was never computed
    await batcher.close()


async def test_a_caller_that_goes_away_leaves_the_queue_and_is_never_computed():
    model = RecordingModel()
    model.gate.clear()
    batcher = await started(Batcher([model], max_batch_size=1, max_wait_ms=0, max_queue=5))
    running = asyncio.ensure_future(batcher.submit(rows(1), timeout=10))
    await wait_for(model.entered.is_set)
    gone = asyncio.ensure_future(batcher.submit(rows(2), timeout=10))
    await wait_for(lambda: batcher.queue_depth == 1)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert batcher.queue_depth == 0
    model.gate.set()
    await running
    await batcher.submit(rows(3), timeout=10)
    assert model.calls == [[1.0], [3.0]]
    await batcher.close()


async def test_a_failing_item_fails_only_its_own_request():
    model = RecordingModel()
    model.gate.clear()
    batcher = await started(Batcher([model], max_batch_size=16, max_wait_ms=0, max_queue=100))
    first = asyncio.ensure_future(batcher.submit(rows(100), timeout=10))
    await wait_for(model.entered.is_set)
    # these queue up behind the first and then run as one batch that fails because of the -1
    values = [1, 2, -1, 3, 4]
    pending = [asyncio.ensure_future(batcher.submit(rows(v), timeout=10)) for v in values]
    await wait_for(lambda: batcher.queue_depth == 5)
    model.gate.set()
    await first
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    for value, outcome in zip(values, outcomes, strict=True):
        if value == -1:
            assert isinstance(outcome, ValueError)
        else:
            np.testing.assert_array_equal(outcome["y"], [[2 * value, 2 * value]])
    assert model.calls[1] == [1.0, 2.0, -1.0, 3.0, 4.0]  # tried as one batch first
    assert model.calls[2:] == [[1.0], [2.0], [-1.0], [3.0], [4.0]]  # then one by one
    await batcher.close()


async def test_requests_with_different_item_shapes_are_not_stacked():
    calls = []

    def model(batch):
        calls.append(batch["x"].shape)
        return {"y": batch["x"].sum(axis=1)}

    batcher = await started(Batcher([model], max_batch_size=16, max_wait_ms=50, max_queue=10))
    short = {"x": np.ones((1, 3), dtype=np.float32)}
    long = {"x": np.ones((1, 5), dtype=np.float32)}
    results = await asyncio.gather(*(batcher.submit(r, timeout=10) for r in (short, long, short, long)))
    assert [float(r["y"][0]) for r in results] == [3, 5, 3, 5]
    assert sorted(calls) == [(2, 3), (2, 5)]
    await batcher.close()


async def test_each_instance_runs_its_own_batch_in_parallel():
    first, second = RecordingModel(delay=0.2), RecordingModel(delay=0.2)
    batcher = await started(Batcher([first, second], max_batch_size=1, max_wait_ms=0, max_queue=10))
    began = time.perf_counter()
    await asyncio.gather(*(batcher.submit(rows(v), timeout=10) for v in range(4)))
    elapsed = time.perf_counter() - began
    assert len(first.calls) == 2
    assert len(second.calls) == 2
    assert elapsed < 0.2 * 4  # two at a time, not one after another
    await batcher.close()


async def test_drain_finishes_queued_work_then_refuses_new_requests():
    model = RecordingModel()
    model.gate.clear()
    batcher = await started(Batcher([model], max_batch_size=1, max_wait_ms=0, max_queue=10))
    pending = [asyncio.ensure_future(batcher.submit(rows(v), timeout=10)) for v in range(3)]
    await wait_for(model.entered.is_set)
    drain = asyncio.ensure_future(batcher.drain(timeout=10))
    await asyncio.sleep(0.01)
    with pytest.raises(DrainingError):
        await batcher.submit(rows(9), timeout=10)
    model.gate.set()
    assert await drain is True
    assert [r["y"][0, 0] for r in await asyncio.gather(*pending)] == [0, 2, 4]
    await batcher.close()


async def test_close_fails_what_is_still_queued():
    model = RecordingModel()
    model.gate.clear()
    batcher = await started(Batcher([model], max_batch_size=1, max_wait_ms=0, max_queue=10))
    running = asyncio.ensure_future(batcher.submit(rows(0), timeout=10))
    await wait_for(model.entered.is_set)
    queued = asyncio.ensure_future(batcher.submit(rows(1), timeout=10))
    await wait_for(lambda: batcher.queue_depth == 1)
    assert await batcher.drain(timeout=0.05) is False
    await batcher.close()
    with pytest.raises(DrainingError):
        await queued
    model.gate.set()
    running.cancel()


async def test_fast_batches_run_on_the_event_loop_and_slow_ones_go_back_to_the_thread(monkeypatch):
    """After a batch under inline_below_ms, the next runs on the event loop's thread; after one over it,
    the next goes back to the model's thread. The first batch always runs on the model's thread.

    The batcher's clock is one the model moves: a batch takes exactly as long as the model says, so a
    busy machine cannot make a fast batch slow."""
    threads: list[int] = []
    now = [0.0]
    monkeypatch.setattr(batcher_module.time, "perf_counter", lambda: now[0])

    def model(batch):
        threads.append(threading.get_ident())
        now[0] += 1.0 if 3.0 in batch["x"][:, 0] else 0.001  # the batch holding 3 takes 1 s, others 1 ms
        return {"y": batch["x"] * 2}

    batcher = await started(
        Batcher([model], max_batch_size=1, max_wait_ms=0, max_queue=10, inline_below_ms=100)
    )
    try:
        for value in (1.0, 2.0, 3.0, 4.0, 5.0):
            out = await batcher.submit(rows(value), timeout=10)
            np.testing.assert_array_equal(out["y"], rows(value)["x"] * 2)
    finally:
        await batcher.close()
    loop_thread = threading.get_ident()
    on_loop = [thread == loop_thread for thread in threads]
    # 1: thread (the first); 2: loop (1 was fast); 3: loop (2 was fast), slow; 4: thread; 5: loop
    assert on_loop == [False, True, True, False, True]


async def test_without_inline_below_every_batch_runs_on_the_model_thread():
    threads: list[int] = []

    def model(batch):
        threads.append(threading.get_ident())
        return {"y": batch["x"] * 2}

    batcher = await started(Batcher([model], max_batch_size=1, max_wait_ms=0, max_queue=10))
    try:
        for value in (1.0, 2.0, 3.0):
            await batcher.submit(rows(value), timeout=10)
    finally:
        await batcher.close()
    assert threading.get_ident() not in threads
    assert len(threads) == 3
