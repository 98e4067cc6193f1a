"""The generation engine's scheduling, driven with a fake model whose every pass the test can see and hold.

The fake model counts: the next token of a sequence is its last token plus one, token 0 is EOS, and a
token reads as "t<id> ". Its KV pool is a count of reserved tokens. Its forward pass can be held at a
gate, so a test decides what is running and waiting when it checks, instead of racing a real model;
every pass is recorded as its pieces: ("decode", 1) or ("prompt", tokens of the chunk).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from modelpod.errors import InferenceError
from modelpod.runtimes.generation_runtime import Piece
from modelpod.server.scheduling.errors import DeadlineError, DrainingError, OverBudgetError, QueueFullError
from modelpod.server.scheduling.generation import GenerationEngine
from modelpod.server.scheduling.generation_request import GenerationLimits, GenerationRequest

pytestmark = pytest.mark.anyio
WAIT_S = 10.0  # every wait on the engine is bounded


class FakeTokenizer:
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(f"t{i} " for i in ids)


@dataclass(eq=False)
class FakeKV:
    prompt: tuple[int, ...]
    reservation: int
    reused: int = 0


class FakeModel:
    eos_token_ids = frozenset({0})

    def __init__(self) -> None:
        self.tokenizer = FakeTokenizer()
        self.capacity = 0
        self.open: set[FakeKV] = set()
        self.passes: list[list[tuple[str, int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a pass starts
        self.fail_next_pass = False

    def chat_prompt(self, messages: Sequence[Any]) -> list[int]:
        return [1, 2, 3]

    def text_prompt(self, text: str) -> list[int]:
        return [int(word) for word in text.split()]

    def start_engine(self, pool_tokens: int, *, prefix_caching: bool) -> None:
        self.capacity = pool_tokens

    @property
    def kv_capacity(self) -> int:
        return self.capacity

    @property
    def kv_reserved(self) -> int:
        return sum(kv.reservation for kv in self.open)

    def open_sequence(self, prompt: Sequence[int], reservation: int) -> FakeKV | None:
        if self.kv_reserved + reservation > self.capacity:
            return None
        kv = FakeKV(tuple(prompt), reservation)
        self.open.add(kv)
        return kv

    def close_sequence(self, kv: FakeKV, tokens: Sequence[int]) -> None:
        assert len(tokens) <= kv.reservation
        self.open.discard(kv)

    def forward(self, pieces: Sequence[Piece]) -> list[int]:
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        if self.fail_next_pass:
            self.fail_next_pass = False
            raise RuntimeError("out of memory")
        decode = [p for p in pieces if p.position >= len(p.kv.prompt)]
        self.passes.append(
            [("decode", 1) for _ in decode] + [("prompt", len(p.tokens)) for p in pieces if p not in decode]
        )
        return [p.tokens[-1] + 1 for p in pieces if p.logits]

    def clear(self) -> None:
        self.open.clear()

    def sample(self, logits: list[int], sampling: Sequence[Any], histories: Sequence[Any]) -> list[int]:
        return list(logits)

    def sampling(self, **settings: Any) -> None:
        return None

    def decodes(self) -> list[int]:
        """Decode tokens in each pass."""
        return [sum(1 for kind, _ in p if kind == "decode") for p in self.passes]


class Steps:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.first: list[float] = []

    def first_token(self, seconds: float) -> None:
        self.first.append(seconds)

    def next_token(self, seconds: float) -> None:
        pass

    def prompt_tokens(self, count: int, cached: int) -> None:
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
    # the seven prompts ran in one pass beside the first's decode, then all eight decoded in one pass
    assert running.model.passes[1] == [("decode", 1)] + [("prompt", 1)] * 7
    assert max(running.model.decodes()) == 8
    assert max(running.steps.tokens) == 8


async def test_a_finished_sequence_leaves_and_a_new_one_joins_at_the_next_step(running: Running) -> None:
    running.model.gate.clear()
    long = running.engine.submit(request((100,), max_tokens=12))
    await asyncio.to_thread(running.model.entered.wait, WAIT_S)  # its first decode is held
    short = running.engine.submit(request((200,), max_tokens=2))
    running.model.gate.set()
    assert await short.result() == ("t201 t202 ", "length")
    await long.result()
    # the long prompt; its decode beside the short prompt; both decoding; then the long one alone again
    assert running.model.decodes() == [0, 1, 2] + [1] * 9


async def test_a_cancelled_sequence_is_freed_at_the_next_step(running: Running) -> None:
    handle = running.engine.submit(request((10,), max_tokens=500))
    await until(lambda: handle.completion_tokens >= 2)
    running.model.gate.clear()
    running.model.entered.clear()
    await asyncio.to_thread(running.model.entered.wait, WAIT_S)
    handle.cancel()
    running.model.gate.set()
    await until(lambda: running.engine.running == 0)
    passes = len(running.model.passes)
    other = running.engine.submit(request((5,), max_tokens=1))
    await other.result()
    assert running.model.passes[passes:] == [[("prompt", 1)]]  # the cancelled one decoded no more
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
    assert max(running.model.decodes()) == 2
    assert running.model.kv_reserved == 0


async def test_a_long_prompt_is_prefilled_in_chunks_while_a_stream_keeps_decoding(
    start: Callable[..., Running],
) -> None:
    running = start(max_tokens_per_step=4)
    running.model.gate.clear()
    stream = running.engine.submit(request((1,), max_tokens=8))
    await asyncio.to_thread(running.model.entered.wait, WAIT_S)
    long = running.engine.submit(request(range(100, 110), max_tokens=2))
    running.model.gate.set()
    assert await long.result() == ("t110 t111 ", "length")
    await stream.result()
    passes = running.model.passes
    assert all(sum(n for _, n in p) <= 4 for p in passes)  # no pass over the step's token budget
    # the 10-token prompt in chunks of 3, each beside the stream's decode token, then the last one
    assert passes[1:5] == [[("decode", 1), ("prompt", 3)]] * 3 + [[("decode", 1), ("prompt", 1)]]
    assert running.steps.tokens[1:5] == [4, 4, 4, 2]


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


async def test_a_failing_pass_fails_its_sequences_and_the_engine_goes_on(running: Running) -> None:
    running.model.fail_next_pass = True
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
