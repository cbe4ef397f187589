"""Dashboards, health scores and alerts over breakers, read when asked (no per-call cost).

The shapes follow the seed's `generate_dashboard_data`, `_calculate_health_score` and
`alert_on_threshold`; everything returned is JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Literal

from ._breaker import CircuitBreaker
from ._metrics import BreakerMetrics
from ._registry import get_all_circuit_breakers
from ._state import CircuitState

__all__ = ["Alert", "alerts", "dashboard", "health_score"]


def health_score(metrics: BreakerMetrics) -> float:
    """0 to 100: 70 points for the success rate, 30 for the response time.

    Response time earns the full 30 points at 1 s or less, none at 5 s or more, and
    falls linearly between. A breaker with no traffic scores 100.
    """
    if metrics.total_requests == 0:
        return 100.0
    success_score = metrics.success_rate * 70.0
    response_time_score = max(0.0, min(30.0, (5.0 - metrics.average_response_time) * 6.0))
    return success_score + response_time_score


def _breakers(breakers: Iterable[CircuitBreaker] | None) -> list[CircuitBreaker]:
    if breakers is None:
        return list(get_all_circuit_breakers().values())
    if isinstance(breakers, dict):
        return list(breakers.values())
    return list(breakers)


def dashboard(breakers: Iterable[CircuitBreaker] | None = None) -> dict[str, Any]:
    """Dashboard data: a `summary` of counts by state, and `breakers` sorted by health,
    lowest first, each with `name`, `state`, `metrics` and `health_score`.

    Args:
        breakers: the breakers to show (a list, or a dict of name to breaker);
            every live breaker by default.
    """
    summary = {"total_breakers": 0, "open_breakers": 0, "half_open_breakers": 0, "closed_breakers": 0}
    rows: list[dict[str, Any]] = []
    for breaker in _breakers(breakers):
        metrics = breaker.get_metrics()
        state = metrics.state
        summary["total_breakers"] += 1
        if state is CircuitState.OPEN:
            summary["open_breakers"] += 1
        elif state is CircuitState.HALF_OPEN:
            summary["half_open_breakers"] += 1
        else:
            summary["closed_breakers"] += 1
        rows.append(
            {
                "name": breaker.name,
                "state": state.value,
                "metrics": {
                    "total_requests": metrics.total_requests,
                    "successful_requests": metrics.successful_requests,
                    "failed_requests": metrics.failed_requests,
                    "ignored_requests": metrics.ignored_requests,
                    "rejected_requests": metrics.rejected_requests,
                    "success_rate": metrics.success_rate,
                    "failure_rate": metrics.failure_rate,
                    "average_response_time": metrics.average_response_time,
                },
                "health_score": health_score(metrics),
            }
        )
    rows.sort(key=lambda row: (row["health_score"], row["name"]))
    return {"summary": summary, "breakers": rows}


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """One alert: `critical` for an open breaker, `warning` for a high failure rate."""

    severity: Literal["critical", "warning"]
    breaker: str
    message: str
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "breaker": self.breaker,
            "message": self.message,
            "details": dict(self.details),
        }


def alerts(
    breakers: Iterable[CircuitBreaker] | None = None, *, failure_rate_threshold: float = 0.5
) -> list[Alert]:
    """Alerts for the breakers: critical for each open one, warning for each other one
    whose failure rate is above `failure_rate_threshold`."""
    if not 0.0 <= failure_rate_threshold <= 1.0:
        raise ValueError(
            f"failure_rate_threshold must be in [0, 1], got {failure_rate_threshold!r}"
        )
    found: list[Alert] = []
    for breaker in _breakers(breakers):
        metrics = breaker.get_metrics()
        if metrics.state is CircuitState.OPEN:
            found.append(
                Alert(
                    "critical",
                    breaker.name,
                    f"circuit breaker {breaker.name!r} is OPEN",
                    {"failure_rate": metrics.failure_rate, "total_requests": metrics.total_requests},
                )
            )
        elif metrics.failure_rate > failure_rate_threshold:
            found.append(
                Alert(
                    "warning",
                    breaker.name,
                    f"circuit breaker {breaker.name!r} has a high failure rate",
                    {"failure_rate": metrics.failure_rate, "threshold": failure_rate_threshold},
                )
            )
    return found
