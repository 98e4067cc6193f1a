"""The text-generation runtime on a real (tiny, random) Llama: sequences that join and leave packed passes,
their prompts prefilled in chunks, get exactly the tokens that transformers' own `generate` gives each
alone; a cached prefix spares its prefill and changes nothing; sampling and its penalties do what their
definitions say."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelpod.runtimes.generation_runtime import Piece, TextGenerator
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
    runtime.eos_token_ids = frozenset()  # random weights: run every sequence to its length
    return runtime


def reference(generator: TextGenerator, prompt: list[int], tokens: int) -> list[int]:
    """transformers' `generate` alone on `prompt`, with its own attention and cache."""
    ids = torch.tensor([prompt])
    generator.model.set_attn_implementation("sdpa")
    try:
        out = generator.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
        )
    finally:
        generator.model.set_attn_implementation("modelpod")
    return [int(t) for t in out[0, len(prompt) :]]


def greedy(generator: TextGenerator, logits: object, rows: int) -> list[int]:
    return generator.sample(logits, [generator.sampling(temperature=0.0)] * rows, [None] * rows)


def run_packed(
    generator: TextGenerator, prompts: list[list[int]], tokens: int, *, pool: int, chunk: int, running: int
) -> list[list[int]]:
    """Every prompt to `tokens` greedy tokens, at most `running` at once in a pool of `pool` tokens, new
    ones joining every other pass, prompts in chunks of at most `chunk` tokens."""
    generator.start_engine(pool, prefix_caching=False)
    out: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    kv: dict[int, object] = {}
    done: dict[int, int] = {}  # tokens with keys and values, by prompt
    pending = list(range(len(prompts)))
    step = 0
    while pending or kv:
        while step % 2 == 0 and pending and len(kv) < running:
            index = pending[0]
            opened = generator.open_sequence(prompts[index], len(prompts[index]) + tokens)
            if opened is None:
                break  # no room: it waits for a running one to end
            kv[pending.pop(0)], done[index] = opened, 0
        pieces, owners = [], []
        for i, held in kv.items():
            prompt = prompts[i]
            if done[i] < len(prompt):
                count = min(chunk, len(prompt) - done[i])
                last = done[i] + count == len(prompt)
                pieces.append(Piece(held, done[i], prompt[done[i] : done[i] + count], logits=last))
                owners += [i] if last else []
                done[i] += count
            else:
                pieces.append(Piece(held, done[i], [out[i][-1]], logits=True))
                owners.append(i)
                done[i] += 1
        logits = generator.forward(pieces)
        for i, token in zip(owners, greedy(generator, logits, len(owners)), strict=True):
            out[i].append(token)
        for i in [i for i in kv if len(out[i]) >= tokens]:
            generator.close_sequence(kv.pop(i), (prompts[i] + out[i])[: done[i]])
        step += 1
    assert generator.kv_reserved == 0
    return [out[i] for i in range(len(prompts))]


def test_sequences_that_join_and_leave_packed_passes_decode_as_if_alone(generator: TextGenerator) -> None:
    """Prompts of very different lengths, prefilled in chunks of 16 beside the others' decode tokens, in a
    pool too small for all of them at once: slabs are reused, split and merged as sequences come and go."""
    lengths, tokens = (5, 80, 3, 120, 9, 60, 7, 150), 30
    gen = torch.Generator().manual_seed(1)
    prompts = [[int(t) for t in torch.randint(10, 1000, (n,), generator=gen)] for n in lengths]
    expected = [reference(generator, p, tokens) for p in prompts]
    assert run_packed(generator, prompts, tokens, pool=400, chunk=16, running=3) == expected


def test_a_fragmented_pool_is_compacted_and_answers_stay_exact(generator: TextGenerator) -> None:
    """Three sequences of 30 rows fill 90 of 100; the middle one ends first, leaving 30 + 10 free rows in
    two pieces, and a sequence of 40 then fits only once the third is moved down next to the first."""
    from modelpod.runtimes._kv_store import KVStore

    gen = torch.Generator().manual_seed(2)
    first, middle, third, late = ([int(t) for t in torch.randint(10, 1000, (n,), generator=gen)]
                                  for n in (20, 20, 20, 35))  # fmt: skip
    generator.start_engine(100, prefix_caching=False)
    store: KVStore = generator.store
    held = {name: generator.open_sequence(p, len(p) + 10) for name, p in
            (("first", first), ("middle", middle), ("third", third))}  # fmt: skip
    outputs: dict[str, list[int]] = {name: [] for name in held}
    prompts = {"first": first, "middle": middle, "third": third}
    logits = generator.forward([Piece(held[n], 0, prompts[n], logits=True) for n in held])
    for name, token in zip(held, greedy(generator, logits, 3), strict=True):
        outputs[name].append(token)
    generator.close_sequence(held.pop("middle"), middle)
    assert store.allocator.free == [(30, 30), (90, 10)]
    moved_from = held["third"].slab.start
    opened = generator.open_sequence(late, len(late) + 5)  # 40 rows: only after compaction
    assert opened is not None
    assert held["third"].slab.start < moved_from
    held["late"], prompts["late"], outputs["late"] = opened, late, []
    logits = generator.forward(
        [Piece(held[n], len(prompts[n]), [outputs[n][-1]], logits=True) for n in ("first", "third")]
        + [Piece(opened, 0, late, logits=True)]
    )
    for name, token in zip(("first", "third", "late"), greedy(generator, logits, 3), strict=True):
        outputs[name].append(token)
    for name in ("first", "third"):
        assert outputs[name] == reference(generator, prompts[name], 2)
    assert outputs["late"] == reference(generator, late, 1)
    generator.clear()


