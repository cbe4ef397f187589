"""CircuitBreaker: every transition, metrics, listeners and manual control, on a fake clock."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from httpx_breaker import (
    BreakerMetrics,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker._breaker import FAILURE
from httpx_breaker._state import BreakerEvent

from .conftest import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class Boom(Exception):
    """The failure our test functions raise."""


def make(clock: FakeClock, **config: Any) -> CircuitBreaker:
    return CircuitBreaker("svc", CircuitBreakerConfig(**config), clock=clock)


def boom() -> None:
    raise Boom


def succeed(breaker: CircuitBreaker, value: object = "ok") -> None:
    assert breaker.call(lambda: value) == value


def fail(breaker: CircuitBreaker, exc: type[BaseException] = Boom) -> None:
    def raise_it() -> None:
        raise exc

    with pytest.raises(exc):
        breaker.call(raise_it)


def taking(clock: FakeClock, seconds: float, value: object = "ok") -> Callable[[], object]:
    """A function whose call lasts `seconds` on the fake clock."""

    def fn() -> object:
        clock.advance(seconds)
        return value

    return fn


def open_breaker(breaker: CircuitBreaker) -> None:
    while breaker.state is not OPEN:
        fail(breaker)


# -- construction ----------------------------------------------------------------


def test_new_breaker_is_closed_with_empty_metrics(clock: FakeClock) -> None:
    """A new breaker is CLOSED and its metrics are zero, with the no-call rates."""
    breaker = CircuitBreaker("fresh", clock=clock)
    assert breaker.name == "fresh"
    assert breaker.config == CircuitBreakerConfig()
    assert breaker.clock is clock
    assert breaker.state is CLOSED and breaker.get_state() is CLOSED
    assert breaker.is_closed() and not breaker.is_open() and not breaker.is_half_open()
    assert breaker.retry_after == 0.0
    m = breaker.get_metrics()
    assert (m.total_requests, m.successful_requests, m.failed_requests) == (0, 0, 0)
    assert (m.rejected_requests, m.ignored_requests) == (0, 0)
    assert m.success_rate == 1.0
    assert m.failure_rate == 0.0
    assert m.average_response_time == 0.0
    assert m.state_changes == ()
    assert "fresh" in repr(breaker) and "closed" in repr(breaker)


@pytest.mark.parametrize(
    "kwargs",
    [{"name": 1}, {"name": "x", "config": {}}, {"name": "x", "classifier": 3}, {"name": "x", "clock": 0.0}],
)
def test_constructor_rejects_wrong_types(kwargs: dict[str, Any]) -> None:
    """Wrong argument types raise TypeError."""
    name = kwargs.pop("name")
    with pytest.raises(TypeError):
        CircuitBreaker(name, **kwargs)


# -- opening ---------------------------------------------------------------------


def test_consecutive_failures_open_at_the_threshold(clock: FakeClock) -> None:
    """`failure_threshold` consecutive failures open; a success in between starts over."""
    breaker = make(clock, failure_threshold=3, window_size=100)
    fail(breaker)
    fail(breaker)
    succeed(breaker)
    fail(breaker)
    fail(breaker)
    assert breaker.state is CLOSED
    assert breaker.get_metrics().consecutive_failures == 2
    fail(breaker)
    assert breaker.state is OPEN


def test_ignored_outcomes_do_not_break_a_failure_streak(clock: FakeClock) -> None:
    """An excluded exception neither resets nor extends the consecutive count."""
    breaker = make(clock, failure_threshold=2, window_size=100, exclude_exceptions=(KeyError,))
    fail(breaker)
    fail(breaker, KeyError)
    assert breaker.get_metrics().consecutive_failures == 1
    fail(breaker)
    assert breaker.state is OPEN


def test_rate_rule_waits_for_minimum_requests_and_uses_ge(clock: FakeClock) -> None:
    """The failure share opens only once the window holds `minimum_requests`, compared with >=."""
    breaker = make(
        clock, failure_threshold=100, window_size=10, minimum_requests=4, failure_rate_threshold=0.5
    )
    fail(breaker)
    fail(breaker)
    succeed(breaker)
    assert breaker.state is CLOSED  # 2/3 failed, but only 3 outcomes
    succeed(breaker)
    assert breaker.state is OPEN  # 2/4 == 0.5 with 4 outcomes


def test_rate_rule_below_threshold_stays_closed(clock: FakeClock) -> None:
    """A failure share below the threshold keeps the breaker closed."""
    breaker = make(clock, failure_threshold=100, window_size=4, failure_rate_threshold=0.5)
    for _ in range(5):
        succeed(breaker)
        succeed(breaker)
        succeed(breaker)
        fail(breaker)  # the last four always hold one failure: 0.25
        assert breaker.state is CLOSED


def test_rate_rule_with_default_minimum_needs_a_full_window(clock: FakeClock) -> None:
    """With `minimum_requests=None` the rate rule waits for `window_size` outcomes."""
    breaker = make(clock, failure_threshold=100, window_size=4, failure_rate_threshold=0.25)
    fail(breaker)
    succeed(breaker)
    succeed(breaker)
    assert breaker.state is CLOSED
    succeed(breaker)
    assert breaker.state is OPEN


@pytest.mark.parametrize(
    ("threshold", "size", "failures"), [(0.28, 25, 7), (0.07, 100, 7), (0.55, 100, 55), (0.3, 10, 3)]
)
def test_rate_rule_opens_at_exactly_the_threshold_share(
    clock: FakeClock, threshold: float, size: int, failures: int
) -> None:
    """A share equal to the threshold opens, even where threshold * count rounds up."""
    breaker = make(clock, failure_threshold=1000, window_size=size, failure_rate_threshold=threshold)
    for _ in range(size - failures):
        succeed(breaker)
    for _ in range(failures - 1):
        fail(breaker)
    assert breaker.state is CLOSED
    fail(breaker)
    assert breaker.state is OPEN


def test_a_full_window_of_successes_keeps_the_newest_and_expires_by_age(
    clock: FakeClock,
) -> None:
    """Successes one a second into a window of four: it holds the last four, and each
    leaves `window_duration` after it came (the hot path's own window step)."""
    breaker = make(clock, window_size=4, window_duration=5.0)
    for _ in range(10):  # at 0, 1, ..., 9 s
        succeed(breaker)
        clock.advance(1.0)
    clock.advance(2.5)  # 12.5 s: the ones of 6 and 7 s are more than 5 s old
    assert breaker.get_metrics().window_requests == 2


def test_expired_outcomes_leave_the_rate_rule(clock: FakeClock) -> None:
    """Failures older than `window_duration` no longer count toward the rate."""
    breaker = make(
        clock, failure_threshold=100, window_size=4, window_duration=10.0, failure_rate_threshold=0.5
    )
    fail(breaker)
    fail(breaker)
    clock.advance(10.5)
    succeed(breaker)
    succeed(breaker)
    assert breaker.get_metrics().window_requests == 2
    assert breaker.state is CLOSED
    fail(breaker)
    fail(breaker)
    assert breaker.state is OPEN


def test_a_call_is_slow_from_exactly_slow_call_duration(clock: FakeClock) -> None:
    """Duration on the injected clock >= `slow_call_duration` makes a call slow."""
    breaker = make(clock, slow_call_duration=1.0, window_size=10)
    assert breaker.call(taking(clock, 0.999)) == "ok"
    assert breaker.get_metrics().slow_requests == 0
    assert breaker.call(taking(clock, 1.0)) == "ok"
    assert breaker.get_metrics().slow_requests == 1


def test_slow_call_rate_opens(clock: FakeClock) -> None:
    """When the slow share of the window reaches its threshold, the breaker opens."""
    breaker = make(
        clock, slow_call_duration=2.0, slow_call_rate_threshold=0.5, window_size=10, minimum_requests=4
    )
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    breaker.call(taking(clock, 0.1))
    breaker.call(taking(clock, 2.5))
    breaker.call(taking(clock, 0.1))
    assert breaker.state is CLOSED
    breaker.call(taking(clock, 3.0))
    assert breaker.state is OPEN
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests, m.slow_requests) == (4, 0, 2)
    assert [e.cause for e in events if e.kind == "state_change"] == ["slow_call_rate"]


