"""BreakerMetrics.throughput, availability and state_seconds, on a fake clock."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from httpx_breaker import (
    BreakerMetrics,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker._breaker import THROUGHPUT_BUCKETS

from .conftest import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class Boom(Exception):
    """The failure our test functions raise."""


def make(clock: FakeClock, **config: Any) -> CircuitBreaker:
    return CircuitBreaker("metrics", CircuitBreakerConfig(**config), clock=clock)


def boom() -> None:
    raise Boom


def fail(breaker: CircuitBreaker) -> None:
    with pytest.raises(Boom):
        breaker.call(boom)


def seconds(breaker: CircuitBreaker) -> dict[CircuitState, float]:
    return dict(breaker.get_metrics().state_seconds)


# -- throughput -------------------------------------------------------------------


def test_a_new_breaker_has_no_throughput_and_full_availability(clock: FakeClock) -> None:
    """No calls and no time: throughput 0.0, availability 1.0, no time in any state."""
    m = make(clock).get_metrics()
    assert (m.throughput, m.availability) == (0.0, 1.0)
    assert m.state_seconds == ((CLOSED, 0.0), (OPEN, 0.0), (HALF_OPEN, 0.0))


def test_steady_traffic_gives_its_rate(clock: FakeClock) -> None:
    """Ten calls a second for two windows: throughput is ten per second."""
    breaker = make(clock, window_duration=60.0)
    for _ in range(1200):
        clock.advance(0.1)
        breaker.call(lambda: None)
    assert breaker.get_metrics().throughput == pytest.approx(10.0, rel=0.02)


def test_steady_traffic_of_ignored_calls_gives_its_rate(clock: FakeClock) -> None:
    """Every call let through counts, whatever its outcome: ten calls a second, every
    other one ignored, read as ten a second."""
    breaker = make(clock, window_duration=60.0, exclude_exceptions=(KeyError,))

    def ignored() -> None:
        raise KeyError

    for i in range(1200):
        clock.advance(0.1)
        if i % 2:
            with pytest.raises(KeyError):
                breaker.call(ignored)
        else:
            breaker.call(lambda: None)
    m = breaker.get_metrics()
    assert (m.ignored_requests, m.successful_requests) == (600, 600)
    assert m.throughput == pytest.approx(10.0, rel=0.02)


def test_a_breaker_just_older_than_its_window_gives_its_rate(clock: FakeClock) -> None:
    """Seventy seconds at ten a second in a 60 s window: the calls of the first ten
    seconds have left it, and the rate is ten a second."""
    breaker = make(clock, window_duration=60.0)
    for _ in range(700):
        clock.advance(0.1)
        breaker.call(lambda: None)
    assert breaker.get_metrics().throughput == pytest.approx(10.0, rel=0.02)


def test_throughput_follows_a_change_of_rate_within_a_window(clock: FakeClock) -> None:
    """After a minute at 10/s and a minute at 2/s, the last minute's rate is 2/s."""
    breaker = make(clock, window_duration=60.0)
    for per_second in (10, 2):
        for _ in range(60 * per_second):
            clock.advance(1.0 / per_second)
            breaker.call(lambda: None)
    assert breaker.get_metrics().throughput == pytest.approx(2.0, rel=0.05)


def test_a_young_breaker_divides_by_the_whole_window(clock: FakeClock) -> None:
    """30 calls in the first 3 s of a 60 s window read as 0.5 per second."""
    breaker = make(clock, window_duration=60.0)
    for _ in range(30):
        clock.advance(0.1)
        breaker.call(lambda: None)
    assert breaker.get_metrics().throughput == pytest.approx(0.5)


def test_throughput_after_an_idle_hour_counts_only_the_last_window(clock: FakeClock) -> None:
    """Calls of an hour ago are out of the window; a burst after it counts over 60 s;
    once a whole window and one bucket (10 s here) have passed with no call, 0.0."""
    breaker = make(clock, window_duration=60.0)
    for _ in range(100):
        breaker.call(lambda: None)
    clock.advance(3600.0)
    for _ in range(6):
        clock.advance(0.5)
        breaker.call(lambda: None)
    assert breaker.get_metrics().throughput == pytest.approx(6 / 60)
    clock.advance(61.0)
    # The bucket the horizon falls in is taken as evenly filled: an estimate, no more.
    assert 0.0 <= breaker.get_metrics().throughput <= 6 / 60
    clock.advance(10.0)
    assert breaker.get_metrics().throughput == 0.0


def test_throughput_counts_every_call_let_through_and_no_rejection(clock: FakeClock) -> None:
    """Failures and ignored calls count (as in total_requests); rejections do not."""
    breaker = make(
        clock, failure_threshold=3, reset_timeout=1000.0, window_duration=60.0,
        exclude_exceptions=(KeyError,),
    )

    def ignored() -> None:
        raise KeyError

    breaker.call(lambda: None)
    with pytest.raises(KeyError):
        breaker.call(ignored)
    for _ in range(3):
        fail(breaker)
    for _ in range(10):
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: None)
    m = breaker.get_metrics()
    assert (m.total_requests, m.rejected_requests) == (5, 10)
    assert m.throughput == pytest.approx(5 / 60)


