"""Dashboard rows and health scores, built from breakers: what `monitoring.dashboard` and
`BreakerRegistry.snapshot` share.

It sits below both: `monitoring` reads registries, so the registry must not import
`monitoring`; both import this module instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._breaker import CircuitBreaker
from ._metrics import BreakerMetrics
from ._state import CircuitState

__all__ = ["build_dashboard", "health_score"]


def health_score(metrics: BreakerMetrics) -> float:
    """0 to 100: 70 points for the success rate, 30 for the response time.

    The seed's formula, as its code has it: the response-time part is
    ``max(0, min(30, (5 - t) * 6))`` for a mean response time of `t` seconds, so 30
    points at 0 s, 24 at 1 s and none from 5 s on. (The seed's comment says "full
    marks at 1 s or less"; its code, which this follows, gives full marks only at 0 s.)
    A breaker with no traffic scores 100.
    """
    if metrics.total_requests == 0:
        return 100.0
    success_score = metrics.success_rate * 70.0
    response_time_score = max(0.0, min(30.0, (5.0 - metrics.average_response_time) * 6.0))
    return success_score + response_time_score


def _row(breaker: CircuitBreaker, metrics: BreakerMetrics) -> dict[str, Any]:
    return {
        "name": breaker.name,
        "state": metrics.state.value,
        "metrics": {
            "total_requests": metrics.total_requests,
            "successful_requests": metrics.successful_requests,
            "failed_requests": metrics.failed_requests,
            "ignored_requests": metrics.ignored_requests,
            "rejected_requests": metrics.rejected_requests,
            "success_rate": metrics.success_rate,
            "failure_rate": metrics.failure_rate,
            "average_response_time": metrics.average_response_time,
            "throughput": metrics.throughput,
            "availability": metrics.availability,
        },
        "bulkhead": _bulkhead(metrics),
        "health_score": health_score(metrics),
    }


def _bulkhead(metrics: BreakerMetrics) -> dict[str, int] | None:
    """The bulkhead's figures, or None for a breaker without `max_concurrent`."""
    if metrics.bulkhead_limit is None:
        return None
    return {
        "limit": metrics.bulkhead_limit,
        "in_flight": metrics.bulkhead_in_flight_requests or 0,
        "waiting": metrics.bulkhead_waiting_requests or 0,
        "rejected_requests": metrics.bulkhead_rejected_requests,
    }


def build_dashboard(breakers: Iterable[CircuitBreaker]) -> dict[str, Any]:
    """The dashboard of exactly these breakers (see `monitoring.dashboard` for its shape)."""
    summary = {
        "total_breakers": 0,
        "open_breakers": 0,
        "half_open_breakers": 0,
        "closed_breakers": 0,
        "bulkhead_rejected_requests": 0,
    }
    rows: list[dict[str, Any]] = []
    for breaker in breakers:
        # One snapshot per breaker: its state and its numbers are from the same instant.
        metrics = breaker.get_metrics()
        state = metrics.state
        summary["total_breakers"] += 1
        if state is CircuitState.OPEN:
            summary["open_breakers"] += 1
        elif state is CircuitState.HALF_OPEN:
            summary["half_open_breakers"] += 1
        else:
            summary["closed_breakers"] += 1
        summary["bulkhead_rejected_requests"] += metrics.bulkhead_rejected_requests
        rows.append(_row(breaker, metrics))
    rows.sort(key=lambda row: (row["health_score"], row["name"]))
    return {"summary": summary, "breakers": rows}
