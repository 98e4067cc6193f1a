"""`modelpod optimize`: the model exported to ONNX, optimised and (optionally) quantised to int8, checked
against the original, and written with a spec profile `optimized` that serves it on ONNX Runtime.

    export.py    the model to one ONNX graph, per format (sentence-transformers: with its tokenizer)
    quantize.py  ONNX Runtime's graph optimisations and int8 quantisation
    inputs.py    the inputs to check and calibrate on: the spec's examples, a file, or generated
    check.py     the optimised model against the original: max difference, cosine, top-1 agreement
    report.py    a quick in-process speed measure and sizes on disk, for the table
    profile.py   the `optimized` profile written into modelpod.yaml, comments kept
    pipeline.py  the steps in order; nothing is written when the check fails

Nothing here is imported by the server: optimize is a build-time tool.
"""

from modelpod.optimize.pipeline import OptimizeOptions, OptimizeResult, optimize

__all__ = ["OptimizeOptions", "OptimizeResult", "optimize"]
