"""The optimised model checked against the original, output by output, on the same inputs.

Every output gets its largest absolute difference. A float vector output is an embedding (its name says
"embed", or the model maps text to it) and gets the cosine similarity of each item's vectors, or else a
classifier's scores and gets top-1 agreement (the share of items whose highest score is in the same
place); any other non-float output gets exact agreement, counted as top-1. The thresholds apply to the
mean cosine (the smallest is reported beside it) and to top-1 agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from modelpod.runtimes.base import Batch
from modelpod.signature import Signature, TensorSpec

Kind = Literal["embedding", "classifier", "other"]


@dataclass(frozen=True)
class OutputAccuracy:
    name: str
    kind: Kind
    max_abs_diff: float | None  # None for outputs that are not numbers
    cosine_mean: float | None = None
    cosine_min: float | None = None
    top1: float | None = None  # share of items that agree, 0..1


@dataclass(frozen=True)
class Accuracy:
    items: int
    source: str  # where the inputs came from, for the report
    outputs: tuple[OutputAccuracy, ...]

    def failures(self, *, min_top1: float, min_cosine: float) -> list[str]:
        problems = []
        for out in self.outputs:
            if out.cosine_mean is not None and out.cosine_mean < min_cosine:
                problems.append(f"{out.name}: mean cosine {out.cosine_mean:.6f} is below {min_cosine}")
            if out.top1 is not None and out.top1 < min_top1:
                problems.append(f"{out.name}: top-1 agreement {out.top1:.2%} is below {min_top1:.2%}")
        return problems


def output_kind(tensor: TensorSpec, signature: Signature) -> Kind:
    text_in = [t.dtype for t in signature.inputs] == ["string"]
    if tensor.numpy_dtype.kind == "f" and len(tensor.shape) == 1 and tensor.shape[0] != 1:
        return "embedding" if "embed" in tensor.name.lower() or text_in else "classifier"
    return "other"


def compare(
    signature: Signature,
    original: Callable[[Batch], Batch],
    optimised: Callable[[Batch], Batch],
    inputs: Iterable[Batch],
    *,
    source: str,
) -> Accuracy:
    """Run both models on every batch of `inputs` and compare what they answer."""
    theirs: dict[str, list[np.ndarray]] = {t.name: [] for t in signature.outputs}
    ours: dict[str, list[np.ndarray]] = {t.name: [] for t in signature.outputs}
    items = 0
    for batch in inputs:
        items += len(next(iter(batch.values())))
        a, b = original(batch), optimised(batch)
        for name in theirs:
            theirs[name].append(np.asarray(a[name]))
            ours[name].append(np.asarray(b[name]))
    results = tuple(
        _output_accuracy(
            t, output_kind(t, signature), np.concatenate(theirs[t.name]), np.concatenate(ours[t.name])
        )
        for t in signature.outputs
    )
    return Accuracy(items=items, source=source, outputs=results)


def _output_accuracy(tensor: TensorSpec, kind: Kind, want: np.ndarray, got: np.ndarray) -> OutputAccuracy:
    if want.dtype.kind not in "fiub":
        agree = float(np.mean([w == g for w, g in zip(want.tolist(), got.tolist(), strict=True)]))
        return OutputAccuracy(tensor.name, kind, None, top1=agree)
    want64, got64 = want.astype(np.float64), got.astype(np.float64)
    max_diff = float(np.max(np.abs(want64 - got64))) if want.size else 0.0
    if kind == "embedding":
        cosines = _cosines(want64, got64)
        return OutputAccuracy(
            tensor.name, kind, max_diff, cosine_mean=float(cosines.mean()), cosine_min=float(cosines.min())
        )
    if kind == "classifier":
        agree = float(np.mean(want64.argmax(axis=1) == got64.argmax(axis=1)))
        return OutputAccuracy(tensor.name, kind, max_diff, top1=agree)
    return OutputAccuracy(tensor.name, kind, max_diff)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    # two zero vectors agree; one zero vector against another vector does not
    both_zero = norms == 0
    return np.where(both_zero, 1.0, dots / np.where(both_zero, 1.0, norms))


def describe(accuracy: Accuracy) -> Sequence[tuple[str, str]]:
    """(figure, value) rows for a table."""
    rows = []
    for out in accuracy.outputs:
        if out.max_abs_diff is not None:
            rows.append((f"{out.name}: max abs difference", f"{out.max_abs_diff:.3g}"))
        if out.cosine_mean is not None and out.cosine_min is not None:
            rows.append((f"{out.name}: cosine (mean / min)", f"{out.cosine_mean:.5f} / {out.cosine_min:.5f}"))
        if out.top1 is not None:
            rows.append((f"{out.name}: top-1 agreement", f"{out.top1:.2%}"))
    return rows
