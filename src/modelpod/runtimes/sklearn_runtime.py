"""scikit-learn estimators and pipelines, from skops (safe) or joblib/pickle files.

Inputs: one tensor `input` of shape [n_features], float64 unless declared otherwise.
Outputs: `label` (predict) and, for classifiers with predict_proba, `probabilities` [n_classes].

skops files are loaded without executing arbitrary code: any type outside skops' safe defaults must be
listed in `model.options.trusted_types` after review. joblib and pickle files run code on load, so only
load files you produced or trust.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelpod.errors import ModelLoadError
from modelpod.runtimes.base import BaseRuntime, Batch, reconcile, require
from modelpod.signature import Signature, TensorSpec, dtype_from_numpy
from modelpod.specfile.resolved import ResolvedModel


class SklearnRuntime(BaseRuntime):
    def __init__(self, estimator: Any, signature: Signature) -> None:
        super().__init__(signature)
        self._estimator = estimator
        self._input = signature.inputs[0].name
        self._wanted = {t.name for t in signature.outputs}

    def predict(self, batch: Batch) -> Batch:
        features = batch[self._input]
        outputs: Batch = {}
        # predict() is called even when probabilities are computed: for some classifiers (SVC with Platt
        # scaling) the label is not the argmax of predict_proba, and the label must be the estimator's own.
        if "label" in self._wanted:
            outputs["label"] = np.asarray(self._estimator.predict(features))
        if "probabilities" in self._wanted:
            outputs["probabilities"] = np.asarray(self._estimator.predict_proba(features))
        return outputs


def load(model: ResolvedModel, *, threads: int) -> SklearnRuntime:
    require("sklearn", runtime="scikit-learn", extra="sklearn", package="scikit-learn")
    threadpoolctl = require("threadpoolctl", runtime="scikit-learn", extra="sklearn")
    # process-wide on purpose: a server holds one model, and BLAS/OpenMP pools should match the CPU limit
    threadpoolctl.threadpool_limits(limits=threads)
    estimator = _read(model)
    if not hasattr(estimator, "predict"):
        raise ModelLoadError(
            f"{model.path} holds a {type(estimator).__name__}, which has no predict()",
            hint="save a fitted estimator or pipeline",
        )
    return SklearnRuntime(estimator, reconcile(model.signature, _detect(estimator), fmt="scikit-learn"))


def _read(model: ResolvedModel) -> Any:
    path = model.path
    if path is not None and path.suffix == ".skops":
        sio = require("skops.io", runtime="scikit-learn", extra="sklearn", package="skops")
        trusted = list(model.options.get("trusted_types", []))
        try:
            untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in trusted]
            if not untrusted:
                return sio.load(path, trusted=trusted or None)
        except Exception as exc:  # a damaged or foreign file: skops raises zip and parse errors of many kinds
            raise ModelLoadError(
                f"could not load {path}: {exc}", hint="was it saved with skops.io.dump?"
            ) from exc
        raise ModelLoadError(
            f"{path.name} contains types that skops does not trust by default: {', '.join(untrusted)}",
            hint="review them, then list them under model.options.trusted_types",
        )
    joblib = require("joblib", runtime="scikit-learn", extra="sklearn")
    try:
        return joblib.load(path)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load {path}: {exc}", hint="was it saved with joblib.dump or pickle?"
        ) from exc


def _detect(estimator: Any) -> Signature | None:
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is None:
        return None
    outputs = []
    classes = getattr(estimator, "classes_", None)
    label_dtype = dtype_from_numpy(np.asarray(classes).dtype) if classes is not None else "float64"
    outputs.append(TensorSpec(name="label", dtype=label_dtype, shape=()))
    if classes is not None and hasattr(estimator, "predict_proba"):
        outputs.append(TensorSpec(name="probabilities", dtype="float64", shape=(len(classes),)))
    return Signature(
        inputs=(TensorSpec(name="input", dtype="float64", shape=(int(n_features),)),),
        outputs=tuple(outputs),
    )
