"""The checks an inference request passes before it is dispatched: the model's name (404), its readiness
(503), the number of items (413, 422) and the size of the JSON (413, 400)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson

from modelpod.predictor import Predictor
from modelpod.server.core.health import Health
from modelpod.server.core.state import ServerState
from modelpod.server.http.errors import ApiError, TooLarge, api_error


def loaded(state: ServerState) -> Predictor:
    """The predictor, or 503 while the model is not ready to take requests."""
    health = state.health.now
    if health is not Health.READY or state.predictor is None:
        retry = {"Retry-After": "1"} if health is Health.STARTING else {"Connection": "close"}
        raise ApiError(
            HTTPStatus.SERVICE_UNAVAILABLE, f"model {state.name} is {health.value}", headers=retry,
            reason="not_ready",
        )  # fmt: skip
    return state.predictor


def check_model(state: ServerState, name: str) -> None:
    if name != state.name:
        raise ApiError(HTTPStatus.NOT_FOUND, f"model {name!r} not found; this server serves {state.name!r}")


def check_items(state: ServerState, items: int) -> None:
    """413 for more items than one request may carry (server.max_request_items), 422 for none."""
    limit = state.limits.max_items
    if items > limit:
        raise api_error(
            TooLarge(
                f"the request has {items} items; this server takes at most {limit} in one request "
                "(server.max_request_items): split it into several requests"
            )
        )
    if items == 0:
        raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "the request has no items; send at least one")


def parse_json(state: ServerState, body: bytes | bytearray) -> Any:
    """A request body's JSON: 413 when it holds more values than the item cap allows (counted before
    parsing, server/http/limits.py), 400 when it is not JSON."""
    try:
        state.limits.check_json_values(body)
    except TooLarge as exc:
        raise api_error(exc) from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {exc}") from None
