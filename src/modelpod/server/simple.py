"""`POST /predict`: plain JSON for people who do not want tensor protocols.

    {"inputs": {"image": [[...]]}}              -> {"outputs": {"probabilities": [...]}}
    {"instances": [{"image": ...}, {...}]}      -> {"predictions": [{"probabilities": [...]}, ...]}

Values are one item each (no batch dimension). Several instances travel through the batcher as one
request, so they are never split across batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelpod.errors import InputError
from modelpod.runtimes.base import Batch
from modelpod.server.asgi import Call, InferenceRoute, Reply
from modelpod.server.limits import off_loop
from modelpod.server.responses import json_body
from modelpod.server.state import ApiError, ServerState

_SHAPE_HINT = 'expected {"inputs": {name: value}} or {"instances": [{name: value}, ...]}'


def routes(state: ServerState) -> list[InferenceRoute]:
    async def predict(call: Call) -> Reply:
        predictor = state.loaded()

        def decode() -> tuple[Batch, int, bool]:
            body = state.parse_json(call.body)
            items, single = _items(body)
            state.check_items(len(items))
            try:
                coerced = [predictor.signature.coerce_inputs(item, batched=False) for item in items]
            except InputError as exc:
                raise ApiError(422, str(exc) if single else f"instances: {exc}") from None
            if single:  # the common case: a batch of one row, without np.stack's copies
                return {name: array[np.newaxis] for name, array in coerced[0].items()}, 1, True
            batch = {t.name: np.stack([c[t.name] for c in coerced]) for t in predictor.signature.inputs}
            return batch, len(items), False

        batch, count, single = await off_loop(len(call.body), decode)
        outputs = await state.infer(batch)
        rows = [{name: _jsonable(values[i]) for name, values in outputs.items()} for i in range(count)]
        return Reply(json_body({"outputs": rows[0]} if single else {"predictions": rows}))

    return [InferenceRoute("/predict", predict)]


def _items(body: Any) -> tuple[list[dict[str, Any]], bool]:
    if isinstance(body, dict):
        if isinstance(body.get("inputs"), dict):
            return [body["inputs"]], True
        instances = body.get("instances")
        if isinstance(instances, list) and instances and all(isinstance(i, dict) for i in instances):
            return instances, False
    raise ApiError(400, _SHAPE_HINT)


def _jsonable(value: Any) -> Any:
    # orjson writes numeric arrays itself; strings live in object arrays, which it cannot
    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype == object else value
    if isinstance(value, np.generic):
        return value.item()
    return value
