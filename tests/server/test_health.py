"""Health as a state machine (`ServerState.set_health`) and the drain's wait for requests in flight."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from modelpod.server.state import Health, ServerState

pytestmark = pytest.mark.anyio

# the machine drawn in server/state.py's docstring, written out again so that a change to the table
# must be a change to this test too
ALLOWED = {
    (Health.STARTING, Health.READY),
    (Health.STARTING, Health.FAILED),
    (Health.STARTING, Health.DRAINING),
    (Health.READY, Health.DRAINING),
    (Health.DRAINING, Health.STOPPED),
}


def state_in(spec, health: Health) -> ServerState:
    state = ServerState(spec, auth_token=None)
    path = {
        Health.STARTING: [],
        Health.READY: [Health.READY],
        Health.DRAINING: [Health.READY, Health.DRAINING],
        Health.STOPPED: [Health.READY, Health.DRAINING, Health.STOPPED],
        Health.FAILED: [Health.FAILED],
    }[health]
    for step in path:
        state.set_health(step)
    return state


@pytest.mark.parametrize(("current", "new"), list(itertools.product(Health, Health)))
def test_health_moves_only_along_the_machine(echo_spec, current, new):
    state = state_in(echo_spec, current)
    if current is new or (current, new) in ALLOWED:
        state.set_health(new)
        assert state.health is new
    else:
        with pytest.raises(RuntimeError, match=f"from {current.value} to {new.value}"):
            state.set_health(new)
        assert state.health is current


def test_liveness_and_readiness_follow_health(echo_spec):
    for health in Health:
        state = state_in(echo_spec, health)
        assert state.live is (health in (Health.STARTING, Health.READY, Health.DRAINING))
        assert state.ready is (health is Health.READY)


async def test_the_drain_wakes_when_the_last_request_ends(echo_spec):
    state = ServerState(echo_spec, auth_token=None)
    state.inflight = 2
    waiting = asyncio.create_task(state.wait_idle(timeout=10))
    await asyncio.sleep(0)
    state.request_finished()
    await asyncio.sleep(0)
    assert not waiting.done()  # one is still in flight
    state.request_finished()
    assert await asyncio.wait_for(waiting, 1) is True


async def test_the_drain_gives_up_at_its_budget(echo_spec):
    state = ServerState(echo_spec, auth_token=None)
    state.inflight = 1
    assert await state.wait_idle(timeout=0.01) is False
    assert await ServerState(echo_spec, auth_token=None).wait_idle(timeout=0) is True  # nothing in flight
