"""The engine's seams: the permit protocol, transition_to and set_clock."""

from __future__ import annotations

import gc
from datetime import timedelta
from typing import Any

import pytest

from httpx_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    get_all_circuit_breakers,
)
from httpx_breaker._breaker import FAILURE, IGNORED, SUCCESS, PermitProtocol
from httpx_breaker._state import BreakerEvent

from .conftest import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class Boom(Exception):
    """The failure our test functions raise."""


def make(clock: FakeClock, **config: Any) -> CircuitBreaker:
    return CircuitBreaker("seams", CircuitBreakerConfig(**config), clock=clock)


def fail(breaker: CircuitBreaker) -> None:
    def boom() -> None:
        raise Boom

    with pytest.raises(Boom):
        breaker.call(boom)


def changes(events: list[BreakerEvent]) -> list[tuple[Any, ...]]:
    return [(e.old_state, e.new_state, e.cause) for e in events if e.kind == "state_change"]


# -- the permit protocol ------------------------------------------------------------


def test_the_old_private_names_are_the_protocol_methods() -> None:
    """The transports' 0.1 names are aliases of the same functions: no extra call."""
    assert CircuitBreaker._acquire is CircuitBreaker.admit
    assert CircuitBreaker._record is CircuitBreaker.record
    assert CircuitBreaker._record_success is CircuitBreaker.record_success
    assert CircuitBreaker._release_abandoned is CircuitBreaker.release


def test_a_transport_runs_a_probe_round_through_the_protocol(clock: FakeClock) -> None:
    """admit / record / record_success / release, as a transport uses them, through a
    half-open round: a released probe frees its slot, a success closes."""
    breaker: PermitProtocol = make(
        clock, failure_threshold=1, reset_timeout=5.0, half_open_max_requests=1
    )
    token = breaker.admit()
    start = breaker.clock()
    clock.advance(0.5)
    breaker.record(token, FAILURE, start, breaker.clock(), 30.0, breaker.clock())
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.state is OPEN
    assert breaker.retry_after == 30.0  # the Retry-After floor
    clock.advance(30.0)
    probe = breaker.admit()
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    breaker.release(probe)  # a response dropped unread
    probe = breaker.admit()
    breaker.record_success(probe, clock.now, clock.now + 0.1)
    assert breaker.state is CLOSED
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests, m.ignored_requests) == (1, 1, 1)
    breaker.record(breaker.admit(), IGNORED, clock.now, clock.now)
    breaker.record(breaker.admit(), SUCCESS, clock.now, clock.now)
    assert breaker.get_metrics().total_requests == 5


# -- transition_to ------------------------------------------------------------------


def test_transition_to_open_for_a_given_period(clock: FakeClock) -> None:
    """OPEN with open_for: that long, announced with the cause, no failure counted."""
    breaker = make(clock, reset_timeout=60.0, jitter=0.5)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    assert breaker.transition_to(OPEN, cause="replica", open_for=timedelta(seconds=12.5))
    assert breaker.state is OPEN
    assert breaker.retry_after == 12.5  # as given: no jitter
    assert changes(events) == [(CLOSED, OPEN, "replica")]
    assert events[-1].retry_after == 12.5
    m = breaker.get_metrics()
    assert (m.failed_requests, m.state_change_counts) == (0, ((CLOSED, OPEN, 1),))
    clock.advance(12.5)
    assert breaker.state is HALF_OPEN


def test_transition_to_open_without_a_period_uses_the_policy(clock: FakeClock) -> None:
    """OPEN with no open_for: the policy's period, jitter and all."""
    breaker = make(clock, reset_timeout=20.0, jitter=0.5)
    breaker._random = lambda: 0.5
    breaker.transition_to(OPEN, cause="testing")
    assert breaker.retry_after == 25.0


