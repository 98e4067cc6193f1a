"""The text-generation runtime on a real (tiny, random) Llama: rows that join and leave the running batch
get exactly the tokens that transformers' own `generate` gives each sequence alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelpod.runtimes.generation_runtime import Sampling, TextGenerator
from modelpod.server.scheduling.text import Detokenizer, StopMatcher
from modelpod.specfile.resolved import ResolvedModel

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def generator(tiny_llama_dir: Path) -> TextGenerator:
    from modelpod.runtimes.transformers_runtime import load

    model = ResolvedModel(
        path=tiny_llama_dir,
        format="transformers",
        class_name=None,
        signature=None,
        options={},
        code_dir=tiny_llama_dir,
    )
    runtime = load(model, threads=1)
    assert isinstance(runtime, TextGenerator)
    return runtime


def reference(generator: TextGenerator, prompt: list[int], tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = generator.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
    )
    return [int(t) for t in out[0, len(prompt) :]]


def test_sequences_that_join_and_leave_decode_as_if_alone(generator: TextGenerator) -> None:
    """Prompts of very different lengths join two at a time, every other step, into at most 3 rows, and
    leave when done: every row move (a longer prompt pushing the others right, the columns running
    out, a finished row refilled by the last) happens along the way."""
    lengths, tokens = (5, 80, 3, 120, 9, 60, 7, 150), 40
    gen = torch.Generator().manual_seed(1)
    prompts = [[int(t) for t in torch.randint(10, 1000, (n,), generator=gen)] for n in lengths]
    expected = [reference(generator, p, tokens) for p in prompts]
    generator.eos_token_ids = frozenset()  # random weights: run every sequence to its length
    generator.start_batch(3)
    out: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    rows: list[int] = []  # prompt index by row
    pending = list(range(len(prompts)))

    def leave_finished() -> None:
        for row in reversed(range(len(rows))):
            if len(out[rows[row]]) >= tokens:
                moved = generator.remove(row)
                last = rows.pop()
                if moved is not None:
                    rows[row] = last

    step = 0
    while pending or rows:
        joining = []
        while step % 2 == 0 and pending and len(rows) + len(joining) < 3 and len(joining) < 2:
            joining.append(pending.pop(0))
        if joining:
            logits = generator.prefill([prompts[i] for i in joining])
            for i, token in zip(joining, generator.sample(logits, [Sampling()] * len(joining)), strict=True):
                out[i].append(token)
            rows.extend(joining)
        if rows:
            logits = generator.decode([out[i][-1] for i in rows])
            for i, token in zip(rows, generator.sample(logits, [Sampling()] * len(rows)), strict=True):
                out[i].append(token)
        leave_finished()
        step += 1
    assert [out[i][:tokens] for i in range(len(prompts))] == expected
    assert generator.kv_tokens_used == 0


class _TorchWithPoisonedEmpty:
    """torch, except that `empty` returns NaN everywhere: what uninitialised memory may hold."""

    def __getattr__(self, name: str) -> object:
        return getattr(torch, name)

    @staticmethod
    def empty(shape: tuple[int, ...], **kwargs: Any) -> Any:
        return torch.full(shape, float("nan"), **kwargs)


def test_left_padding_never_holds_uninitialised_memory(
    generator: TextGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short prompt that joins a running long one sits right-aligned in its row, and the columns
    before it are never written. Were the cache's buffers allocated uninitialised, a NaN there would
    turn the short row's answer into token 0 through 0 * NaN in the attention (this failed once in CI,
    depending on what the memory held)."""
    from modelpod.runtimes import _kv_rows

    monkeypatch.setattr(_kv_rows, "torch", _TorchWithPoisonedEmpty())
    short, long_ = [11, 12, 13], list(range(100, 160))
    tokens = 8
    expected = reference(generator, short, tokens)
    generator.eos_token_ids = frozenset()
    generator.start_batch(2)
    generator.prefill([long_])
    generator.decode([0])
    logits = generator.prefill([short])
    out = [generator.sample(logits, [Sampling()])[0]]
    for _ in range(tokens - 1):
        logits = generator.decode([0, out[-1]])
        out.append(generator.sample(logits, [Sampling()] * 2)[1])
    generator.clear()
    assert out == expected


def test_sampling_with_a_seed_repeats_and_top_p_narrows(generator: TextGenerator) -> None:
    logits = torch.randn(1, 2000, generator=torch.Generator().manual_seed(0)) * 3
    draws = [generator.sample(logits, [generator.sampling(1.0, 1.0, seed=7)])[0] for _ in range(2)]
    assert draws[0] == draws[1]
    spread = {generator.sample(logits, [generator.sampling(1.0, 1.0, seed=s)])[0] for s in range(20)}
    assert len(spread) > 1
    # top_p this small keeps only the most likely token: sampling becomes the argmax
    narrow = {generator.sample(logits, [generator.sampling(1.0, 1e-6, seed=s)])[0] for s in range(20)}
    assert narrow == {int(logits.argmax())}


def test_incremental_text_equals_the_whole_decode(generator: TextGenerator) -> None:
    text = "Grüße aus Köln — 東京 🚀 done."
    ids = generator.text_prompt(text, special=False)
    detokenizer = Detokenizer(generator.tokenizer, [1, 2, 3])
    pieces = [detokenizer.push(token) for token in ids]
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)


@pytest.mark.parametrize(
    ("pieces", "stops", "shown", "stopped"),
    [
        (["Hello", " wor", "ld"], ["world"], "Hello ", True),
        (["ab", "c##", "d"], ["##"], "abc", True),
        (["a#", "b"], ["##"], "a#b", False),  # held back after "a#", released when "b" shows it is no stop
        (["x", "y"], [], "xy", False),
    ],
)
def test_stop_strings_across_pieces(pieces: list[str], stops: list[str], shown: str, stopped: bool) -> None:
    matcher = StopMatcher(stops)
    text = ""
    for piece in pieces:
        text += matcher.feed(piece)
        if matcher.stopped:
            break
    text += "" if matcher.stopped else matcher.flush()
    assert (text, matcher.stopped) == (shown, stopped)
