"""JSON responses: orjson with numpy arrays serialised natively, and the error body `{"error": "..."}`."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message), status, headers=headers, media_type="application/json")


def openai_error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """OpenAI's error shape, which its SDKs parse into the exception message."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}})
    return Response(body, status, headers=headers, media_type="application/json")
