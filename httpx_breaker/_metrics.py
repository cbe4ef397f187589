"""BreakerMetrics: an immutable snapshot of one breaker's counters."""

from __future__ import annotations

import dataclasses
from typing import Any

from ._state import CircuitState

__all__ = ["BreakerMetrics"]


@dataclasses.dataclass(frozen=True)
class BreakerMetrics:
    """What a breaker has seen, taken at one instant.

    Counters are for the breaker's whole life (`reset()` keeps them); the `window_*`
    fields describe the sliding window the rate rules read.
    """

    total_requests: int
    """Calls let through: successful + failed + ignored."""
    successful_requests: int
    """Calls the classifier (or the default rules) judged successes."""
    failed_requests: int
    """Calls judged failures, timeouts included."""
    rejected_requests: int
    """Calls refused by the breaker (in dry-run: that would have been); not in the total."""
    ignored_requests: int
    """Calls that were neither success nor failure: excluded exceptions, cancellations,
    classifier verdicts of None, responses dropped unread."""
    success_rate: float
    """successful / (successful + failed); 1.0 with no such calls."""
    failure_rate: float
    """failed / (successful + failed); 0.0 with no such calls."""
    average_response_time: float
    """Mean duration in seconds of the successful and failed calls; 0.0 with none."""
    state_changes: tuple[tuple[float, CircuitState, CircuitState], ...]
    """The last (at most 1,000) `(clock time, old state, new state)` changes, oldest first."""
    slow_requests: int = 0
    """Successful or failed calls at least `slow_call_duration` long."""
    state: CircuitState = CircuitState.CLOSED
    """The breaker's state when the snapshot was taken."""
    consecutive_failures: int = 0
    """Failures since the last success, as `failure_threshold` counts them."""
    window_requests: int = 0
    """Outcomes (successes and failures) in the sliding window now."""
    window_failures: int = 0
    """Failures among them."""
    window_slow_requests: int = 0
    """Slow calls among them (see `slow_call_duration`)."""
    total_response_time: float = 0.0
    """Summed duration in seconds of the successful and failed calls."""
    state_change_counts: tuple[tuple[CircuitState, CircuitState, int], ...] = ()
    """`(old state, new state, how many times)` for every change ever made: unlike
    `state_changes`, never trimmed, so exporters can count monotonically."""
    throughput: float = 0.0
    """Calls let through per second over the last `window_duration` seconds.

    How it is computed: the breaker notes its count of calls let through (the
    `total_requests` count: successful + failed + ignored) at bucket boundaries
    `window_duration / 6` seconds apart, taken by the first call (or read) after each
    boundary, so nothing is added per call; it keeps the last 8 such notes. The count
    at `now - window_duration` is interpolated between the two notes around it (exact
    when no call fell between them; otherwise off by at most the calls of that one
    bucket), and ``throughput = (count now - count then) / window_duration``. A
    breaker younger than `window_duration` divides its calls by the whole
    `window_duration` too, so it starts low. `reset()` does not restart it."""
    availability: float = 1.0
    """Share of the breaker's life, since it was made or last `reset()`, not spent OPEN.

    ``1 - seconds OPEN / seconds alive`` on the breaker's clock, in [0, 1]; 1.0 for a
    breaker with no time behind it. OPEN time runs from entering OPEN to the end of the
    open period (a period that ended counts as HALF_OPEN from its end, even before
    anyone reads the state); a forced-open breaker is OPEN until `reset()`; a dry-run
    breaker's OPEN time counts although it lets calls through."""
    state_seconds: tuple[tuple[CircuitState, float], ...] = ()
    """`(state, seconds)` for CLOSED, OPEN and HALF_OPEN: the time spent in each over the
    breaker's whole life (never reset, so exporters can count monotonically), on its
    clock, as `availability` counts it."""
    bulkhead_rejected_requests: int = 0
    """Requests the breaker's bulkhead refused (`BulkheadFullError`: `max_concurrent` in
    flight and no slot within `max_wait`; in dry-run: that would have been). Counted
    apart: in neither `total_requests` nor `rejected_requests`, which are the breaker's
    own, and never a failure. 0 without `max_concurrent`."""
    bulkhead_in_flight_requests: int | None = None
    """Slots of the bulkhead held now: requests admitted and not yet finished (a gauge).
    A dry-run breaker's requests over the limit hold none and are not in it. None
    without `max_concurrent`: a breaker without a limit keeps no such count."""
    bulkhead_waiting_requests: int | None = None
    """Requests waiting for a slot now (a gauge); None without `max_concurrent`."""
    bulkhead_limit: int | None = None
    """`max_concurrent`, or None: saturation is ``bulkhead_in_flight_requests /
    bulkhead_limit``."""

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-serialisable values (states as their strings)."""
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        data["state_seconds"] = {state.value: seconds for state, seconds in self.state_seconds}
        data["state_change_counts"] = [
            [old.value, new.value, n] for old, new, n in self.state_change_counts
        ]
        data["state_changes"] = [
            [t, old.value, new.value] for t, old, new in self.state_changes
        ]
        return data