def test_a_fast_success_can_complete_the_slow_rule_with_nobody_listening(
    clock: FakeClock,
) -> None:
    """The fast success path (no listener) still checks the rules when the window holds
    slow outcomes: a quick call that brings the window to `minimum_requests` opens it."""
    breaker = make(
        clock, slow_call_duration=2.0, slow_call_rate_threshold=0.75, window_size=10, minimum_requests=4
    )
    for _ in range(3):
        breaker.call(taking(clock, 2.5))
    assert breaker.state is CLOSED  # 3 outcomes: under minimum_requests
    breaker.call(taking(clock, 0.1))  # a fast success: 3 slow of 4 = 0.75
    assert breaker.state is OPEN


def test_window_counts_stay_exact_when_fast_successes_push_out_slow_ones(
    clock: FakeClock,
) -> None:
    """A full window of slow outcomes, then fast successes: every slow one leaves the
    count as it is pushed out (the fast path must not overwrite a flagged slot blindly)."""
    breaker = make(
        clock, slow_call_duration=2.0, slow_call_rate_threshold=1.0, window_size=4, minimum_requests=4
    )
    breaker.call(taking(clock, 0.1))
    for _ in range(3):
        breaker.call(taking(clock, 2.5))
    assert breaker.get_metrics().window_slow_requests == 3
    for expected in (3, 2, 1, 0):  # the first pushes out the first, fast, call
        breaker.call(taking(clock, 0.1))
        assert breaker.get_metrics().window_slow_requests == expected
    assert breaker.get_metrics().window_requests == 4
    assert breaker.state is CLOSED


def test_slow_rule_is_off_without_slow_call_duration(clock: FakeClock) -> None:
    """With no `slow_call_duration`, long calls never open the breaker."""
    breaker = make(clock, window_size=2)
    for _ in range(4):
        breaker.call(taking(clock, 1000.0))
    assert breaker.state is CLOSED


# -- OPEN ------------------------------------------------------------------------


def test_open_breaker_rejects_without_calling(clock: FakeClock) -> None:
    """OPEN raises CircuitOpenError with key, state and exact retry_after; fn is not called."""
    breaker = make(clock, failure_threshold=1, reset_timeout=60.0)
    fail(breaker)
    clock.advance(10.0)
    called = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(called.append, 1)
    assert called == []
    assert info.value.key == "svc"
    assert info.value.state is OPEN
    assert info.value.retry_after == 50.0
    assert breaker.retry_after == 50.0
    m = breaker.get_metrics()
    assert m.rejected_requests == 1
    assert m.total_requests == 1  # the rejection is not in the total


def test_open_moves_to_half_open_after_reset_timeout(clock: FakeClock) -> None:
    """The `state` property reads HALF_OPEN once the open period has passed."""
    breaker = make(clock, failure_threshold=1, reset_timeout=30.0)
    changes: list[tuple[CircuitState, CircuitState]] = []
    breaker.on_state_change = lambda old, new: changes.append((old, new))
    fail(breaker)
    clock.advance(29.999)
    assert breaker.state is OPEN
    assert breaker.is_open()
    clock.advance(0.001)
    assert breaker.state is HALF_OPEN
    assert breaker.is_half_open()
    assert breaker.retry_after == 0.0
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]
    times = [t for t, _, _ in breaker.get_metrics().state_changes]
    assert times == [1000.0, 1030.0]


