"""`GET /openapi.json` generated from the model signature, and `GET /docs`, a self-contained page.

The schema describes what the server accepts: per-input nested arrays with their sizes and element
types and ranges, the item cap, so generated clients and fuzzers (schemathesis, whose run against the
digits server is part of the tests) exercise real inputs, and what the schema admits the server takes.
One place is deliberately narrower than the server: a v2 request is described as one item of JSON data
(shape `[1, ...]`, flat data), because JSON Schema cannot tie the data's length to the shape; the server
also takes up to `max_request_items` items, nested data and the binary tensor extension. /docs loads no
third-party script, so it works where the server has no internet.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from modelpod import __version__, contract
from modelpod.server.core import gate
from modelpod.server.core.state import ServerState
from modelpod.server.protocols.openai.embeddings import embedding_io, model_task
from modelpod.server.protocols.v2.codec import MAX_ID_CHARS
from modelpod.signature import DTYPE_NAMES, Signature, TensorSpec, numpy_dtype, v2_datatype

_ERROR = {"$ref": "#/components/schemas/Error"}
V2_DATATYPES = [v2_datatype(d) for d in DTYPE_NAMES]


def tensor_schema(tensor: TensorSpec) -> dict[str, Any]:
    """JSON schema of one item of `tensor`: nested arrays of its per-item shape."""
    schema = _element_schema(tensor.dtype)
    for dim in reversed(tensor.shape):
        schema = {"type": "array", "items": schema}
        if dim != -1:
            schema.update(minItems=dim, maxItems=dim)
    if tensor.description:
        schema["description"] = tensor.description
    return schema


def _element_schema(dtype: str) -> dict[str, Any]:
    if dtype == "string":
        return {"type": "string"}
    if dtype == "bool":
        return {"type": "boolean"}
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(numpy_dtype(dtype))
        return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max)}
    if dtype == "float64":
        return {"type": "number"}
    limit = float(np.finfo(numpy_dtype(dtype)).max)  # beyond it, 422 (signature.array_from_json)
    return {"type": "number", "minimum": -limit, "maximum": limit}


def _v2_input_schema(tensor: TensorSpec) -> dict[str, Any]:
    """One v2 input entry, as one item of JSON data (the module docstring says why)."""
    datatypes = ["BYTES"] if tensor.dtype == "string" else [d for d in V2_DATATYPES if d != "BYTES"]
    shape: dict[str, Any] = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    data: dict[str, Any] = {"type": "array", "items": _element_schema(tensor.dtype)}
    if -1 not in tensor.shape:
        dims = [1, *tensor.shape]
        shape = {"type": "array", "prefixItems": [{"const": d} for d in dims], "minItems": len(dims)}
        shape["maxItems"] = len(dims)
        size = math.prod(tensor.shape)
        data.update(minItems=size, maxItems=size)
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "const": tensor.name},
            "shape": shape,
            "datatype": {"type": "string", "enum": datatypes},
            "data": data,
            # binary tensors are not described: their bytes follow the JSON, outside any schema
            "parameters": {"type": ["object", "null"], "properties": {"binary_data_size": {"type": "null"}}},
        },
    }


def build_openapi(
    name: str,
    signature: Signature,
    *,
    max_items: int | None = None,
    generation: bool = False,
    task: str | None = None,
) -> dict[str, Any]:
    inputs = {
        "type": "object",
        "properties": {t.name: tensor_schema(t) for t in signature.inputs},
        "required": [t.name for t in signature.inputs],
        "additionalProperties": False,
    }
    outputs = {"type": "object", "properties": {t.name: tensor_schema(t) for t in signature.outputs}}
    name_parameter = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [name]},
    }
    paths: dict[str, Any] = {
        "/predict": {
            "post": {
                "summary": f"Predict with {name}",
                "operationId": "predict",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
                    },
                },
                "responses": {
                    "200": {
                        "description": "Outputs",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/PredictResponse"}}
                        },
                    },
                    **_error_responses(400, 401, 413, 422, 500, 503, 504),
                },
            }
        },
        "/v2/models/{name}/infer": {
            "post": {
                "summary": "Open Inference Protocol v2 inference (JSON or binary tensor extension)",
                "operationId": "v2_infer",
                "parameters": [name_parameter],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}}
                    },
                },
                "responses": {
                    "200": {"description": "Outputs"},
                    **_error_responses(400, 401, 404, 413, 422, 500, 503, 504),
                },
            }
        },
        "/v2/models/{name}": {
            "get": {
                "summary": "Model metadata",
                "operationId": "v2_model_metadata",
                "parameters": [name_parameter],
                "responses": {"200": {"description": "Metadata"}, **_error_responses(404, 503)},
            }
        },
        "/v2/models/{name}/ready": {
            "get": {
                "summary": "Model readiness",
                "operationId": "v2_model_ready",
                "parameters": [name_parameter],
                "responses": {"200": {"description": "Ready"}, **_error_responses(404, 503)},
            }
        },
        "/v2/health/live": {
            "get": {
                "summary": "Liveness",
                "operationId": "live",
                "responses": {"200": {"description": "Live"}, "503": {"description": "Failed"}},
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "Readiness",
                "operationId": "ready",
                "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
            }
        },
        "/v2": {
            "get": {
                "summary": "Server metadata",
                "operationId": "v2_server_metadata",
                "responses": {"200": {"description": "Metadata"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {"200": {"description": "Metrics", "content": {"text/plain": {}}}},
            }
        },
        "/v1/models": {
            "get": {
                "summary": "OpenAI-compatible list of the models served (this one)",
                "operationId": "models",
                "responses": {"200": {"description": "The model"}},
            }
        },
    }
    for route in ("", "/ready", "/infer"):  # each v2 model route also takes the one version, "1"
        paths[f"/v2/models/{{name}}/versions/{{version}}{route}"] = _versioned(
            paths[f"/v2/models/{{name}}{route}"]
        )
    if embedding_io(signature, task) is not None:
        paths["/v1/embeddings"] = {
            "post": {
                "summary": "OpenAI-compatible embeddings",
                "operationId": "embeddings",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingsRequest"}}
                    },
                },
                "responses": {
                    "200": {"description": "Embeddings"},
                    **_error_responses(400, 401, 404, 413, 500, 503, 504),
                },
            }
        }
    if generation:
        paths |= _generation_paths()
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{name} (modelpod)", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {
                "Inputs": inputs,
                "Outputs": outputs,
                "PredictRequest": {
                    # anyOf: a body with both keys is served from "inputs"
                    "anyOf": [
                        {
                            "type": "object",
                            "properties": {"inputs": {"$ref": "#/components/schemas/Inputs"}},
                            "required": ["inputs"],
                        },
                        {
                            "type": "object",
                            "properties": {
                                "instances": {
                                    "type": "array",
                                    "minItems": 1,
                                    **({"maxItems": max_items} if max_items is not None else {}),
                                    "items": {"$ref": "#/components/schemas/Inputs"},
                                }
                            },
                            "required": ["instances"],
                        },
                    ]
                },
                "PredictResponse": {
                    "type": "object",
                    "properties": {
                        "outputs": {"$ref": "#/components/schemas/Outputs"},
                        "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Outputs"}},
                    },
                },
                "V2InferRequest": {
                    "type": "object",
                    "required": ["inputs"],
                    "description": "One item of JSON data per input. The server also takes a batch "
                    "(shape [n, ...] with as many values), nested data and binary tensors.",
                    "properties": {
                        "id": {"type": ["string", "null"], "maxLength": MAX_ID_CHARS},
                        "inputs": {
                            "type": "array",
                            "prefixItems": [_v2_input_schema(t) for t in signature.inputs],
                            "minItems": len(signature.inputs),
                            "maxItems": len(signature.inputs),
                        },
                        "outputs": {
                            "type": ["array", "null"],
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "enum": [t.name for t in signature.outputs]},
                                    "parameters": {
                                        "type": ["object", "null"],
                                        "properties": {"binary_data": {"type": "boolean"}},
                                    },
                                },
                            },
                        },
                        "parameters": {  # null is taken as absent, here and for the others
                            "type": ["object", "null"],
                            "properties": {"binary_data_output": {"type": "boolean"}},
                        },
                    },
                },
                "EmbeddingsRequest": {
                    "type": "object",
                    "required": ["input"],
                    "properties": {
                        "input": {
                            "oneOf": [
                                {"type": "string"},
                                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                            ]
                        },
                        "model": {"type": "string", "enum": [name]},
                        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                    },
                },
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {}}},
            }
        },
    }


_GENERATION_FIELDS: dict[str, Any] = {
    "model": {"type": "string"},
    "max_tokens": {"type": "integer", "minimum": 1},
    "max_completion_tokens": {"type": "integer", "minimum": 1},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "seed": {"type": "integer"},
    "n": {"type": "integer", "const": 1},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "ignore_eos": {"type": "boolean", "description": "vLLM's extension: generate max_tokens tokens"},
}


def _versioned(item: dict[str, Any]) -> dict[str, Any]:
    """A v2 model route's description for its `/versions/{version}` form."""
    operations = {}
    for method, operation in item.items():
        version = {
            "name": "version",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": ["1"]},
        }
        parameters = [*operation["parameters"], version]
        operations[method] = {
            **operation,
            "operationId": f"{operation['operationId']}_version",
            "parameters": parameters,
        }
    return operations