def test_a_cached_prefix_skips_its_prefill_and_changes_nothing(generator: TextGenerator) -> None:
    """A second turn that begins with the first turn's prompt and answer computes only its new tokens."""
    gen = torch.Generator().manual_seed(3)
    turn1 = [int(t) for t in torch.randint(10, 1000, (40,), generator=gen)]
    generator.start_engine(500, prefix_caching=True)
    kv = generator.open_sequence(turn1, len(turn1) + 8)
    assert kv.reused == 0
    answer = [*greedy(generator, generator.forward([Piece(kv, 0, turn1, logits=True)]), 1)]
    for _ in range(7):
        logits = generator.forward([Piece(kv, len(turn1) + len(answer) - 1, [answer[-1]], logits=True)])
        answer += greedy(generator, logits, 1)
    generator.close_sequence(kv, turn1 + answer[:-1])  # the last token's keys were never computed
    turn2 = turn1 + answer + [int(t) for t in torch.randint(10, 1000, (12,), generator=gen)]
    kv2 = generator.open_sequence(turn2, len(turn2) + 6)
    assert kv2.reused == len(turn1) + len(answer) - 1  # all the first turn computed
    rest = turn2[kv2.reused :]
    out = greedy(generator, generator.forward([Piece(kv2, kv2.reused, rest, logits=True)]), 1)
    for _ in range(5):
        logits = generator.forward([Piece(kv2, len(turn2) + len(out) - 1, [out[-1]], logits=True)])
        out += greedy(generator, logits, 1)
    assert out == reference(generator, turn2, 6)
    generator.clear()


def test_sampling_with_a_seed_repeats_and_its_cuts_narrow_it(generator: TextGenerator) -> None:
    logits = torch.randn(1, 2000, generator=torch.Generator().manual_seed(0)) * 3

    def draw(**settings: object) -> int:
        return generator.sample(logits, [generator.sampling(temperature=1.0, **settings)], [None])[0]

    assert draw(seed=7) == draw(seed=7)
    assert len({draw(seed=s) for s in range(20)}) > 1
    argmax = int(logits.argmax())
    # each cut this narrow keeps only the most likely token: sampling becomes the argmax
    assert {draw(top_p=1e-6, seed=s) for s in range(20)} == {argmax}
    assert {draw(top_k=1, seed=s) for s in range(20)} == {argmax}
    assert {draw(min_p=0.9999, seed=s) for s in range(20)} == {argmax}
    # top_k 5 draws only among the five most likely
    five = set(torch.topk(logits[0], 5).indices.tolist())
    assert {draw(top_k=5, seed=s) for s in range(40)} <= five


def test_penalties_turn_greedy_away_from_tokens_already_used(generator: TextGenerator) -> None:
    """Token 7 leads token 8 by 0.5: a repetition penalty of 2 on a prompt holding 7 halves its logit
    (3 -> 1.5 < 2.5); a presence penalty of 1 after 7 was generated, or a frequency penalty of 0.3 after
    it came twice, puts 8 ahead too; and without them, or on other tokens, 7 stays."""
    logits = torch.zeros(1, 20)
    logits[0, 7], logits[0, 8] = 3.0, 2.5

    def pick(history: tuple[list[int], list[int]], **settings: float) -> int:
        sampling = generator.sampling(temperature=0.0, **settings)
        return generator.sample(logits, [sampling], [history])[0]

    assert pick(([7], []), repetition_penalty=2.0) == 8
    assert pick(([1], []), repetition_penalty=2.0) == 7
    assert pick(([], [7]), presence_penalty=1.0) == 8
    assert pick(([], [7]), presence_penalty=0.4) == 7
    assert pick(([], [7, 7]), frequency_penalty=0.3) == 8
    assert pick(([], [7]), frequency_penalty=0.3) == 7
    assert pick(([7], []), presence_penalty=1.0) == 7  # presence counts the answer, not the prompt


def test_incremental_text_equals_the_whole_decode(generator: TextGenerator) -> None:
    text = "Grüße aus Köln — 東京 🚀 done."
    ids = generator.text_prompt(text, special=False)
    detokenizer = Detokenizer(generator.tokenizer, [1, 2, 3])
    pieces = [detokenizer.push(token) for token in ids]
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)
    # an answer that ends inside a character: flush gives what the whole decode gives
    cut = Detokenizer(generator.tokenizer, [1, 2, 3])
    shown = "".join(cut.push(token) for token in ids[:-1]) + cut.flush()
    assert shown == generator.tokenizer.decode(ids[:-1], skip_special_tokens=True)


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
