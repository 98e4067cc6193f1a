"""Every Open Inference Protocol datatype round-trips through /v2 infer, as JSON and as binary tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpod.server.protocols.v2.codec import _to_binary, decode_request, encode_response
from modelpod.signature import DTYPE_NAMES, Signature, TensorSpec, numpy_dtype, v2_datatype


def signature_for(dtype: str) -> Signature:
    return Signature(
        inputs=(TensorSpec(name="x", dtype=dtype, shape=(3,)),),
        outputs=(TensorSpec(name="y", dtype=dtype, shape=(3,)),),
    )


def sample(dtype: str) -> np.ndarray:
    if dtype == "string":
        return np.array([["a", "bé", ""], ["ccc", "d", "e"]], dtype=object)
    if dtype == "bool":
        return np.array([[True, False, True], [False, False, True]])
    info = np.finfo(numpy_dtype(dtype)) if dtype.startswith("float") else np.iinfo(numpy_dtype(dtype))
    return np.array([[info.min, 0, info.max], [1, 2, 3]], dtype=numpy_dtype(dtype))


def test_all_v2_datatypes_are_covered():
    assert sorted(v2_datatype(d) for d in DTYPE_NAMES) == sorted(
        [
            "BOOL",
            "INT8",
            "INT16",
            "INT32",
            "INT64",
            "UINT8",
            "UINT16",
            "UINT32",
            "UINT64",
            "FP16",
            "FP32",
            "FP64",
            "BYTES",
        ]
    )


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_round_trip(dtype: str, binary: bool):
    signature = signature_for(dtype)
    values = sample(dtype)
    entry = {"name": "x", "shape": [2, 3], "datatype": v2_datatype(dtype)}
    if binary:
        raw = _to_binary(values, dtype)
        header = json.dumps(
            {
                "inputs": [{**entry, "parameters": {"binary_data_size": len(raw)}}],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        request = decode_request(header + raw, len(header), signature)
    else:
        data = values.reshape(-1).tolist()
        request = decode_request(json.dumps({"inputs": [{**entry, "data": data}]}).encode(), None, signature)
    decoded = request.inputs["x"]
    assert decoded.dtype == numpy_dtype(dtype)
    assert decoded.tolist() == values.tolist()

    body, json_length = encode_response("m", request, {"y": decoded}, signature)
    if binary:
        assert json_length is not None
        meta = json.loads(body[:json_length])
        echoed = json.dumps({"inputs": [{**entry, "parameters": meta["outputs"][0]["parameters"]}]}).encode()
        again = decode_request(echoed + body[json_length:], len(echoed), signature).inputs["x"]
    else:
        assert json_length is None
        output = json.loads(body)["outputs"][0]
        assert (output["datatype"], output["shape"]) == (v2_datatype(dtype), [2, 3])
        again = np.asarray(output["data"], dtype=numpy_dtype(dtype)).reshape(2, 3)
    assert again.tolist() == values.tolist()