def test_throughput_memory_is_bounded(clock: FakeClock) -> None:
    """Hours of traffic keep no more than a fixed number of notes."""
    breaker = make(clock, window_duration=10.0)
    for _ in range(20_000):
        clock.advance(0.37)
        breaker.call(lambda: None)
        if clock.now % 97 < 0.37:
            clock.advance(250.0)  # gaps, which note two boundaries at once
    marks = breaker._tp_marks
    assert marks is not None and len(marks) <= 2 * (THROUGHPUT_BUCKETS + 2)


def test_reading_the_metrics_does_not_change_throughput(clock: FakeClock) -> None:
    """Reading between calls (a scrape) gives the same figure as not reading."""
    read = make(clock, window_duration=60.0)
    quiet = CircuitBreaker("quiet", read.config, clock=clock)
    for i in range(900):
        clock.advance(0.2 if i % 50 else 7.0)
        read.call(lambda: None)
        quiet.call(lambda: None)
        if i % 7 == 0:
            read.get_metrics()
    assert read.get_metrics().throughput == pytest.approx(quiet.get_metrics().throughput)


# -- availability and time per state --------------------------------------------


def test_availability_is_the_share_of_life_not_open(clock: FakeClock) -> None:
    """100 s closed, 30 s open, 20 s half-open: 120 of 150 s available."""
    breaker = make(clock, failure_threshold=1, reset_timeout=30.0)
    clock.advance(100.0)
    fail(breaker)
    clock.advance(30.0)
    assert breaker.get_metrics().availability == pytest.approx(100 / 130)
    clock.advance(20.0)
    m = breaker.get_metrics()
    assert m.state is HALF_OPEN
    assert m.availability == pytest.approx(120 / 150)
    assert dict(m.state_seconds) == {CLOSED: 100.0, OPEN: 30.0, HALF_OPEN: 20.0}


def test_time_in_the_current_state_counts_up_to_now(clock: FakeClock) -> None:
    """The state a breaker is in gets the seconds since it entered it, at every read."""
    breaker = make(clock, failure_threshold=1, reset_timeout=30.0, half_open_max_requests=1)
    clock.advance(100.0)
    assert seconds(breaker) == {CLOSED: 100.0, OPEN: 0.0, HALF_OPEN: 0.0}
    fail(breaker)
    clock.advance(10.0)
    assert seconds(breaker) == {CLOSED: 100.0, OPEN: 10.0, HALF_OPEN: 0.0}
    clock.advance(25.0)
    assert seconds(breaker) == {CLOSED: 100.0, OPEN: 30.0, HALF_OPEN: 5.0}
    breaker.call(lambda: None)  # the probe succeeds: CLOSED again
    clock.advance(7.0)
    assert seconds(breaker) == {CLOSED: 107.0, OPEN: 30.0, HALF_OPEN: 5.0}


def test_an_open_period_that_ends_while_the_metrics_are_read_is_split(
    clock: FakeClock,
) -> None:
    """`get_metrics` notices an ended open period before it reads the clock again; if
    the period ends in between, the snapshot still splits the time at its end: OPEN up
    to it, HALF_OPEN after (the reading step itself, on a fake clock)."""
    breaker = make(clock, failure_threshold=1, reset_timeout=30.0)
    clock.advance(5.0)
    fail(breaker)
    clock.advance(45.0)
    assert breaker._state is OPEN  # not noticed yet
    with breaker._lock:
        closed, opened, half_open, _ = breaker._seconds_in_states(clock())
    assert (closed, opened, half_open) == (5.0, 30.0, 15.0)


def test_an_open_period_nobody_noticed_ending_counts_as_half_open(clock: FakeClock) -> None:
    """Open for 30 s, then nobody looks for an hour: 30 s OPEN, the rest HALF_OPEN,
    whether the hour is read before or after the breaker notices."""
    breaker = make(clock, failure_threshold=1, reset_timeout=30.0)
    fail(breaker)
    clock.advance(3600.0)
    assert breaker._state is OPEN  # not noticed yet
    before = seconds(breaker)  # get_metrics notices
    assert before == {CLOSED: 0.0, OPEN: 30.0, HALF_OPEN: 3570.0}
    assert breaker.get_metrics().availability == pytest.approx(3570 / 3600)


def test_forced_open_is_open_until_reset_and_reset_restarts_availability(
    clock: FakeClock,
) -> None:
    """A forced-open breaker is OPEN however long; reset() starts availability over but
    keeps the time per state."""
    breaker = make(clock)
    clock.advance(10.0)
    breaker.force_open()
    clock.advance(990.0)
    assert breaker.get_metrics().availability == pytest.approx(0.01)
    breaker.reset()
    m = breaker.get_metrics()
    assert m.availability == 1.0
    assert dict(m.state_seconds) == {CLOSED: 10.0, OPEN: 990.0, HALF_OPEN: 0.0}
    clock.advance(10.0)
    assert breaker.get_metrics().availability == 1.0
    breaker.force_open()
    clock.advance(10.0)
    assert breaker.get_metrics().availability == pytest.approx(0.5)


