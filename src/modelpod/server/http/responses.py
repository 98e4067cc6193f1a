"""JSON bodies: orjson with numpy arrays serialised natively, and the two error shapes.

Errors are `{"error": "..."}`, except on the OpenAI-compatible routes, which answer OpenAI's shape so
that its SDKs turn it into the exception message.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def json_body(content: Any) -> bytes:
    return orjson.dumps(content, option=_OPTIONS)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_body(content)


def error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"error": message})


def openai_error_body(status: int, message: str) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(status, message), status, headers=headers, media_type="application/json")