def test_first_call_after_reset_timeout_is_a_probe(clock: FakeClock) -> None:
    """A call after the open period passes even if nobody read `state` in between."""
    breaker = make(clock, failure_threshold=1, reset_timeout=5.0, half_open_max_requests=2)
    fail(breaker)
    clock.advance(5.0)
    succeed(breaker)
    assert breaker.get_metrics().state is HALF_OPEN


# -- HALF_OPEN -------------------------------------------------------------------


def test_half_open_admits_at_most_the_probe_limit(clock: FakeClock) -> None:
    """With probes in flight, the call past `half_open_max_requests` is rejected."""
    breaker = make(clock, failure_threshold=1, reset_timeout=1.0, half_open_max_requests=2)
    fail(breaker)
    clock.advance(1.0)
    rejected: list[CircuitOpenError] = []

    def third() -> None:
        with pytest.raises(CircuitOpenError) as info:
            breaker.call(lambda: None)
        rejected.append(info.value)

    breaker.call(lambda: breaker.call(third))  # two probes nested, the third refused
    assert len(rejected) == 1
    assert rejected[0].state is HALF_OPEN
    assert rejected[0].retry_after is None
    assert breaker.state is CLOSED  # the two probes succeeded


def test_succeeded_probes_count_against_the_limit(clock: FakeClock) -> None:
    """Probes that succeeded keep their slot until the round ends."""
    breaker = make(clock, failure_threshold=1, reset_timeout=1.0, half_open_max_requests=3)
    fail(breaker)
    clock.advance(1.0)
    succeed(breaker)
    succeed(breaker)
    assert breaker.state is HALF_OPEN
    succeed(breaker)
    assert breaker.state is CLOSED
    assert breaker.get_metrics().window_requests == 0  # closing empties the window


def test_any_failed_probe_reopens(clock: FakeClock) -> None:
    """A failure in HALF_OPEN reopens for a fresh open period."""
    breaker = make(clock, failure_threshold=1, reset_timeout=10.0, half_open_max_requests=3)
    fail(breaker)
    clock.advance(10.0)
    succeed(breaker)
    succeed(breaker)
    fail(breaker)
    assert breaker.state is OPEN
    assert breaker.retry_after == 10.0


def test_ignored_probe_returns_its_permit(clock: FakeClock) -> None:
    """An excluded exception in HALF_OPEN frees the slot and changes nothing else."""
    breaker = make(
        clock, failure_threshold=1, reset_timeout=1.0, half_open_max_requests=1,
        exclude_exceptions=(KeyError,),
    )
    fail(breaker)
    clock.advance(1.0)
    for _ in range(3):
        fail(breaker, KeyError)
        assert breaker.state is HALF_OPEN
    succeed(breaker)
    assert breaker.state is CLOSED
    assert breaker.get_metrics().ignored_requests == 3


def test_base_exception_in_a_probe_returns_the_permit(clock: FakeClock) -> None:
    """KeyboardInterrupt in a probe is neither success nor failure and frees the slot."""
    breaker = make(clock, failure_threshold=1, reset_timeout=1.0, half_open_max_requests=1)
    fail(breaker)
    clock.advance(1.0)
    fail(breaker, KeyboardInterrupt)
    assert breaker.state is HALF_OPEN
    succeed(breaker)
    assert breaker.state is CLOSED


def test_backoff_multiplies_the_open_period_up_to_the_cap(clock: FakeClock) -> None:
    """Each failed probe round multiplies the open period; closing starts over."""
    breaker = make(
        clock, failure_threshold=1, reset_timeout=10.0, reset_timeout_multiplier=2.0,
        max_reset_timeout=25.0, half_open_max_requests=1,
    )
    periods = []
    fail(breaker)
    for _ in range(4):
        periods.append(breaker.retry_after)
        clock.advance(periods[-1] or 0.0)
        fail(breaker)  # the probe fails
    assert periods == [10.0, 20.0, 25.0, 25.0]
    clock.advance(25.0)
    succeed(breaker)
    assert breaker.state is CLOSED
    fail(breaker)
    assert breaker.retry_after == 10.0


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 20.0), (0.5, 25.0), (0.999, 29.99)])
def test_jitter_adds_up_to_its_fraction(clock: FakeClock, draw: float, expected: float) -> None:
    """The open period is reset_timeout * (1 + jitter * random())."""
    breaker = make(clock, failure_threshold=1, reset_timeout=20.0, jitter=0.5)
    breaker._random = lambda: draw
    fail(breaker)
    with pytest.raises(CircuitOpenError) as info:
        succeed(breaker)
    assert info.value.retry_after == pytest.approx(expected)
    clock.advance(expected - 1e-6)
    assert breaker.state is OPEN
    clock.advance(2e-6)
    assert breaker.state is HALF_OPEN


def test_jitter_with_real_random_stays_in_bounds(clock: FakeClock) -> None:
    """Over many openings the jittered period stays within [period, period * (1 + jitter)]."""
    breaker = make(clock, failure_threshold=1, reset_timeout=10.0, jitter=0.3)
    seen = []
    for _ in range(200):
        breaker.reset()
        fail(breaker)
        period = breaker.retry_after
        assert period is not None
        seen.append(period)
    assert all(10.0 <= p <= 13.0 for p in seen)
    assert len(set(seen)) > 1


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999, 1.0 - 2**-53])
def test_jitter_never_takes_an_open_period_past_max_reset_timeout(
    clock: FakeClock, draw: float
) -> None:
    """max_reset_timeout is a hard cap: at the cap the jitter range moves down to end
    there (never below reset_timeout), so open periods stay spread and capped."""
    breaker = make(
        clock, failure_threshold=1, reset_timeout=10.0, reset_timeout_multiplier=2.0,
        max_reset_timeout=25.0, jitter=0.5, half_open_max_requests=1,
    )
    breaker._random = lambda: draw
    fail(breaker)
    periods = []
    for _ in range(4):
        period = breaker.retry_after
        assert period is not None
        periods.append(period)
        clock.advance(period)
        fail(breaker)  # the probe fails: the next period is doubled, up to the cap
    assert all(10.0 <= p <= 25.0 for p in periods), periods
    # Round 0: [10, 15]; round 1 (20 s): [15, 25]; at the cap (25 s): [12.5, 25].
    assert periods == pytest.approx(
        [10.0 + 5.0 * draw, 15.0 + 10.0 * draw, 12.5 + 12.5 * draw, 12.5 + 12.5 * draw]
    )


