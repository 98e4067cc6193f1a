"""`POST /predict`: plain JSON for people who do not want tensor protocols.

    {"inputs": {"image": [[...]]}}              -> {"outputs": {"probabilities": [...]}}
    {"instances": [{"image": ...}, {...}]}      -> {"predictions": [{"probabilities": [...]}, ...]}

Values are one item each (no batch dimension). Several instances travel through the batcher as one
request, so they are never split across batches.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import numpy as np

from modelpod import contract
from modelpod.errors import InputError
from modelpod.runtimes.base import Batch
from modelpod.server.core import dispatch, gate
from modelpod.server.core.state import ServerState
from modelpod.server.http.asgi import Call, InferenceRoute, Reply
from modelpod.server.http.errors import ApiError
from modelpod.server.http.limits import off_loop
from modelpod.server.http.responses import json_body

_SHAPE_HINT = 'expected {"inputs": {name: value}} or {"instances": [{name: value}, ...]}'


def routes(state: ServerState) -> list[InferenceRoute]:
    async def predict(call: Call) -> Reply:
        predictor = gate.loaded(state)

        def decode() -> tuple[Batch, int, bool]:
            body = gate.parse_json(state, call.body)
            items, single = _items(body)
            gate.check_items(state, len(items))
            try:
                coerced = [predictor.signature.coerce_inputs(item, batched=False) for item in items]
            except InputError as exc:
                raise ApiError(
                    HTTPStatus.UNPROCESSABLE_ENTITY, str(exc) if single else f"instances: {exc}"
                ) from None
            if single:  # the common case: a batch of one row, without np.stack's copies
                return {name: array[np.newaxis] for name, array in coerced[0].items()}, 1, True
            batch = {t.name: np.stack([c[t.name] for c in coerced]) for t in predictor.signature.inputs}
            return batch, len(items), False

        batch, count, single = await off_loop(len(call.body), decode)
        outputs = await dispatch.infer(state, batch)
        rows = [{name: _jsonable(values[i]) for name, values in outputs.items()} for i in range(count)]
        return Reply(json_body({"outputs": rows[0]} if single else {"predictions": rows}))

    return [InferenceRoute(contract.PREDICT, predict)]


def _items(body: Any) -> tuple[list[dict[str, Any]], bool]:
    if isinstance(body, dict):
        if isinstance(body.get("inputs"), dict):
            return [body["inputs"]], True
        instances = body.get("instances")
        if isinstance(instances, list) and instances and all(isinstance(i, dict) for i in instances):
            return instances, False
    raise ApiError(HTTPStatus.BAD_REQUEST, _SHAPE_HINT)


def _jsonable(value: Any) -> Any:
    # orjson writes numeric arrays itself; strings live in object arrays, which it cannot
    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype == object else value
    if isinstance(value, np.generic):
        return value.item()
    return value
