"""A language model's pod, sized from the model (specfile/footprint.py) rather than from a guess.

Memory: the weights as served, the KV-cache budget (`generation.kv_cache_tokens` at the model's bytes per
token) and the runtime: the Python process with torch and transformers loaded, or the external engine's
processes (docs/engines.md). A spec asking for less gets that much
instead (it would be OOM-killed at full load); one asking for more keeps what it asked for.
Start-up: reading and loading the weights at a conservative rate, plus a margin; the startup probe's
budget is the larger of that and `kubernetes.startup_timeout_s`.
"""

from __future__ import annotations

import math

from modelpod.specfile.model import ResourcesSection
from modelpod.specfile.patterns import quantity_bytes
from modelpod.specfile.resolved import Spec

MIB = 1024 * 1024
# a process with modelpod's server, torch, transformers and sentence-transformers imported and no model
# loaded: 432 MiB resident (measured here on x86-64); the rest is headroom for activations and slack.
# llama.cpp behind modelpod took 132 MiB beyond its weights and KV cache (proportional set size of the
# process tree, after 16 prompts of 1,500 tokens), well within it.
RUNTIME_BYTES = 768 * MIB
# vLLM's CPU build runs three Python processes with torch (API server, engine core, worker): 1.85 GiB
# beyond its weights and KV cache, modelpod's server included (measured the same way); with headroom
RUNTIME_BYTES_BY_ENGINE = {"vllm": 2560 * MIB}
# weights read and materialised per second at start-up: a network volume or a cold page cache, not a laptop
LOAD_BYTES_PER_S = 50 * 1000 * 1000
STARTUP_MARGIN_S = 120


def model_memory_bytes(spec: Spec) -> int | None:
    """What serving the spec's language model takes, or None for any other model."""
    footprint = spec.model.footprint
    if footprint is None:
        return None
    context = spec.generation.max_context_tokens or footprint.context_tokens
    kv_cache = spec.generation.kv_cache_tokens_for(context) * footprint.kv_bytes_per_token
    runtime = RUNTIME_BYTES_BY_ENGINE.get(str(spec.engine), RUNTIME_BYTES)
    return footprint.weights_bytes + kv_cache + runtime


def serving_resources(spec: Spec) -> ResourcesSection:
    """The spec's resources, with memory raised to what its language model needs."""
    needed = model_memory_bytes(spec)
    if needed is None or needed <= quantity_bytes(spec.resources.memory):
        return spec.resources
    return spec.resources.model_copy(update={"memory": f"{math.ceil(needed / MIB)}Mi"})


def startup_budget_s(spec: Spec) -> int:
    footprint = spec.model.footprint
    budget = spec.kubernetes.startup_timeout_s
    if footprint is not None:
        budget = max(budget, math.ceil(footprint.weights_bytes / LOAD_BYTES_PER_S) + STARTUP_MARGIN_S)
    return budget
