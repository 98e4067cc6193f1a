"""The one inference path: coerced inputs (batch dimension first) to the model's scheduler and back.

A model that maps a batch to a batch runs under the batcher; a text-generation model under the
generation engine (`state.generate`, set when it starts). What a scheduler or the model raises becomes
its HTTP answer through `api_error`, the one mapping (server/http/errors.py).
"""

from __future__ import annotations

from http import HTTPStatus

from modelpod.errors import ModelpodError
from modelpod.runtimes.base import Batch
from modelpod.server.core import gate
from modelpod.server.core.state import ServerState
from modelpod.server.http.errors import ApiError, api_error
from modelpod.server.http.logs import request_id


async def infer(state: ServerState, inputs: Batch) -> Batch:
    gate.loaded(state)
    gate.check_items(state, len(next(iter(inputs.values()))))
    if state.generate is not None:
        return await state.generate(inputs)
    if state.batcher is None:
        raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, f"model {state.name} is {state.health.now.value}")
    try:
        return await state.batcher.submit(inputs, timeout=state.spec.server.request_timeout_s)
    except ModelpodError as exc:
        raise api_error(exc, request_id=request_id.get()) from None