def test_jitter_at_the_cap_still_spreads_a_fleet(clock: FakeClock) -> None:
    """With real randomness, breakers whose jitter reaches the cap do not all probe at
    once; with no room between reset_timeout and the cap, there is no jitter."""
    config = CircuitBreakerConfig(
        failure_threshold=1, reset_timeout=10.0, max_reset_timeout=11.0, jitter=0.2
    )
    periods = set()
    for i in range(50):
        breaker = CircuitBreaker(f"fleet-{i}", config, clock=clock)
        fail(breaker)
        period = breaker.retry_after
        assert period is not None and 10.0 <= period <= 11.0
        periods.add(period)
    assert len(periods) > 1
    pinned = CircuitBreaker("pinned", config.replace(max_reset_timeout=10.0), clock=clock)
    fail(pinned)
    assert pinned.retry_after == 10.0


def test_retry_after_agrees_with_the_rejection_in_every_state(clock: FakeClock) -> None:
    """`breaker.retry_after` is what a rejection would say: 0.0 when a call would pass,
    the rest of the open period when OPEN, None when nobody can tell (HALF_OPEN with
    every probe slot taken, forced open)."""
    breaker = make(clock, failure_threshold=1, reset_timeout=30.0, half_open_max_requests=1)

    def rejection() -> float | None:
        with pytest.raises(CircuitOpenError) as info:
            breaker.call(lambda: None)
        return info.value.retry_after

    assert breaker.retry_after == 0.0  # CLOSED
    fail(breaker)
    clock.advance(10.0)
    assert breaker.retry_after == rejection() == 20.0
    clock.advance(20.0)
    assert breaker.state is HALF_OPEN
    assert breaker.retry_after == 0.0  # a probe would pass
    token = breaker._acquire()  # the one probe, in flight
    assert breaker.retry_after is None
    assert rejection() is None
    breaker._release_abandoned(token)
    assert breaker.retry_after == 0.0
    breaker.force_open()
    assert breaker.retry_after is None
    assert rejection() is None


# -- outcomes --------------------------------------------------------------------


def test_excluded_exceptions_are_ignored(clock: FakeClock) -> None:
    """Excluded exceptions (and their subclasses) propagate and count as ignored."""
    breaker = make(clock, failure_threshold=1, exclude_exceptions=(LookupError,))
    fail(breaker, KeyError)
    fail(breaker, IndexError)
    assert breaker.state is CLOSED
    m = breaker.get_metrics()
    assert (m.ignored_requests, m.failed_requests, m.total_requests) == (2, 0, 2)


@dataclasses.dataclass
class Ok:
    value: int


@dataclasses.dataclass
class Failure:
    error: str


def result_classifier(result: object, exc: BaseException | None) -> bool | None:
    if exc is not None:
        return not isinstance(exc, KeyError)
    if result is None:
        return None
    return isinstance(result, Failure)


def test_classifier_lets_returned_failures_trip_the_breaker(clock: FakeClock) -> None:
    """A function returning `Failure` values opens the breaker through the classifier."""
    breaker = CircuitBreaker(
        "result", CircuitBreakerConfig(failure_threshold=2), classifier=result_classifier, clock=clock
    )
    assert breaker.call(lambda: Ok(1)) == Ok(1)
    assert breaker.call(lambda: Failure("down")) == Failure("down")
    assert breaker.state is CLOSED
    assert breaker.call(lambda: None) is None  # ignored: the streak goes on
    assert breaker.call(lambda: Failure("down")) == Failure("down")
    assert breaker.state is OPEN
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests, m.ignored_requests) == (1, 2, 1)


def test_classifier_sees_exceptions(clock: FakeClock) -> None:
    """The classifier gets `(None, exc)` and may call an exception a success."""
    seen: list[tuple[object, BaseException | None]] = []

    def classify(result: object, exc: BaseException | None) -> bool | None:
        seen.append((result, exc))
        return result_classifier(result, exc)

    breaker = CircuitBreaker("exc", classifier=classify, clock=clock)
    fail(breaker, KeyError)
    fail(breaker)
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests) == (1, 1)
    assert seen[0][0] is None and isinstance(seen[0][1], KeyError)


def test_exclude_exceptions_win_over_the_classifier(clock: FakeClock) -> None:
    """An excluded exception is ignored before the classifier is asked."""
    breaker = CircuitBreaker(
        "excl", CircuitBreakerConfig(exclude_exceptions=(Boom,)),
        classifier=lambda r, e: True, clock=clock,
    )
    fail(breaker)
    assert breaker.get_metrics().ignored_requests == 1


