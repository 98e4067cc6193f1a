"""modelpod: from a model file on disk to a fast inference server, a hardened image and Kubernetes.

The public API is the names in `__all__`; everything else may change. Names resolve on first use, so
`import modelpod` stays instant and imports no ML framework (nor numpy or pydantic) until needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelpod._lazy import lazy_attributes

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "ModelpodError": "modelpod.errors",
    "SpecError": "modelpod.errors",
    "SpecIssue": "modelpod.errors",
    "ModelLoadError": "modelpod.errors",
    "MissingDependencyError": "modelpod.errors",
    "InputError": "modelpod.errors",
    "InferenceError": "modelpod.errors",
    "Spec": "modelpod.specfile",
    "load_spec": "modelpod.specfile",
    "Signature": "modelpod.signature",
    "TensorSpec": "modelpod.signature",
    "Runtime": "modelpod.runtimes",
    "load_runtime": "modelpod.runtimes",
    "Predictor": "modelpod.predictor",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from modelpod.errors import (
        InferenceError as InferenceError,
    )
    from modelpod.errors import (
        InputError as InputError,
    )
    from modelpod.errors import (
        MissingDependencyError as MissingDependencyError,
    )
    from modelpod.errors import (
        ModelLoadError as ModelLoadError,
    )
    from modelpod.errors import (
        ModelpodError as ModelpodError,
    )
    from modelpod.errors import (
        SpecError as SpecError,
    )
    from modelpod.errors import (
        SpecIssue as SpecIssue,
    )
    from modelpod.predictor import Predictor as Predictor
    from modelpod.runtimes import Runtime as Runtime
    from modelpod.runtimes import load_runtime as load_runtime
    from modelpod.signature import Signature as Signature
    from modelpod.signature import TensorSpec as TensorSpec
    from modelpod.specfile import Spec as Spec
    from modelpod.specfile import load_spec as load_spec


__getattr__ = lazy_attributes(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
