"""The server's health, an explicit state machine changed only through `HealthState.move_to`:

    STARTING --load ok--> READY --SIGTERM--> DRAINING --drained--> STOPPED
        ├--load fails--> FAILED      └--an external engine dies--> FAILED
        └--stopped while loading (in process)--> DRAINING

Liveness answers 200 in STARTING, READY and DRAINING; readiness only in READY.
"""

from __future__ import annotations

import enum


class Health(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


# the states each state may move to; a move to the state it is in already changes nothing, any other is
# a bug (FAILED and STOPPED are final)
_NEXT: dict[Health, frozenset[Health]] = {
    Health.STARTING: frozenset({Health.READY, Health.FAILED, Health.DRAINING}),
    Health.READY: frozenset({Health.DRAINING, Health.FAILED}),
    Health.DRAINING: frozenset({Health.STOPPED}),
    Health.STOPPED: frozenset(),
    Health.FAILED: frozenset(),
}


class HealthState:
    def __init__(self) -> None:
        self._now = Health.STARTING

    @property
    def now(self) -> Health:
        return self._now

    def move_to(self, health: Health) -> None:
        """Move to `health`; a move the state machine does not have (module docstring) is a bug."""
        if health is self._now:
            return
        if health not in _NEXT[self._now]:
            raise RuntimeError(f"server health cannot go from {self._now.value} to {health.value}")
        self._now = health

    @property
    def live(self) -> bool:
        return self._now in (Health.STARTING, Health.READY, Health.DRAINING)

    @property
    def ready(self) -> bool:
        return self._now is Health.READY
