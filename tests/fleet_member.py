"""A stand-in for the breaker side of the store seam (`SharedBreaker`), for store tests.

It is a test double of our own interface, not of Redis: a tiny state machine with a
fake clock that records every transition the store applies, and helpers that make a
local transition and publish it through the link exactly as the registry will.
"""

from __future__ import annotations

import threading

from httpx_breaker._config import CircuitBreakerConfig
from httpx_breaker._state import CircuitState
from httpx_breaker._store import LocalTransition, LocalView, StoreLink

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Member:
    """One replica's breaker for one key."""

    def __init__(self, config: CircuitBreakerConfig | None = None) -> None:
        self.config = config or CircuitBreakerConfig(reset_timeout=30.0)
        self.clock = ManualClock()
        self.state = CLOSED
        self.open_until = 0.0
        self.failed_rounds = 0
        self.forced = False
        self.applied: list[tuple[CircuitState, float | None, str]] = []
        self.apply_threads: set[str] = set()
        self.changed = threading.Event()
        self.link: StoreLink | None = None

    # -- the seam -------------------------------------------------------------------

    def shared_view(self) -> LocalView:
        left = max(0.0, self.open_until - self.clock()) if self.state is OPEN else None
        return LocalView(self.state, left, self.failed_rounds, self.forced)

    def apply_shared(self, state: CircuitState, open_for: float | None) -> None:
        self.apply_threads.add(threading.current_thread().name)
        if self.forced:
            return
        self.applied.append((state, open_for, "fleet"))
        self.state = state
        if state is OPEN:
            assert open_for is not None
            self.open_until = self.clock() + open_for
        elif state is CLOSED:
            self.failed_rounds = 0
        self.changed.set()

    # -- local transitions, published as the registry will -----------------------------

    def _publish(self, old: CircuitState, cause: str, retry_after: float | None = None) -> None:
        assert self.link is not None
        self.link.published(LocalTransition(old, self.state, cause, retry_after))

    def trip(self, *, retry_after: float | None = None) -> None:
        """CLOSED -> OPEN on its own failures."""
        old, self.state = self.state, OPEN
        self.open_until = self.clock() + self.config.open_period(self.failed_rounds)
        self._publish(old, "failure_threshold", retry_after)

    def half_open(self) -> None:
        """OPEN -> HALF_OPEN on its own clock."""
        old, self.state = self.state, HALF_OPEN
        self._publish(old, "reset_timeout")

    def reopen(self) -> None:
        """HALF_OPEN -> OPEN: a probe failed."""
        old, self.state = self.state, OPEN
        self.failed_rounds += 1
        self.open_until = self.clock() + self.config.open_period(self.failed_rounds)
        self._publish(old, "probe_failed")

    def close(self) -> None:
        """HALF_OPEN -> CLOSED: its probes succeeded."""
        old, self.state = self.state, CLOSED
        self.failed_rounds = 0
        self._publish(old, "probes_succeeded")

    def __repr__(self) -> str:
        return f"<Member {self.state.value}>"
