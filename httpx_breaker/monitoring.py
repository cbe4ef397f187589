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

Shared stores (`httpx_breaker.redis.RedisStore`) are read along with the breakers:
`dashboard()` and the exporters take ``stores=``, a list of stores (or a callable
returning one); by default, the stores that go with `breakers`: every live store of
the process that is not closed when `breakers` is None, a registry's own store when
it is a `BreakerRegistry`, none otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Literal, TypeAlias

from ._breaker import CircuitBreaker
from ._dashboard import build_dashboard, health_score
from ._metrics import BreakerMetrics
from ._registry import BreakerRegistry, get_all_circuit_breakers
from ._state import CircuitState
from ._store import MonitoredStore, StoreHealth, live_stores

__all__ = ["Alert", "BreakerSource", "StoreSource", "alerts", "dashboard", "health_score"]

BreakerSource: TypeAlias = (
    Mapping[str, CircuitBreaker]
    | Iterable[CircuitBreaker]
    | Callable[[], Mapping[str, CircuitBreaker] | Iterable[CircuitBreaker]]
    | None
)
"""What to read: None (every live breaker), a mapping, an iterable, or a callable."""

StoreSource: TypeAlias = Iterable[Any] | Callable[[], Iterable[Any]] | None
"""Which stores to read: None (those that go with the breakers), an iterable of
stores, or a callable returning one."""


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
    if breakers is None or (callable(breakers) and not isinstance(breakers, Mapping)):
        return breakers
    if isinstance(breakers, (Mapping, Collection)):
        # Read once now, so that a wrong source (a breaker's name, a list of names) fails
        # here, not at every read (a collector that raises fails a whole /metrics page).
        resolve_breakers(breakers)
        return breakers
    if isinstance(breakers, Iterable):
        frozen = tuple(breakers)
        resolve_breakers(frozen)
        return frozen
    raise TypeError(
        "breakers must be None, a mapping of name to CircuitBreaker, an iterable of "
        f"breakers, or a callable returning one of those; got {breakers!r}"
    )


def resolve_stores(stores: StoreSource, breakers: BreakerSource = None) -> list[MonitoredStore]:
    """The stores a `StoreSource` names right now (see the module docstring)."""
    if stores is None:
        if breakers is None:
            return live_stores()
        source = (
            breakers() if callable(breakers) and not isinstance(breakers, Mapping) else breakers
        )
        store = source.store if isinstance(source, BreakerRegistry) else None
        return [store] if isinstance(store, MonitoredStore) else []
    found = stores() if callable(stores) else stores
    if not isinstance(found, Iterable) or isinstance(found, (str, bytes)):
        raise TypeError(
            f"stores must be an iterable of stores or a callable returning one; got {found!r}"
        )
    checked = []
    for store in found:
        if not isinstance(store, MonitoredStore):
            raise TypeError(
                f"expected a store with namespace, server and health (a RedisStore), got {store!r}"
            )
        checked.append(store)
    return checked


def freeze_stores(stores: StoreSource) -> StoreSource:
    """`stores` as something that can be read many times (see `freeze_source`)."""
    if stores is None or isinstance(stores, Collection) or callable(stores):
        return stores
    if isinstance(stores, Iterable):
        return tuple(stores)
    raise TypeError(
        f"stores must be an iterable of stores or a callable returning one; got {stores!r}"
    )


def store_rows(stores: Iterable[MonitoredStore]) -> list[tuple[str, str, StoreHealth]]:
    """(namespace, server, health) per fleet, as the exporters label it.

    Stores of one process with the same namespace and server (a process should make
    one; tests make several) are one fleet link to an exporter, so they are merged:
    connected only if all are, the least healthy state, the largest lag, the counts
    added up. A closed store among open ones is gone, not unwell: only its totals
    (reconnects, dropped, messages) still count, since an exporter's counters never go
    down; its state, lag, error, keys and queue do not, so a live link that outlived a
    closed store reads as the live link does.
    """
    grouped: dict[tuple[str, str], list[StoreHealth]] = {}
    for store in stores:
        grouped.setdefault((store.namespace, store.server), []).append(store.health)
    return [
        (namespace, server, _merged(healths))
        for (namespace, server), healths in grouped.items()
    ]


_WORST_FIRST = ("disconnected", "connecting", "connected", "closed")


def _merged(healths: list[StoreHealth]) -> StoreHealth:
    """One row from the healths of stores sharing a label (see `store_rows`)."""
    if len(healths) == 1:
        return healths[0]
    voting = [health for health in healths if health.state != "closed"] or healths
    lags = [health.lag for health in voting if health.lag is not None]
    return StoreHealth(
        connected=all(health.connected for health in voting),
        state=min((health.state for health in voting), key=_WORST_FIRST.index),
        since=min(health.since for health in voting),
        last_error=next((h.last_error for h in voting if h.last_error), None),
        reconnects=sum(health.reconnects for health in healths),
        lag=max(lags) if lags else None,
        keys=sum(health.keys for health in voting),
        queued=sum(health.queued for health in voting),
        dropped=sum(health.dropped for health in healths),
        messages=sum(health.messages for health in healths),
    )


def dashboard(breakers: BreakerSource = None, *, stores: StoreSource = None) -> dict[str, Any]:
    """Dashboard data: a `summary` of counts by state, and `breakers` sorted by health,
    lowest first (ties by name), each with `name`, `state`, `metrics` and `health_score`.

    With shared stores (see the module docstring), also `stores`: one entry per store
    with its `namespace`, `server` (no credentials) and its health (`connected`,
    `state`, `lag` in seconds or None, `reconnects`, `last_error`, ...).

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
        stores: the shared stores to show; by default those that go with `breakers`.
    """
    data = build_dashboard(resolve_breakers(breakers))
    found = resolve_stores(stores, breakers)
    if found:
        data["stores"] = [
            {"namespace": namespace, "server": server, **dataclasses.asdict(health)}
            for namespace, server, health in store_rows(found)
        ]
    return data


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
        TypeError: `failure_rate_threshold` is not a number.
    """
    if isinstance(failure_rate_threshold, bool) or not isinstance(
        failure_rate_threshold, (int, float)
    ):
        raise TypeError(
            f"failure_rate_threshold must be a number in [0, 1], got {failure_rate_threshold!r}"
        )
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
