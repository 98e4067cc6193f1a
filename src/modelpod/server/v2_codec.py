"""Open Inference Protocol v2 (KServe / Triton) request decoding and response encoding.

JSON bodies and the binary tensor data extension: with the `Inference-Header-Content-Length` header,
the body is a JSON header of that many bytes followed by raw tensors, each input naming its
`binary_data_size`. Raw tensors are little-endian, row-major; BYTES elements are each a 4-byte
little-endian length and the bytes. Outputs go back as binary when the request asks for it per output
(`parameters.binary_data`) or for all (`parameters.binary_data_output`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelpod.errors import InputError
from modelpod.runtimes.base import Batch
from modelpod.signature import Signature, TensorSpec, dtype_from_v2, numpy_dtype, v2_datatype

HEADER_LENGTH = "inference-header-content-length"


class ProtocolError(Exception):
    """The request does not follow the protocol (400)."""


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: Batch
    outputs: list[str]
    binary_outputs: set[str]


def decode_request(body: bytes, header_length: int | None, signature: Signature) -> InferRequest:
    json_part = body if header_length is None else body[:header_length]
    binary = b"" if header_length is None else body[header_length:]
    try:
        header = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"body is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise ProtocolError(
            'expected a JSON object with "inputs": [{"name", "shape", "datatype", "data"}, ...]'
        )
    known = {t.name: t for t in signature.inputs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for entry in header["inputs"]:
        tensor, array, offset = _decode_input(entry, known, binary, offset)
        arrays[tensor.name] = array
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    inputs = signature.coerce_inputs(arrays, batched=True)
    outputs, binary_outputs = _requested_outputs(header, signature)
    request_id = header.get("id")
    return InferRequest(str(request_id) if request_id is not None else None, inputs, outputs, binary_outputs)


def _decode_input(
    entry: Any, known: dict[str, TensorSpec], binary: bytes, offset: int
) -> tuple[TensorSpec, np.ndarray, int]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ProtocolError('each input needs "name", "shape", "datatype" and "data"')
    name = entry["name"]
    tensor = known.get(name)
    if tensor is None:
        raise InputError(name, "unknown input", expected=f"one of {sorted(known)}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or not shape:
        raise InputError(
            name,
            "bad shape",
            expected="a list of non-negative integers with the batch size first",
            got=repr(shape),
        )
    datatype = str(entry.get("datatype", ""))
    dtype = dtype_from_v2(datatype)
    if dtype is None:
        raise InputError(name, "unknown datatype", expected=v2_datatype(tensor.dtype), got=repr(datatype))
    if (dtype == "string") != (tensor.dtype == "string"):
        raise InputError(name, "wrong datatype", expected=v2_datatype(tensor.dtype), got=datatype)
    count = int(np.prod(shape))
    parameters = entry.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None:
        chunk = binary[offset : offset + int(size)]
        if len(chunk) != int(size):
            raise ProtocolError(
                f"input {name!r} claims {size} bytes of binary data but only {len(chunk)} remain"
            )
        array = _from_binary(name, chunk, dtype, count)
        offset += int(size)
    elif "data" in entry:
        array = _from_json(name, entry["data"], dtype)
    else:
        raise ProtocolError(f"input {name!r} has neither data nor parameters.binary_data_size")
    if array.size != count:
        raise InputError(name, f"shape {shape} holds {count} values but the data has {array.size}")
    return tensor, array.reshape(shape), offset


def _from_json(name: str, data: Any, dtype: str) -> np.ndarray:
    if dtype == "string":
        return np.asarray(data, dtype=object).reshape(-1)
    try:
        return np.asarray(data, dtype=numpy_dtype(dtype)).reshape(-1)
    except (ValueError, TypeError):
        raise InputError(name, "data does not match its datatype", expected=f"{dtype} numbers") from None


def _from_binary(name: str, chunk: bytes, dtype: str, count: int) -> np.ndarray:
    if dtype != "string":
        item = numpy_dtype(dtype).newbyteorder("<")
        if len(chunk) != count * item.itemsize:
            raise InputError(name, f"{len(chunk)} bytes of binary data do not hold {count} {dtype} values")
        return np.frombuffer(chunk, dtype=item).astype(numpy_dtype(dtype), copy=False)
    values: list[str] = []
    position = 0
    while position < len(chunk):
        if position + 4 > len(chunk):
            raise InputError(name, "truncated BYTES element length")
        (length,) = struct.unpack_from("<I", chunk, position)
        position += 4
        values.append(chunk[position : position + length].decode("utf-8", errors="replace"))
        position += length
    return np.asarray(values, dtype=object)


def _requested_outputs(header: dict[str, Any], signature: Signature) -> tuple[list[str], set[str]]:
    parameters = header.get("parameters") or {}
    all_binary = bool(parameters.get("binary_data_output", False)) if isinstance(parameters, dict) else False
    available = [t.name for t in signature.outputs]
    requested = header.get("outputs")
    if not requested:
        return available, set(available) if all_binary else set()
    names: list[str] = []
    binary: set[str] = set()
    for entry in requested:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in available:
            raise InputError(str(name), "unknown output", expected=f"one of {available}")
        names.append(name)
        wants = (entry.get("parameters") or {}).get("binary_data", all_binary)
        if wants:
            binary.add(name)
    return names, binary


def encode_response(
    model: str, request: InferRequest, outputs: Batch, signature: Signature
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    specs = {t.name: t for t in signature.outputs}
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name in request.outputs:
        array = np.asarray(outputs[name])
        entry: dict[str, Any] = {
            "name": name,
            "datatype": v2_datatype(specs[name].dtype),
            "shape": list(array.shape),
        }
        if name in request.binary_outputs:
            chunk = _to_binary(array, specs[name].dtype)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = (
                array.reshape(-1).tolist()
                if array.dtype == object
                else np.ascontiguousarray(array).reshape(-1)
            )
        entries.append(entry)
    body: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": entries}
    if request.id is not None:
        body["id"] = request.id
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _to_binary(array: np.ndarray, dtype: str) -> bytes:
    if dtype == "string":
        parts = []
        for value in array.reshape(-1):
            raw = value if isinstance(value, bytes) else str(value).encode()
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=numpy_dtype(dtype).newbyteorder("<")).tobytes()
