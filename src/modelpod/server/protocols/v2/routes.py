"""Open Inference Protocol v2 routes: health, server and model metadata, model readiness, infer.

Model routes accept the optional `/versions/{version}` segment; the one version served is "1". Infer is
an `InferenceRoute` on the direct path of server/http/asgi.py; the others are Starlette routes.
"""

from __future__ import annotations

from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelpod import __version__, contract
from modelpod.server.core import dispatch, gate
from modelpod.server.core.state import ServerState
from modelpod.server.http.asgi import Call, InferenceRoute, Reply
from modelpod.server.http.errors import ApiError
from modelpod.server.http.limits import off_loop
from modelpod.server.http.responses import JSONResponse
from modelpod.server.protocols.v2.codec import (
    HEADER_LENGTH,
    InferRequest,
    decode_request,
    encode_response,
)
from modelpod.signature import v2_datatype

EXTENSIONS = ["binary_tensor_data"]


def routes(state: ServerState) -> list[Route]:
    async def live(request: Request) -> Response:
        return JSONResponse({"live": state.health.live}, 200 if state.health.live else 503)

    async def ready(request: Request) -> Response:
        return JSONResponse(
            {"ready": state.health.ready, "state": state.health.now.value}, 200 if state.health.ready else 503
        )

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "modelpod", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(request: Request) -> Response:
        gate.check_model(state, request.path_params["name"])
        predictor = gate.loaded(state)
        signature = predictor.signature
        return JSONResponse(
            {
                "name": state.name,
                "versions": ["1"],
                "platform": f"modelpod_{state.spec.model.format}",
                "inputs": [
                    {"name": t.name, "datatype": v2_datatype(t.dtype), "shape": t.v2_shape()}
                    for t in signature.inputs
                ],
                "outputs": [
                    {"name": t.name, "datatype": v2_datatype(t.dtype), "shape": t.v2_shape()}
                    for t in signature.outputs
                ],
            }
        )

    async def model_ready(request: Request) -> Response:
        gate.check_model(state, request.path_params["name"])
        return JSONResponse(
            {"name": state.name, "ready": state.health.ready}, 200 if state.health.ready else 503
        )

    model = contract.MODEL
    versioned = "/v2/models/{name}/versions/{version}"
    return [
        Route(contract.LIVE, live),
        Route(contract.READY, ready),
        Route(contract.SERVER_METADATA, server_metadata),
        Route(model, model_metadata),
        Route(versioned, model_metadata),
        Route(f"{model}/ready", model_ready),
        Route(f"{versioned}/ready", model_ready),
    ]


def inference_routes(state: ServerState) -> list[InferenceRoute]:
    """v2 infer, served on the direct path (see server/http/asgi.py)."""

    async def infer(call: Call) -> Reply:
        gate.check_model(state, call.params["name"])
        predictor = gate.loaded(state)
        header_length = call.headers.get(HEADER_LENGTH)
        if header_length is not None and not header_length.isdigit():
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                f"{HEADER_LENGTH} must be a whole number of bytes, not {header_length!r}",
            )
        json_length = int(header_length) if header_length else None
        limits = state.limits

        def decode() -> InferRequest:
            limits.check_json_values(call.body, json_length)  # before parsing (server/http/limits.py)
            return decode_request(call.body, json_length, predictor.signature, max_items=limits.max_items)

        # a ProtocolError (400), InputError (422) or TooLarge (413) is answered by ServerApp
        decoded = await off_loop(len(call.body), decode)
        outputs = await dispatch.infer(state, decoded.inputs)
        payload, json_length = encode_response(state.name, decoded, outputs, predictor.signature)
        if json_length is None:
            return Reply(payload)
        return Reply(
            payload,
            content_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_length)},
        )

    return [
        InferenceRoute(contract.INFER, infer),
        InferenceRoute("/v2/models/{name}/versions/{version}/infer", infer),
    ]