def _generation_paths() -> dict[str, Any]:
    """OpenAI's chat and completions endpoints of a text-generation model (server/protocols/openai/)."""
    message = {
        "type": "object",
        "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
        "required": ["role", "content"],
    }
    bodies: dict[str, tuple[str, dict[str, Any], list[str]]] = {
        "/v1/chat/completions": (
            "chat",
            {"messages": {"type": "array", "items": message, "minItems": 1}},
            ["messages"],
        ),
        "/v1/completions": (
            "completions",
            {"prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}]}},
            ["prompt"],
        ),
    }
    return {
        path: {
            "post": {
                "summary": f"OpenAI-compatible {kind}; server-sent events with stream: true",
                "operationId": kind,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {**fields, **_GENERATION_FIELDS},
                                "required": required,
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The completion, or its stream",
                        "content": {"text/event-stream": {}},
                    },
                    **_error_responses(400, 401, 404, 413, 500, 503, 504),
                },
            }
        }
        for path, (kind, fields, required) in bodies.items()
    }


def _error_responses(*codes: int) -> dict[str, Any]:
    return {
        str(code): {"description": "Error", "content": {"application/json": {"schema": _ERROR}}}
        for code in codes
    }


def routes(state: ServerState) -> list[Route]:
    cache: dict[str, bytes] = {}

    async def openapi(request: Request) -> Response:
        predictor = gate.loaded(state)
        if "json" not in cache:
            document = build_openapi(
                state.name,
                predictor.signature,
                max_items=state.limits.max_items,
                generation=state.engine is not None,
                task=model_task(predictor.runtime, state.spec.model.options),
            )
            cache["json"] = orjson.dumps(document)
        return Response(cache["json"], media_type="application/json")

    async def docs(request: Request) -> Response:
        predictor = gate.loaded(state)
        return HTMLResponse(render_docs(state.name, predictor.signature))

    return [Route(contract.OPENAPI, openapi), Route(contract.DOCS, docs)]


