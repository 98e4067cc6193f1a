"""The HTTP contract of a modelpod server: its route paths and its metric names, spelled once.

The server serves these routes and exports these metrics; the Kubernetes renderer probes the routes and
queries the metrics (probes, ServiceMonitor, alerts, dashboard, autoscaling), the image's HEALTHCHECK and
smoke test wait on readiness, and `bench` reads the metrics. It sits at the bottom of the layers and
imports nothing of modelpod, so every layer can read it (docs/architecture.md). Its last section is the
contract between the server and what installs its external engines (`make`, the image).

Metric names are the names a metric is declared with. Prometheus' exposition adds suffixes: `_total` to
a counter's samples, `_bucket`, `_sum` and `_count` to a histogram's; queries use `total()`, `bucket()`,
`sum_of()` and `count_of()`.
"""

from __future__ import annotations

import os
from pathlib import Path

# --- routes ---------------------------------------------------------------------------------------
LIVE = "/v2/health/live"  # the process works (liveness)
READY = "/v2/health/ready"  # the model is loaded and the server takes traffic (readiness)
SERVER_METADATA = "/v2"
MODEL = "/v2/models/{name}"  # model metadata; `{name}/ready` and `{name}/infer` below it
MODEL_READY = "/v2/models/{name}/ready"
INFER = "/v2/models/{name}/infer"
PREDICT = "/predict"
METRICS = "/metrics"
EMBEDDINGS = "/v1/embeddings"
CHAT_COMPLETIONS = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MODELS = "/v1/models"
OPENAPI = "/openapi.json"
DOCS = "/docs"


def model_path(template: str, name: str) -> str:
    """A model route for one model: `model_path(MODEL_READY, "digits")` -> `/v2/models/digits/ready`."""
    return template.replace("{name}", name)


# --- metrics (labels: model; and those named) -----------------------------------------------------
REQUEST_DURATION = "modelpod_request_duration_seconds"  # histogram; endpoint, code
REQUESTS = "modelpod_requests"  # counter; endpoint, code
INFLIGHT_REQUESTS = "modelpod_inflight_requests"  # gauge
QUEUE_DEPTH = "modelpod_queue_depth"  # gauge
BUSY_INSTANCES = "modelpod_busy_instances"  # gauge
BATCH_SIZE = "modelpod_batch_size"  # histogram, rows per model call
INFERENCE_DURATION = "modelpod_inference_duration_seconds"  # histogram, one model call
MODEL_LOAD_SECONDS = "modelpod_model_load_seconds"  # gauge
STARTUP_SECONDS = "modelpod_startup_seconds"  # gauge
REJECTED_REQUESTS = "modelpod_rejected_requests"  # counter; reason
# text generation, named like vLLM's so that dashboards and autoscalers can treat both alike
TIME_TO_FIRST_TOKEN = "modelpod_time_to_first_token_seconds"  # noqa: S105 - histogram, not a secret
INTER_TOKEN_LATENCY = "modelpod_inter_token_latency_seconds"  # noqa: S105 - histogram, not a secret
PROMPT_TOKENS = "modelpod_prompt_tokens"  # counter
GENERATION_TOKENS = "modelpod_generation_tokens"  # counter
RUNNING_SEQUENCES = "modelpod_running_sequences"  # gauge; the autoscaling signal with the next
WAITING_SEQUENCES = "modelpod_waiting_sequences"  # gauge
KV_CACHE_USAGE = "modelpod_kv_cache_usage_ratio"  # gauge, memory held against the budget
STEP_TOKENS = "modelpod_step_tokens"  # histogram, tokens per engine step
PREFIX_CACHE_QUERIES = "modelpod_prefix_cache_queries"  # counter, prompt tokens looked up
PREFIX_CACHE_HITS = "modelpod_prefix_cache_hits"  # counter, prompt tokens found (not prefilled)


def total(counter: str) -> str:
    return f"{counter}_total"


def bucket(histogram: str) -> str:
    return f"{histogram}_bucket"


def sum_of(histogram: str) -> str:
    return f"{histogram}_sum"


def count_of(histogram: str) -> str:
    return f"{histogram}_count"


# --- external engines: where the server finds them (docs/engines.md) ------------------------------
LLAMA_CPP_BUILD = "b11434"  # the llama.cpp release images/templates/build-llama-server.sh builds
LLAMA_SERVER_ENV = "MODELPOD_LLAMA_SERVER"  # a llama-server to use; the llamacpp image sets it
IMAGE_LLAMA_CPP = "/opt/llama.cpp"  # where a llamacpp image holds llama.cpp (bin/llama-server, lib/)


def cache_dir() -> Path:
    """Where modelpod keeps what it builds, installs and downloads for the engines, reused by every
    checkout: $MODELPOD_CACHE_DIR, else $XDG_CACHE_HOME/modelpod, else ~/.cache/modelpod."""
    named = os.environ.get("MODELPOD_CACHE_DIR")
    if named:
        return Path(named)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()) / "modelpod"