def test_classifier_that_raises_is_ignored_and_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising classifier makes the outcome ignored, logs it, and the call returns."""

    def broken(result: object, exc: BaseException | None) -> bool | None:
        raise RuntimeError("classifier bug")

    breaker = CircuitBreaker(
        "broken", CircuitBreakerConfig(failure_threshold=1), classifier=broken, clock=clock
    )
    with caplog.at_level(logging.ERROR, logger="httpx_breaker"):
        assert breaker.call(lambda: 42) == 42
        fail(breaker)
    assert breaker.state is CLOSED
    assert breaker.get_metrics().ignored_requests == 2
    assert len([r for r in caplog.records if "classifier" in r.getMessage()]) == 2
    assert caplog.records[0].exc_info is not None


@pytest.mark.parametrize("junk", [1, 0, "yes", "failure", [True]])
def test_classifier_returning_junk_is_ignored_and_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, junk: object
) -> None:
    """A verdict other than True, False or None is ignored and logged."""
    breaker = CircuitBreaker(
        "junk", CircuitBreakerConfig(failure_threshold=1), classifier=lambda r, e: junk, clock=clock
    )
    with caplog.at_level(logging.ERROR, logger="httpx_breaker"):
        fail(breaker)
    assert breaker.state is CLOSED
    assert breaker.get_metrics().ignored_requests == 1
    assert any(type(junk).__name__ in r.getMessage() for r in caplog.records)


def test_sync_overrun_is_a_failure_and_still_returns(clock: FakeClock) -> None:
    """`call` records a call longer than `timeout` as a failure and returns its result."""
    breaker = make(clock, timeout=1.0, failure_threshold=2)
    assert breaker.call(taking(clock, 1.0)) == "ok"  # exactly the timeout: not past it
    assert breaker.get_metrics().failed_requests == 0
    assert breaker.call(taking(clock, 1.5, "late")) == "late"
    assert breaker.get_metrics().failed_requests == 1

    def slow_ignored() -> None:
        clock.advance(5.0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(slow_ignored)
    assert breaker.get_metrics().ignored_requests == 1  # an ignored outcome stays ignored
    assert breaker.call(taking(clock, 2.0)) == "ok"
    assert breaker.state is OPEN


def test_outcome_of_an_earlier_state_is_counted_but_moves_nothing(clock: FakeClock) -> None:
    """A call admitted before the breaker opened counts in the metrics but not the state."""
    breaker = make(clock, failure_threshold=2, reset_timeout=10.0)

    def open_meanwhile() -> None:
        open_breaker(breaker)
        clock.advance(1.0)
        raise Boom

    with pytest.raises(Boom):
        breaker.call(open_meanwhile)
    assert breaker.state is OPEN
    assert breaker.retry_after == 9.0  # not reopened by the late failure
    assert breaker.get_metrics().failed_requests == 3


# -- dry run ---------------------------------------------------------------------


def test_dry_run_never_rejects_but_tracks_states(clock: FakeClock) -> None:
    """Dry run lets would-be rejections through, counts them, and records no outcome."""
    breaker = make(clock, failure_threshold=1, reset_timeout=5.0, half_open_max_requests=1, dry_run=True)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    fail(breaker)
    assert breaker.state is OPEN
    succeed(breaker, "passed")  # would have been rejected
    fail(breaker)  # would have been rejected: its failure is not recorded
    m = breaker.get_metrics()
    assert (m.rejected_requests, m.successful_requests, m.failed_requests) == (2, 0, 1)
    assert m.total_requests == 1
    assert [e.kind for e in events] == ["failure", "state_change", "rejected", "rejected"]
    clock.advance(5.0)
    assert breaker.state is HALF_OPEN
    succeed(breaker)  # the probe
    assert breaker.state is CLOSED
    assert breaker.get_metrics().successful_requests == 1


def test_dry_run_lets_calls_pass_a_full_half_open(clock: FakeClock) -> None:
    """In dry run, a call beyond the probe limit passes and counts as rejected."""
    breaker = make(clock, failure_threshold=1, reset_timeout=1.0, half_open_max_requests=1, dry_run=True)
    fail(breaker)
    clock.advance(1.0)
    inner: list[object] = []
    breaker.call(lambda: inner.append(breaker.call(lambda: "extra")))
    assert inner == ["extra"]
    m = breaker.get_metrics()
    assert (m.rejected_requests, m.successful_requests) == (1, 1)
    assert breaker.state is CLOSED


# -- manual control --------------------------------------------------------------


def test_force_open_rejects_until_reset(clock: FakeClock) -> None:
    """A forced-open breaker rejects with retry_after None, whatever the clock says."""
    breaker = make(clock, reset_timeout=1.0)
    breaker.force_open()
    for _ in range(3):
        clock.advance(1e6)
        assert breaker.state is OPEN
        assert breaker.retry_after is None
        with pytest.raises(CircuitOpenError) as info:
            succeed(breaker)
        assert info.value.retry_after is None
        assert info.value.state is OPEN
    breaker.reset()
    assert breaker.state is CLOSED
    succeed(breaker)


def test_force_open_event_has_no_retry_after(clock: FakeClock) -> None:
    """The state-change event of a forced opening says nobody knows when it ends."""
    breaker = make(clock)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    breaker.force_open()
    assert [(e.kind, e.cause, e.retry_after) for e in events] == [("state_change", "forced", None)]


def test_force_open_on_an_open_breaker_holds_it(clock: FakeClock) -> None:
    """Forcing an already open breaker keeps it open past its open period."""
    breaker = make(clock, failure_threshold=1, reset_timeout=1.0)
    fail(breaker)
    breaker.force_open()
    clock.advance(100.0)
    assert breaker.state is OPEN
    assert breaker.retry_after is None


def test_force_closed_never_opens_until_reset(clock: FakeClock) -> None:
    """A forced-closed breaker passes every call and ignores failures for its state."""
    breaker = make(clock, failure_threshold=1)
    fail(breaker)
    assert breaker.state is OPEN
    breaker.force_closed()
    assert breaker.state is CLOSED
    for _ in range(5):
        fail(breaker)
    assert breaker.state is CLOSED
    assert breaker.get_metrics().failed_requests == 6
    breaker.reset()
    fail(breaker)
    assert breaker.state is OPEN


def test_reset_keeps_counters_and_empties_the_window(clock: FakeClock) -> None:
    """`reset()` returns to CLOSED, empties window and streak, keeps the counters."""
    breaker = make(clock, failure_threshold=3, window_size=5)
    fail(breaker)
    fail(breaker)
    succeed(breaker)
    fail(breaker)
    before = breaker.get_metrics()
    breaker.reset()
    after = breaker.get_metrics()
    assert after.state is CLOSED
    assert (after.window_requests, after.window_failures, after.consecutive_failures) == (0, 0, 0)
    assert (after.successful_requests, after.failed_requests) == (
        before.successful_requests, before.failed_requests
    )
    fail(breaker)
    fail(breaker)
    assert breaker.state is CLOSED  # the old streak was forgotten
    open_breaker(breaker)
    breaker.reset()
    assert breaker.state is CLOSED
    assert breaker.get_metrics().window_requests == 0


def test_reset_ends_backoff(clock: FakeClock) -> None:
    """After `reset()` the next opening uses the base reset_timeout."""
    breaker = make(
        clock, failure_threshold=1, reset_timeout=10.0, reset_timeout_multiplier=3.0,
        half_open_max_requests=1,
    )
    fail(breaker)
    clock.advance(10.0)
    fail(breaker)
    assert breaker.retry_after == 30.0
    breaker.reset()
    fail(breaker)
    assert breaker.retry_after == 10.0


# -- metrics ---------------------------------------------------------------------


def test_metrics_are_exact(clock: FakeClock) -> None:
    """Counters, rates and the mean duration of successful and failed calls are exact."""
    breaker = make(clock, failure_threshold=100, window_size=100, exclude_exceptions=(KeyError,))
    breaker.call(taking(clock, 1.0))
    breaker.call(taking(clock, 2.0))
    breaker.call(taking(clock, 3.0))

    def slow_failure() -> None:
        clock.advance(6.0)
        raise Boom

    def slow_ignored() -> None:
        clock.advance(40.0)
        raise KeyError

    with pytest.raises(Boom):
        breaker.call(slow_failure)
    with pytest.raises(KeyError):
        breaker.call(slow_ignored)
    m = breaker.get_metrics()
    assert isinstance(m, BreakerMetrics)
    assert (m.successful_requests, m.failed_requests, m.ignored_requests) == (3, 1, 1)
    assert m.total_requests == m.successful_requests + m.failed_requests + m.ignored_requests == 5
    assert m.success_rate == 0.75
    assert m.failure_rate == 0.25
    assert m.average_response_time == 3.0  # (1 + 2 + 3 + 6) / 4; the ignored call is not timed
    assert (m.window_requests, m.window_failures) == (4, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.total_requests = 0  # type: ignore[misc]


def test_only_ignored_calls_keep_the_no_call_rates(clock: FakeClock) -> None:
    """With only ignored outcomes, success_rate is 1.0 and failure_rate 0.0."""
    breaker = make(clock, exclude_exceptions=(KeyError,))
    fail(breaker, KeyError)
    m = breaker.get_metrics()
    assert (m.total_requests, m.success_rate, m.failure_rate) == (1, 1.0, 0.0)


def test_metrics_window_reflects_expiry(clock: FakeClock) -> None:
    """The window fields of a snapshot leave out outcomes that have expired."""
    breaker = make(clock, window_duration=10.0, failure_threshold=100)
    fail(breaker)
    succeed(breaker)
    clock.advance(11.0)
    m = breaker.get_metrics()
    assert (m.window_requests, m.window_failures) == (0, 0)
    assert m.failed_requests == 1


def test_state_changes_keep_the_last_thousand(clock: FakeClock) -> None:
    """`state_changes` holds at most 1,000 entries, the most recent ones, oldest first."""
    breaker = make(clock)
    for _ in range(600):
        clock.advance(1.0)
        breaker.force_open()
        breaker.reset()
    changes = breaker.get_metrics().state_changes
    assert len(changes) == 1000
    assert changes[-1] == (clock.now, OPEN, CLOSED)
    assert changes[0][0] == 1000.0 + 101  # the 200 changes of the first 100 ticks were dropped
    assert [t for t, _, _ in changes] == sorted(t for t, _, _ in changes)


def test_metrics_to_dict_is_plain_data(clock: FakeClock) -> None:
    """`to_dict()` gives strings for states and lists for state changes."""
    breaker = make(clock, failure_threshold=1)
    fail(breaker)
    data = breaker.get_metrics().to_dict()
    assert data["state"] == "open"
    assert data["state_changes"] == [[1000.0, "closed", "open"]]
    assert data["failed_requests"] == 1


# -- listeners -------------------------------------------------------------------


def test_listeners_see_every_event_in_order(clock: FakeClock) -> None:
    """add_listener receives outcome, state-change and rejection events with their facts."""
    breaker = make(
        clock, failure_threshold=2, reset_timeout=5.0, half_open_max_requests=1,
        exclude_exceptions=(KeyError,),
    )
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    breaker.call(taking(clock, 0.5))
    fail(breaker, KeyError)
    fail(breaker)
    fail(breaker)
    with pytest.raises(CircuitOpenError):
        succeed(breaker)
    clock.advance(5.0)
    succeed(breaker)
    kinds = [(e.kind, e.cause) for e in events]
    assert kinds == [
        ("success", None),
        ("ignored", None),
        ("failure", None),
        ("failure", None),
        ("state_change", "failure_threshold"),
        ("rejected", None),
        ("state_change", "reset_timeout"),
        ("success", None),
        ("state_change", "probes_succeeded"),
    ]
    assert events[0].duration == 0.5 and events[0].name == "svc"
    opened = events[4]
    assert (opened.old_state, opened.new_state, opened.retry_after) == (CLOSED, OPEN, 5.0)
    assert events[5].retry_after == 5.0 and events[5].state is OPEN
    assert events[7].state is HALF_OPEN  # the outcome carries the state it was recorded in


def test_a_released_permit_counts_as_ignored_and_fires_no_event(clock: FakeClock) -> None:
    """`release` (what the collector does with a dropped response) counts and stays quiet.

    It runs from finalisers, where a listener's code must not run: the docstring of
    `BreakerEvent` says so, and this pins it.
    """
    breaker = make(clock, failure_threshold=1, reset_timeout=1.0, half_open_max_requests=1)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    breaker.release(breaker.admit())
    fail(breaker)
    clock.advance(1.0)
    breaker.release(breaker.admit())  # a probe handed back: its slot is free again
    succeed(breaker)
    assert breaker.get_metrics().ignored_requests == 2
    assert [e.kind for e in events] == [
        "failure", "state_change", "state_change", "success", "state_change"
    ]
    assert breaker.state is CLOSED


def test_removed_listener_is_not_called(clock: FakeClock) -> None:
    """`remove_listener` stops delivery; removing an unknown listener is harmless."""
    breaker = make(clock)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    breaker.remove_listener(events.append)
    breaker.remove_listener(print)
    succeed(breaker)
    assert events == []
    with pytest.raises(TypeError):
        breaker.add_listener("not callable")  # type: ignore[arg-type]


def test_listeners_run_outside_the_lock(clock: FakeClock) -> None:
    """A listener may read state and metrics, and even call through, without deadlock."""
    breaker = make(clock, failure_threshold=1, reset_timeout=1.0)
    seen: list[tuple[str, CircuitState, int]] = []

    def listener(event: BreakerEvent) -> None:
        seen.append((event.kind, breaker.state, breaker.get_metrics().total_requests))

    def on_change(old: CircuitState, new: CircuitState) -> None:
        seen.append(("on_state_change", breaker.get_state(), breaker.get_metrics().failed_requests))

    breaker.add_listener(listener)
    breaker.on_state_change = on_change
    fail(breaker)
    with pytest.raises(CircuitOpenError):
        succeed(breaker)
    clock.advance(1.0)
    assert breaker.state is HALF_OPEN
    assert seen == [
        ("failure", OPEN, 1),
        ("on_state_change", OPEN, 1),
        ("state_change", OPEN, 1),
        ("rejected", OPEN, 1),
        ("on_state_change", HALF_OPEN, 1),
        ("state_change", HALF_OPEN, 1),
    ]


def test_listener_exceptions_are_logged_and_never_reach_the_caller(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Exceptions in listeners and on_state_change are logged; calls and later listeners go on."""
    breaker = make(clock, failure_threshold=1)
    later: list[str] = []

    def bad_listener(event: BreakerEvent) -> None:
        raise RuntimeError(f"listener bug on {event.kind}")

    def bad_callback(old: CircuitState, new: CircuitState) -> None:
        raise RuntimeError("callback bug")

    breaker.add_listener(bad_listener)
    breaker.add_listener(lambda e: later.append(e.kind))
    breaker.on_state_change = bad_callback
    with caplog.at_level(logging.ERROR, logger="httpx_breaker"):
        fail(breaker)  # raises Boom, not RuntimeError
        with pytest.raises(CircuitOpenError):
            succeed(breaker)
        breaker.reset()
    assert later == ["failure", "state_change", "rejected", "state_change"]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert sum("listener of circuit breaker 'svc' raised" in m for m in messages) == 4
    assert sum("on_state_change of circuit breaker 'svc' raised" in m for m in messages) == 2
    assert all(r.exc_info for r in caplog.records if r.levelno == logging.ERROR)


