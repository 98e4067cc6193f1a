"""A model to one ONNX graph, per format, written as `<directory>/model.onnx`.

- ONNX: copied as it is (only graph optimisation and quantisation apply).
- PyTorch: a torch.export program (`.pt2`) through the dynamo exporter (`torch.onnx.export(...,
  dynamo=True)`); TorchScript through the TorchScript exporter, since torch.export cannot trace it.
- Keras: Keras 3's own `model.export(path, format="onnx")`.
- sentence-transformers encoders: the transformer, its pooling and normalisation in one graph from
  `input_ids`, `attention_mask` (and `token_type_ids`) to the embedding, through the dynamo exporter; the
  tokenizer is written beside it as `tokenizer.json` with the encoder's truncation length, so the ONNX
  runtime tokenizes with the `tokenizers` library and serving needs neither torch nor transformers.

Every graph's inputs and outputs carry the signature's names, with a dynamic batch dimension.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpod.errors import ModelpodError
from modelpod.optimize.errors import OptimizeError
from modelpod.runtimes._onnx_text import TOKEN_INPUTS, TOKENIZER_FILE
from modelpod.runtimes.base import require, sample_batch
from modelpod.runtimes.onnx_runtime import MODEL_FILE
from modelpod.signature import Signature
from modelpod.specfile.resolved import ResolvedModel

OPSET = 18


@dataclass(frozen=True)
class Exported:
    graph: Path  # <directory>/model.onnx
    text_encoder: bool  # tokenizer.json beside it; the graph takes token tensors


def export_onnx(model: ResolvedModel, signature: Signature, directory: Path) -> Exported:
    """Write `model` as ONNX into `directory` (which exists and is empty)."""
    graph = directory / MODEL_FILE
    if model.path is None:
        raise OptimizeError("the model has no model.path to export", hint="optimize works on model files")
    try:
        if model.format == "onnx":
            source = model.path / MODEL_FILE if model.path.is_dir() else model.path
            shutil.copyfile(source, graph)
            if model.path.is_dir() and (model.path / TOKENIZER_FILE).is_file():
                shutil.copyfile(model.path / TOKENIZER_FILE, directory / TOKENIZER_FILE)
                return Exported(graph, text_encoder=True)
        elif model.format == "torch":
            _export_torch(model.path, signature, graph)
        elif model.format == "keras":
            _export_keras(model.path, signature, graph)
        elif model.format == "transformers":
            _export_sentence_transformer(model, signature, directory)
            return Exported(graph, text_encoder=True)
        else:
            raise OptimizeError(
                f"cannot export a {model.format} model to ONNX",
                hint="optimize takes ONNX, PyTorch (.pt2, TorchScript), Keras and sentence-transformers "
                "models; export the model to ONNX yourself and point model.path at it",
            )
    except ModelpodError:
        raise
    except Exception as exc:
        raise OptimizeError(
            f"exporting {model.path.name} to ONNX failed: {type(exc).__name__}: {exc}",
            hint="export it to ONNX yourself (inputs and outputs named as in the signature, a dynamic "
            "batch dimension) and run optimize on a spec that points at the .onnx file",
        ) from exc
    return Exported(graph, text_encoder=False)


def _export_torch(path: Path, signature: Signature, graph: Path) -> None:
    torch = require("torch", runtime="PyTorch", extra="torch")
    inputs = [t.name for t in signature.inputs]
    outputs = [t.name for t in signature.outputs]
    if path.suffix == ".pt2":
        program = torch.export.load(str(path))
        onnx_program = torch.onnx.export(
            program, input_names=inputs, output_names=outputs, dynamo=True, opset_version=OPSET
        )
        onnx_program.save(str(graph))
        return
    module = torch.jit.load(str(path), map_location="cpu").eval()
    example = tuple(torch.from_numpy(array) for array in sample_batch(signature, size=2).values())
    torch.onnx.export(
        module,
        example,
        str(graph),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
        dynamo=False,
        opset_version=OPSET,
    )


def _export_keras(path: Path, signature: Signature, graph: Path) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")  # as the Keras runtime does
    keras = require("keras", runtime="Keras", extra="keras")
    model = keras.saving.load_model(str(path), compile=False)
    inputs = list(sample_batch(signature, size=1).values())
    model(inputs[0] if len(inputs) == 1 else inputs, training=False)  # export needs a model that has run
    model.export(str(graph), format="onnx", verbose=False)
    rename_io(graph, [t.name for t in signature.inputs], [t.name for t in signature.outputs])


def _export_sentence_transformer(model: ResolvedModel, signature: Signature, directory: Path) -> None:
    torch = require("torch", runtime="transformers", extra="transformers")
    st = require(
        "sentence_transformers", runtime="transformers", extra="transformers", package="sentence-transformers"
    )
    task = model.options.get("task", "embeddings")
    if task != "embeddings" or len(signature.outputs) != 1:
        raise OptimizeError(
            f"optimize exports sentence-transformers encoders (task embeddings), not task {task!r}",
            hint="export the model to ONNX yourself and point model.path at the .onnx file",
        )
    encoder = st.SentenceTransformer(str(model.path), device="cpu", local_files_only=True).eval()
    if model.options.get("max_length"):
        encoder.max_seq_length = int(model.options["max_length"])
    preprocess = getattr(encoder, "preprocess", None) or encoder.tokenize  # sentence-transformers 5.x, older
    features = preprocess(["an example sentence", "another, somewhat longer example sentence"])
    names = [name for name in TOKEN_INPUTS if name in features]
    wrapper = _SentenceEncoder(torch, encoder, names, normalize=bool(model.options.get("normalize", False)))
    batch = torch.export.Dim("batch")
    tokens = torch.export.Dim("tokens", max=max(int(encoder.max_seq_length), 2))
    exported = torch.onnx.export(
        wrapper,
        tuple(features[name] for name in names),
        input_names=names,
        output_names=["sentence_embedding"],  # renamed below: the exporter may use the signature's name
        dynamic_shapes={name: {0: batch, 1: tokens} if name in names else None for name in TOKEN_INPUTS},
        dynamo=True,
        opset_version=OPSET,
    )
    exported.save(str(directory / MODEL_FILE))
    rename_io(directory / MODEL_FILE, names, [signature.outputs[0].name])
    _write_tokenizer(encoder, directory / TOKENIZER_FILE)


def _SentenceEncoder(torch: Any, encoder: Any, names: list[str], *, normalize: bool) -> Any:
    """The encoder's modules as one torch module of positional token tensors (what exporters trace)."""

    class SentenceEncoder(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            tensors = (input_ids, attention_mask, token_type_ids)
            embedding = self.encoder(dict(zip(names, tensors, strict=False)))["sentence_embedding"]
            if normalize:  # what the transformers runtime's `normalize` option adds
                embedding = torch.nn.functional.normalize(embedding, p=2, dim=1)
            return embedding

    return SentenceEncoder().eval()


def _write_tokenizer(encoder: Any, path: Path) -> None:
    """The encoder's fast tokenizer, set to truncate and pad as `SentenceTransformer.tokenize` does."""
    tokenizer = getattr(encoder.tokenizer, "backend_tokenizer", None)
    if tokenizer is None:
        raise OptimizeError(
            "the encoder's tokenizer is a Python (slow) tokenizer, which the tokenizers library cannot read",
            hint="save the model with a fast tokenizer (tokenizer.json) and run optimize again",
        )
    tokenizers = require("tokenizers", runtime="ONNX (text encoders)", extra="onnx-text")
    tokenizer = tokenizers.Tokenizer.from_str(tokenizer.to_str())
    tokenizer.enable_truncation(int(encoder.max_seq_length))
    pad = encoder.tokenizer.pad_token
    tokenizer.enable_padding(pad_id=encoder.tokenizer.pad_token_id or 0, pad_token=pad or "[PAD]")
    if getattr(encoder[0], "do_lower_case", False):  # the Transformer module lowercases before tokenizing
        normalizers = tokenizers.normalizers
        steps = [normalizers.Lowercase()] + ([tokenizer.normalizer] if tokenizer.normalizer else [])
        tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.save(str(path))


def rename_io(graph: Path, inputs: list[str], outputs: list[str]) -> None:
    """Give the graph's inputs and outputs, in order, the signature's names. A value inside the graph that
    already has one of those names is renamed first (exporters name values after the operations)."""
    onnx = require("onnx", runtime="optimize", extra="optimize")
    model = onnx.load(str(graph))
    body = model.graph
    renames = {v.name: new for v, new in zip(body.input, inputs, strict=False) if v.name != new}
    renames |= {v.name: new for v, new in zip(body.output, outputs, strict=False) if v.name != new}
    taken = {value for node in body.node for value in node.output} | {i.name for i in body.initializer}
    for new in list(renames.values()):
        if new in taken and new not in renames:
            renames[new] = f"{new}__inner"
    if not renames:
        return
    for node in body.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in [*body.input, *body.output, *body.value_info, *body.initializer]:
        value.name = renames.get(value.name, value.name)
    onnx.save(model, str(graph))
