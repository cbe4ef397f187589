"""CircuitState, and the events a breaker reports to its listeners."""

from __future__ import annotations

import dataclasses
import enum

__all__ = ["BreakerEvent", "CircuitState"]


class CircuitState(str, enum.Enum):
    """The three states of a breaker.

    - CLOSED: calls pass; outcomes are counted.
      -> OPEN when consecutive failures reach `failure_threshold`, or the window's
      failure (or slow) share reaches its threshold.
    - OPEN: calls are refused with `CircuitOpenError` without being attempted.
      -> HALF_OPEN when the open period ends.
    - HALF_OPEN: up to `half_open_max_requests` probes pass.
      -> CLOSED when that many probes succeed; -> OPEN on any failed probe.
    """

    CLOSED = "closed"
    """Calls pass; outcomes are counted."""
    OPEN = "open"
    """Calls are refused before any I/O until the open period ends."""
    HALF_OPEN = "half_open"
    """Up to `half_open_max_requests` probes pass; the rest are refused."""

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerEvent:
    """Something a breaker did, as given to listeners added with `add_listener`.

    `kind` is one of ``"state_change"``, ``"rejected"``, ``"bulkhead_rejected"``,
    ``"success"``, ``"failure"``, ``"ignored"``. ``"rejected"`` is the breaker's own
    refusal (`CircuitOpenError`); ``"bulkhead_rejected"`` a refusal by its bulkhead
    (`BulkheadFullError`; in dry-run, a request over `max_concurrent` let through),
    with `state` the breaker's state then. For a state change, `old_state` and `new_state` are set and `cause`
    says why (``"failure_threshold"``, ``"failure_rate"``, ``"slow_call_rate"``,
    ``"probe_failed"``, ``"probes_succeeded"``, ``"reset_timeout"``, ``"forced"``,
    ``"reset"``, ``"fleet"`` (another replica made it, through a shared store), or the
    cause given to `CircuitBreaker.transition_to`, such as ``"testing"``). `duration` is
    the call's duration in seconds where there was a call; `time` is the breaker's clock
    when it happened.

    A permit handed back with no outcome (a response dropped unclosed and collected,
    `CircuitBreaker.release`) counts in ``ignored_requests`` but fires no event: it is
    settled from the garbage collector, where a listener's code must not run.
    """

    kind: str
    """``"state_change"``, ``"rejected"``, ``"bulkhead_rejected"``, ``"success"``,
    ``"failure"`` or ``"ignored"``."""
    name: str
    """The breaker's name (for a transport's breaker, its host key)."""
    state: CircuitState
    """The breaker's state when it happened (for a state change, the state entered)."""
    time: float
    """The breaker's clock when it happened (monotonic seconds by default)."""
    old_state: CircuitState | None = None
    """For a state change: the state left."""
    new_state: CircuitState | None = None
    """For a state change: the state entered."""
    cause: str | None = None
    """For a state change: why (see above)."""
    duration: float | None = None
    """For a success, failure or ignored call: how long it took, in seconds."""
    retry_after: float | None = None
    """For a rejection or a state change: seconds until a probe may pass (for a change
    to OPEN, the open period); None where nobody can tell or it does not apply."""
