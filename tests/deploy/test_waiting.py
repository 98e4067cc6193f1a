"""Waiting.poll, the one poll loop of deploy (rollout, smoke test, train), on a clock only sleep moves."""

from __future__ import annotations

from modelpod.deploy.rollout import Waiting
from tests.deploy.fake_api import FakeClock


def waiting(clock: FakeClock) -> Waiting:
    return Waiting(timeout_s=10, interval_s=3, clock=clock, sleep=clock.sleep)


def test_poll_returns_the_first_result_that_is_not_none() -> None:
    clock = FakeClock()
    answers = iter([None, None, "ready", "later"])

    assert waiting(clock).poll(lambda: next(answers)) == "ready"
    assert clock.slept == 6


def test_poll_stops_at_the_deadline_with_the_last_result_and_never_sleeps_past_it() -> None:
    clock = FakeClock()
    looked_at: list[float] = []

    def look() -> int:
        looked_at.append(clock())
        return len(looked_at)

    assert waiting(clock).poll(look, until=lambda looks: looks > 100) == 5
    assert looked_at == [1000, 1003, 1006, 1009, 1010]  # the last sleep is cut to the deadline


def test_poll_looks_once_when_the_given_deadline_has_passed() -> None:
    clock = FakeClock()

    assert waiting(clock).poll(lambda: None, deadline=clock() - 1) is None
    assert clock.slept == 0
