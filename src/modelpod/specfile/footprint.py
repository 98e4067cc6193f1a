"""What a text-generation model needs to run, read from its directory without importing a framework.

`modelpod render` sizes a language model's pod from this: memory for the weights, the KV-cache budget
and the Python runtime; a startup probe long enough to read the weights. The numbers come from
config.json (layers, heads, head size, context) and the sizes of the weight files.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

# bytes per element of the dtypes config.json names; CPU serving loads float32 unless told otherwise
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class Footprint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weights_bytes: int  # the weight files on disk
    kv_bytes_per_token: int  # keys and values of one token across all layers
    context_tokens: int  # max_position_embeddings


def read_footprint(path: Path, *, dtype: str | None = None, device: str = "cpu") -> Footprint | None:
    """The footprint of a causal language model directory served in `dtype` (default: float32 on a CPU,
    the stored dtype on a GPU, as the runtime loads it), or None when `path` is not one."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    config = config.get("text_config") or config
    architectures = [str(a) for a in config.get("architectures") or []]
    if not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return None

    def field(name: str, gpt2_name: str) -> object:  # GPT-2's config spells them its own way
        return config.get(name, config.get(gpt2_name))

    try:
        heads = int(str(field("num_attention_heads", "n_head")))
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or int(str(field("hidden_size", "n_embd"))) // heads)
        layers = int(str(field("num_hidden_layers", "n_layer")))
        context = int(str(field("max_position_embeddings", "n_positions") or 0))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    stored = _DTYPE_BYTES.get(str(config.get("torch_dtype") or config.get("dtype") or "float32"), 4)
    served = _DTYPE_BYTES.get(dtype or ("float32" if device == "cpu" else ""), stored)
    on_disk = sum(f.stat().st_size for f in path.iterdir() if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
    element = served
    return Footprint(
        weights_bytes=on_disk * served // stored,
        kv_bytes_per_token=2 * layers * kv_heads * head_dim * element,
        context_tokens=context,
    )


# llama.cpp keeps its KV cache in float16 unless told otherwise (--cache-type-k / -v)
_GGUF_KV_BYTES = 2


def read_gguf_footprint(path: Path) -> Footprint | None:
    """The footprint of a GGUF language model as llama.cpp serves it: the file's size as the weights
    (llama.cpp maps them as they are), keys and values in float16; None when the file says too little."""
    from modelpod.specfile.gguf import GGUFError, read_metadata

    try:
        metadata = read_metadata(path)
        arch = str(metadata["general.architecture"])
        heads = int(metadata[f"{arch}.attention.head_count"])
        kv_heads = int(metadata.get(f"{arch}.attention.head_count_kv") or heads)
        head_dim = int(metadata.get(f"{arch}.attention.key_length") or
                       int(metadata[f"{arch}.embedding_length"]) // heads)  # fmt: skip
        layers = int(metadata[f"{arch}.block_count"])
        context = int(metadata.get(f"{arch}.context_length") or 0)
    except (OSError, GGUFError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return Footprint(
        weights_bytes=path.stat().st_size,
        kv_bytes_per_token=2 * layers * kv_heads * head_dim * _GGUF_KV_BYTES,
        context_tokens=context,
    )
