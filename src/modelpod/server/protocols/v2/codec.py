"""Open Inference Protocol v2 (KServe / Triton) request decoding and response encoding.

JSON bodies and the binary tensor data extension: with the `Inference-Header-Content-Length` header,
the body is a JSON header of that many bytes followed by raw tensors, each input naming its
`binary_data_size`. Raw tensors are little-endian, row-major; BYTES elements are each a 4-byte
little-endian length and the bytes. Outputs go back as binary when the request asks for it per output
(`parameters.binary_data`) or for all (`parameters.binary_data_output`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelpod.errors import InputError
from modelpod.runtimes.base import Batch
from modelpod.server.http.errors import ProtocolError, TooLarge
from modelpod.signature import (
    Signature,
    TensorSpec,
    array_from_json,
    dtype_from_v2,
    numpy_dtype,
    v2_datatype,
)

HEADER_LENGTH = "inference-header-content-length"
MAX_ID_CHARS = 1024


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: Batch
    outputs: list[str]
    binary_outputs: set[str]


def decode_request(
    body: bytes | bytearray | memoryview,
    header_length: int | None,
    signature: Signature,
    *,
    max_items: int | None = None,
) -> InferRequest:
    """Decode and check a request. Raises ProtocolError (400) for a malformed request, naming the field,
    InputError (422) for inputs that do not fit the signature, and TooLarge (413) for more items
    than `max_items`, found from the declared shape before the data is converted."""
    view = memoryview(body)
    if header_length is not None and header_length > len(view):
        raise ProtocolError(f"{HEADER_LENGTH} is {header_length} but the body holds only {len(view)} bytes")
    json_part = view if header_length is None else view[:header_length]
    binary = view[len(view) :] if header_length is None else view[header_length:]
    try:
        header = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"body is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise ProtocolError(
            'expected a JSON object with "inputs": [{"name", "shape", "datatype", "data"}, ...]'
        )
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"id must be a string, not {_kind(request_id)}")
    if request_id is not None and len(request_id) > MAX_ID_CHARS:
        # it is echoed in the answer: a long one would double what the request costs
        raise ProtocolError(f"id must be at most {MAX_ID_CHARS} characters, not {len(request_id)}")
    _object_or_none(header.get("parameters"), "parameters")
    known = {t.name: t for t in signature.inputs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for index, entry in enumerate(header["inputs"]):
        tensor, array, offset = _decode_input(index, entry, known, binary, offset, max_items)
        if tensor.name in arrays:
            raise ProtocolError(f"inputs[{index}]: input {tensor.name!r} is given twice")
        arrays[tensor.name] = array
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    inputs = signature.coerce_inputs(arrays, batched=True)
    outputs, binary_outputs = _requested_outputs(header, signature)
    return InferRequest(request_id, inputs, outputs, binary_outputs)


def _decode_input(
    index: int,
    entry: Any,
    known: dict[str, TensorSpec],
    binary: memoryview,
    offset: int,
    max_items: int | None,
) -> tuple[TensorSpec, np.ndarray, int]:
    where = f"inputs[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ProtocolError(f'{where}: each input needs "name", "shape", "datatype" and "data"')
    name = entry["name"]
    tensor = known.get(name)
    if tensor is None:
        raise InputError(name, "unknown input", expected=f"one of {sorted(known)}")
    shape = entry.get("shape")
    # bool is a subclass of int, and `true` is no dimension
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        text = repr(shape)
        raise InputError(
            name,
            "bad shape",
            expected="a list of non-negative integers with the batch size first",
            got=text if len(text) <= 80 else f"{text[:80]}...",
        )
    if shape[0] == 0:
        raise InputError(name, "no items", expected="a batch of at least one item", got=f"shape {shape}")
    if max_items is not None and shape[0] > max_items:
        raise TooLarge(
            f"input {name!r} has {shape[0]} items; this server takes at most {max_items} in one request "
            "(server.max_request_items): split it into several requests"
        )
    datatype = entry.get("datatype")
    dtype = dtype_from_v2(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InputError(name, "unknown datatype", expected=v2_datatype(tensor.dtype), got=repr(datatype))
    if (dtype == "string") != (tensor.dtype == "string"):
        raise InputError(name, "wrong datatype", expected=v2_datatype(tensor.dtype), got=datatype)
    count = math.prod(shape)
    parameters = _object_or_none(entry.get("parameters"), f"{where}.parameters") or {}
    size = parameters.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise ProtocolError(
                f"{where}.parameters.binary_data_size must be a whole number of bytes, not {size!r}"
            )
        chunk = binary[offset : offset + size]
        if len(chunk) != size:
            raise ProtocolError(
                f"input {name!r} claims {size} bytes of binary data but only {len(chunk)} remain"
            )
        array = _from_binary(name, chunk, dtype, count)
        offset += size
    elif "data" in entry:
        # JSON numbers are converted to the model's dtype, strictly; the declared numeric datatype is
        # only how the client thinks of them (raw bytes, above, are read as declared)
        array = array_from_json(name, entry["data"], tensor.dtype).reshape(-1)
    else:
        raise ProtocolError(f"input {name!r} has neither data nor parameters.binary_data_size")
    if array.size != count:
        raise InputError(name, f"shape {shape} holds {count} values but the data has {array.size}")
    return tensor, array.reshape(shape), offset


def _object_or_none(value: Any, where: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise ProtocolError(f"{where} must be an object, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}
    return names.get(type(value), type(value).__name__)


def _from_binary(name: str, chunk: memoryview, dtype: str, count: int) -> np.ndarray:
    if dtype != "string":
        item = numpy_dtype(dtype).newbyteorder("<")
        if len(chunk) != count * item.itemsize:
            raise InputError(name, f"{len(chunk)} bytes of binary data do not hold {count} {dtype} values")
        # NaN and inf pass: raw floats need no conversion, and a model may take NaN for a missing value
        return np.frombuffer(chunk, dtype=item).astype(numpy_dtype(dtype), copy=False)
    values: list[str] = []
    position = 0
    while position < len(chunk):
        if position + 4 > len(chunk):
            raise InputError(name, "truncated BYTES element length")
        (length,) = struct.unpack_from("<I", chunk, position)
        position += 4
        if position + length > len(chunk):
            raise InputError(
                name, f"a BYTES element claims {length} bytes but only {len(chunk) - position} remain"
            )
        values.append(bytes(chunk[position : position + length]).decode("utf-8", errors="replace"))
        position += length
    return np.asarray(values, dtype=object)


def _requested_outputs(header: dict[str, Any], signature: Signature) -> tuple[list[str], set[str]]:
    parameters = header.get("parameters") or {}
    all_binary = _flag(parameters.get("binary_data_output", False), "parameters.binary_data_output")
    available = [t.name for t in signature.outputs]
    requested = header.get("outputs")
    if requested is None or requested == []:
        return available, set(available) if all_binary else set()
    if not isinstance(requested, list):
        raise ProtocolError(f'outputs must be a list of {{"name": ...}} objects, not {_kind(requested)}')
    names: list[str] = []
    binary: set[str] = set()
    for index, entry in enumerate(requested):
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in available:
            raise ProtocolError(
                f"outputs[{index}].name: unknown output {name!r}; expected one of {available}"
            )
        names.append(name)
        wants = _object_or_none(entry.get("parameters"), f"outputs[{index}].parameters") or {}
        if _flag(wants.get("binary_data", all_binary), f"outputs[{index}].parameters.binary_data"):
            binary.add(name)
    return names, binary


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{where} must be true or false, not {value!r}")
    return value


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
