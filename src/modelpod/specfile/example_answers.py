"""What an example of the spec asks a server, and whether an answer agrees with what it expects.

Shared by `modelpod predict`, the image's smoke test and the deploy's smoke test; numpy only, no model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelpod.specfile.resolved import Example


def to_json(value: np.ndarray | Any) -> Any:
    """A numpy value as plain JSON types (lists, numbers, strings)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def example_request(example: Example) -> tuple[str, dict[str, Any]]:
    """The path (without a leading slash) a server takes `example` on, and the body to send: a chat
    example goes to OpenAI's chat endpoint, greedy unless it says otherwise; any other to /predict."""
    if example.chat is not None:
        return "v1/chat/completions", {"temperature": 0, **example.chat}
    return "predict", {"inputs": example.inputs}


def example_outputs(example: Example, answer: Any) -> dict[str, Any]:
    """The outputs in a server's answer to `example_request` (a chat reply is the output `content`);
    empty when the answer has none."""
    try:
        if example.chat is not None:
            return {"content": answer["choices"][0]["message"]["content"]}
        outputs = answer["outputs"]
    except (KeyError, IndexError, TypeError):
        return {}
    return outputs if isinstance(outputs, dict) else {}


def compare_outputs(example: Example, outputs: Mapping[str, Any]) -> list[str]:
    """What differs between an example's expected outputs and actual ones; empty when they agree."""
    problems = []
    if example.contains is not None:
        texts = [value for value in outputs.values() if isinstance(value, str)]
        if not any(example.contains in text for text in texts):
            answer = texts[0] if len(texts) == 1 else texts
            problems.append(f"the answer {answer!r} does not contain {example.contains!r}")
    for name, expected in (example.expected or {}).items():
        if name not in outputs:
            problems.append(f"output {name!r} is missing")
            continue
        want, got = np.asarray(expected), np.asarray(outputs[name])
        if want.shape != got.shape:
            problems.append(f"output {name!r} has shape {list(got.shape)}, expected {list(want.shape)}")
        elif want.dtype.kind in "OUS" or got.dtype.kind in "OUS":
            if want.tolist() != got.tolist():
                problems.append(f"output {name!r} is {got.tolist()!r}, expected {want.tolist()!r}")
        elif not np.allclose(got, want, atol=example.atol, rtol=example.rtol):
            worst = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
            problems.append(
                f"output {name!r} differs by up to {worst:.3g} "
                f"(tolerance atol={example.atol}, rtol={example.rtol})"
            )
    return problems
