"""Hugging Face models from a local directory: sentence embeddings and text classification.

Tasks (`model.options.task`, detected when omitted):
- `embeddings`: a sentence-transformers directory (modules.json). Input `text` (string), output `embedding`.
  Option `normalize` (default false) scales embeddings to unit length.
- `text-classification`: a transformers *ForSequenceClassification directory. Input `text`, outputs
  `probabilities` [num_labels] and `label` (the config's label name of the most probable class).
- `text-generation`: a causal language model (*ForCausalLM, or *LMHeadModel such as GPT-2), served
  through the OpenAI chat and completions endpoints with continuous batching
  (runtimes/generation_runtime.py).
Options for all: `device` ("cpu" by default), `max_length` (tokens; the model's limit by default),
`attn_implementation` (transformers' attention: "sdpa" by default, "eager" where a model needs it).

Models load from the directory only: HF_HUB_OFFLINE is set so that nothing is fetched from a hub.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelpod.errors import ModelLoadError
from modelpod.runtimes._pinning import pin_torch_threads
from modelpod.runtimes.base import BaseRuntime, Batch, reconcile, require
from modelpod.signature import Signature, TensorSpec
from modelpod.specfile.resolved import ResolvedModel

TASKS = ("embeddings", "text-classification", "text-generation")
_TEXT = TensorSpec(name="text", dtype="string", shape=())


class EmbeddingRuntime(BaseRuntime):
    task = "embeddings"

    def __init__(self, torch: Any, encoder: Any, signature: Signature, *, normalize: bool) -> None:
        super().__init__(signature)
        self._torch = torch
        self._encoder = encoder
        self._normalize = normalize
        self._count = _token_counter(encoder.tokenizer, encoder.max_seq_length)
        self._preprocess = _direct_preprocess(encoder)
        if self._preprocess is not None:
            encoder.eval()  # once here; nothing switches it back to training

    def predict(self, batch: Batch) -> Batch:
        texts = [str(t) for t in batch["text"]]
        if self._preprocess is not None:
            return {"embedding": self._embed_directly(texts)}
        embeddings = self._encoder.encode(
            texts,
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=self._normalize,
            show_progress_bar=False,
        )
        return {"embedding": np.asarray(embeddings, dtype=np.float32)}

    def _embed_directly(self, texts: list[str]) -> np.ndarray:
        """What `encode` computes for one batch, without its work per call (see `_direct_preprocess`)."""
        assert self._preprocess is not None
        torch = self._torch
        with torch.inference_mode():
            embeddings = self._encoder(self._preprocess(texts))["sentence_embedding"]
            if self._normalize:
                embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
            return np.asarray(embeddings.float().numpy(), dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for `texts` (after truncation), for usage reports such as OpenAI's. Safe
        to call on any thread while `predict` runs on another (see `_token_counter`)."""
        return self._count(texts)


class ClassificationRuntime(BaseRuntime):
    task = "text-classification"

    def __init__(
        self, torch: Any, tokenizer: Any, model: Any, signature: Signature, max_length: int | None
    ) -> None:
        super().__init__(signature)
        self._torch = torch
        self._tokenizer = tokenizer
        self._model = model
        self._max_length = max_length
        labels = model.config.id2label
        self._labels = np.array([labels[i] for i in range(len(labels))], dtype=object)

    def predict(self, batch: Batch) -> Batch:
        texts = [str(t) for t in batch["text"]]
        encoded = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
        ).to(self._model.device)
        with self._torch.inference_mode():
            logits = self._model(**encoded).logits
        probabilities = self._torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return {"probabilities": probabilities, "label": self._labels[probabilities.argmax(axis=1)]}


def _direct_preprocess(encoder: Any) -> Callable[[list[str]], Any] | None:
    """The encoder's tokenizing step when `EmbeddingRuntime` may run the encoder itself, else None.

    `SentenceTransformer.encode` looks at every parameter's device and puts every module in eval mode on
    each call, then splits the batch into rows and stacks them again: on minilm about 1 ms, a sixth of a
    one-sentence request (173 against 211 sentences/s at batch 1, about 2% at batches of 16 to 128; the
    embeddings identical). Running the modules directly leaves out what `encode` adds beyond them, so
    this is only for a model on the CPU with no default prompt and no truncated dimension; any other
    encoder goes through `encode`."""
    preprocess = getattr(encoder, "preprocess", None) or getattr(encoder, "tokenize", None)  # 5.x, older
    plain = (
        str(encoder.device) == "cpu"
        and getattr(encoder, "default_prompt_name", None) is None
        and getattr(encoder, "truncate_dim", None) is None
    )
    return preprocess if plain and callable(preprocess) else None


