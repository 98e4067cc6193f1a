"""The transformers runtime on the real all-MiniLM-L6-v2: sentence embeddings against sentence-transformers,
and a sequence classifier built from its BERT weights against the classifier's own logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from sentence_transformers import SentenceTransformer

from modelpod.errors import ModelLoadError
from modelpod.runtimes import load_runtime
from modelpod.runtimes.transformers_runtime import EmbeddingRuntime
from modelpod.signature import Signature

TEXTS = [
    "A man is eating food.",
    "Une femme joue du violon.",
    "",
    "naïve café ☕ — 日本語",
    # longer than MiniLM's 256-token window: both sides must truncate it the same way
    "The quick brown fox jumps over the lazy dog. " * 40,
    "Short.",
]


@pytest.fixture(scope="module")
def texts() -> np.ndarray:
    return np.array(TEXTS, dtype=object)  # how the server hands strings to a runtime


@pytest.fixture(scope="module")
def sentence_encoder(minilm_model_dir) -> SentenceTransformer:
    return SentenceTransformer(str(minilm_model_dir), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def embedding_runtime(minilm_model_dir, resolve):
    return load_runtime(resolve(minilm_model_dir, "transformers"))


@pytest.fixture(scope="module")
def classification_runtime(text_classifier_dir, resolve):
    return load_runtime(resolve(text_classifier_dir, "transformers"))


def test_embedding_signature(embedding_runtime):
    assert embedding_runtime.signature == Signature.model_validate(
        {
            "inputs": [{"name": "text", "dtype": "string", "shape": []}],
            "outputs": [{"name": "embedding", "dtype": "float32", "shape": [384]}],
        }
    )


def test_embeddings_match_sentence_transformers(
    embedding_runtime, sentence_encoder, texts, assert_outputs_follow_signature
):
    ours = embedding_runtime.predict({"text": texts})
    theirs = sentence_encoder.encode(list(TEXTS), convert_to_numpy=True)
    # Same weights, tokenizer and batch; 1e-5 (a float32 budget for a 6-layer encoder) allows
    # for a different thread split of the matrix products, nothing more.
    np.testing.assert_allclose(ours["embedding"], theirs, rtol=0, atol=1e-5)
    assert_outputs_follow_signature(embedding_runtime.signature, ours, len(texts))
    # The directory's whole module pipeline ran, its final Normalize module included: unit length.
    np.testing.assert_allclose(np.linalg.norm(ours["embedding"], axis=1), 1.0, rtol=0, atol=1e-5)


def test_normalize_option_matches_sentence_transformers(minilm_model_dir, resolve, texts, tmp_path):
    # minilm without its final Normalize module, so that the option has something to do
    unnormalized = tmp_path / "minilm-unnormalized"
    unnormalized.mkdir()
    for entry in minilm_model_dir.iterdir():
        if entry.name != "modules.json":
            (unnormalized / entry.name).symlink_to(entry)
    modules = json.loads((minilm_model_dir / "modules.json").read_text())
    kept = [m for m in modules if "Normalize" not in m["type"]]
    (unnormalized / "modules.json").write_text(json.dumps(kept))
    encoder = SentenceTransformer(str(unnormalized), device="cpu", local_files_only=True)

    for normalize in (False, True):
        runtime = load_runtime(resolve(unnormalized, "transformers", options={"normalize": normalize}))
        ours = runtime.predict({"text": texts})["embedding"]
        theirs = encoder.encode(list(TEXTS), convert_to_numpy=True, normalize_embeddings=normalize)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)  # as above
        norms = np.linalg.norm(ours, axis=1)
        assert np.allclose(norms, 1.0, atol=1e-5) == normalize, norms


def test_a_model_with_a_default_prompt_is_encoded_with_it(minilm_model_dir, embedding_runtime, texts):
    """The runtime runs a plain encoder's modules itself; one with a default prompt goes through `encode`,
    which puts the prompt before every text."""
    prompted = SentenceTransformer(str(minilm_model_dir), device="cpu", local_files_only=True)
    prompted.prompts = {"query": "query: "}
    prompted.default_prompt_name = "query"
    runtime = EmbeddingRuntime(torch, prompted, embedding_runtime.signature, normalize=False)

    ours = runtime.predict({"text": texts})["embedding"]
    np.testing.assert_allclose(ours, prompted.encode(list(TEXTS)), rtol=0, atol=1e-5)  # as above
    # the prompt changes the embeddings far beyond the tolerance
    assert np.abs(ours - embedding_runtime.predict({"text": texts})["embedding"]).max() > 1e-2


def test_max_length_option_truncates_like_sentence_transformers(
    minilm_model_dir, resolve, embedding_runtime, texts
):
    runtime = load_runtime(resolve(minilm_model_dir, "transformers", options={"max_length": 8}))
    short_window = SentenceTransformer(str(minilm_model_dir), device="cpu", local_files_only=True)
    short_window.max_seq_length = 8

    ours = runtime.predict({"text": texts})
    theirs = short_window.encode(list(TEXTS), convert_to_numpy=True)
    np.testing.assert_allclose(ours["embedding"], theirs, rtol=0, atol=1e-5)  # as above
    # Precondition that gives the comparison its meaning: 8 tokens instead of 256 change the long text's
    # embedding far beyond the tolerance.
    full_window = embedding_runtime.predict({"text": texts[4:5]})["embedding"][0]
    assert np.abs(ours["embedding"][4] - full_window).max() > 1e-2


def test_token_count_matches_the_models_tokenizer_and_leaves_it_alone(embedding_runtime, sentence_encoder):
    # the model's tokenizer as a batch leaves it: padding on
    embedding_runtime.predict({"text": np.array(TEXTS, dtype=object)})
    backend = embedding_runtime._encoder.tokenizer.backend_tokenizer
    settings = (backend.padding, backend.truncation)
    assert settings[0] is not None

    counted = embedding_runtime.count_tokens(TEXTS)

    reference = sentence_encoder.tokenizer(TEXTS, truncation=True, max_length=sentence_encoder.max_seq_length)
    assert counted == sum(len(ids) for ids in reference["input_ids"])
    # the long text, cut to the model's window of 256 tokens
    assert embedding_runtime.count_tokens([TEXTS[4]]) == sentence_encoder.max_seq_length == 256
    # counting never touches the tokenizer a batch may be using on the model's thread at that moment
    assert (backend.padding, backend.truncation) == settings


def test_a_tokenizer_that_cannot_be_copied_counts_nothing_instead_of_failing_the_load():
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel

    from modelpod.runtimes.transformers_runtime import _token_counter

    class Whitespace:  # a pre-tokenizer written in Python, which tokenizers cannot serialise
        def pre_tokenize(self, pretok):
            pass

    backend = Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.PreTokenizer.custom(Whitespace())
    fast_tokenizer = type("FastTokenizer", (), {"backend_tokenizer": backend})()

    assert _token_counter(fast_tokenizer, 256)(["a a a"]) == 0


def test_classifier_signature(classification_runtime):
    assert classification_runtime.signature == Signature.model_validate(
        {
            "inputs": [{"name": "text", "dtype": "string", "shape": []}],
            "outputs": [
                {"name": "probabilities", "dtype": "float32", "shape": [3]},
                {"name": "label", "dtype": "string", "shape": []},
            ],
        }
    )


def test_classifier_matches_its_own_logits(
    classification_runtime, text_classifier_dir, texts, assert_outputs_follow_signature
):
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(text_classifier_dir), local_files_only=True
    ).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(text_classifier_dir), local_files_only=True)
    # The reference runs each text alone (no padding), so it also checks that batching with padding
    # does not change a text's result.
    with torch.no_grad():
        logits = torch.cat(
            [classifier(**tokenizer([text], truncation=True, return_tensors="pt")).logits for text in TEXTS]
        )
    theirs = torch.softmax(logits, dim=-1).numpy()

    ours = classification_runtime.predict({"text": texts})
    # Padding changes the float32 summation order only (masked positions get zero attention): 1e-5.
    np.testing.assert_allclose(ours["probabilities"], theirs, rtol=0, atol=1e-5)
    expected_labels = [classifier.config.id2label[int(i)] for i in theirs.argmax(axis=1)]
    assert ours["label"].tolist() == expected_labels
    assert set(expected_labels) <= {"negative", "neutral", "positive"}
    assert_outputs_follow_signature(classification_runtime.signature, ours, len(texts))


def test_declared_output_shape_that_disagrees_is_refused(minilm_model_dir, resolve):
    declared = {
        "inputs": [{"name": "text", "dtype": "string", "shape": []}],
        "outputs": [{"name": "embedding", "dtype": "float32", "shape": [768]}],
    }
    with pytest.raises(
        ModelLoadError, match=r"output 'embedding' has shape \[768\] but the model has \[384\]"
    ):
        load_runtime(resolve(minilm_model_dir, "transformers", signature=declared))


def test_declared_input_that_disagrees_is_refused(text_classifier_dir, resolve):
    declared = {
        "inputs": [{"name": "sentence", "dtype": "string", "shape": []}],
        "outputs": [{"name": "label", "dtype": "string", "shape": []}],
    }
    with pytest.raises(ModelLoadError, match=r"inputs \['sentence'\] do not match .*\['text'\]"):
        load_runtime(resolve(text_classifier_dir, "transformers", signature=declared))


def test_warmup(embedding_runtime, classification_runtime):
    assert embedding_runtime.warmup() is None
    assert classification_runtime.warmup() is None


def test_a_text_classifier_is_not_offered_as_an_embedding_model(text_classifier_dir):
    """Its signature is text in, vector out, like an embedding model's; its probabilities are no
    embedding, so /v1/embeddings is refused with the endpoint to use, and OpenAPI does not list it."""
    import asyncio

    from tests.server.test_app import serving

    from modelpod.specfile import load_spec

    spec_path = text_classifier_dir.parent / "modelpod.yaml"
    spec_path.write_text(f"name: sentiment\nmodel: {{path: {text_classifier_dir.name}}}\n")

    async def ask() -> tuple[int, dict, dict, int]:
        async with serving(load_spec(spec_path)) as client:
            refused = await client.post("/v1/embeddings", json={"input": "great"})
            document = (await client.get("/openapi.json")).json()
            predicted = await client.post("/predict", json={"inputs": {"text": "great"}})
        return refused.status_code, refused.json(), document, predicted.status_code

    status, body, document, predicted = asyncio.run(ask())
    assert status == 404
    assert body["error"]["message"] == (
        "model sentiment is a text-classification model: /v1/embeddings serves embedding models only; "
        "use POST /predict or POST /v2/models/sentiment/infer"
    )
    assert "/v1/embeddings" not in document["paths"]
    assert "/predict" in document["paths"]
    assert predicted == 200


def test_a_sentence_encoder_is_offered_as_an_embedding_model(minilm_dir):
    from modelpod.server.protocols.openai.embeddings import embedding_io, model_task
    from modelpod.server.protocols.openapi import build_openapi
    from modelpod.specfile import load_spec

    spec = load_spec(minilm_dir)
    runtime = load_runtime(spec.model)
    task = model_task(runtime, spec.model.options)
    assert task == "embeddings"
    assert embedding_io(runtime.signature, task) == ("text", "embedding")
    assert "/v1/embeddings" in build_openapi(spec.name, runtime.signature, task=task)["paths"]


def test_transformers_logs_through_the_root_logger_once_loaded(embedding_runtime):
    """The server's JSON handler sits on the root logger: transformers' own plain-text stderr handler
    would bypass it."""
    import logging

    library = logging.getLogger("transformers")
    assert library.propagate
    assert not [h for h in library.handlers if type(h) is logging.StreamHandler]  # pytest adds its own
