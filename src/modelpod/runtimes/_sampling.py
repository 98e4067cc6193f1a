"""Picking each sequence's next token from its logits: penalties, then greedy or a draw.

The order is vLLM's: the repetition penalty (on the prompt's and the answer's tokens: a positive logit
divided by it, a negative one multiplied), OpenAI's presence and frequency penalties (on the answer's
tokens: minus presence once, minus frequency per occurrence); then, at temperature 0, the largest
logit; else the logits over the temperature, cut to the `top_k` largest, to the smallest set whose
probability reaches `top_p`, and to tokens at least `min_p` times as likely as the most likely one,
and a draw with the sequence's own random generator (seeded when the request gave a seed).

Imported by the text-generation runtime inside its `load()`: it imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Sampling:
    """How one sequence picks its tokens. temperature 0 is greedy; `generator` is its own random stream."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no cut
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    generator: Any = None

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


# the tokens a sequence's penalties look at: (its prompt, what it generated so far)
History = tuple[Sequence[int], Sequence[int]]


def sample(logits: Any, samplings: Sequence[Sampling], histories: Sequence[History | None]) -> list[int]:
    """The next token of each row of `logits` [rows, vocabulary] (float32); `histories[row]` is None for
    a row without penalties."""
    if not any(s.penalised or s.temperature > 0 for s in samplings):
        chosen: list[int] = logits.argmax(dim=-1).tolist()
        return chosen
    tokens = []
    for row, how in enumerate(samplings):
        scores = logits[row]
        history = histories[row]
        if how.penalised and history is not None:
            scores = _penalised(scores, how, history)
        tokens.append(int(scores.argmax()) if how.temperature <= 0 else _draw(scores, how))
    return tokens


def _penalised(scores: Any, how: Sampling, history: History) -> Any:
    prompt, generated = history
    scores = scores.clone()
    if how.repetition_penalty != 1.0:
        seen = torch.tensor(sorted({*prompt, *generated}), dtype=torch.long)
        if len(seen):
            picked = scores[seen]
            scores[seen] = torch.where(
                picked > 0, picked / how.repetition_penalty, picked * how.repetition_penalty
            )
    if (how.presence_penalty or how.frequency_penalty) and len(generated):
        counts = torch.bincount(torch.tensor(list(generated), dtype=torch.long), minlength=len(scores))
        scores -= how.frequency_penalty * counts[: len(scores)].to(scores.dtype)
        scores -= how.presence_penalty * (counts[: len(scores)] > 0).to(scores.dtype)
    return scores


def _draw(scores: Any, how: Sampling) -> int:
    scores = scores / how.temperature
    if 0 < how.top_k < len(scores):
        kth = torch.topk(scores, how.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if how.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest set whose mass reaches top_p (the first token always stays)
        outside = sorted_probs.cumsum(0) - sorted_probs >= how.top_p
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs.masked_fill(outside, 0.0))
    if how.min_p > 0.0:
        probs = probs.masked_fill(probs < how.min_p * probs.max(), 0.0)
    return int(torch.multinomial(probs, 1, generator=how.generator))


def new_sampling(
    *,
    temperature: float,
    top_p: float = 1.0,
    top_k: int = 0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    seed: int | None = None,
) -> Sampling:
    """A sequence's sampling; a sampled one gets a random generator of its own (seeded if asked)."""
    generator = None
    if temperature > 0:
        generator = torch.Generator(device="cpu")
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
    return Sampling(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        generator=generator,
    )
