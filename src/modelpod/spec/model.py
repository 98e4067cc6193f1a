"""The modelpod.yaml file model.

Every section has complete defaults, so a minimal file is a `name` and a `model.path`. Unknown keys are
rejected everywhere (`extra="forbid"`), so a typo is an error with a suggestion, never silently ignored.
The JSON schema published by `modelpod schema` is generated from these classes.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator, model_validator

from modelpod.signature import Signature

Format = Literal["onnx", "sklearn", "torch", "keras", "tensorflow", "transformers", "custom"]
FORMATS: tuple[str, ...] = Format.__args__  # type: ignore[attr-defined]

# Kubernetes object names: a DNS-1123 label, short enough to leave room for suffixes such as "-abc12".
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CPU_PATTERN = r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$"
MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
CLASS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ModelSection(Section):
    path: str | None = Field(
        default=None,
        description="Model file or directory, relative to modelpod.yaml. Optional only for a custom class.",
    )
    format: Format | None = Field(
        default=None, description="Model format; detected from the path when omitted."
    )
    class_: str | None = Field(
        default=None,
        alias="class",
        pattern=CLASS_PATTERN,
        description='Custom Python class "module:Class" with load() and predict(batch).',
    )
    signature: Signature | None = Field(
        default=None, description="Inputs and outputs; read from the model when the format carries them."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Options of the model's runtime.")


class PythonSection(Section):
    requirements: tuple[str, ...] = Field(default=(), description="Extra pip requirements of the model.")
    system_packages: tuple[str, ...] = Field(
        default=(), description="Debian packages to install in the image."
    )


class ServerSection(Section):
    host: str = Field(default="127.0.0.1", description="Address to bind; images bind 0.0.0.0.")
    port: int = Field(default=8080, ge=1, le=65535)
    max_batch_size: int = Field(default=32, ge=1, description="Most requests the batcher runs together.")
    max_wait_ms: float = Field(
        default=0.0, ge=0, le=10_000, description="How long a partial batch may wait for more requests."
    )
    batch_refill_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Under load, how long a free model may wait for the callers its last batch answered "
        "to send their next requests, as a fraction of that batch's run time; 0 turns it off.",
    )
    max_queue: int = Field(default=256, ge=1, description="Queued requests before new ones get 503.")
    request_timeout_s: float = Field(default=30.0, gt=0, description="Per-request deadline; past it, 504.")
    max_body_bytes: ByteSize = Field(
        default=ByteSize(16 * 1024 * 1024), gt=0, description="e.g. 16MiB; larger bodies get 413."
    )
    drain_timeout_s: float = Field(default=25.0, ge=0, description="On SIGTERM, time for in-flight requests.")
    threads: int | None = Field(
        default=None, ge=1, description="Intra-op threads of the framework; default: the CPU limit."
    )
    auth_token_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding a bearer token that inference routes then require.",
    )
    access_log: bool = Field(default=True, description="One JSON log line per request.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class ResourcesSection(Section):
    cpu: str = Field(default="1", pattern=CPU_PATTERN, description='CPU cores, e.g. "2" or "500m".')
    memory: str = Field(default="1Gi", pattern=MEMORY_PATTERN, description='Memory, e.g. "2Gi".')
    gpu: int = Field(default=0, ge=0, description="NVIDIA GPUs per replica.")

    @field_validator("cpu", mode="before")
    @classmethod
    def _number_to_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class ScalingSection(Section):
    replicas: int = Field(default=1, ge=0)
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=3, ge=1)
    target_concurrency: float = Field(
        default=8.0, gt=0, description="In-flight requests per replica to aim for."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ScalingSection:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        if self.replicas > self.max_replicas:
            raise ValueError(f"replicas ({self.replicas}) is above max_replicas ({self.max_replicas})")
        return self


class ImageSection(Section):
    repository: str | None = Field(default=None, description="Image repository; defaults to the spec name.")
    base: str = Field(default="python:3.11-slim", description="Base image.")


class KubernetesSection(Section):
    namespace: str = Field(default="default", pattern=NAME_PATTERN)
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    service_port: int = Field(default=80, ge=1, le=65535)


class ExampleSection(Section):
    name: str = "example"
    inputs: dict[str, Any] | None = Field(default=None, description="One item's inputs by name.")
    expected: dict[str, Any] | None = Field(default=None, description="Expected outputs by name.")
    file: str | None = Field(
        default=None, description='JSON file with "inputs" and "expected", relative to modelpod.yaml.'
    )
    atol: float = Field(default=1e-4, ge=0, description="Absolute tolerance when comparing outputs.")
    rtol: float = Field(default=1e-3, ge=0, description="Relative tolerance when comparing outputs.")

    @model_validator(mode="after")
    def _one_source(self) -> ExampleSection:
        if (self.inputs is None) == (self.file is None):
            raise ValueError("give either inputs (with optional expected) or file, not both and not neither")
        return self


class SpecFile(Section):
    """modelpod.yaml"""

    model_config = ConfigDict(title="modelpod.yaml", extra="forbid", frozen=True, populate_by_name=True)

    version: Literal[1] = Field(default=1, description="Spec format version.")
    name: str = Field(pattern=NAME_PATTERN, max_length=53, description="Lowercase name of the deployment.")
    description: str | None = None
    model: ModelSection
    python: PythonSection = Field(default_factory=PythonSection)
    server: ServerSection = Field(default_factory=ServerSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    image: ImageSection = Field(default_factory=ImageSection)
    kubernetes: KubernetesSection = Field(default_factory=KubernetesSection)
    examples: tuple[ExampleSection, ...] = Field(default=(), description="Requests used by smoke tests.")
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named overrides (dev, staging, prod, ...) merged onto the rest of the file.",
    )

    @field_validator("profiles")
    @classmethod
    def _profile_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"profile name {name!r} must be lowercase letters, digits and dashes")
        return value
