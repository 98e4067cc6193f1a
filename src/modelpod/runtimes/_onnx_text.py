"""Text inputs for ONNX encoders: the tokenizer that turns strings into the graph's token tensors.

An ONNX model directory written by `modelpod optimize` for a sentence-transformers encoder holds
`model.onnx` (the encoder with its pooling and normalisation inside the graph) and `tokenizer.json`
(with the encoder's truncation length). The graph takes `input_ids` and `attention_mask` (and
`token_type_ids` when the encoder has them); the runtime serves one string input, `text`, and tokenizes
with the `tokenizers` library, so serving needs neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelpod.errors import ModelLoadError
from modelpod.runtimes.base import Batch, require
from modelpod.signature import numpy_dtype

TOKENIZER_FILE = "tokenizer.json"
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TextFeeds:
    """Strings -> the graph's token tensors, and token counts for usage reports."""

    def __init__(self, tokenizer: Any, inputs: dict[str, np.dtype[Any]]) -> None:
        self._tokenizer = tokenizer
        self._inputs = inputs  # graph input name -> numpy dtype
        # A copy for counting: `count_tokens` may run on the event loop's worker threads while the model
        # thread encodes, and a tokenizer's padding is state that one call could change under another.
        self._counter = type(tokenizer).from_str(tokenizer.to_str())
        self._counter.no_padding()  # truncation stays: the count is what the model reads

    def __call__(self, texts: np.ndarray) -> Batch:
        encodings = self._tokenizer.encode_batch([str(t) for t in texts])
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        return {name: np.asarray(columns[name], dtype=dtype) for name, dtype in self._inputs.items()}

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(encoding) for encoding in self._counter.encode_batch(texts))


def load_text_feeds(directory: Path, graph_inputs: dict[str, str]) -> TextFeeds:
    """The tokenizer of an ONNX model directory, checked against the graph's inputs (name -> dtype)."""
    tokenizers = require("tokenizers", runtime="ONNX (text encoders)", extra="onnx-text")
    names = list(graph_inputs)
    integers = all(dtype.startswith("int") for dtype in graph_inputs.values())
    if not integers or "input_ids" not in names or any(name not in TOKEN_INPUTS for name in names):
        raise ModelLoadError(
            f"{directory / TOKENIZER_FILE} is there, but the graph's inputs {names} are not token tensors",
            hint=f"a text encoder's graph takes {', '.join(TOKEN_INPUTS[:2])} (and optionally "
            f"{TOKEN_INPUTS[2]}); remove {TOKENIZER_FILE} to serve the graph's own inputs",
        )
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    except Exception as exc:
        raise ModelLoadError(f"could not read {directory / TOKENIZER_FILE}: {exc}") from exc
    if tokenizer.padding is None:
        # rows of a batch must have one length; the attention mask hides the padding from the encoder,
        # so which token pads does not change the result
        tokenizer.enable_padding()
    return TextFeeds(tokenizer, {name: numpy_dtype(dtype) for name, dtype in graph_inputs.items()})
