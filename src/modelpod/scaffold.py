"""`modelpod init`: write a commented modelpod.yaml for a model file, its format and signature detected."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from modelpod.errors import MissingDependencyError, SpecError, SpecIssue
from modelpod.runtimes import load_runtime, sample_batch
from modelpod.runtimes.base import SignatureUnknownError
from modelpod.signature import Signature, TensorSpec
from modelpod.specfile.formats import detect_format
from modelpod.specfile.load import PLACEHOLDER_MARK
from modelpod.specfile.model import FORMATS
from modelpod.specfile.resolved import ResolvedModel

# An example request is written only when it is small enough to read in the file.
_MAX_EXAMPLE_VALUES = 256


@dataclass(frozen=True)
class InitResult:
    path: Path
    format: str
    signature_detected: bool
    note: str | None  # why the signature could not be read, when it could not
    remarks: tuple[str, ...] = ()  # how the model will be served, where that is not what one would expect


def init_spec(
    model_path: Path,
    *,
    output: Path,
    name: str | None = None,
    fmt: str | None = None,
    task: str | None = None,
    force: bool = False,
) -> InitResult:
    """Write a spec for `model_path` to `output`. `task` is the transformers task (`model.options.task`)
    for a model whose config does not say it."""
    model_path = model_path.resolve()
    if not model_path.exists():
        raise SpecError(
            [SpecIssue("model.path", f"{model_path} does not exist", hint="pass a model file or directory")]
        )
    if output.exists() and not force:
        raise SpecError([SpecIssue("", f"{output} already exists", hint="pass --force to overwrite it")])
    spec_dir = output.resolve().parent
    if not model_path.is_relative_to(spec_dir):  # every command refuses it (docs/spec.md, "Paths")
        raise SpecError(
            [
                SpecIssue(
                    "model.path",
                    f"{model_path} lies outside {spec_dir}, where the spec would be written",
                    hint="a spec's paths stay inside its directory (the image holds that directory): "
                    f"write the spec beside the model (-o {model_path.parent / 'modelpod.yaml'}), "
                    "or copy the model in",
                )
            ]
        )
    fmt = fmt or detect_format(model_path)
    if fmt is None or fmt not in FORMATS:
        raise SpecError(
            [
                SpecIssue(
                    "model.format",
                    f"cannot tell the format of {model_path.name}",
                    hint=f"pass --format, one of {', '.join(FORMATS)}",
                )
            ]
        )
    options = {"task": task} if task else {}
    signature, note, remarks = _read_signature(model_path, fmt, options)
    shown = model_path.relative_to(spec_dir).as_posix()  # relative: the project can move as a whole
    text = render_spec(name or default_name(model_path), shown, fmt, signature, note, remarks, options)
    output.write_text(text, encoding="utf-8")
    return InitResult(output, fmt, note is None, note, remarks)


def default_name(model_path: Path) -> str:
    stem = model_path.stem if model_path.is_file() else model_path.name
    name = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:53].strip("-")
    return name or "model"


def _read_signature(
    model_path: Path, fmt: str, options: dict[str, str]
) -> tuple[Signature, str | None, tuple[str, ...]]:
    """The model's signature, read by loading it; a placeholder and the reason when the model loads but
    does not describe itself (TorchScript), or its framework is not installed here. Any other load
    error (a file that cannot be served, such as a pickled state_dict) ends init with its message."""
    model = ResolvedModel(
        path=model_path,
        format=fmt,
        class_name=None,
        signature=None,
        options=options,
        code_dir=model_path.parent,
    )
    try:
        runtime = load_runtime(model, threads=1)
    except (SignatureUnknownError, MissingDependencyError) as exc:
        placeholder = Signature(
            inputs=(TensorSpec(name="input", dtype="float32", shape=(-1,)),),
            outputs=(TensorSpec(name="output", dtype="float32", shape=(-1,)),),
        )
        return placeholder, str(exc).replace("\n  Hint: ", "; "), ()
    remarks = []
    fixed = getattr(runtime, "fixed_batch_size", None)
    if fixed is not None and fixed > 1:
        remarks.append(
            f"the graph fixes its batch size at {fixed}: requests run in batches of {fixed}, the last one "
            "padded (export with a dynamic batch dimension to run any number at once)"
        )
    return runtime.signature, None, tuple(remarks)


def render_spec(
    name: str,
    rel_path: str,
    fmt: str,
    signature: Signature,
    note: str | None,
    remarks: tuple[str, ...] = (),
    options: dict[str, str] | None = None,
) -> str:
    def flow(data: object) -> str:
        return yaml.safe_dump(data, default_flow_style=True, sort_keys=False, width=10_000).strip()

    def tensor_lines(tensors: tuple[TensorSpec, ...]) -> str:
        return "\n".join(
            f"      - {flow({'name': t.name, 'dtype': t.dtype, 'shape': list(t.shape)})}" for t in tensors
        )

    signature_comment = (
        f"  # {PLACEHOLDER_MARK}: declare the real signature, then delete this line; it could not be read "
        f"from the model ({note})"
        if note
        else "  # read from the model; shapes are per item, without the batch dimension; -1 is any size"
    )
    signature_comment += "".join(f"\n  # note: {remark}" for remark in remarks)
    example = _example_block(signature) if note is None else _NO_EXAMPLE
    options_line = f"  options: {flow(options)}\n" if options else ""
    return f"""\
