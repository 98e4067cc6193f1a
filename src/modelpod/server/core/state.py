"""What every route shares: the spec, the model and the scheduler that runs it, health, limits, metrics,
the requests in flight and the auth check. It holds them; the checks before an inference are in
`gate.py`, the inference path in `dispatch.py`, the health machine in `health.py`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from modelpod.predictor import Predictor
from modelpod.runtimes.base import Batch
from modelpod.server.core.health import HealthState
from modelpod.server.core.metrics import Metrics
from modelpod.server.http.auth import BearerAuth
from modelpod.server.http.inflight import InFlight
from modelpod.server.http.limits import RequestLimits
from modelpod.server.scheduling.batcher import Batcher
from modelpod.server.scheduling.text_engine import TextEngine
from modelpod.specfile.resolved import Spec


class ServerState:
    def __init__(self, spec: Spec, *, auth: BearerAuth | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.health = HealthState()
        self.metrics = Metrics(spec.name, spec.server.max_batch_size)
        self.auth = auth or BearerAuth(None)
        self.access_log = spec.server.access_log
        self.predictor: Predictor | None = None
        self.batcher: Batcher | None = None
        # a text-generation model runs under an engine instead of the batcher (server/engines/)
        self.engine: TextEngine | None = None
        self.engine_stop: Callable[[], Awaitable[None]] | None = None  # ends the engine at shut-down
        self.generate: Callable[[Batch], Awaitable[Batch]] | None = None  # /predict and v2 through it
        self.started_at = int(time.time())
        self.failure: str | None = None
        self.limits = RequestLimits.for_spec(spec)  # with the JSON value bound once the model is loaded
        self.inflight = InFlight(spec.server.body_timeout_s)
        # read at scrape time: a gauge's inc and dec take a lock each, twice per request
        self.metrics.inflight_now.set_function(self.inflight.working)