def test_state_changes_are_logged(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """Opening logs a WARNING naming the breaker and the cause."""
    breaker = make(clock, failure_threshold=1)
    with caplog.at_level(logging.INFO, logger="httpx_breaker"):
        fail(breaker)
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'svc'" in record.getMessage() and "failure_threshold" in record.getMessage()


# -- permits returned without an outcome -----------------------------------------


def test_abandoned_permit_is_returned_as_ignored(clock: FakeClock) -> None:
    """`_release_abandoned` frees a probe slot and counts the call as ignored."""
    breaker = make(clock, failure_threshold=1, reset_timeout=1.0, half_open_max_requests=1)
    fail(breaker)
    clock.advance(1.0)
    token = breaker._acquire()
    with pytest.raises(CircuitOpenError):
        succeed(breaker)
    breaker._release_abandoned(token)
    assert breaker.get_metrics().ignored_requests == 1
    succeed(breaker)
    assert breaker.state is CLOSED


def test_abandoned_permit_while_locked_is_deferred_not_lost(clock: FakeClock) -> None:
    """A permit released while the lock is held (a finalizer) is returned at the next operation."""
    breaker = make(clock, failure_threshold=1, reset_timeout=1.0, half_open_max_requests=1)
    fail(breaker)
    clock.advance(1.0)
    token = breaker._acquire()
    with breaker._lock:
        breaker._release_abandoned(token)  # must not block
    succeed(breaker)  # the deferred permit is drained first, so this probe passes
    assert breaker.state is CLOSED
    assert breaker.get_metrics().ignored_requests == 1


def test_permit_released_while_another_thread_holds_the_lock_shows_at_once(
    clock: FakeClock,
) -> None:
    """A permit handed back while another thread held the lock shows in the metrics and
    in `retry_after` as soon as that thread lets go, before the breaker's next call."""
    breaker = make(clock, failure_threshold=1, reset_timeout=1.0, half_open_max_requests=1)
    fail(breaker)
    clock.advance(1.0)
    token = breaker._acquire()  # the only probe slot
    assert breaker.retry_after is None  # every slot taken
    holding, done = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with breaker._lock:
            holding.set()
            done.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert holding.wait(10)
    breaker.release(token)  # returns at once: the lock is taken
    done.set()
    holder.join(10)
    assert breaker.retry_after == 0.0  # the slot is free again
    assert breaker.get_metrics().ignored_requests == 1


def test_deferred_permit_counts_in_the_metrics_snapshot(clock: FakeClock) -> None:
    """`get_metrics` counts a deferred permit (without a `retry_after` read first)."""
    breaker = make(clock)
    token = breaker._acquire()
    with breaker._lock:
        breaker.release(token)
    assert breaker.get_metrics().ignored_requests == 1
    assert breaker.get_metrics().total_requests == 1


def test_retry_after_floor_lengthens_but_never_opens(clock: FakeClock) -> None:
    """A failure's retry_after lengthens an open period (capped) and never opens by itself."""
    breaker = make(clock, failure_threshold=2, reset_timeout=10.0, max_retry_after=100.0)
    token = breaker._acquire()
    breaker._record(token, 1, clock.now, clock.now, retry_after=50.0)
    assert breaker.state is CLOSED
    token = breaker._acquire()
    breaker._record(token, 1, clock.now, clock.now, retry_after=500.0)
    assert breaker.state is OPEN
    assert breaker.retry_after == 100.0  # capped by max_retry_after
    ignoring = make(clock, failure_threshold=1, reset_timeout=10.0, respect_retry_after=False)
    token = ignoring._acquire()
    ignoring._record(token, 1, clock.now, clock.now, retry_after=50.0)
    assert ignoring.retry_after == 10.0


def test_a_round_of_slow_probes_reopens(clock: FakeClock) -> None:
    """Probes that all succeed but are all slow reopen the breaker, with backoff."""
    breaker = make(
        clock, failure_threshold=1, reset_timeout=10.0, half_open_max_requests=2,
        slow_call_duration=1.0, slow_call_rate_threshold=1.0, reset_timeout_multiplier=2.0,
    )
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    fail(breaker)
    clock.advance(10.0)
    breaker.call(taking(clock, 1.0))
    breaker.call(taking(clock, 1.5))
    assert breaker.state is OPEN
    assert breaker.retry_after == 20.0
    assert events[-1].cause == "slow_call_rate"
    clock.advance(20.0)
    breaker.call(taking(clock, 1.0))
    breaker.call(taking(clock, 0.5))  # one fast probe of two: below a rate of 1.0
    assert breaker.state is CLOSED


def test_a_late_success_from_before_opening_changes_nothing(clock: FakeClock) -> None:
    """A success admitted while CLOSED but finished after the breaker opened is counted,
    yet neither restarts the open period nor moves the state (it is from another epoch)."""
    breaker = make(
        clock, failure_threshold=100, failure_rate_threshold=0.5, window_size=4, reset_timeout=30.0
    )
    late = breaker._acquire()  # a call in flight, admitted while CLOSED
    start = clock.now
    succeed(breaker)
    succeed(breaker)
    fail(breaker)
    fail(breaker)
    assert breaker.state is OPEN
    clock.advance(10.0)
    breaker._record_success(late, start, clock.now)
    m = breaker.get_metrics()
    assert m.successful_requests == 3
    assert len(m.state_changes) == 1
    assert breaker.retry_after == pytest.approx(20.0)  # the open period did not restart


def test_call_passes_positional_and_keyword_arguments(clock: FakeClock) -> None:
    """`call(fn, *args, **kwargs)` hands both on, with or without keywords."""
    breaker = make(clock)

    def pair(a: int, b: int = 0) -> tuple[int, int]:
        return a, b

    assert breaker.call(pair, 1) == (1, 0)
    assert breaker.call(pair, 1, b=2) == (1, 2)
    assert breaker.call(pair, a=3, b=4) == (3, 4)
    assert breaker.get_metrics().successful_requests == 3


def test_reset_of_a_closed_breaker_keeps_backoff_at_the_base(clock: FakeClock) -> None:
    """`reset()` of a breaker that is already CLOSED leaves backoff at its start: the
    next opening uses the base reset_timeout."""
    breaker = make(clock, failure_threshold=1, reset_timeout=10.0, reset_timeout_multiplier=3.0)
    breaker.reset()
    fail(breaker)
    assert breaker.retry_after == 10.0


def test_reset_of_a_closed_breaker_forgets_calls_already_admitted(clock: FakeClock) -> None:
    """A call admitted before `reset()` (while CLOSED) still counts when it fails, but
    its failure no longer moves the state: reset starts a new epoch."""
    breaker = make(clock, failure_threshold=1)
    before = breaker.admit()
    breaker.reset()
    breaker.record(before, FAILURE, clock.now, clock.now)
    assert breaker.state is CLOSED
    m = breaker.get_metrics()
    assert (m.failed_requests, m.window_requests) == (1, 0)


def test_a_retry_after_extends_a_running_open_period_to_its_own_length(
    clock: FakeClock,
) -> None:
    """A failure with a short Retry-After near the end of the open period makes the
    period last until that many seconds from the failure, exactly; one that arrives
    at the very end of the period extends nothing (the period is over)."""
    breaker = make(clock, failure_threshold=1, reset_timeout=10.0)
    late = breaker.admit()
    fail(breaker)  # OPEN for 10 s
    clock.advance(9.8)
    breaker.record(late, FAILURE, clock.now, clock.now, retry_after=0.5)
    assert breaker.retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    assert breaker.state is HALF_OPEN

    breaker.reset()
    late = breaker.admit()
    fail(breaker)
    clock.advance(10.0)  # the period ends now
    breaker.record(late, FAILURE, clock.now, clock.now, retry_after=30.0)
    assert breaker.state is HALF_OPEN