# modelpod.yaml for {name}, written by `modelpod init`.
# `modelpod validate` checks it; `modelpod schema` prints every key with its description.
name: {name}
model:
  path: {json.dumps(rel_path)}
  format: {fmt}
{options_line}{signature_comment}
  signature:
    inputs:
{tensor_lines(signature.inputs)}
    outputs:
{tensor_lines(signature.outputs)}
server:
  port: 8080
  max_batch_size: 32       # requests run together when the model is busy
  max_wait_ms: 0           # how long a partial batch may wait for more requests
  max_queue: 256           # queued requests before new ones get 503 with Retry-After
  request_timeout_s: 30    # per-request deadline (504 after it)
  # max_body_bytes: 8MiB   # larger bodies get 413; default 1/64 of resources.memory (1 to 16MiB)
  # max_request_items: 128  # more items in one request get 413; default 4 x max_batch_size
  drain_timeout_s: 25      # on SIGTERM, time for in-flight requests to finish
resources:                 # per replica, for images and Kubernetes
  cpu: "1"
  memory: 1Gi
  gpu: 0
scaling:
  replicas: 1
  min_replicas: 1
  max_replicas: 3
  target_concurrency: 8    # in-flight requests per replica the autoscaler aims for
kubernetes:
  network_policy:          # who may connect to the serving port in the cluster
    allow_from:
      - {{}}                 # every pod of the release's namespace; narrow it: {{pods: {{role: client}}}}
{example}profiles:                  # merged onto the rest of the file with --profile NAME
  dev: {{}}
  prod:
    resources: {{cpu: "2", memory: 2Gi}}
"""


_NO_EXAMPLE = "# examples: requests with expected outputs, used by smoke tests (see `modelpod schema`)\n"


def _example_block(signature: Signature) -> str:
    batch = sample_batch(signature, size=1)
    if sum(int(np.prod(a.shape)) for a in batch.values()) > _MAX_EXAMPLE_VALUES:
        return _NO_EXAMPLE
    # JSON is valid YAML and keeps each input on one line
    lines = "\n".join(
        f"      {json.dumps(name)}: {json.dumps(np.asarray(array[0]).tolist())}"
        for name, array in batch.items()
    )
    return (
        "examples:                  # used by smoke tests; add `expected:` outputs to compare\n"
        f"  - name: placeholder\n    inputs:\n{lines}\n"
    )
