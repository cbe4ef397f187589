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
    failed_requests: int
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
    consecutive_failures: int = 0
    window_requests: int = 0
    window_failures: int = 0
    window_slow_requests: int = 0
    total_response_time: float = 0.0
    """Summed duration in seconds of the successful and failed calls."""
    state_change_counts: tuple[tuple[CircuitState, CircuitState, int], ...] = ()
    """`(old state, new state, how many times)` for every change ever made: unlike
    `state_changes`, never trimmed, so exporters can count monotonically."""

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-serialisable values (states as their strings)."""
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        data["state_change_counts"] = [
            [old.value, new.value, n] for old, new, n in self.state_change_counts
        ]
        data["state_changes"] = [
            [t, old.value, new.value] for t, old, new in self.state_changes
        ]
        return data