def test_transition_to_starts_a_new_epoch(clock: FakeClock) -> None:
    """Outcomes of calls admitted before the transition count, but move nothing."""
    breaker = make(clock, failure_threshold=2, reset_timeout=10.0, half_open_max_requests=1)
    before = breaker.admit()
    fail(breaker)  # one consecutive failure
    assert breaker.transition_to(CLOSED, cause="replica")  # already CLOSED: starts over
    fail(breaker)
    assert breaker.state is CLOSED  # the failure before the transition is forgotten
    breaker.record(before, FAILURE, clock.now, clock.now)
    assert breaker.state is CLOSED  # and a late one from before it moves nothing
    assert breaker.get_metrics().failed_requests == 3
    # A probe of an earlier round neither closes nor reopens the new one.
    breaker.transition_to(HALF_OPEN, cause="replica")
    old_probe = breaker.admit()
    breaker.transition_to(HALF_OPEN, cause="replica")
    breaker.record(old_probe, FAILURE, clock.now, clock.now)
    assert breaker.state is HALF_OPEN
    new_probe = breaker.admit()  # the new round's slot is free
    breaker.record_success(new_probe, clock.now, clock.now)
    assert breaker.state is CLOSED


def test_transition_to_half_open_from_closed_goes_through_open(clock: FakeClock) -> None:
    """CLOSED -> HALF_OPEN is no change a breaker makes: it passes OPEN for no time."""
    breaker = make(clock, half_open_max_requests=2)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    breaker.transition_to(HALF_OPEN, cause="testing")
    assert breaker.state is HALF_OPEN
    assert changes(events) == [(CLOSED, OPEN, "testing"), (OPEN, HALF_OPEN, "reset_timeout")]
    breaker.admit()
    breaker.admit()
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    events.clear()
    breaker.transition_to(OPEN, cause="replica", open_for=5.0)
    breaker.transition_to(HALF_OPEN, cause="replica")
    assert changes(events) == [(HALF_OPEN, OPEN, "replica"), (OPEN, HALF_OPEN, "replica")]


def test_transition_to_the_current_state_starts_it_over_silently(clock: FakeClock) -> None:
    """OPEN again: a new period from now, and no state change is reported."""
    breaker = make(clock, failure_threshold=1, reset_timeout=30.0)
    fail(breaker)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    clock.advance(10.0)
    breaker.transition_to(OPEN, cause="replica", open_for=5.0)
    assert breaker.retry_after == 5.0
    assert changes(events) == []
    assert breaker.get_metrics().state_change_counts == ((CLOSED, OPEN, 1),)


def test_transition_to_after_an_unnoticed_end_reads_half_open_first(clock: FakeClock) -> None:
    """An open period that has ended is HALF_OPEN before the new state is entered."""
    breaker = make(clock, failure_threshold=1, reset_timeout=5.0)
    fail(breaker)
    clock.advance(6.0)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    breaker.transition_to(OPEN, cause="replica", open_for=7.0)
    assert changes(events) == [(OPEN, HALF_OPEN, "reset_timeout"), (HALF_OPEN, OPEN, "replica")]
    assert breaker.retry_after == 7.0


