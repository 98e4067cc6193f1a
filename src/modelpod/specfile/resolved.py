"""The resolved spec: frozen and complete, what every other layer reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from modelpod.signature import Signature
from modelpod.specfile.footprint import Footprint
from modelpod.specfile.model import (
    GenerationSection,
    KubernetesSection,
    PythonSection,
    ResourcesSection,
    ScalingSection,
    ServerSection,
    TrainSection,
)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResolvedModel(_Frozen):
    path: Path | None  # absolute; None only for a custom class that needs no file
    format: str
    class_name: str | None
    signature: Signature | None  # None: the runtime reads it from the model
    options: dict[str, Any]
    code_dir: Path  # the spec's directory: custom classes are imported from here
    footprint: Footprint | None = None  # a language model's size, for sizing its pods (specfile/footprint.py)


class Example(_Frozen):
    name: str
    inputs: dict[str, Any]
    expected: dict[str, Any] | None
    atol: float
    rtol: float
    chat: dict[str, Any] | None = None  # an OpenAI chat request, for text-generation models
    contains: str | None = None  # text the answer must contain


class ResolvedImage(_Frozen):
    repository: str
    base: str


class Spec(_Frozen):
    """A spec file read, validated, with a profile applied, and resolved: paths absolute and checked,
    the format detected, example files read. Made by `load_spec`; frozen. The sections are those of
    `modelpod.yaml` (`modelpod schema` describes every key)."""

    name: str
    description: str | None
    model: ResolvedModel
    python: PythonSection
    server: ServerSection
    generation: GenerationSection
    # the engine of a language model's text generation (builtin, llamacpp or vllm; `generation.engine`
    # resolved), None for any other model
    engine: str | None
    resources: ResourcesSection
    scaling: ScalingSection
    image: ResolvedImage
    kubernetes: KubernetesSection
    train: TrainSection
    examples: tuple[Example, ...]
    profile: str | None
    profiles: tuple[str, ...]  # every profile this spec can be resolved with
    root: Path  # the directory holding modelpod.yaml
    source: Path  # modelpod.yaml itself
