"""Prometheus metrics, in a registry of each app's own (no global state for tests to reset)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelpod import contract
from modelpod.server.http.request_stats import RequestStats

CONTENT_TYPE = CONTENT_TYPE_LATEST

# seconds; dense below 100 ms where small models live, sparse up to the default 30 s timeout
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self, model: str, max_batch_size: int) -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # modelpod_request_duration_seconds and modelpod_requests_total: observed on every request
        self.requests = RequestStats(model, _LATENCY_BUCKETS)
        r.register(self.requests)
        self.inflight = Gauge(
            contract.INFLIGHT_REQUESTS, "Requests being handled now.", ["model"], registry=r
        )
        self.queue_depth = Gauge(
            contract.QUEUE_DEPTH, "Requests waiting for the model.", ["model"], registry=r
        )
        self.busy = Gauge(
            contract.BUSY_INSTANCES, "Model instances running a batch now.", ["model"], registry=r
        )
        batch_buckets = sorted({2**i for i in range(max_batch_size.bit_length() + 1)} | {max_batch_size})
        self.batch_size = Histogram(
            contract.BATCH_SIZE, "Rows per model call.", ["model"], buckets=batch_buckets, registry=r
        )
        self.inference_duration = Histogram(
            contract.INFERENCE_DURATION,
            "Time of one model call (a whole batch).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.load_seconds = Gauge(
            contract.MODEL_LOAD_SECONDS, "Time to load and warm up the model.", ["model"], registry=r
        )
        self.startup_seconds = Gauge(
            contract.STARTUP_SECONDS,
            "Time from the process's start to ready: imports, model load and warm-up.",
            ["model"],
            registry=r,
        )
        # process_cpu_seconds_total, process_resident_memory_bytes, process_start_time_seconds ...: what
        # `modelpod bench` reads to size pods (Linux only; elsewhere the collector reports nothing)
        self.process = ProcessCollector(registry=r)
        self.rejected = Counter(
            contract.REJECTED_REQUESTS,
            "Requests refused before reaching the model, by reason.",
            ["model", "reason"],
            registry=r,
        )
        self.inflight_now = self.inflight.labels(model)
        self.queue_now = self.queue_depth.labels(model)
        self.busy_now = self.busy.labels(model)
        self._batch_size = self.batch_size.labels(model)
        self._inference = self.inference_duration.labels(model)

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        """One answered request; on the event loop only (server/http/request_stats.py)."""
        self.requests.observe(endpoint, code, seconds)

    def observe_batch(self, rows: int, seconds: float) -> None:
        self._batch_size.observe(rows)
        self._inference.observe(seconds)

    def ready(self, load_seconds: float) -> None:
        self.load_seconds.labels(self.model).set(load_seconds)
        started = _process_start_time(self.process)
        if started is not None:
            self.startup_seconds.labels(self.model).set(max(0.0, time.time() - started))

    def reject(self, reason: str) -> None:
        self.rejected.labels(self.model, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _process_start_time(collector: ProcessCollector) -> float | None:
    """The process's start (seconds since the epoch) as the process collector reports it."""
    for family in collector.collect():
        if family.name == "process_start_time_seconds" and family.samples:
            return float(family.samples[0].value)
    return None


# seconds to the first token: a prefill, plus any wait in the queue
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# seconds between tokens of one sequence: one decode step, longer when prefills come in between
_ITL_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
_STEP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class GenerationMetrics:
    """Text generation's metrics, named as vLLM's are (`vllm:` there, `modelpod_` here), so dashboards
    and autoscalers treat both alike. Registered only for a text-generation model; fed by the engine's
    thread (prometheus_client's metrics take a lock of their own)."""

    def __init__(self, metrics: Metrics) -> None:
        r, model = metrics.registry, metrics.model
        self.ttft = Histogram(
            contract.TIME_TO_FIRST_TOKEN,
            "Time from a generation request's arrival to its first token.",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        ).labels(model)
        self.itl = Histogram(
            contract.INTER_TOKEN_LATENCY,
            "Time between two tokens of one sequence.",
            ["model"],
            buckets=_ITL_BUCKETS,
            registry=r,
        ).labels(model)
        self.prompt = Counter(
            contract.PROMPT_TOKENS, "Prompt tokens of the sequences admitted.", ["model"], registry=r
        ).labels(model)
        self.prefix_queries = Counter(
            contract.PREFIX_CACHE_QUERIES,
            "Prompt tokens looked up in the prefix cache (every prompt token of an admitted sequence).",
            ["model"],
            registry=r,
        ).labels(model)
        self.prefix_hits = Counter(
            contract.PREFIX_CACHE_HITS,
            "Prompt tokens whose keys and values came from the prefix cache instead of a prefill.",
            ["model"],
            registry=r,
        ).labels(model)
        self.generated = Counter(
            contract.GENERATION_TOKENS, "Tokens generated.", ["model"], registry=r
        ).labels(model)
        self.running = Gauge(
            contract.RUNNING_SEQUENCES, "Sequences in the running batch.", ["model"], registry=r
        ).labels(model)
        self.waiting = Gauge(
            contract.WAITING_SEQUENCES, "Sequences waiting to join the batch.", ["model"], registry=r
        ).labels(model)
        self.kv_usage = Gauge(
            contract.KV_CACHE_USAGE,
            "Share of the KV-cache pool (generation.kv_cache_tokens) held by running sequences.",
            ["model"],
            registry=r,
        ).labels(model)
        self.step_tokens = Histogram(
            contract.STEP_TOKENS,
            "Tokens one step computed: prompt tokens prefilled plus one per decoded sequence.",
            ["model"],
            buckets=_STEP_BUCKETS,
            registry=r,
        ).labels(model)

    # the engine's Observer protocol (server/scheduling/generation.py)
    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def next_token(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def prompt_tokens(self, count: int, cached: int) -> None:
        self.prompt.inc(count)
        self.prefix_queries.inc(count)
        self.prefix_hits.inc(cached)

    def generated_tokens(self, count: int) -> None:
        self.generated.inc(count)

    def step(self, tokens: int) -> None:
        self.step_tokens.observe(tokens)
