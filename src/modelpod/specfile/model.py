"""The modelpod.yaml file model.

Every section has complete defaults, so a minimal file is a `name` and a `model.path`. Unknown keys are
rejected everywhere (`extra="forbid"`), so a typo is an error with a suggestion, never silently ignored.
The JSON schema published by `modelpod schema` is generated from these classes.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator, model_validator

from modelpod.signature import Signature
from modelpod.specfile.patterns import (
    CLASS_PATTERN,
    CPU_PATTERN,
    DURATION_PATTERN,
    ENV_NAME_PATTERN,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    MEMORY_PATTERN,
    NAME_PATTERN,
    URL_PATTERN,
    DebPackage,
    DnsSubdomain,
    EngineArg,
    EnvName,
    EnvValue,
    ImageRef,
    LabelKey,
    LabelValue,
    Requirement,
    quantity_bytes,
)

Format = Literal["onnx", "sklearn", "torch", "keras", "tensorflow", "transformers", "gguf", "custom"]
Engine = Literal["auto", "builtin", "llamacpp", "vllm"]
ENGINES: tuple[str, ...] = Engine.__args__  # type: ignore[attr-defined]
FORMATS: tuple[str, ...] = Format.__args__  # type: ignore[attr-defined]

INT32_MAX = 2**31 - 1  # Kubernetes counts and durations are int32


def default_body_limit(memory: str) -> int:
    """server.max_body_bytes when the spec leaves it out: 1/64 of the container's memory (a Kubernetes
    quantity), between 1 MiB and 16 MiB."""
    mib = 1024 * 1024
    return int(min(16 * mib, max(1 * mib, quantity_bytes(memory) // 64)))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


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
    requirements: tuple[Requirement, ...] = Field(
        default=(), description="Extra pip requirements of the model, one requirement per entry."
    )
    system_packages: tuple[DebPackage, ...] = Field(
        default=(), description="Debian packages to install in the image."
    )


class ServerSection(Section):
    host: str = Field(default="127.0.0.1", description="Address to bind; images bind 0.0.0.0.")
    port: int = Field(
        default=8080, ge=1, le=65535, description="Port to listen on (`modelpod serve --port` overrides it)."
    )
    max_batch_size: int = Field(
        default=32, ge=1, description="Most rows (items) one model call runs: a request of N items counts N."
    )
    max_wait_ms: float = Field(
        default=0.0, ge=0, le=10_000, description="How long a partial batch may wait for more requests."
    )
    inline_below_ms: float = Field(
        default=1.0,
        ge=0,
        le=1000,
        description="Run a batch on the event loop instead of the model's thread while the last batch took "
        "less than this many milliseconds (a thread hand-off costs more than a tiny model's batch, and "
        "the event loop waits at most this long); 0 always uses the thread.",
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
    max_body_bytes: ByteSize | None = Field(
        default=None,
        gt=0,
        description="e.g. 8MiB; larger bodies get 413. Default: 1/64 of resources.memory, between 1MiB "
        "and 16MiB.",
    )
    max_request_items: int | None = Field(
        default=None,
        ge=1,
        description="Most items (rows) one request may carry; more get 413. Default: 4 x max_batch_size.",
    )
    drain_timeout_s: float = Field(
        default=25.0, ge=0, le=3600, description="On SIGTERM, time for in-flight requests."
    )
    keepalive_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="An idle connection (fresh or between requests) is closed after this.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A request's line and headers must arrive within this of its first byte; else 408.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="An inference request's body must arrive within this of its headers; else 408.",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections; past it the longest idle one is closed, or the new one gets 503.",
    )
    threads: int | None = Field(
        default=None, ge=1, description="Intra-op threads of the framework; default: the CPU limit."
    )
    auth_token_env: str | None = Field(
        default=None,
        pattern=ENV_NAME_PATTERN,
        description="Environment variable holding a bearer token that inference routes then require.",
    )
    access_log: bool = Field(default=True, description="One JSON log line per request.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe server log lines written (JSON, one a line, on stderr)."
    )


class GenerationSection(Section):
    """Text generation (causal language models): the engine and the limits of continuous batching."""

    engine: Engine = Field(
        default="auto",
        description="What generates the text: builtin (modelpod's own engine on transformers, any "
        "architecture, nothing else to install), llamacpp (llama.cpp's llama-server, for a GGUF file), vllm "
        "(vLLM, for a transformers directory; GPUs, or its CPU build). auto: llamacpp for a GGUF file, vllm "
        "when resources.gpu asks for GPUs, builtin otherwise (docs/engines.md).",
    )
    engine_args: list[EngineArg] = Field(
        default_factory=list,
        max_length=64,
        description="More command-line arguments for an external engine (llamacpp, vllm), after the ones "
        "modelpod sets, e.g. [--threads, '4'].",
    )

    max_running_sequences: int = Field(
        default=16, ge=1, le=4096, description="Sequences decoded together in one step; the rest wait."
    )
    max_tokens_per_step: int = Field(
        default=512,
        ge=1,
        le=1_000_000,
        description="Tokens one forward pass computes at most: a decode token per running sequence, then "
        "prompt chunks; a longer prompt is prefilled over several steps (chunked prefill), so the running "
        "streams keep getting tokens, and the pass's transient memory stays bounded.",
    )
    max_context_tokens: int | None = Field(
        default=None,
        ge=2,
        le=10_000_000,
        description="Prompt plus generated tokens of one sequence; default the model's "
        "max_position_embeddings. Longer prompts get 400.",
    )
    kv_cache_tokens: int | None = Field(
        default=None,
        ge=2,
        le=100_000_000,
        description="KV-cache pool in tokens, allocated at start-up (what the pod's memory is sized by): "
        "each running sequence holds its prompt plus its max_tokens, and a sequence waits until its "
        "reservation fits; default the larger of the context and max_running_sequences x min(context, 2048).",
    )
    prefix_caching: bool = Field(
        default=True,
        description="Keep ended sequences' keys and values in the pool's free space, so that a prompt "
        "beginning with the same tokens (a system prompt, a chat's earlier turns) skips their prefill.",
    )
    default_max_tokens: int = Field(
        default=512, ge=1, le=10_000_000, description="Tokens to generate when a request gives no max_tokens."
    )

    def kv_cache_tokens_for(self, context: int) -> int:
        """kv_cache_tokens, or by default room for one sequence of the whole context, or for every running
        sequence at up to 2,048 tokens, whichever is more."""
        return self.kv_cache_tokens or max(context, self.max_running_sequences * min(context, 2048))


class ResourcesSection(Section):
    cpu: str = Field(default="1", pattern=CPU_PATTERN, description='CPU cores, e.g. "2" or "500m".')
    memory: str = Field(default="1Gi", pattern=MEMORY_PATTERN, description='Memory, e.g. "2Gi".')
    gpu: int = Field(default=0, ge=0, le=INT32_MAX, description="NVIDIA GPUs per replica.")
    ephemeral_storage: str = Field(
        default="1Gi",
        pattern=MEMORY_PATTERN,
        description="Local disk per replica (request and limit): the /tmp volume (kubernetes.tmp_size) "
        "and the container's logs; a pod that writes more is evicted.",
    )

    @field_validator("cpu", mode="before")
    @classmethod
    def _number_to_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class ScalingSection(Section):
    replicas: int = Field(
        default=1,
        ge=0,
        le=INT32_MAX,
        description="Pods to run when autoscaler is none (the start count otherwise).",
    )
    min_replicas: int = Field(default=1, ge=1, le=INT32_MAX, description="Fewest pods the autoscaler keeps.")
    max_replicas: int = Field(default=3, ge=1, le=INT32_MAX, description="Most pods the autoscaler starts.")
    target_concurrency: float = Field(
        default=8.0, gt=0, le=1_000_000, description="In-flight requests per replica to aim for."
    )
    autoscaler: Literal["cpu", "inflight", "keda", "none"] = Field(
        default="cpu",
        description="cpu: an HPA on CPU use; inflight: an HPA on modelpod_inflight_requests per pod "
        "(Prometheus adapter); keda: a KEDA ScaledObject on the same metric; none: fixed replicas.",
    )
    target_cpu_percent: int = Field(
        default=70, ge=1, le=100, description="CPU use, in percent of requests, the cpu autoscaler aims for."
    )
    scale_down_stabilization_s: int = Field(
        default=300, ge=0, le=3600, description="How long load must stay low before replicas are removed."
    )
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        pattern=URL_PATTERN,
        description="Prometheus that the keda autoscaler queries.",
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
    repository: ImageRef | None = Field(
        default=None, description="Image repository; defaults to the spec name."
    )
    base: ImageRef = Field(default="python:3.11-slim", description="Base image.")


class Toleration(Section):
    key: str = Field(pattern=LABEL_KEY_PATTERN, description="Taint key, e.g. nvidia.com/gpu.")
    operator: Literal["Exists", "Equal"] = Field(
        default="Exists", description="Exists: any value of the taint's key; Equal: only `value`."
    )
    value: str | None = Field(
        default=None, pattern=LABEL_VALUE_PATTERN, description="The taint's value (Equal)."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default="NoSchedule", description="The taint effect tolerated; null for every effect."
    )

    @model_validator(mode="after")
    def _value_matches_operator(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("operator Exists takes no value; use operator Equal to match a value")
        if self.operator == "Equal" and self.value is None:
            raise ValueError("operator Equal needs a value")
        return self


class GpuSection(Section):
    resource: str = Field(
        default="nvidia.com/gpu", pattern=LABEL_KEY_PATTERN, description="Extended resource of a GPU."
    )
    tolerations: tuple[Toleration, ...] = Field(
        default=(Toleration(key="nvidia.com/gpu"),), description="Taints of GPU nodes that pods tolerate."
    )
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        description='Node labels GPU pods need, e.g. {"nvidia.com/gpu.present": "true"}.',
    )
    shm_size: str = Field(
        default="1Gi", pattern=MEMORY_PATTERN, description="Size of /dev/shm (memory) for multi-GPU engines."
    )


class Peer(Section):
    """Pods (by namespace and labels) or an address range, in a NetworkPolicy rule."""

    namespace: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="Namespace of the pods; default: the release's own."
    )
    pods: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Labels the pods carry; empty: every pod of the namespace."
    )
    cidr: str | None = Field(
        default=None, description="An address range such as 10.0.0.0/24, instead of namespace and pods."
    )

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an address range such as 10.0.0.0/24: {exc}") from None
        return value

    @model_validator(mode="after")
    def _pods_or_range(self) -> Peer:
        if self.cidr is not None and (self.namespace is not None or self.pods):
            raise ValueError("give either cidr, or namespace and pods, not both")
        return self


class NetworkPolicySection(Section):
    enabled: bool = Field(default=True, description="Render a NetworkPolicy that admits only `allow_from`.")
    allow_from: tuple[Peer, ...] = Field(
        default=(Peer(),),
        description="Who may connect to the serving port: pods by namespace and labels, or address "
        "ranges (e.g. the control plane's, so that the API server's service proxy, which `modelpod "
        "deploy` smoke-tests through, gets in). Default: every pod of the release's namespace. "
        "Prometheus's and the ingress controller's namespaces are added when a monitor or an Ingress is "
        "rendered; an empty list admits nothing else.",
    )
    dns: tuple[Peer, ...] = Field(
        default=(Peer(namespace="kube-system", pods={"k8s-app": "kube-dns"}),),
        description="Where pods may send DNS queries (port 53), the only traffic they may start: the "
        "cluster DNS pods by default; add e.g. {cidr: 169.254.20.10/32} for NodeLocal DNSCache.",
    )


class IngressSection(Section):
    enabled: bool = Field(default=False, description="Render an Ingress for the Service.")
    host: str | None = Field(
        default=None,
        pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Host name the Ingress answers, e.g. digits.example.com; every host when left out.",
    )
    path: str = Field(default="/", pattern=r"^/", description="Path prefix routed to the model.")
    class_name: DnsSubdomain | None = Field(default=None, description="IngressClass, e.g. nginx.")
    tls_secret: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="Secret with the TLS cert."
    )
    controller_namespace: str = Field(
        default="ingress-nginx", pattern=NAME_PATTERN, description="Namespace the NetworkPolicy admits."
    )
    annotations: dict[LabelKey, str] = Field(
        default_factory=dict, description="Annotations for the ingress controller (e.g. TLS, body size)."
    )


class MonitoringSection(Section):
    monitor: Literal["none", "servicemonitor", "podmonitor"] = Field(
        default="none", description="Prometheus Operator object that scrapes /metrics."
    )
    alerts: bool = Field(
        default=False, description="A PrometheusRule with error, latency and overload alerts."
    )
    dashboard: bool = Field(default=False, description="A Grafana dashboard ConfigMap (sidecar label).")
    prometheus_namespace: str | None = Field(
        default="monitoring",
        pattern=NAME_PATTERN,
        description="Namespace the NetworkPolicy admits for scraping.",
    )
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Extra labels on the monitoring objects, e.g. release: prometheus."
    )
    scrape_interval: str = Field(
        default="30s", pattern=DURATION_PATTERN, description="How often Prometheus reads /metrics (e.g. 15s)."
    )
    alert_for: str = Field(
        default="5m", pattern=DURATION_PATTERN, description="How long before an alert fires."
    )
    max_error_ratio: float = Field(default=0.05, gt=0, le=1, description="5xx answers over all answers.")
    max_p99_latency_s: float = Field(
        default=1.0, gt=0, description="p99 request latency in seconds over which the latency alert fires."
    )
    max_rejected_per_s: float = Field(default=1.0, gt=0, description="Requests refused for overload.")


class KubernetesSection(Section):
    namespace: str = Field(default="default", pattern=NAME_PATTERN, description="Namespace of every object.")
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Type of the Service in front of the pods."
    )
    service_port: int = Field(default=80, ge=1, le=65535, description="Port the Service listens on.")
    startup_timeout_s: int = Field(
        default=600, ge=10, le=86_400, description="Budget for the model to load before the pod is restarted."
    )
    progress_deadline_s: int = Field(
        default=900, ge=30, le=INT32_MAX, description="Rollout deadline; must exceed startup_timeout_s."
    )
    prestop_sleep_s: int = Field(
        default=5, ge=0, le=300, description="Delay before SIGTERM, so endpoints stop routing to the pod."
    )
    termination_margin_s: int = Field(
        default=5, ge=0, le=300, description="Added to preStop + server.drain_timeout_s for the grace period."
    )
    max_unavailable: int = Field(
        default=1, ge=1, le=INT32_MAX, description="Voluntary disruptions the PDB allows."
    )
    topology_spread: Literal["ScheduleAnyway", "DoNotSchedule"] = Field(
        default="ScheduleAnyway", description="Spread replicas across nodes: a preference or a rule."
    )
    tmp_size: str = Field(default="256Mi", pattern=MEMORY_PATTERN, description="Size of the /tmp emptyDir.")
    image_pull_policy: Literal["IfNotPresent", "Always"] = Field(
        default="IfNotPresent", description="When nodes pull the image (it is pinned by digest either way)."
    )
    image_pull_secrets: tuple[DnsSubdomain, ...] = Field(
        default=(), description="Secrets to pull a private image."
    )
    auth_secret: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Secret whose key `token` fills server.auth_token_env; default <name>-auth.",
    )
    gpu: GpuSection = Field(
        default_factory=GpuSection, description="GPU scheduling: tolerations, node labels."
    )
    network_policy: NetworkPolicySection = Field(
        default_factory=NetworkPolicySection,
        description="Who may reach the pods, and where they may connect.",
    )
    ingress: IngressSection = Field(default_factory=IngressSection, description="An Ingress to the Service.")
    monitoring: MonitoringSection = Field(
        default_factory=MonitoringSection, description="Prometheus scraping, alert rules, Grafana dashboard."
    )

    @model_validator(mode="after")
    def _deadline_after_startup(self) -> KubernetesSection:
        if self.progress_deadline_s <= self.startup_timeout_s:
            raise ValueError(
                f"progress_deadline_s ({self.progress_deadline_s}) must exceed startup_timeout_s "
                f"({self.startup_timeout_s}), or every slow model load would fail the rollout"
            )
        return self


class TrainSection(Section):
    command: tuple[str, ...] = Field(
        default=(),
        description="Training command and its arguments, run in the spec's directory, "
        'e.g. ["python", "train.py"].',
    )
    output_dir: str = Field(
        default="model",
        pattern=r"^[^/\x00][^\x00]*$",
        description="Where the command writes the model, relative to the spec (inside its directory).",
    )
    output_size: str = Field(default="10Gi", pattern=MEMORY_PATTERN, description="Size of the output volume.")
    output_claim: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="PersistentVolumeClaim for the output; default an emptyDir.",
    )
    env: dict[EnvName, EnvValue] = Field(
        default_factory=dict, description="Environment of the training command."
    )
    resources: ResourcesSection | None = Field(default=None, description="Default: the serving resources.")
    backoff_limit: int = Field(default=1, ge=0, le=20, description="Retries of a failed training pod.")
    active_deadline_s: int = Field(
        default=6 * 3600, ge=60, le=INT32_MAX, description="Time limit of the whole Job."
    )
    ttl_after_finished_s: int = Field(
        default=86_400, ge=0, le=INT32_MAX, description="How long a finished Job is kept."
    )


class ExampleSection(Section):
    name: str = Field(default="example", description="Shown in reports of `predict` and the smoke tests.")
    inputs: dict[str, Any] | None = Field(default=None, description="One item's inputs by name.")
    chat: dict[str, Any] | None = Field(
        default=None,
        description="For a text-generation model: an OpenAI chat request (messages, max_tokens, ...), "
        "sent to /v1/chat/completions; greedy unless it sets temperature.",
    )
    contains: str | None = Field(
        default=None, description="Text the answer must contain (a chat example's reply, or a text output)."
    )
    expected: dict[str, Any] | None = Field(default=None, description="Expected outputs by name.")
    file: str | None = Field(
        default=None, description='JSON file with "inputs" and "expected", relative to modelpod.yaml.'
    )
    atol: float = Field(default=1e-4, ge=0, description="Absolute tolerance when comparing outputs.")
    rtol: float = Field(default=1e-3, ge=0, description="Relative tolerance when comparing outputs.")

    @model_validator(mode="after")
    def _one_source(self) -> ExampleSection:
        sources = [self.inputs is not None, self.file is not None, self.chat is not None]
        if sum(sources) != 1:
            raise ValueError(
                "give exactly one of inputs (with optional expected), file, or chat (a text-generation "
                "model's chat request)"
            )
        if self.chat is not None and not isinstance(self.chat.get("messages"), list):
            raise ValueError('a chat example needs messages, e.g. [{role: user, content: "Hello"}]')
        return self


class SpecFile(Section):
    """modelpod.yaml"""

    model_config = ConfigDict(title="modelpod.yaml", extra="forbid", frozen=True, populate_by_name=True)

    version: Literal[1] = Field(default=1, description="Spec format version.")
    name: str = Field(pattern=NAME_PATTERN, max_length=53, description="Lowercase name of the deployment.")
    description: str | None = Field(default=None, description="Free text for people; not used by modelpod.")
    model: ModelSection = Field(description="The model file or directory, its format and signature.")
    python: PythonSection = Field(
        default_factory=PythonSection, description="Python version and packages for the image."
    )
    server: ServerSection = Field(
        default_factory=ServerSection, description="The inference server: port, batching, limits, timeouts."
    )
    generation: GenerationSection = Field(
        default_factory=GenerationSection, description="Continuous batching of text-generation models."
    )
    resources: ResourcesSection = Field(
        default_factory=ResourcesSection,
        description="CPU, memory and GPU of one replica (requests = limits).",
    )
    scaling: ScalingSection = Field(default_factory=ScalingSection, description="Replicas and autoscaling.")
    image: ImageSection = Field(default_factory=ImageSection, description="The container image to build.")
    kubernetes: KubernetesSection = Field(
        default_factory=KubernetesSection, description="How the model runs on Kubernetes."
    )
    train: TrainSection = Field(
        default_factory=TrainSection, description="How `modelpod train` makes the model."
    )
    examples: tuple[ExampleSection, ...] = Field(default=(), description="Requests used by smoke tests.")
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named overrides (dev, staging, prod, ...) merged onto the rest of the file.",
    )

    @field_validator("profiles")
    @classmethod
    def _profile_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"profile name {name!r} must be lowercase letters, digits and dashes")
        return value
