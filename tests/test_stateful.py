"""A hypothesis state machine comparing CircuitBreaker with a small reference model.

The model keeps its window as a plain list and recounts it; the breaker keeps a ring
buffer with running counts. Both see the same random sequence of calls (some left in
flight while others run), successes, failures, ignored outcomes, cancellations (a
permit taken, then given back as ignored) and clock jumps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from httpx_breaker import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError, CircuitState
from httpx_breaker._breaker import DRY_RUN, FAILURE, IGNORED, SUCCESS

from .conftest import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
OUTCOMES = st.sampled_from([SUCCESS, FAILURE, IGNORED])


class Boom(Exception):
    """A failure."""


class Skip(Exception):
    """An excluded exception: neither success nor failure."""


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    window_size = draw(st.integers(1, 5))
    reset_timeout = draw(st.sampled_from([0.0, 1.0, 2.5]))
    return {
        "window_size": window_size,
        "minimum_requests": draw(st.none() | st.integers(1, window_size)),
        "window_duration": draw(st.sampled_from([1.0, 5.0, 60.0])),
        "failure_threshold": draw(st.integers(1, 4)),
        "failure_rate_threshold": draw(st.sampled_from([0.25, 0.34, 0.5, 1.0])),
        "half_open_max_requests": draw(st.integers(1, 3)),
        "reset_timeout": reset_timeout,
        "reset_timeout_multiplier": draw(st.sampled_from([1.0, 2.0])),
        "max_reset_timeout": draw(st.sampled_from([None, reset_timeout * 3])),
        "slow_call_duration": draw(st.sampled_from([None, 1.0])),
        "slow_call_rate_threshold": draw(st.sampled_from([0.5, 1.0])),
        "dry_run": draw(st.booleans()),
        "timeout": None,
        "exclude_exceptions": (Skip,),
    }


START = 1000.0  # the fake clock's time when the breaker is made


@dataclasses.dataclass
class Model:
    """The contract of DESIGN.md, written as plainly as possible."""

    cfg: dict[str, Any]
    state: CircuitState = CLOSED
    generation: int = 0
    window: list[tuple[float, bool, bool]] = dataclasses.field(default_factory=list)
    consecutive: int = 0
    open_until: float = 0.0
    failed_rounds: int = 0
    in_flight: int = 0
    succeeded: int = 0
    slow_probes: int = 0
    counts: dict[int, int] = dataclasses.field(default_factory=lambda: dict.fromkeys((0, 1, 2), 0))
    rejected: int = 0
    changes: list[tuple[float, CircuitState, CircuitState]] = dataclasses.field(default_factory=list)
    entered: float = START
    seconds: dict[CircuitState, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys((CLOSED, OPEN, HALF_OPEN), 0.0)
    )

    def seconds_at(self, now: float) -> dict[CircuitState, float]:
        """Time in each state up to `now`: an open period ends at open_until."""
        seconds = dict(self.seconds)
        if self.state is OPEN and now > self.open_until:
            seconds[OPEN] += self.open_until - self.entered
            seconds[HALF_OPEN] += now - self.open_until
        else:
            seconds[self.state] += now - self.entered
        return seconds

    def move(self, new: CircuitState, now: float) -> None:
        self.seconds = self.seconds_at(now)
        self.entered = now
        self.changes.append((now, self.state, new))
        self.state = new
        self.generation += 1
        self.consecutive = self.in_flight = self.succeeded = self.slow_probes = 0
        if new is OPEN:
            period = self.cfg["reset_timeout"] * self.cfg["reset_timeout_multiplier"] ** self.failed_rounds
            cap = self.cfg["max_reset_timeout"]
            self.open_until = now + (period if cap is None else min(period, cap))
        elif new is CLOSED:
            self.window = []
            self.failed_rounds = 0

    def refresh(self, now: float) -> None:
        if self.state is OPEN and now >= self.open_until:
            self.move(HALF_OPEN, now)

    def live_window(self, now: float) -> list[tuple[float, bool, bool]]:
        return [o for o in self.window if o[0] >= now - self.cfg["window_duration"]]

    def admit(self, now: float) -> int | None:
        """A token for an admitted call; None when rejected (DRY_RUN when dry run passes it)."""
        self.refresh(now)
        if self.state is CLOSED:
            return self.generation
        if self.state is HALF_OPEN and self.in_flight + self.succeeded < self.cfg["half_open_max_requests"]:
            self.in_flight += 1
            return self.generation
        self.rejected += 1
        return DRY_RUN if self.cfg["dry_run"] else None

    def finish(self, token: int, outcome: int, start: float, end: float) -> None:
        if token == DRY_RUN:
            return
        self.counts[outcome] += 1
        if token != self.generation:
            return
        slow_after = self.cfg["slow_call_duration"]
        slow = slow_after is not None and end - start >= slow_after and outcome != IGNORED
        if self.state is CLOSED and outcome != IGNORED:
            failed = outcome == FAILURE
            self.window = [*self.live_window(end), (end, failed, slow)][-self.cfg["window_size"] :]
            self.consecutive = self.consecutive + 1 if failed else 0
            n = len(self.window)
            failures = sum(1 for _, f, _ in self.window if f)
            slows = sum(1 for _, _, s in self.window if s)
            minimum = self.cfg["minimum_requests"] or self.cfg["window_size"]
            if self.consecutive >= self.cfg["failure_threshold"] or (
                n >= minimum
                and (
                    failures / n >= self.cfg["failure_rate_threshold"]
                    or (slow_after is not None and slows / n >= self.cfg["slow_call_rate_threshold"])
                )
            ):
                self.move(OPEN, end)
        elif self.state is HALF_OPEN:
            self.in_flight -= 1
            if outcome == FAILURE:
                self.failed_rounds += 1
                self.move(OPEN, end)
            elif outcome == SUCCESS:
                self.succeeded += 1
                self.slow_probes += slow
                if self.succeeded >= self.cfg["half_open_max_requests"]:
                    if slow_after is not None and (
                        self.slow_probes / self.succeeded >= self.cfg["slow_call_rate_threshold"]
                    ):
                        self.failed_rounds += 1
                        self.move(OPEN, end)
                    else:
                        self.move(CLOSED, end)


class BreakerVersusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.pending: list[tuple[int, int, float]] = []  # breaker token, model token, start

    @initialize(cfg=configs())
    def build(self, cfg: dict[str, Any]) -> None:
        self.model = Model(cfg)
        self.breaker = CircuitBreaker("model", CircuitBreakerConfig(**cfg), clock=self.clock)

    @rule(outcome=OUTCOMES, duration=st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    def call(self, outcome: int, duration: float) -> None:
        """A whole call through `breaker.call`, lasting `duration` on the clock."""
        start = self.clock.now
        # What the breaker says about waiting must match what a rejection says.
        told = self.breaker.retry_after
        expected = self.model.admit(start)
        ran = False

        def fn() -> str:
            nonlocal ran
            ran = True
            self.clock.advance(duration)
            if outcome == FAILURE:
                raise Boom
            if outcome == IGNORED:
                raise Skip
            return "ok"

        try:
            self.breaker.call(fn)
        except CircuitOpenError as exc:
            assert expected is None
            assert not ran
            assert exc.state is self.model.state
            assert exc.retry_after == told
            if self.model.state is OPEN:
                assert exc.retry_after == pytest.approx(self.model.open_until - start)
            return
        except (Boom, Skip):
            pass
        assert expected is not None
        assert ran
        assert (told == 0.0) == (expected != DRY_RUN)  # a dry run lets refused calls by
        self.model.finish(expected, outcome, start, self.clock.now)

    @rule()
    def start(self) -> None:
        """Take a permit and leave the call in flight."""
        now = self.clock.now
        expected = self.model.admit(now)
        try:
            token = self.breaker._acquire()
        except CircuitOpenError:
            assert expected is None
            return
        assert expected is not None
        self.pending.append((token, expected, now))

    @precondition(lambda self: self.pending)
    @rule(index=st.integers(0, 99), outcome=OUTCOMES)
    def finish(self, index: int, outcome: int) -> None:
        """An in-flight call ends with `outcome`; IGNORED stands for a cancellation."""
        token, expected, start = self.pending.pop(index % len(self.pending))
        now = self.clock.now
        self.breaker._record(token, outcome, start, now)
        self.model.finish(expected, outcome, start, now)

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5, 10.0, 100.0]))
    def jump(self, seconds: float) -> None:
        """The clock moves on."""
        self.clock.advance(seconds)

    @rule()
    def read_state(self) -> None:
        """Reading `state` moves an expired OPEN to HALF_OPEN, as in the model."""
        self.model.refresh(self.clock.now)
        assert self.breaker.state is self.model.state

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "model"):
            return
        now = self.clock.now
        model = self.model
        model.refresh(now)  # get_metrics() reads `state`, which does the same
        m = self.breaker.get_metrics()
        assert m.state is model.state
        assert (m.successful_requests, m.failed_requests, m.ignored_requests) == (
            model.counts[SUCCESS], model.counts[FAILURE], model.counts[IGNORED]
        )
        assert m.rejected_requests == model.rejected
        assert m.consecutive_failures == model.consecutive
        live = model.live_window(now)
        assert (m.window_requests, m.window_failures, m.window_slow_requests) == (
            len(live), sum(f for _, f, _ in live), sum(s for _, _, s in live)
        )
        assert list(m.state_changes) == model.changes[-1000:]
        # Time per state: as the model counts it, summing to the breaker's age, and
        # never going back (exporters report it as counters).
        seconds = dict(m.state_seconds)
        assert seconds == pytest.approx(model.seconds_at(now))
        assert sum(seconds.values()) == pytest.approx(now - START)
        previous = getattr(self, "previous_seconds", seconds)
        assert all(seconds[s] >= previous[s] for s in seconds)
        self.previous_seconds = seconds
        alive = now - START
        assert m.availability == (pytest.approx(1.0 - seconds[OPEN] / alive) if alive else 1.0)
        assert m.throughput >= 0.0
        if model.state is OPEN:
            assert self.breaker.retry_after == pytest.approx(model.open_until - now)


BreakerVersusModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestBreakerVersusModel = BreakerVersusModel.TestCase
