"""The inputs optimize checks and calibrates on: the spec's examples, a file, or generated ones.

A file (`--eval`, `--calibration`) is JSON: a list of items, or one item per line (JSON Lines); an item
is `{"input name": value}`, or `{"inputs": {...}}` as in an example file. Generated items follow the
signature: sentences of varied length and vocabulary for strings; for numbers, the spec's examples with
noise added (clipped to each example's range), or uniform values in [0, 1) when there are none. Generated
numbers are no substitute for real held-out data: pass `--eval` for a figure that means something.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelpod.errors import InputError
from modelpod.optimize.errors import OptimizeError
from modelpod.runtimes.base import Batch
from modelpod.signature import Signature
from modelpod.specfile.resolved import Spec

Item = dict[str, Any]

_VOCABULARY = (
    "the a one this every model server request answer question weather market city river music team "
    "paper recipe train bank night data light doctor garden quickly slowly never always often under "
    "over between after before runs fell grows wrote found opened closed explains measures ships "
    "bright quiet heavy ancient modern digital green cold warm careful famous strange local"
)
_WORDS = tuple(_VOCABULARY.split())


def example_items(spec: Spec) -> list[Item]:
    return [dict(example.inputs) for example in spec.examples if example.chat is None and example.inputs]


def read_items(path: Path, option: str) -> list[Item]:
    """Items from a JSON or JSON Lines file; errors name the option and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OptimizeError(f"{option}: cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
        values = data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        values = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise OptimizeError(
                    f"{option}: line {number} of {path} is not JSON: {exc.msg}",
                    hint="give a JSON list of items, or one JSON item per line",
                ) from None
    items = [value.get("inputs", value) if isinstance(value, dict) else value for value in values]
    bad = next((i for i, item in enumerate(items) if not isinstance(item, dict)), None)
    if bad is not None or not items:
        where = f"item {bad} is not" if bad is not None else "there are no items, each"
        raise OptimizeError(
            f"{option}: in {path}, {where} an object of inputs by name",
            hint='e.g. [{"text": "a sentence"}, ...] or one {"inputs": {...}} per line',
        )
    return items


def generate_items(signature: Signature, examples: Sequence[Item], count: int, *, seed: int) -> list[Item]:
    """`count` items that follow the signature (see the module docstring)."""
    rng = np.random.default_rng(seed)
    items: list[Item] = [{} for _ in range(count)]
    for tensor in signature.inputs:
        shape = tuple(4 if d == -1 else d for d in tensor.shape)
        known = [np.asarray(e[tensor.name], dtype=tensor.numpy_dtype) for e in examples if tensor.name in e]
        for index, item in enumerate(items):
            if tensor.dtype == "string":
                item[tensor.name] = _sentences(rng, shape)
            elif known:
                base = known[index % len(known)]
                noisy = base + rng.normal(0.0, 0.1 * (float(base.std()) or 1.0), base.shape)
                item[tensor.name] = np.clip(noisy, base.min(), base.max()).astype(tensor.numpy_dtype).tolist()
            elif tensor.numpy_dtype.kind in "iu":
                item[tensor.name] = rng.integers(0, 10, shape).astype(tensor.numpy_dtype).tolist()
            elif tensor.numpy_dtype.kind == "b":
                item[tensor.name] = (rng.random(shape) < 0.5).tolist()
            else:
                item[tensor.name] = rng.random(shape).astype(tensor.numpy_dtype).tolist()
    return items


def _sentences(rng: np.random.Generator, shape: tuple[int, ...]) -> Any:
    def sentence() -> str:
        words = rng.choice(_WORDS, size=int(rng.integers(2, 40)))
        return " ".join(words).capitalize() + "."

    if not shape:
        return sentence()
    return np.array([sentence() for _ in range(int(np.prod(shape)))], dtype=object).reshape(shape).tolist()


def batches(signature: Signature, items: Sequence[Mapping[str, Any]], size: int) -> Iterator[Batch]:
    """The items coerced to the signature, stacked in batches of up to `size` rows."""
    try:
        arrays = [signature.coerce_inputs(dict(item), batched=False) for item in items]
    except InputError as exc:
        raise OptimizeError(f"an input item does not match the signature: {exc}") from None
    for start in range(0, len(arrays), size):
        chunk = arrays[start : start + size]
        yield {t.name: np.stack([a[t.name] for a in chunk]) for t in signature.inputs}
