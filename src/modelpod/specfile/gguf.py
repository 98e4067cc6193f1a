"""The metadata at the head of a GGUF file (llama.cpp's model format), read without a framework.

A GGUF file starts with "GGUF", a version, the tensor and key counts, then key-value pairs (string keys,
typed values, arrays of values); only the pairs are read here, the tensors never. What `render` needs of
a GGUF language model is in them: the architecture's layers, heads and context.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

_MAGIC = b"GGUF"
# value type -> struct format of one scalar (8: string, 9: array are read apart)
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
MAX_KEYS = 100_000  # a sane file has a few dozen; a corrupt count must not loop for ever


class GGUFError(ValueError):
    """The file is not a GGUF file this reader understands."""


def read_metadata(path: Path) -> dict[str, Any]:
    """Every key-value pair of the file; arrays are skipped (kept as their length)."""
    with path.open("rb") as file:
        if file.read(4) != _MAGIC:
            raise GGUFError(f"{path.name} is not a GGUF file (it does not start with GGUF)")
        version = _scalar(file, "<I")
        if version < 2:
            raise GGUFError(f"{path.name} is GGUF version {version}; versions 2 and 3 are read")
        _scalar(file, "<Q")  # tensors
        keys = _scalar(file, "<Q")
        if keys > MAX_KEYS:
            raise GGUFError(f"{path.name} claims {keys} metadata keys")
        metadata: dict[str, Any] = {}
        for _ in range(keys):
            key = _string(file)
            metadata[key] = _value(file, _scalar(file, "<I"))
        return metadata


def _value(file: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _scalar(file, _SCALARS[kind])
    if kind == _STRING:
        return _string(file)
    if kind == _ARRAY:
        item, count = _scalar(file, "<I"), _scalar(file, "<Q")
        if item in _SCALARS:
            file.seek(struct.calcsize(_SCALARS[item]) * count, 1)
        else:
            for _ in range(count):
                _value(file, item)
        return count
    raise GGUFError(f"unknown GGUF value type {kind}")


def _scalar(file: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = file.read(size)
    if len(data) != size:
        raise GGUFError("the file ends inside its metadata")
    return struct.unpack(fmt, data)[0]


def _string(file: BinaryIO) -> str:
    length = _scalar(file, "<Q")
    data = file.read(length)
    if len(data) != length:
        raise GGUFError("the file ends inside its metadata")
    return data.decode("utf-8", errors="replace")
