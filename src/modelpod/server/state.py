"""Server state shared by every route: health, the model, the batcher, metrics; and the one inference path.

Health is an explicit state machine, changed only through `ServerState.set_health`:

    STARTING --load ok--> READY --SIGTERM--> DRAINING --drained--> STOPPED
        ├--load fails--> FAILED
        └--stopped while loading (in process)--> DRAINING

Liveness answers 200 in STARTING, READY and DRAINING; readiness only in READY.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

import orjson

from modelpod.errors import InferenceError, InputError
from modelpod.predictor import Predictor
from modelpod.runtimes.base import Batch
from modelpod.server.batcher import Batcher, DeadlineError, DrainingError, QueueFullError
from modelpod.server.body_watch import BodyWatch
from modelpod.server.generation.engine import GenerationEngine
from modelpod.server.limits import RequestLimits, TooLarge
from modelpod.server.logs import request_id
from modelpod.server.metrics import Metrics
from modelpod.spec.resolved import Spec


class Health(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


# the states each state may move to; a move to the state it is in already changes nothing, any other is
# a bug (FAILED and STOPPED are final)
_NEXT_HEALTH: dict[Health, frozenset[Health]] = {
    Health.STARTING: frozenset({Health.READY, Health.FAILED, Health.DRAINING}),
    Health.READY: frozenset({Health.DRAINING}),
    Health.DRAINING: frozenset({Health.STOPPED}),
    Health.STOPPED: frozenset(),
    Health.FAILED: frozenset(),
}


class ApiError(Exception):
    """An error answered as JSON `{"error": message}` with `status` (and optional headers)."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class ServerState:
    def __init__(self, spec: Spec, *, auth_token: str | None) -> None:
        self.spec = spec
        self.name = spec.name
        self._health = Health.STARTING
        self.metrics = Metrics(spec.name, spec.server.max_batch_size)
        self.predictor: Predictor | None = None
        self.batcher: Batcher | None = None
        # a text-generation model runs under the engine instead of the batcher (server/generation/)
        self.engine: GenerationEngine | None = None
        self.engine_stopped: asyncio.Future[None] | None = None  # the engine's loop, done when it ends
        self.generate: Callable[[Batch], Awaitable[Batch]] | None = None  # /predict and v2 through it
        self.auth_token = auth_token
        self.started_at = int(time.time())
        self.failure: str | None = None
        self.inflight = 0  # HTTP requests being handled, kept by ServerApp; the drain waits for 0
        self._idle: asyncio.Event | None = None  # set when `working()` reaches 0 while the drain waits
        self.limits = RequestLimits.for_spec(spec)  # with the JSON value bound once the model is loaded
        # requests still receiving their body (counted in `inflight` by ServerApp): they are not yet in
        # flight for the gauge, nor for the drain (server/body_watch.py)
        self.bodies = BodyWatch(spec.server.body_timeout_s)
        # read at scrape time: a gauge's inc and dec take a lock each, twice per request
        self.metrics.inflight_now.set_function(self.working)

    @property
    def health(self) -> Health:
        return self._health

    def set_health(self, health: Health) -> None:
        """Move to `health`; a move the state machine does not have (module docstring) is a bug."""
        if health is self._health:
            return
        if health not in _NEXT_HEALTH[self._health]:
            raise RuntimeError(f"server health cannot go from {self._health.value} to {health.value}")
        self._health = health

    def working(self) -> int:
        """Requests in flight whose body has arrived: what the drain waits for and the gauge shows."""
        return self.inflight - len(self.bodies)

    def request_finished(self) -> None:
        """One request less in flight (ServerApp counts them); wakes the drain when none is left."""
        self.inflight -= 1
        if self._idle is not None and self.working() <= 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until no request is working; True when none is.

        Only a request's end can bring `working()` to 0 (a request that starts adds one in flight before
        its body is counted as arriving), so `request_finished` is the one place that wakes this."""
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._wait_no_work(self._idle), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._idle = None
        return self.working() <= 0

    async def _wait_no_work(self, idle: asyncio.Event) -> None:
        while self.working() > 0:
            idle.clear()
            await idle.wait()

    @property
    def live(self) -> bool:
        return self.health in (Health.STARTING, Health.READY, Health.DRAINING)

    @property
    def ready(self) -> bool:
        return self.health is Health.READY

    def loaded(self) -> Predictor:
        """The predictor, or 503 while the model is not ready to take requests."""
        if self.health is not Health.READY or self.predictor is None:
            retry = {"Retry-After": "1"} if self.health is Health.STARTING else {"Connection": "close"}
            self.metrics.reject("not_ready")
            raise ApiError(503, f"model {self.name} is {self.health.value}", headers=retry)
        return self.predictor

    def check_model(self, name: str) -> None:
        if name != self.name:
            raise ApiError(404, f"model {name!r} not found; this server serves {self.name!r}")

    def check_auth(self, authorization: str | None) -> None:
        if self.auth_token is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        # as bytes: compare_digest refuses str with non-ASCII characters (a header may hold any byte)
        given = token.strip().encode("latin-1", errors="replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.auth_token.encode()):
            self.metrics.reject("unauthorized")
            raise ApiError(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def check_items(self, items: int) -> None:
        """413 for more items than one request may carry (server.max_request_items), 422 for none."""
        if items > self.limits.max_items:
            self.too_large(
                TooLarge(
                    f"the request has {items} items; this server takes at most {self.limits.max_items} "
                    "in one request (server.max_request_items): split it into several requests"
                )
            )
        if items == 0:
            raise ApiError(422, "the request has no items; send at least one")

    def parse_json(self, body: bytes | bytearray) -> Any:
        """A request body's JSON: 413 when it holds more values than the item cap allows (counted before
        parsing, server/limits.py), 400 when it is not JSON."""
        try:
            self.limits.check_json_values(body)
        except TooLarge as exc:
            self.too_large(exc)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"body is not valid JSON: {exc}") from None

    def too_large(self, exc: TooLarge) -> NoReturn:
        self.metrics.reject("too_many_items")
        raise ApiError(413, str(exc)) from None

    async def infer(self, inputs: Batch) -> Batch:
        """Run coerced inputs (batch dimension first) through the batcher; failures become ApiErrors."""
        self.loaded()
        self.check_items(len(next(iter(inputs.values()))))
        if self.generate is not None:
            return await self.generate(inputs)
        if self.batcher is None:
            raise ApiError(503, f"model {self.name} is {self.health.value}")
        try:
            return await self.batcher.submit(inputs, timeout=self.spec.server.request_timeout_s)
        except QueueFullError as exc:
            self.metrics.reject("queue_full")
            raise ApiError(503, str(exc), headers={"Retry-After": "1"}) from None
        except DeadlineError as exc:
            self.metrics.reject("deadline")
            raise ApiError(504, str(exc)) from None
        except DrainingError as exc:
            self.metrics.reject("draining")
            raise ApiError(503, str(exc), headers={"Connection": "close"}) from None
        except InputError as exc:
            raise ApiError(422, str(exc)) from None
        except InferenceError as exc:
            raise ApiError(500, f"{exc} (request id {request_id.get()})") from None


def coerce_or_422(predictor: Predictor, values: Mapping[str, object], *, batched: bool) -> Batch:
    try:
        return predictor.signature.coerce_inputs(dict(values), batched=batched)
    except InputError as exc:
        raise ApiError(422, str(exc)) from None
