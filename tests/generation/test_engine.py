"""The generation engine's scheduling, driven with a fake model whose every step the test can see and hold.

The fake model counts: the next token of a row is its last token plus one, token 0 is EOS, and a token
reads as "t<id> ". Its `decode` can be held at a gate, so a test decides what is running and waiting
when it checks, instead of racing a real model.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from modelpod.errors import InferenceError
from modelpod.server.scheduling.errors import DeadlineError, DrainingError, OverBudgetError, QueueFullError
from modelpod.server.scheduling.generation import GenerationEngine, GenerationLimits, GenerationRequest

pytestmark = pytest.mark.anyio
WAIT_S = 10.0  # every wait on the engine is bounded


class FakeTokenizer:
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(f"t{i} " for i in ids)


class FakeModel:
    eos_token_ids = frozenset({0})

    def __init__(self) -> None:
        self.tokenizer = FakeTokenizer()
        self.rows: list[int] = []  # the last token of each row
        self.decoded_rows: list[int] = []  # rows of every decode call
        self.prefilled: list[int] = []  # prompts of every prefill call
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a decode call starts
        self.fail_next_decode = False

    def chat_prompt(self, messages: Sequence[Any]) -> list[int]:
        return [1, 2, 3]

    def text_prompt(self, text: str) -> list[int]:
        return [int(word) for word in text.split()]

    def start_batch(self, max_rows: int) -> None:
        self.rows = []

    def prefill(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        self.prefilled.append(len(prompts))
        self.rows.extend(p[-1] for p in prompts)
        return [p[-1] + 1 for p in prompts]

    def decode(self, tokens: Sequence[int]) -> list[int]:
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        if self.fail_next_decode:
            self.fail_next_decode = False
            raise RuntimeError("out of memory")
        assert len(tokens) == len(self.rows)
        self.decoded_rows.append(len(tokens))
        self.rows = list(tokens)
        return [t + 1 for t in tokens]

    def remove(self, row: int) -> int | None:
        last = len(self.rows) - 1
        if row != last:
            self.rows[row] = self.rows[last]
        self.rows.pop()
        return last if row != last else None

    def clear(self) -> None:
        self.rows = []

    def sample(self, logits: list[int], sampling: Sequence[Any]) -> list[int]:
        return list(logits)

    def sampling(self, temperature: float, top_p: float, seed: int | None) -> None:
        return None


class Steps:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.first: list[float] = []

    def first_token(self, seconds: float) -> None:
        self.first.append(seconds)

    def next_token(self, seconds: float) -> None:
        pass

    def prompt_tokens(self, count: int) -> None:
        pass

    def generated_tokens(self, count: int) -> None:
        pass

    def step(self, tokens: int) -> None:
        self.tokens.append(tokens)


def limits(**changes: int) -> GenerationLimits:
    values = {
        "max_running_sequences": 16,
        "max_tokens_per_step": 1000,
        "max_context_tokens": 1000,
        "kv_cache_tokens": 10_000,
    }
    values |= {"max_queue": 100} | changes
    return GenerationLimits(**values)


def request(prompt: Sequence[int] = (10,), max_tokens: int = 3, **fields: Any) -> GenerationRequest:
    return GenerationRequest(prompt=tuple(prompt), max_tokens=max_tokens, **fields)


class Running:
    def __init__(self, engine: GenerationEngine, model: FakeModel, steps: Steps) -> None:
        self.engine, self.model, self.steps = engine, model, steps


async def until(condition: Any) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Running]]:
    """Start an engine with `limits(**changes)` over a fake model, its loop on a thread; stopped after."""
    started: list[tuple[Running, asyncio.Future[None]]] = []
    loop = asyncio.get_running_loop()

    def run(**changes: int) -> Running:
        model, steps = FakeModel(), Steps()
        engine = GenerationEngine(model, limits(**changes), loop=loop, observer=steps)
        started.append((Running(engine, model, steps), loop.run_in_executor(None, engine.run)))
        return started[-1][0]

    yield run
    for each, loop_done in started:
        each.model.gate.set()
        each.engine.close()
        await asyncio.wait_for(loop_done, WAIT_S)


@pytest.fixture
async def running(start: Callable[..., Running]) -> Running:
    return start()


async def test_concurrent_generations_share_decode_steps(running: Running) -> None:
    running.model.gate.clear()
    first = running.engine.submit(request((10,), max_tokens=6))
    await asyncio.to_thread(running.model.entered.wait, WAIT_S)  # its first decode is held
    others = [running.engine.submit(request((20 + i,), max_tokens=6)) for i in range(7)]
    running.model.gate.set()
    results = await asyncio.gather(*(h.result() for h in [first, *others]))
    assert results[0] == ("t11 t12 t13 t14 t15 t16 ", "length")
    assert results[3] == ("t23 t24 t25 t26 t27 t28 ", "length")
    # the seven joined together in one prefill, then all eight decoded in one pass
    assert running.model.prefilled == [1, 7]
    assert max(running.model.decoded_rows) == 8
    assert max(running.steps.tokens) > 1


async def test_a_finished_sequence_leaves_and_a_new_one_joins_at_the_next_step(running: Running) -> None:
    running.model.gate.clear()
    long = running.engine.submit(request((100,), max_tokens=12))
    await asyncio.to_thread(running.model.entered.wait, WAIT_S)  # its first decode is held
    short = running.engine.submit(request((200,), max_tokens=2))
    running.model.gate.set()
    assert await short.result() == ("t201 t202 ", "length")
    await long.result()
    rows = running.model.decoded_rows
    # one row; two while the short one ran (its second token came from one shared decode); then one again
    assert rows == [1, 2] + [1] * 9


async def test_a_cancelled_sequence_is_freed_at_the_next_step(running: Running) -> None:
    handle = running.engine.submit(request((10,), max_tokens=500))
    await until(lambda: handle.completion_tokens >= 2)
    running.model.gate.clear()
    running.model.entered.clear()
    await asyncio.to_thread(running.model.entered.wait, WAIT_S)
    handle.cancel()
    running.model.gate.set()
    await until(lambda: running.engine.running == 0)
    decoded = len(running.model.decoded_rows)
    other = running.engine.submit(request((5,), max_tokens=1))
    await other.result()
    assert len(running.model.decoded_rows) == decoded  # the cancelled one decoded no more
    assert running.engine.kv_usage == 0


async def test_a_full_queue_refuses_and_the_waiting_one_runs_later(start: Callable[..., Running]) -> None:
    running = start(max_running_sequences=1, max_queue=1)
    running.model.gate.clear()
    first = running.engine.submit(request((10,), max_tokens=2))
    await asyncio.to_thread(running.model.entered.wait, WAIT_S)
    second = running.engine.submit(request((20,), max_tokens=2))
    assert running.engine.waiting == 1
    with pytest.raises(QueueFullError) as refused:
        running.engine.submit(request((30,), max_tokens=2))
    assert "waiting for the model already" in refused.value.message
    running.model.gate.set()
    assert (await first.result())[0] == "t11 t12 "
    assert (await second.result())[0] == "t21 t22 "


async def test_the_kv_budget_bounds_what_runs_together(start: Callable[..., Running]) -> None:
    running = start(kv_cache_tokens=25)
    # each reserves 2 prompt + 8 generated = 10 tokens: two fit in 25, the third waits
    handles = [running.engine.submit(request((1, 10 * (i + 1)), max_tokens=8)) for i in range(3)]
    await asyncio.gather(*(h.result() for h in handles))
    assert max(running.model.decoded_rows) == 2


async def test_prompts_join_within_the_step_token_budget(start: Callable[..., Running]) -> None:
    running = start(max_tokens_per_step=5)
    running.model.gate.clear()
    first = running.engine.submit(request((1, 2, 3, 4), max_tokens=4))
    await asyncio.to_thread(running.model.entered.wait, WAIT_S)
    others = [running.engine.submit(request((5, 6, 7), max_tokens=2)) for _ in range(2)]
    running.model.gate.set()
    await asyncio.gather(*(h.result() for h in [first, *others]))
    assert running.model.prefilled == [1, 1, 1]  # 3 + 3 tokens exceed 5: one prompt per step


async def test_stop_strings_and_eos_finish_with_stop(running: Running) -> None:
    stopped = running.engine.submit(request((10,), max_tokens=20, stop=("t13",)))
    assert await stopped.result() == ("t11 t12 ", "stop")
    ended = running.engine.submit(request((-3,), max_tokens=20))  # -2, -1, then 0: EOS
    assert await ended.result() == ("t-2 t-1 ", "stop")
    ignored = running.engine.submit(request((-2,), max_tokens=3, ignore_eos=True))
    assert (await ignored.result())[1] == "length"


async def test_a_request_past_its_deadline_fails(running: Running) -> None:
    running.model.gate.clear()
    handle = running.engine.submit(request((10,), max_tokens=50, timeout_s=0.05))
    await asyncio.to_thread(running.model.entered.wait, WAIT_S)
    await asyncio.sleep(0.1)
    running.model.gate.set()
    with pytest.raises(DeadlineError) as failed:
        await handle.result()
    assert "did not finish within 0.05 s" in failed.value.message
    await until(lambda: running.engine.running == 0)


async def test_a_failing_decode_fails_its_sequences_and_the_engine_goes_on(running: Running) -> None:
    running.model.fail_next_decode = True
    handle = running.engine.submit(request((10,), max_tokens=5))
    with pytest.raises(InferenceError) as failed:
        await handle.result()
    assert "RuntimeError: out of memory" in failed.value.message
    assert await running.engine.submit(request((20,), max_tokens=1)).result() == ("t21 ", "length")


async def test_abort_all_ends_running_and_waiting_as_draining(start: Callable[..., Running]) -> None:
    running = start(max_running_sequences=1)
    running.model.gate.clear()
    first = running.engine.submit(request((10,), max_tokens=50))
    await asyncio.to_thread(running.model.entered.wait, WAIT_S)
    second = running.engine.submit(request((20,), max_tokens=50))
    running.engine.abort_all("shutting down")
    running.model.gate.set()
    for handle in (first, second):
        with pytest.raises(DrainingError) as failed:
            await handle.result()
        assert failed.value.message == "shutting down"


async def test_requests_that_can_never_run_are_refused_with_both_numbers(
    start: Callable[..., Running],
) -> None:
    running = start(max_context_tokens=100, kv_cache_tokens=50)
    with pytest.raises(OverBudgetError) as context:
        running.engine.submit(request(range(90), max_tokens=20))
    assert "context is 100 tokens, but the request needs 110 (90 in the prompt, 20 to generate)" in str(
        context.value
    )
    with pytest.raises(OverBudgetError) as budget:
        running.engine.submit(request(range(40), max_tokens=20))
    assert "budget of 50" in budget.value.message
