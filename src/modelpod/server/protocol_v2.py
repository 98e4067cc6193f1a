"""Open Inference Protocol v2 routes: health, server and model metadata, model readiness, infer.

Model routes accept the optional `/versions/{version}` segment; the one version served is "1". Infer is
an `InferenceRoute` on the direct path of server/asgi.py; the others are Starlette routes.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelpod import __version__
from modelpod.errors import InputError
from modelpod.server.asgi import Call, InferenceRoute, Reply
from modelpod.server.limits import TooLarge, off_loop
from modelpod.server.responses import JSONResponse
from modelpod.server.state import ApiError, ServerState
from modelpod.server.v2_codec import (
    HEADER_LENGTH,
    InferRequest,
    ProtocolError,
    decode_request,
    encode_response,
)
from modelpod.signature import v2_datatype

EXTENSIONS = ["binary_tensor_data"]


def routes(state: ServerState) -> list[Route]:
    async def live(request: Request) -> Response:
        return JSONResponse({"live": state.live}, 200 if state.live else 503)

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": state.ready, "state": state.health.value}, 200 if state.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "modelpod", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(request: Request) -> Response:
        state.check_model(request.path_params["name"])
        predictor = state.loaded()
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
        state.check_model(request.path_params["name"])
        return JSONResponse({"name": state.name, "ready": state.ready}, 200 if state.ready else 503)

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    return [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route(model, model_metadata),
        Route(versioned, model_metadata),
        Route(f"{model}/ready", model_ready),
        Route(f"{versioned}/ready", model_ready),
    ]


def inference_routes(state: ServerState) -> list[InferenceRoute]:
    """v2 infer, served on the direct path (see server/asgi.py)."""

    async def infer(call: Call) -> Reply:
        state.check_model(call.params["name"])
        predictor = state.loaded()
        header_length = call.headers.get(HEADER_LENGTH)
        if header_length is not None and not header_length.isdigit():
            raise ApiError(400, f"{HEADER_LENGTH} must be a whole number of bytes, not {header_length!r}")
        json_length = int(header_length) if header_length else None
        limits = state.limits

        def decode() -> InferRequest:
            limits.check_json_values(call.body, json_length)  # before parsing (server/limits.py)
            return decode_request(call.body, json_length, predictor.signature, max_items=limits.max_items)

        try:
            decoded = await off_loop(len(call.body), decode)
        except ProtocolError as exc:
            raise ApiError(400, str(exc)) from None
        except InputError as exc:
            raise ApiError(422, str(exc)) from None
        except TooLarge as exc:
            state.too_large(exc)
        outputs = await state.infer(decoded.inputs)
        payload, json_length = encode_response(state.name, decoded, outputs, predictor.signature)
        if json_length is None:
            return Reply(payload)
        return Reply(
            payload,
            content_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_length)},
        )

    return [
        InferenceRoute("/v2/models/{name}/infer", infer),
        InferenceRoute("/v2/models/{name}/versions/{version}/infer", infer),
    ]
