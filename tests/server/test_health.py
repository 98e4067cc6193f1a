"""Health as a state machine (`HealthState.move_to`) and the drain's wait for requests in flight."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from modelpod.server.core.health import Health, HealthState
from modelpod.server.http.inflight import InFlight

pytestmark = pytest.mark.anyio

# the machine drawn in server/core/health.py's docstring, written out again so that a change to the table
# must be a change to this test too
ALLOWED = {
    (Health.STARTING, Health.READY),
    (Health.STARTING, Health.FAILED),
    (Health.STARTING, Health.DRAINING),
    (Health.READY, Health.DRAINING),
    (Health.READY, Health.FAILED),
    (Health.DRAINING, Health.STOPPED),
}


def health_in(health: Health) -> HealthState:
    state = HealthState()
    path = {
        Health.STARTING: [],
        Health.READY: [Health.READY],
        Health.DRAINING: [Health.READY, Health.DRAINING],
        Health.STOPPED: [Health.READY, Health.DRAINING, Health.STOPPED],
        Health.FAILED: [Health.FAILED],
    }[health]
    for step in path:
        state.move_to(step)
    return state


@pytest.mark.parametrize(("current", "new"), list(itertools.product(Health, Health)))
def test_health_moves_only_along_the_machine(current, new):
    state = health_in(current)
    if current is new or (current, new) in ALLOWED:
        state.move_to(new)
        assert state.now is new
    else:
        with pytest.raises(RuntimeError, match=f"from {current.value} to {new.value}"):
            state.move_to(new)
        assert state.now is current


def test_liveness_and_readiness_follow_health():
    for health in Health:
        state = health_in(health)
        assert state.live is (health in (Health.STARTING, Health.READY, Health.DRAINING))
        assert state.ready is (health is Health.READY)


async def test_the_drain_wakes_when_the_last_request_ends():
    inflight = InFlight(body_timeout_s=30)
    inflight.started()
    inflight.started()
    waiting = asyncio.create_task(inflight.wait_idle(timeout=10))
    await asyncio.sleep(0)
    inflight.finished()
    await asyncio.sleep(0)
    assert not waiting.done()  # one is still in flight
    inflight.finished()
    assert await asyncio.wait_for(waiting, 1) is True


async def test_the_drain_gives_up_at_its_budget():
    inflight = InFlight(body_timeout_s=30)
    inflight.started()
    assert await inflight.wait_idle(timeout=0.01) is False
    assert await InFlight(body_timeout_s=30).wait_idle(timeout=0) is True  # nothing in flight
