"""Prometheus metrics for circuit breakers: `CircuitBreakerCollector`.

Needs the extra: ``pip install 'httpx-breaker[prometheus]'``.

The collector is read when Prometheus scrapes, from the counters every breaker keeps
anyway: nothing is added to the request path. Register it once:

```python
from prometheus_client import REGISTRY
from httpx_breaker.prometheus import CircuitBreakerCollector

REGISTRY.register(CircuitBreakerCollector())          # every live breaker
REGISTRY.register(CircuitBreakerCollector(transport.registry))  # or one registry
```

Series (labels are the breaker's name, for a transport its host key, and fixed words):

- ``circuit_breaker_requests_total{circuit_breaker, type}``: calls let through, with
  ``type`` one of ``total``, ``success``, ``failure``, ``ignored`` (``total`` is the sum
  of the other three, as in the seed: do not add it to them).
- ``circuit_breaker_rejected_requests_total{circuit_breaker}``: calls refused.
- ``circuit_breaker_state_changes_total{circuit_breaker, from_state, to_state}``.
- ``circuit_breaker_state{circuit_breaker, state}``: 1 for the current state, 0 for the
  other two.
- ``circuit_breaker_response_time_seconds{circuit_breaker}``: a summary (``_sum`` and
  ``_count``) of the durations of successful and failed calls.
- ``circuit_breaker_state_seconds_total{circuit_breaker, state}``: seconds spent in each
  state over the breaker's life (an open period counts as OPEN until it ends, then as
  HALF_OPEN, whether or not anyone looked), on the breaker's clock.
- ``circuit_breaker_availability_ratio{circuit_breaker}``: `BreakerMetrics.availability`,
  the share of the breaker's life since it was made or last reset not spent OPEN.
- ``circuit_breaker_throughput_requests_per_second{circuit_breaker}``:
  `BreakerMetrics.throughput`, calls let through per second over the last
  `window_duration`.

For breakers with a bulkhead (`max_concurrent` set), and only for those:

- ``circuit_breaker_bulkhead_rejected_requests_total{circuit_breaker}``: requests the
  bulkhead refused (`BulkheadFullError`). Apart from
  ``circuit_breaker_rejected_requests_total``, which stays the breaker's own refusals,
  so that dashboards built on it do not start counting these.
- ``circuit_breaker_bulkhead_in_flight_requests{circuit_breaker}``: slots held now.
- ``circuit_breaker_bulkhead_waiting_requests{circuit_breaker}``: requests waiting for one.
- ``circuit_breaker_bulkhead_limit{circuit_breaker}``: `max_concurrent`; saturation is
  ``circuit_breaker_bulkhead_in_flight_requests / circuit_breaker_bulkhead_limit``.

Shared stores (`httpx_breaker.redis.RedisStore`; labels ``namespace`` and ``server``, the
server's URL without credentials), read from `store.health` without touching Redis:

- ``circuit_breaker_store_connected{namespace, server}``: 1 while the store is in touch
  with its server (breakers share state), 0 while they work locally only.
- ``circuit_breaker_store_state{namespace, server, state}``: 1 for the connection state
  (``connecting``, ``connected``, ``disconnected``, ``closed``), 0 for the others.
- ``circuit_breaker_store_sync_lag_seconds{namespace, server}``: the delay between the
  server applying the last transition this replica heard from another one and this
  replica applying it (no sample before the first).
- ``circuit_breaker_store_reconnects_total``, ``circuit_breaker_store_transitions_received_total``
  (transitions heard from other replicas) and
  ``circuit_breaker_store_transitions_dropped_total`` (not sent while the server was
  unreachable; the reconcile after reconnecting settles them).
- ``circuit_breaker_store_keys`` (keys shared) and ``circuit_breaker_store_queued`` (work
  waiting for the store's thread).

Which stores: ``CircuitBreakerCollector(stores=[store])``; by default the stores that go
with `breakers`: every live store that is not closed for None, a registry's own store
for a `BreakerRegistry`, none for other sources. Store families appear in a scrape only
when there is a store.

Availability over any range comes from the state-seconds counter, for example the
last hour, per breaker:

```text
1 - (
  increase(circuit_breaker_state_seconds_total{state="open"}[1h])
  / ignoring(state) sum without (state) (increase(circuit_breaker_state_seconds_total[1h]))
)
```

and throughput over any range from the request counter:
``rate(circuit_breaker_requests_total{type="total"}[5m])``. The two gauges are the
breaker's own figures, for dashboards that read one value.

Why a summary and not a histogram: a breaker keeps the running sum and count of call
durations, not their distribution. A histogram would need a bucket increment on every
call, a cost on the request path, or fake buckets made from a mean. A summary without
quantiles is exactly what the breaker knows; ``rate(..._sum[5m]) / rate(..._count[5m])``
gives the mean response time over any range.
"""

