"""HTTP errors: `ApiError` is answered as JSON `{"error": message}` (or OpenAI's shape on its routes) with
an `HTTPStatus`; `api_error` maps every other deliberate error the server meets to one, in one place.

An ApiError with a `reason` is a refusal: whoever answers it counts it in
`modelpod_rejected_requests{reason}` (server/http/asgi.py and the Starlette handler in server/app.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from modelpod.errors import InferenceError, InputError, ModelpodError
from modelpod.server.scheduling.errors import (
    BadPromptError,
    DeadlineError,
    DrainingError,
    OverBudgetError,
    QueueFullError,
    UnsupportedFieldError,
)


class ApiError(ModelpodError):
    """An error answered with `status` (and optional headers); `reason`, when set, names the refusal."""

    def __init__(
        self,
        status: HTTPStatus,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})
        self.reason = reason


class TooLarge(ModelpodError):
    """A request over a size limit (items or JSON values): 413."""


class ProtocolError(ModelpodError):
    """A request that breaks its protocol's format (a v2 body with a wrong field, say): 400."""


RETRY_LATER = {"Retry-After": "1"}
CLOSE = {"Connection": "close"}

# error class -> (status, headers, refusal reason); the first class an error is an instance of applies
_STATUS: tuple[tuple[type[ModelpodError], HTTPStatus, Mapping[str, str], str | None], ...] = (
    (QueueFullError, HTTPStatus.SERVICE_UNAVAILABLE, RETRY_LATER, "queue_full"),
    (DeadlineError, HTTPStatus.GATEWAY_TIMEOUT, {}, "deadline"),
    (DrainingError, HTTPStatus.SERVICE_UNAVAILABLE, CLOSE, "draining"),
    (OverBudgetError, HTTPStatus.BAD_REQUEST, {}, None),
    (BadPromptError, HTTPStatus.BAD_REQUEST, {}, None),
    (UnsupportedFieldError, HTTPStatus.BAD_REQUEST, {}, None),
    (TooLarge, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {}, "too_many_items"),
    (ProtocolError, HTTPStatus.BAD_REQUEST, {}, None),
    (InputError, HTTPStatus.UNPROCESSABLE_ENTITY, {}, None),
    (InferenceError, HTTPStatus.INTERNAL_SERVER_ERROR, {}, None),
)


def api_error(exc: ModelpodError, *, request_id: str | None = None) -> ApiError:
    """The answer to `exc`. A server-side failure (500) names the request id, to find it in the logs."""
    if isinstance(exc, ApiError):
        return exc
    for kind, status, headers, reason in _STATUS:
        if isinstance(exc, kind):
            message = str(exc)
            if status is HTTPStatus.INTERNAL_SERVER_ERROR and request_id is not None:
                message = f"{message} (request id {request_id})"
            return ApiError(status, message, headers=headers, reason=reason)
    return ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
