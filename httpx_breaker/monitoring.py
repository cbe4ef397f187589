"""Dashboards, health scores and alerts over breakers, read when asked (no per-call cost).

The shapes follow the seed's `generate_dashboard_data`, `_calculate_health_score` and
`alert_on_threshold`; everything returned is JSON-serialisable.

Every function here takes the breakers to look at as `breakers`:

- ``None`` (the default): every live breaker, `get_all_circuit_breakers()`;
- a mapping of name to breaker, such as a `BreakerRegistry` or a transport's `.registry`;
- an iterable of breakers;
- a callable returning either of those, called on every read.

Two breakers with the same name are shown once: the later one wins, as in
`get_all_circuit_breakers()`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Literal, TypeAlias

from ._breaker import CircuitBreaker
from ._dashboard import build_dashboard, health_score
from ._metrics import BreakerMetrics
from ._registry import get_all_circuit_breakers
from ._state import CircuitState

__all__ = ["Alert", "BreakerSource", "alerts", "dashboard", "health_score"]

BreakerSource: TypeAlias = (
    Mapping[str, CircuitBreaker]
    | Iterable[CircuitBreaker]
    | Callable[[], Mapping[str, CircuitBreaker] | Iterable[CircuitBreaker]]
    | None
)
"""What to read: None (every live breaker), a mapping, an iterable, or a callable."""


def resolve_breakers(breakers: BreakerSource = None) -> list[CircuitBreaker]:
    """The breakers a `BreakerSource` names right now, one per name (the later wins)."""
    if breakers is None:
        source: object = get_all_circuit_breakers()
    elif callable(breakers) and not isinstance(breakers, Mapping):
        source = breakers()
    else:
        source = breakers
    if isinstance(source, Mapping):
        found: Iterable[Any] = list(source.values())
    elif isinstance(source, Iterable) and not isinstance(source, (str, bytes)):
        found = source
    else:
        raise TypeError(
            "breakers must be None, a mapping of name to CircuitBreaker, an iterable of "
            f"breakers, or a callable returning one of those; got {source!r}"
        )
    by_name: dict[str, CircuitBreaker] = {}
    for breaker in found:
        if not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"expected a CircuitBreaker, got {breaker!r}")
        by_name.pop(breaker.name, None)  # re-insert so the order follows the later one
        by_name[breaker.name] = breaker
    return list(by_name.values())


def freeze_source(breakers: BreakerSource) -> BreakerSource:
    """`breakers` as something that can be read many times.

    None, mappings, callables and collections are read afresh each time (so a list the
    caller appends to is followed); a one-shot iterator is turned into a tuple now.
    """
    if breakers is None or isinstance(breakers, (Mapping, Collection)) or callable(breakers):
        return breakers
    if isinstance(breakers, Iterable):
        return tuple(breakers)
    raise TypeError(
        "breakers must be None, a mapping of name to CircuitBreaker, an iterable of "
        f"breakers, or a callable returning one of those; got {breakers!r}"
    )


def dashboard(breakers: BreakerSource = None) -> dict[str, Any]:
    """Dashboard data: a `summary` of counts by state, and `breakers` sorted by health,
    lowest first (ties by name), each with `name`, `state`, `metrics` and `health_score`.

    A breaker's `metrics` are the counters, `success_rate`, `failure_rate`,
    `average_response_time` (seconds), `throughput` (calls let through per second over
    the last `window_duration`) and `availability` (share of its life since creation
    or `reset()` not spent OPEN), as in `BreakerMetrics`. Its `bulkhead` is None
    without `max_concurrent`, else its `limit`, the requests `in_flight` and `waiting`
    now, and its `rejected_requests` (refusals by the bulkhead, counted apart from the
    breaker's own `rejected_requests`; a refusal is not ill health, so the score ignores
    it). The summary adds up `bulkhead_rejected_requests` over the breakers.

    Args:
        breakers: the breakers to show (see the module docstring); every live breaker
            by default.
    """
    return build_dashboard(resolve_breakers(breakers))


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """One alert: `critical` for an open breaker, `warning` for a high failure rate."""

    severity: Literal["critical", "warning"]
    """``"critical"`` (the breaker is open) or ``"warning"`` (its failure rate is high)."""
    breaker: str
    """The breaker's name."""
    message: str
    """A sentence for a human, such as ``circuit breaker 'payments.internal' is OPEN``."""
    details: dict[str, Any]
    """The figures behind it: ``failure_rate``, and ``total_requests`` (critical) or
    ``threshold`` (warning)."""

    def to_dict(self) -> dict[str, Any]:
        """The alert as plain JSON-serialisable values."""
        return {
            "severity": self.severity,
            "breaker": self.breaker,
            "message": self.message,
            "details": dict(self.details),
        }


def alerts(breakers: BreakerSource = None, *, failure_rate_threshold: float = 0.5) -> list[Alert]:
    """Alerts for the breakers: critical for each open one, warning for each other one
    whose failure rate is above `failure_rate_threshold`. Critical alerts come first.

    Raises:
        ValueError: `failure_rate_threshold` is not within [0, 1].
    """
    if not 0.0 <= failure_rate_threshold <= 1.0:
        raise ValueError(
            f"failure_rate_threshold must be in [0, 1], got {failure_rate_threshold!r}"
        )
    critical: list[Alert] = []
    warning: list[Alert] = []
    for breaker in resolve_breakers(breakers):
        metrics = breaker.get_metrics()
        if metrics.state is CircuitState.OPEN:
            critical.append(
                Alert(
                    "critical",
                    breaker.name,
                    f"circuit breaker {breaker.name!r} is OPEN",
                    {
                        "failure_rate": metrics.failure_rate,
                        "total_requests": metrics.total_requests,
                    },
                )
            )
        elif metrics.failure_rate > failure_rate_threshold:
            warning.append(
                Alert(
                    "warning",
                    breaker.name,
                    f"circuit breaker {breaker.name!r} has a high failure rate",
                    {"failure_rate": metrics.failure_rate, "threshold": failure_rate_threshold},
                )
            )
    return critical + warning


# -- what the exporters share -----------------------------------------------------


_C, _O, _H = CircuitState.CLOSED.value, CircuitState.OPEN.value, CircuitState.HALF_OPEN.value
POSSIBLE_STATE_CHANGES = ((_C, _O), (_O, _H), (_O, _C), (_H, _C), (_H, _O))
"""Every (from_state, to_state) a breaker can make; exporters report each from 0, so
that ``rate()`` and ``increase()`` see the first change (a series born at 1 hides it)."""


def state_seconds(metrics: BreakerMetrics) -> dict[str, float]:
    """Seconds spent in each state over the breaker's life, by state value.

    Read from `BreakerMetrics.state_seconds`, which is never reset, so the totals only
    grow. Every state is present, at 0.0 until the breaker has been in it.
    """
    seconds = dict.fromkeys((_C, _O, _H), 0.0)
    for state, value in metrics.state_seconds:
        seconds[state.value] = value
    return seconds


def state_change_counts(metrics: BreakerMetrics) -> dict[tuple[str, str], int]:
    """How many times each (from_state, to_state) change happened over the breaker's life.

    Read from `BreakerMetrics.state_change_counts`, which is never trimmed, so the
    counts are exact and never go down. Every one of `POSSIBLE_STATE_CHANGES` is
    present, at 0 until it happens.
    """
    counts = dict.fromkeys(POSSIBLE_STATE_CHANGES, 0)
    for old, new, n in metrics.state_change_counts:
        pair = (old.value, new.value)
        counts[pair] = counts.get(pair, 0) + n
    return counts