from __future__ import annotations

from collections.abc import Iterator

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        SummaryMetricFamily,
    )
    from prometheus_client.metrics_core import Metric
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "httpx_breaker.prometheus needs prometheus_client; install it with "
        "pip install 'httpx-breaker[prometheus]'"
    ) from exc

from ._state import CircuitState
from ._store import STORE_STATES
from .monitoring import (
    BreakerSource,
    StoreSource,
    freeze_source,
    freeze_stores,
    resolve_breakers,
    resolve_stores,
    state_change_counts,
    state_seconds,
    store_rows,
)

__all__ = ["CircuitBreakerCollector"]

_STATES = tuple(state.value for state in CircuitState)
_STORE_LABELS = ["namespace", "server"]


class CircuitBreakerCollector:
    """A `prometheus_client` collector of every breaker's counters, read at scrape time.

    Args:
        breakers: which breakers to export: None for every live breaker (the
            default; breakers created later are picked up), a `BreakerRegistry` or
            other mapping of name to breaker, a list of breakers, or a callable
            returning either, called on every scrape.
        stores: which shared stores to export (a list, or a callable returning one);
            by default the stores that go with `breakers` (see the module docstring).

    Counters are exact and monotonic however many state changes happen between two
    scrapes: they come from the breaker's lifetime counters (`state_change_counts`,
    `total_response_time`, `state_seconds`), not from the trimmed `state_changes`
    history. A breaker
    that is dropped (say, evicted from its registry) and made again starts again from
    zero, which Prometheus reads as a counter reset, as after a restart.
    """

    def __init__(self, breakers: BreakerSource = None, *, stores: StoreSource = None) -> None:
        self._breakers = freeze_source(breakers)
        self._stores = freeze_stores(stores)

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples: lets a registry check names up front."""
        return iter((*self._families(), *self._store_families()))

    def collect(self) -> Iterator[Metric]:
        """Read every breaker now and yield the metric families."""
        (
            requests,
            rejected,
            changes,
            state,
            response_time,
            seconds,
            availability,
            throughput,
            bulkhead_rejected,
            bulkhead_in_flight,
            bulkhead_waiting,
            bulkhead_limit,
        ) = self._families()
        for breaker in resolve_breakers(self._breakers):
            # One snapshot per breaker: all of its series are from the same instant.
            m = breaker.get_metrics()
            name = breaker.name
            requests.add_metric([name, "total"], m.total_requests)
            requests.add_metric([name, "success"], m.successful_requests)
            requests.add_metric([name, "failure"], m.failed_requests)
            requests.add_metric([name, "ignored"], m.ignored_requests)
            rejected.add_metric([name], m.rejected_requests)
            for (old, new), count in state_change_counts(m).items():
                changes.add_metric([name, old, new], count)
            current = m.state.value
            for value in _STATES:
                state.add_metric([name, value], 1.0 if value == current else 0.0)
            response_time.add_metric(
                [name], m.successful_requests + m.failed_requests, m.total_response_time
            )
            for value, spent in state_seconds(m).items():
                seconds.add_metric([name, value], spent)
            availability.add_metric([name], m.availability)
            throughput.add_metric([name], m.throughput)
            if m.bulkhead_limit is not None:
                bulkhead_rejected.add_metric([name], m.bulkhead_rejected_requests)
                bulkhead_in_flight.add_metric([name], m.bulkhead_in_flight_requests or 0)
                bulkhead_waiting.add_metric([name], m.bulkhead_waiting_requests or 0)
                bulkhead_limit.add_metric([name], m.bulkhead_limit)
        # The bulkhead's only when a breaker has one: a scrape of breakers without
        # `max_concurrent` stays exactly what it was.
        bulkhead = (bulkhead_rejected, bulkhead_in_flight, bulkhead_waiting, bulkhead_limit)
        breaker_families = (
            requests, rejected, changes, state, response_time, seconds, availability, throughput,
            *(family for family in bulkhead if family.samples),
        )  # fmt: skip
        stores = resolve_stores(self._stores, self._breakers)
        if not stores:
            return iter(breaker_families)
        connected, store_state, lag, reconnects, received, dropped, keys, queued = (
            store_families
        ) = self._store_families()
        for namespace, server, health in store_rows(stores):
            labels = [namespace, server]
            connected.add_metric(labels, 1.0 if health.connected else 0.0)
            for value in STORE_STATES:
                store_state.add_metric([*labels, value], 1.0 if value == health.state else 0.0)
            if health.lag is not None:
                lag.add_metric(labels, health.lag)
            reconnects.add_metric(labels, health.reconnects)
            received.add_metric(labels, health.messages)
            dropped.add_metric(labels, health.dropped)
            keys.add_metric(labels, health.keys)
            queued.add_metric(labels, health.queued)
        return iter((*breaker_families, *store_families))

    @staticmethod
    def _store_families() -> tuple[
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            GaugeMetricFamily(
                "circuit_breaker_store_connected",
                "1 while the shared store is in touch with its server, 0 while breakers "
                "work locally only.",
                labels=_STORE_LABELS,
            ),
            GaugeMetricFamily(
                "circuit_breaker_store_state",
                "1 for the shared store's connection state, 0 for the others.",
                labels=[*_STORE_LABELS, "state"],
            ),
            GaugeMetricFamily(
                "circuit_breaker_store_sync_lag_seconds",
                "Delay between the server applying the last transition heard from another "
                "replica and this replica applying it.",
                labels=_STORE_LABELS,
                unit="seconds",
            ),
            CounterMetricFamily(
                "circuit_breaker_store_reconnects",
                "Times the shared store's connection came back after a loss.",
                labels=_STORE_LABELS,
            ),
            CounterMetricFamily(
                "circuit_breaker_store_transitions_received",
                "Transitions heard from other replicas through the shared store.",
                labels=_STORE_LABELS,
            ),
            CounterMetricFamily(
                "circuit_breaker_store_transitions_dropped",
                "Transitions not sent because the shared store's server was unreachable.",
                labels=_STORE_LABELS,
            ),
            GaugeMetricFamily(
                "circuit_breaker_store_keys",
                "Breaker keys the shared store shares.",
                labels=_STORE_LABELS,
            ),
            GaugeMetricFamily(
                "circuit_breaker_store_queued",
                "Work waiting for the shared store's thread.",
                labels=_STORE_LABELS,
            ),
        )

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        SummaryMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
    ]:
        # CounterMetricFamily takes the name without `_total` and adds it to the samples.
        return (
            CounterMetricFamily(
                "circuit_breaker_requests",
                "Calls let through by the circuit breaker, by outcome (total = the sum).",
                labels=["circuit_breaker", "type"],
            ),
            CounterMetricFamily(
                "circuit_breaker_rejected_requests",
                "Calls refused by the circuit breaker without being attempted.",
                labels=["circuit_breaker"],
            ),
            CounterMetricFamily(
                "circuit_breaker_state_changes",
                "Circuit breaker state changes.",
                labels=["circuit_breaker", "from_state", "to_state"],
            ),
            GaugeMetricFamily(
                "circuit_breaker_state",
                "1 for the circuit breaker's current state, 0 for the others.",
                labels=["circuit_breaker", "state"],
            ),
            SummaryMetricFamily(
                "circuit_breaker_response_time_seconds",
                "Durations of the successful and failed calls through the circuit breaker.",
                labels=["circuit_breaker"],
                unit="seconds",
            ),
            CounterMetricFamily(
                "circuit_breaker_state_seconds",
                "Seconds the circuit breaker has spent in each state.",
                labels=["circuit_breaker", "state"],
                unit="seconds",
            ),
            GaugeMetricFamily(
                "circuit_breaker_availability_ratio",
                "Share of the circuit breaker's life since creation or reset not spent open.",
                labels=["circuit_breaker"],
                unit="ratio",
            ),
            GaugeMetricFamily(
                "circuit_breaker_throughput_requests_per_second",
                "Calls let through per second over the circuit breaker's window_duration.",
                labels=["circuit_breaker"],
            ),
            CounterMetricFamily(
                "circuit_breaker_bulkhead_rejected_requests",
                "Requests refused by the circuit breaker's bulkhead (max_concurrent in flight).",
                labels=["circuit_breaker"],
            ),
            GaugeMetricFamily(
                "circuit_breaker_bulkhead_in_flight_requests",
                "Requests holding a slot of the circuit breaker's bulkhead now.",
                labels=["circuit_breaker"],
            ),
            GaugeMetricFamily(
                "circuit_breaker_bulkhead_waiting_requests",
                "Requests waiting for a slot of the circuit breaker's bulkhead now.",
                labels=["circuit_breaker"],
            ),
            GaugeMetricFamily(
                "circuit_breaker_bulkhead_limit",
                "The circuit breaker's max_concurrent: most requests in flight at once.",
                labels=["circuit_breaker"],
            ),
        )

    def __repr__(self) -> str:
        source = "every live breaker" if self._breakers is None else type(self._breakers).__name__
        return f"<CircuitBreakerCollector of {source}>"
