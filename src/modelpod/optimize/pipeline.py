"""The steps of `modelpod optimize` in order (see the package docstring).

Everything is made in a scratch directory under `.modelpod/` and moved to the output directory only
once the optimised model has passed the accuracy check; a refused model leaves the spec directory as
it was.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelpod.optimize.check import Accuracy, compare
from modelpod.optimize.errors import AccuracyError, OptimizeError
from modelpod.optimize.export import export_onnx
from modelpod.optimize.inputs import Item, batches, example_items, generate_items, read_items
from modelpod.optimize.profile import loosened_atol, raw_examples, write_profile
from modelpod.optimize.quantize import Quantize, optimize_graph
from modelpod.optimize.report import BATCH_SIZES, Speed, measure, size_on_disk
from modelpod.predictor import Predictor
from modelpod.runtimes.base import Batch
from modelpod.signature import Signature
from modelpod.specfile.example_answers import compare_outputs
from modelpod.specfile.load import load_spec, read_spec
from modelpod.specfile.resolved import ResolvedModel, Spec

CHECK_BATCH = 32  # rows per call while checking
DEFAULT_OUT = Path("model/optimized")


@dataclass(frozen=True)
class OptimizeOptions:
    profile: str | None = None  # the spec's profile whose model is optimised
    quantize: Quantize = "int8"
    out: Path | None = None  # relative to the spec's directory; default model/optimized
    eval_file: Path | None = None  # held-out inputs; default: generated from the signature
    eval_items: int = 256  # how many to generate when there is no eval file
    calibration_file: Path | None = None  # inputs for static quantisation; default: examples + generated
    min_top1: float = 0.99
    min_cosine: float = 0.99
    measure_seconds: float = 2.0  # per model, for the speed figures; 0 leaves them out


@dataclass(frozen=True)
class ModelFigures:
    size_bytes: int
    speed: Speed | None


@dataclass(frozen=True)
class OptimizeResult:
    out: Path
    steps: str  # what was done to the graph
    accuracy: Accuracy
    original: ModelFigures
    optimised: ModelFigures
    loosened_examples: tuple[str, ...]  # examples whose tolerance the profile widens


def optimize(spec_path: Path, options: OptimizeOptions) -> OptimizeResult:
    spec = load_spec(spec_path, options.profile)
    out = _output_dir(spec, options.out)
    original = Predictor.from_spec(spec)
    signature = original.signature
    examples = example_items(spec)
    if options.eval_file is not None:
        held_out = read_items(options.eval_file, "--eval")
        source = f"{len(examples)} example(s) + {len(held_out)} from {options.eval_file.name}"
    else:
        held_out = generate_items(signature, examples, options.eval_items, seed=2)
        source = f"{len(examples)} example(s) + {len(held_out)} generated from the signature"
    if options.calibration_file is not None:
        calibration = read_items(options.calibration_file, "--calibration")
    else:  # another seed than the held-out items, so the check does not grade what was calibrated on
        calibration = examples + generate_items(signature, examples, 64, seed=1)
    (spec.root / ".modelpod").mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="optimize-", dir=spec.root / ".modelpod"))
    try:
        exported = export_onnx(spec.model, signature, scratch)
        steps = optimize_graph(
            exported.graph,
            text_encoder=exported.text_encoder,
            quantize=options.quantize,
            calibration=list(batches(signature, calibration, 1)),
        )
        optimised = Predictor.from_spec(_onnx_spec(spec, scratch))
        accuracy = compare(
            signature,
            original.predict,
            optimised.predict,
            batches(signature, examples + held_out, CHECK_BATCH),
            source=source,
        )
        problems = accuracy.failures(min_top1=options.min_top1, min_cosine=options.min_cosine)
        if problems:
            raise AccuracyError(
                "the optimised model is not accurate enough, so nothing was written: " + "; ".join(problems),
                figures=accuracy,
                hint="try --quantize none, or lower --min-top1 / --min-cosine if this loss is acceptable",
            )
        loosened, profile_examples = _example_tolerances(spec, optimised)
        rows = _rows(signature, examples + held_out)
        before = ModelFigures(
            size_on_disk(spec.model.path, leave_out=[out]) if spec.model.path else 0,
            _speed(original, rows, options.measure_seconds),
        )
        after = ModelFigures(size_on_disk(scratch), _speed(optimised, rows, options.measure_seconds))
        _move_into_place(scratch, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    note = f"written by `modelpod optimize`: {steps}"
    write_profile(spec.source, out.relative_to(spec.root).as_posix(), note, profile_examples)
    return OptimizeResult(out, steps, accuracy, before, after, loosened)


def _output_dir(spec: Spec, out: Path | None) -> Path:
    path = (spec.root / (out or DEFAULT_OUT)).resolve()
    model = spec.model.path
    if not path.is_relative_to(spec.root) or path == spec.root:
        raise OptimizeError(
            f"--out {out} is not a directory inside the spec's directory {spec.root}",
            hint="the optimized profile points at it, and an image keeps the spec's layout",
        )
    if model is not None and (path == model or model.is_relative_to(path)):
        raise OptimizeError(
            f"--out {out} would replace the original model {model}", hint="choose another directory"
        )
    return path


def _onnx_spec(spec: Spec, directory: Path) -> Spec:
    """`spec` with its model replaced by the ONNX model directory (as the optimized profile will say)."""
    model = ResolvedModel(
        path=directory,
        format="onnx",
        class_name=None,
        signature=spec.model.signature,
        options={},
        code_dir=spec.root,
    )
    return spec.model_copy(update={"model": model})


def _example_tolerances(
    spec: Spec, optimised: Predictor
) -> tuple[tuple[str, ...], list[dict[str, Any]] | None]:
    """The examples whose expected outputs the optimised model misses at their tolerance, and the raw
    examples for the profile with a tolerance that covers it (None when every example passes)."""
    raw = raw_examples(read_spec(spec.source)[0])
    if len(raw) != len(spec.examples):  # a profile replaced the examples: keep them as they are
        return (), None
    loosened = []
    for example, entry in zip(spec.examples, raw, strict=True):
        if example.chat is not None or not example.expected:
            continue
        outputs = optimised.predict_one(example.inputs)
        if not compare_outputs(example, outputs):
            continue
        differences = [
            float(np.max(np.abs(np.asarray(outputs[name], np.float64) - np.asarray(value, np.float64))))
            for name, value in example.expected.items()
            if name in outputs and np.asarray(outputs[name]).dtype.kind in "fiu"
        ]
        entry["atol"] = loosened_atol(example.atol, max(differences, default=0.0))
        loosened.append(example.name)
    return tuple(loosened), (raw if loosened else None)


def _rows(signature: Signature, items: list[Item]) -> Batch:
    """max(BATCH_SIZES) rows of inputs for the speed measure, the items repeated as needed."""
    size = max(BATCH_SIZES)
    return next(batches(signature, list(itertools.islice(itertools.cycle(items), size)), size))


def _speed(predictor: Predictor, rows: Batch, seconds: float) -> Speed | None:
    return measure(predictor.predict, rows, seconds) if seconds > 0 else None


def _move_into_place(scratch: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(scratch), str(out))
    out.chmod(0o755)  # mkdtemp made it private; the image's user (not root) must read it