def render_docs(name: str, signature: Signature) -> str:
    def rows(tensors: tuple[TensorSpec, ...]) -> str:
        return "".join(
            f"<tr><td><code>{html.escape(t.name)}</code></td><td>{html.escape(t.describe())}</td>"
            f"<td>{html.escape(t.description or '')}</td></tr>"
            for t in tensors
        )

    example = {t.name: f"<{t.describe()}>" for t in signature.inputs}
    body = html.escape(orjson.dumps({"inputs": example}).decode())
    title = html.escape(name)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - modelpod</title>
<style>body{{font-family:sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}
code,pre{{background:#f4f4f4}}pre{{padding:.6rem;overflow-x:auto}}</style></head><body>
<h1>{title}</h1>
<p>Served by modelpod {html.escape(__version__)}.
Machine-readable: <a href="openapi.json">openapi.json</a>.</p>
<h2>Inputs</h2><table><tr><th>name</th><th>type</th><th>description</th></tr>{rows(signature.inputs)}</table>
<h2>Outputs</h2><table><tr><th>name</th><th>type</th><th>description</th></tr>{rows(signature.outputs)}</table>
<h2>Endpoints</h2>
<ul>
<li><code>POST /predict</code> with <code>{body}</code>,
or <code>{{"instances": [...]}}</code> for several</li>
<li><code>POST /v2/models/{title}/infer</code>: Open Inference Protocol v2 (JSON or binary tensors)</li>
<li><code>GET /v2/health/live</code>, <code>GET /v2/health/ready</code>,
<code>GET /v2/models/{title}</code></li>
<li><code>GET /metrics</code>: Prometheus</li>
</ul>
<h2>Try it</h2>
<pre>curl -s -X POST -H 'content-type: application/json' -d '{body}' http://HOST:PORT/predict</pre>
</body></html>
"""