def test_transition_to_leaves_a_forced_breaker_alone(clock: FakeClock) -> None:
    """force_open / force_closed hold until reset(): transition_to returns False."""
    breaker = make(clock)
    breaker.force_closed()
    assert breaker.transition_to(OPEN, cause="replica") is False
    assert breaker.state is CLOSED
    breaker.force_open()
    assert breaker.transition_to(CLOSED, cause="replica") is False
    assert breaker.state is OPEN and breaker.retry_after is None
    breaker.reset()
    assert breaker.transition_to(OPEN, cause="replica") is True


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"state": "open", "cause": "x"}, TypeError, "state must be a CircuitState"),
        ({"state": OPEN, "cause": 3}, TypeError, "cause must be a str"),
        ({"state": OPEN, "cause": ""}, ValueError, "cause must not be empty"),
        ({"state": CLOSED, "cause": "x", "open_for": 1.0}, ValueError, "open_for .*only for CircuitState.OPEN"),
        ({"state": OPEN, "cause": "x", "open_for": -1.0}, ValueError, "open_for must be"),
        ({"state": OPEN, "cause": "x", "open_for": float("inf")}, ValueError, "open_for must be"),
        ({"state": OPEN, "cause": "x", "open_for": float("nan")}, ValueError, "open_for must be"),
        ({"state": OPEN, "cause": "x", "open_for": True}, TypeError, "open_for must be"),
        ({"state": OPEN, "cause": "x", "open_for": "5"}, TypeError, "open_for must be"),
    ],
)
def test_transition_to_checks_its_arguments(
    clock: FakeClock, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Bad arguments raise before anything changes, naming the argument."""
    breaker = make(clock)
    state = kwargs.pop("state")
    with pytest.raises(error, match=match):
        breaker.transition_to(state, **kwargs)
    assert breaker.state is CLOSED
    assert breaker.get_metrics().state_change_counts == ()


# -- set_clock -----------------------------------------------------------------------


def test_set_clock_keeps_the_time_left_of_an_open_period(clock: FakeClock) -> None:
    """Swapping to a clock 1000 s behind, and back, keeps the open period's remainder."""
    breaker = make(clock, failure_threshold=1, reset_timeout=30.0)
    fail(breaker)
    clock.advance(10.0)
    other = FakeClock(0.0)
    assert breaker.set_clock(other) is clock
    assert breaker.clock is other
    assert breaker.retry_after == 20.0
    other.advance(5.0)
    assert breaker.set_clock(clock) is other
    assert breaker.retry_after == 15.0
    clock.advance(15.0)
    assert breaker.state is HALF_OPEN


def test_set_clock_keeps_the_throughput(clock: FakeClock) -> None:
    """Ten calls a second on one clock, then on another 50,000 s ahead: still ten a
    second, the calls before the swap counted at their ages."""
    breaker = make(clock, window_duration=60.0)
    for _ in range(600):
        clock.advance(0.1)
        breaker.call(lambda: None)
    fake = FakeClock(50_000.0)
    breaker.set_clock(fake)
    for _ in range(300):
        fake.advance(0.1)
        breaker.call(lambda: None)
    assert breaker.get_metrics().throughput == pytest.approx(10.0, rel=0.02)


def test_set_clock_moves_the_windows_outcomes(clock: FakeClock) -> None:
    """Outcomes recorded on one clock keep their age on the next: they still count
    toward the rate rule, and still leave the window window_duration after they came."""
    breaker = make(
        clock, failure_threshold=100, window_size=4, minimum_requests=2,
        failure_rate_threshold=0.5, window_duration=60.0,
    )
    fake = FakeClock(50_000.0)
    breaker.set_clock(fake)
    fail(breaker)  # recorded at 50,000 on the fake clock
    fake.advance(30.0)
    breaker.set_clock(clock)  # 30 s old on the real clock too
    assert breaker.get_metrics().window_requests == 1
    clock.advance(31.0)
    assert breaker.get_metrics().window_requests == 0  # 61 s old: gone
    fail(breaker)
    breaker.set_clock(fake)
    breaker.call(lambda: None)  # two in the window, half failed: opens
    assert breaker.state is OPEN


def test_set_clock_keeps_time_per_state_availability_and_history(clock: FakeClock) -> None:
    """Time per state, availability, throughput and state_changes carry over."""
    breaker = make(clock, failure_threshold=1, reset_timeout=100.0, window_duration=60.0)
    for _ in range(30):
        clock.advance(1.0)
        breaker.call(lambda: None)
    fail(breaker)
    clock.advance(10.0)
    before = breaker.get_metrics()
    breaker.set_clock(FakeClock(7.0))
    after = breaker.get_metrics()
    assert after.state_seconds == before.state_seconds
    assert after.availability == pytest.approx(before.availability)
    assert after.throughput == pytest.approx(before.throughput)
    assert [t for t, _, _ in after.state_changes] == [7.0 - 10.0]
    with pytest.raises(TypeError, match="clock must be callable"):
        breaker.set_clock(3.0)  # type: ignore[arg-type]


def test_a_dropped_breaker_is_collected_after_the_seams(clock: FakeClock) -> None:
    """The seams keep no reference to the breaker (weakly held, like every breaker)."""
    breaker = make(clock)
    breaker.set_clock(FakeClock())
    breaker.transition_to(OPEN, cause="testing")
    name = breaker.name
    del breaker
    gc.collect()
    assert name not in get_all_circuit_breakers()


def test_a_probe_waiting_for_a_slot_hands_back_its_permit_of_this_round_only(
    clock: FakeClock,
) -> None:
    """wait_for_slot frees the probe slot of the waiting call's own round; a permit of an
    earlier round frees nothing in the new one (its slot went with that round)."""
    breaker = make(clock, max_concurrent=1, half_open_max_requests=1)
    breaker.transition_to(HALF_OPEN, cause="testing")
    probe = breaker.admit()
    # The probe found no free slot at once and waits: its permit goes back meanwhile,
    # and the permit it gets with the slot is the round's one probe permit.
    token, bulkhead = breaker.wait_for_slot(probe)
    assert bulkhead is breaker.bulkhead
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    bulkhead.release()
    breaker.release(token)
    old = breaker.admit()
    breaker.transition_to(HALF_OPEN, cause="testing")  # a new round
    token, bulkhead = breaker.wait_for_slot(old)  # takes the new round's one permit
    assert bulkhead is not None
    with pytest.raises(CircuitOpenError):
        breaker.admit()  # the old permit freed none of the new round's slots


def test_releasing_a_probe_of_an_earlier_round_frees_no_slot_of_this_one(
    clock: FakeClock,
) -> None:
    """release() of an earlier round's probe counts it as ignored and leaves the new
    round's probe slots as they are."""
    breaker = make(clock, half_open_max_requests=1)
    breaker.transition_to(HALF_OPEN, cause="testing")
    old = breaker.admit()
    breaker.transition_to(HALF_OPEN, cause="testing")
    breaker.admit()  # the new round's one slot
    breaker.release(old)
    assert breaker.get_metrics().ignored_requests == 1
    assert breaker.retry_after is None  # every slot still taken
    with pytest.raises(CircuitOpenError):
        breaker.admit()


def test_transition_to_open_for_no_time_is_allowed(clock: FakeClock) -> None:
    """open_for=0 is a valid period (only a negative one is refused): the breaker opens
    and reads HALF_OPEN at once."""
    breaker = make(clock)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    assert breaker.transition_to(OPEN, cause="replica", open_for=0.0)
    assert breaker.state is HALF_OPEN
    assert changes(events) == [(CLOSED, OPEN, "replica"), (OPEN, HALF_OPEN, "reset_timeout")]


def test_transition_to_at_the_end_of_the_open_period_reads_half_open_first(
    clock: FakeClock,
) -> None:
    """At the very instant the open period ends the breaker is HALF_OPEN (as `state`
    reads it), so the new state is entered from HALF_OPEN."""
    breaker = make(clock, failure_threshold=1, reset_timeout=5.0)
    fail(breaker)
    clock.advance(5.0)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    breaker.transition_to(OPEN, cause="replica", open_for=7.0)
    assert changes(events) == [(OPEN, HALF_OPEN, "reset_timeout"), (HALF_OPEN, OPEN, "replica")]


def test_the_pass_through_open_to_half_open_announces_no_wait(clock: FakeClock) -> None:
    """transition_to(HALF_OPEN) from CLOSED opens for no time: its OPEN event says
    retry_after 0.0, and the probe round starts at once."""
    breaker = make(clock, reset_timeout=30.0)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    breaker.transition_to(HALF_OPEN, cause="testing")
    opened = [e for e in events if e.kind == "state_change" and e.new_state is OPEN]
    assert [e.retry_after for e in opened] == [0.0]
    assert breaker.retry_after == 0.0