def test_force_open_after_an_unnoticed_end_keeps_the_totals_monotonic(
    clock: FakeClock,
) -> None:
    """Forcing open a breaker whose open period ended unnoticed does not turn the
    half-open time since then back into open time."""
    breaker = make(clock, failure_threshold=1, reset_timeout=10.0)
    fail(breaker)
    clock.advance(50.0)
    first = seconds(breaker)
    breaker.force_open()
    clock.advance(5.0)
    second = seconds(breaker)
    assert all(second[s] >= first[s] for s in first), (first, second)
    assert second == {CLOSED: 0.0, OPEN: 15.0, HALF_OPEN: 40.0}


def test_a_late_retry_after_does_not_reopen_an_ended_period(clock: FakeClock) -> None:
    """A failure with Retry-After recorded after the open period ended (unnoticed) does
    not extend it: the breaker reads HALF_OPEN, as it would have had anyone looked."""
    breaker = make(clock, failure_threshold=1, reset_timeout=10.0)
    late = breaker.admit()  # admitted while CLOSED, answers late
    fail(breaker)
    clock.advance(20.0)
    breaker.record(late, 1, clock.now - 20.0, clock.now, retry_after=120.0)
    assert breaker.state is HALF_OPEN
    assert seconds(breaker) == {CLOSED: 0.0, OPEN: 10.0, HALF_OPEN: 10.0}


def test_retry_after_still_extends_a_running_period(clock: FakeClock) -> None:
    """While the open period runs, a failure's Retry-After lengthens it as before."""
    breaker = make(clock, failure_threshold=1, reset_timeout=10.0)
    late = breaker.admit()
    fail(breaker)
    clock.advance(5.0)
    breaker.record(late, 1, clock.now - 5.0, clock.now, retry_after=120.0)
    assert breaker.retry_after == 120.0


def test_metrics_to_dict_has_the_new_figures(clock: FakeClock) -> None:
    """to_dict() carries throughput, availability and seconds per state, as JSON."""
    breaker = make(clock, failure_threshold=1, reset_timeout=30.0, window_duration=60.0)
    breaker.call(lambda: None)
    clock.advance(10.0)
    fail(breaker)
    clock.advance(10.0)
    data = breaker.get_metrics().to_dict()
    assert data["throughput"] == pytest.approx(2 / 60)
    assert data["availability"] == pytest.approx(0.5)
    assert data["state_seconds"] == {"closed": 10.0, "open": 10.0, "half_open": 0.0}
    assert json.loads(json.dumps(data)) == data


def test_a_snapshot_built_from_the_core_fields_reads_as_a_new_breakers(
    clock: FakeClock,
) -> None:
    """Code that builds a `BreakerMetrics` from the seed's core fields alone (written
    before the others existed, as a health check's test does) gets the figures of a
    breaker with no calls and no time: CLOSED, nothing slow or in the window, no
    throughput, full availability, no bulkhead."""
    new = make(clock).get_metrics()
    core = (
        "total_requests",
        "successful_requests",
        "failed_requests",
        "rejected_requests",
        "ignored_requests",
        "success_rate",
        "failure_rate",
        "average_response_time",
        "state_changes",
    )
    built = BreakerMetrics(**{name: getattr(new, name) for name in core})
    assert built == dataclasses.replace(new, state_seconds=())
    assert (built.state, built.availability, built.throughput) == (CLOSED, 1.0, 0.0)
    assert (built.bulkhead_limit, built.bulkhead_rejected_requests) == (None, 0)


def test_throughput_of_mixed_outcomes_counts_each_call_once(clock: FakeClock) -> None:
    """Two minutes of one call a second, in turn a success, a failure and an ignored
    call: the last minute's throughput is one per second, whatever the outcomes."""
    breaker = make(
        clock, window_duration=60.0, failure_threshold=1000, failure_rate_threshold=1.0,
        exclude_exceptions=(KeyError,),
    )

    def ignored() -> None:
        raise KeyError

    for i in range(120):
        clock.advance(1.0)
        if i % 3 == 0:
            breaker.call(lambda: None)
        elif i % 3 == 1:
            fail(breaker)
        else:
            with pytest.raises(KeyError):
                breaker.call(ignored)
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests, m.ignored_requests) == (40, 40, 40)
    assert m.throughput == pytest.approx(1.0, rel=0.02)


def test_availability_of_a_breaker_younger_than_a_second(clock: FakeClock) -> None:
    """Availability is the share of life not OPEN from the first instant: 0.25 s closed
    then 0.25 s open reads 0.5, not a rounded-up 1.0."""
    breaker = make(clock, failure_threshold=1, reset_timeout=30.0)
    clock.advance(0.25)
    fail(breaker)
    clock.advance(0.25)
    assert breaker.get_metrics().availability == pytest.approx(0.5)