def _token_counter(tokenizer: Any, limit: int | None) -> Callable[[list[str]], int]:
    """Counts tokens with a tokenizer of its own.

    A transformers fast tokenizer keeps its padding and truncation settings on the Rust tokenizer it
    wraps; a call that needs other settings sets them, then encodes. Counting with the model's tokenizer
    on the event loop while the model thread tokenized a batch could switch padding off between those
    two steps of the model's call, and the batch failed ("Unable to create tensor ... activate
    padding"; once in seven batches with a thread counting in a loop). A copy without padding or
    truncation is never touched by the model, and its `encode_batch` lets go of the GIL while it works."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a Python ("slow") tokenizer takes its settings per call and keeps none
        return lambda texts: sum(
            len(ids) for ids in tokenizer(texts, truncation=limit is not None, max_length=limit)["input_ids"]
        )
    try:
        own = type(backend).from_str(backend.to_str())
    except Exception:  # noqa: BLE001 - e.g. a custom Python component, which cannot be serialised
        return lambda texts: 0  # the usage block is informational; a runtime that cannot count says 0
    own.no_padding()
    own.no_truncation()
    # truncation keeps the special tokens and cuts the text's own, so a long text reads exactly `limit`
    return lambda texts: sum(
        len(encoding) if limit is None else min(len(encoding), limit) for encoding in own.encode_batch(texts)
    )


def detect_task(path: Path) -> str | None:
    if (path / "modules.json").exists() or (path / "config_sentence_transformers.json").exists():
        return "embeddings"
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    architectures = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "text-classification"
    # *LMHeadModel: the older name of a causal LM head (GPT2LMHeadModel, OpenAIGPTLMHeadModel, ...);
    # an encoder-decoder with an LM head (T5WithLMHeadModel) is no causal LM
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    if causal and not config.get("is_encoder_decoder", False):
        return "text-generation"
    return None


def load(model: ResolvedModel, *, threads: int) -> BaseRuntime:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # a server's log is no place for progress bars
    torch = require("torch", runtime="transformers", extra="transformers")
    _log_through_root(require("transformers", runtime="transformers", extra="transformers"))
    torch.set_num_threads(threads)
    pin_torch_threads(torch, threads)
    path = model.path
    if path is None or not path.is_dir():
        raise ModelLoadError(
            f"{path} is not a directory", hint="point model.path at the saved model directory"
        )
    task = model.options.get("task") or detect_task(path)
    if task not in TASKS:
        raise ModelLoadError(
            f"cannot serve {path.name} as task {task!r}" if task else f"cannot tell the task of {path.name}",
            hint=f"set model.options.task to one of {', '.join(TASKS)} (`modelpod init --task`)",
        )
    device = str(model.options.get("device", "cpu"))
    max_length = model.options.get("max_length")
    try:
        if task == "text-generation":
            from modelpod.runtimes.generation_runtime import load_generator

            runtime: BaseRuntime = load_generator(torch, model, device)
        elif task == "embeddings":
            runtime = _load_embeddings(torch, model, device, max_length)
        else:
            runtime = _load_classifier(torch, model, device, max_length)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"could not load {path} for {task}: {exc}") from exc
    return runtime


def _log_through_root(transformers: Any) -> None:
    """transformers logs through a stderr handler of its own, in plain text; hand its records to the root
    logger instead, which the server writes as JSON lines."""
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()


def _load_embeddings(
    torch: Any, model: ResolvedModel, device: str, max_length: int | None
) -> EmbeddingRuntime:
    st = require(
        "sentence_transformers", runtime="transformers", extra="transformers", package="sentence-transformers"
    )
    attention = _attention_option(model)
    model_kwargs = {"attn_implementation": attention} if attention else None
    encoder = st.SentenceTransformer(
        str(model.path), device=device, local_files_only=True, model_kwargs=model_kwargs
    )
    if max_length:
        encoder.max_seq_length = int(max_length)
    # sentence-transformers 5.x renamed the method; older releases have only the first name
    dimension_of = (
        getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
    )
    dim = dimension_of()
    detected = Signature(
        inputs=(_TEXT,), outputs=(TensorSpec(name="embedding", dtype="float32", shape=(int(dim),)),)
    )
    signature = reconcile(model.signature, detected, fmt="sentence-transformers")
    return EmbeddingRuntime(torch, encoder, signature, normalize=bool(model.options.get("normalize", False)))


def _load_classifier(
    torch: Any, model: ResolvedModel, device: str, max_length: int | None
) -> ClassificationRuntime:
    transformers = require("transformers", runtime="transformers", extra="transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model.path), local_files_only=True)
    attention = _attention_option(model)
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(model.path), local_files_only=True, **({"attn_implementation": attention} if attention else {})
    )
    classifier.to(device).eval()
    labels = classifier.config.num_labels
    detected = Signature(
        inputs=(_TEXT,),
        outputs=(
            TensorSpec(name="probabilities", dtype="float32", shape=(labels,)),
            TensorSpec(name="label", dtype="string", shape=()),
        ),
    )
    return ClassificationRuntime(
        torch, tokenizer, classifier, reconcile(model.signature, detected, fmt="transformers"), max_length
    )


def _attention_option(model: ResolvedModel) -> str | None:
    """`model.options.attn_implementation`: transformers' name of the attention to load the model with
    ("eager", "sdpa", ...), for the models that need one; None leaves transformers' default."""
    value = model.options.get("attn_implementation")
    return str(value) if value else None
