"""OpenTelemetry metrics for circuit breakers: `register_metrics`.

Needs the extra: ``pip install 'httpx-breaker[opentelemetry]'`` (the OpenTelemetry
API; bring your own SDK and exporter).

The instruments are observable: the SDK calls them back when it collects, and they
read the counters every breaker keeps anyway, so nothing is added to the request
path. Register once:

```python
from httpx_breaker.opentelemetry import register_metrics

register_metrics()                                  # every live breaker, global provider
register_metrics(transport.registry, meter_provider=provider)
```

Instruments, on the meter ``httpx_breaker`` (every one has the attribute
``circuit_breaker.name``):

- ``circuit_breaker.requests`` (observable counter, ``{request}``): calls let through,
  by ``circuit_breaker.outcome``.
- ``circuit_breaker.rejected_requests`` (observable counter, ``{request}``): calls refused.
- ``circuit_breaker.state_changes`` (observable counter, ``{change}``): by
  ``circuit_breaker.from_state`` and ``circuit_breaker.to_state``.
- ``circuit_breaker.state`` (observable up-down counter, ``{breaker}``): by
  ``circuit_breaker.state``.
- ``circuit_breaker.response_time`` (observable counter, ``s``).
- ``circuit_breaker.time_in_state`` (observable counter, ``s``): by
  ``circuit_breaker.state``.
- ``circuit_breaker.availability`` (observable gauge, ``1``).
- ``circuit_breaker.throughput`` (observable gauge, ``{request}/s``).
- ``circuit_breaker.bulkhead.rejected_requests`` (observable counter, ``{request}``):
  requests the bulkhead refused (`BulkheadFullError`), apart from
  ``circuit_breaker.rejected_requests`` (the breaker's own refusals).
- ``circuit_breaker.bulkhead.in_flight_requests`` (observable up-down counter,
  ``{request}``, as OpenTelemetry's ``http.client.active_requests``): slots held now.
- ``circuit_breaker.bulkhead.waiting_requests`` (observable up-down counter,
  ``{request}``): requests waiting for a slot now.
- ``circuit_breaker.bulkhead.limit`` (observable up-down counter, ``{request}``):
  `max_concurrent`.

The four bulkhead instruments report only breakers with `max_concurrent` set.

For shared stores (`httpx_breaker.redis.RedisStore`; attributes
``circuit_breaker.store.namespace`` and ``circuit_breaker.store.server``, the server's URL
without credentials), read from `store.health` without touching Redis:

- ``circuit_breaker.store.connected`` (observable gauge, ``1``): 1 while the store is in
  touch with its server (breakers share state), 0 while they work locally only.
- ``circuit_breaker.store.state`` (observable up-down counter, ``{store}``): by
  ``circuit_breaker.store.state`` (``connecting``, ``connected``, ``disconnected``,
  ``closed``), 1 for the current one.
- ``circuit_breaker.store.sync_lag`` (observable gauge, ``s``): the delay between the
  server applying the last transition this replica heard from another one and this
  replica applying it (no point before the first).
- ``circuit_breaker.store.reconnects`` (observable counter, ``{reconnect}``),
  ``circuit_breaker.store.transitions_received`` and
  ``circuit_breaker.store.transitions_dropped`` (observable counters, ``{transition}``).
- ``circuit_breaker.store.keys`` and ``circuit_breaker.store.queued`` (observable
  up-down counters, ``{key}`` and ``{operation}``).

Which stores: ``register_metrics(stores=[store])``; by default the stores that go with
`breakers`: every live store that is not closed for None, a registry's own store for a
`BreakerRegistry`, none for other sources.

``circuit_breaker.name`` is the breaker's name, for a transport
its host key. ``circuit_breaker.outcome`` is ``success``, ``failure`` or ``ignored``;
unlike the Prometheus series there is no ``total`` value, because OpenTelemetry expects
the sum over an attribute to mean something: the sum of the three *is* the total.
``circuit_breaker.state`` is 1 for the current state and 0 for the other two, as an
up-down counter so that summing over breakers counts the breakers in each state.
``circuit_breaker.response_time`` is the cumulative time spent in successful and failed
calls (a ``*.time`` counter in OpenTelemetry's terms); divided by the success and
failure requests, it gives the mean response time over any range. OpenTelemetry has no
observable histogram, and the breaker keeps a sum and a count, not a distribution.
``circuit_breaker.time_in_state`` is the cumulative time spent in each state (an open
period is OPEN until it ends, then HALF_OPEN, whether or not anyone looked): over any
range, availability is ``1 - delta(open) / delta(all states)``.
``circuit_breaker.availability`` and ``circuit_breaker.throughput`` are the breaker's
own `BreakerMetrics.availability` (since creation or `reset()`) and
`BreakerMetrics.throughput` (calls let through per second over the last
`window_duration`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

try:
    from opentelemetry.metrics import (
        CallbackOptions,
        Meter,
        MeterProvider,
        Observation,
        get_meter_provider,
    )
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "httpx_breaker.opentelemetry needs opentelemetry-api; install it with "
        "pip install 'httpx-breaker[opentelemetry]'"
    ) from exc

from ._metrics import BreakerMetrics
from ._state import CircuitState
from ._store import STORE_STATES, StoreHealth
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

__all__ = ["METER_NAME", "RegisteredMetrics", "register_metrics"]

METER_NAME = "httpx_breaker"
"""The instrumentation scope the instruments are created under."""

_NAME = "circuit_breaker.name"
_STATES = tuple(state.value for state in CircuitState)
_NAMESPACE = "circuit_breaker.store.namespace"
_SERVER = "circuit_breaker.store.server"


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("httpx-breaker")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return None


class RegisteredMetrics:
    """The instruments `register_metrics` created; `close()` stops them reporting.

    OpenTelemetry cannot remove an instrument from a meter; after `close()` its
    callbacks report nothing.

    Attributes:
        meter: the meter the instruments were created on (`METER_NAME`).
        instruments: the observable instruments, in the order the module lists them.
    """

    def __init__(self, meter: Meter, breakers: BreakerSource, stores: StoreSource = None) -> None:
        self._breakers = breakers
        self._stores = stores
        self._closed = False
        self.meter = meter
        self.instruments = (
            meter.create_observable_counter(
                "circuit_breaker.requests",
                callbacks=[self._requests],
                unit="{request}",
                description="Calls let through by the circuit breaker, by outcome.",
            ),
            meter.create_observable_counter(
                "circuit_breaker.rejected_requests",
                callbacks=[self._rejected],
                unit="{request}",
                description="Calls refused by the circuit breaker without being attempted.",
            ),
            meter.create_observable_counter(
                "circuit_breaker.state_changes",
                callbacks=[self._state_changes],
                unit="{change}",
                description="Circuit breaker state changes.",
            ),
            meter.create_observable_up_down_counter(
                "circuit_breaker.state",
                callbacks=[self._state],
                unit="{breaker}",
                description="1 for the circuit breaker's current state, 0 for the others.",
            ),
            meter.create_observable_counter(
                "circuit_breaker.response_time",
                callbacks=[self._response_time],
                unit="s",
                description="Time spent in successful and failed calls through the breaker.",
            ),
            meter.create_observable_counter(
                "circuit_breaker.time_in_state",
                callbacks=[self._time_in_state],
                unit="s",
                description="Time the circuit breaker has spent in each state.",
            ),
            meter.create_observable_gauge(
                "circuit_breaker.availability",
                callbacks=[self._availability],
                unit="1",
                description="Share of the circuit breaker's life since creation or reset "
                "not spent open.",
            ),
            meter.create_observable_gauge(
                "circuit_breaker.throughput",
                callbacks=[self._throughput],
                unit="{request}/s",
                description="Calls let through per second over the circuit breaker's "
                "window_duration.",
            ),
            meter.create_observable_counter(
                "circuit_breaker.bulkhead.rejected_requests",
                callbacks=[self._bulkhead_rejected],
                unit="{request}",
                description="Requests refused by the circuit breaker's bulkhead "
                "(max_concurrent in flight).",
            ),
            meter.create_observable_up_down_counter(
                "circuit_breaker.bulkhead.in_flight_requests",
                callbacks=[self._bulkhead_in_flight],
                unit="{request}",
                description="Requests holding a slot of the circuit breaker's bulkhead.",
            ),
            meter.create_observable_up_down_counter(
                "circuit_breaker.bulkhead.waiting_requests",
                callbacks=[self._bulkhead_waiting],
                unit="{request}",
                description="Requests waiting for a slot of the circuit breaker's bulkhead.",
            ),
            meter.create_observable_up_down_counter(
                "circuit_breaker.bulkhead.limit",
                callbacks=[self._bulkhead_limit],
                unit="{request}",
                description="The circuit breaker's max_concurrent: most requests in flight.",
            ),
            meter.create_observable_gauge(
                "circuit_breaker.store.connected",
                callbacks=[self._store_connected],
                unit="1",
                description="1 while the shared store is in touch with its server, 0 while "
                "breakers work locally only.",
            ),
            meter.create_observable_up_down_counter(
                "circuit_breaker.store.state",
                callbacks=[self._store_state],
                unit="{store}",
                description="1 for the shared store's connection state, 0 for the others.",
            ),
            meter.create_observable_gauge(
                "circuit_breaker.store.sync_lag",
                callbacks=[self._store_lag],
                unit="s",
                description="Delay between the server applying the last transition heard "
                "from another replica and this replica applying it.",
            ),
            meter.create_observable_counter(
                "circuit_breaker.store.reconnects",
                callbacks=[self._store_reconnects],
                unit="{reconnect}",
                description="Times the shared store's connection came back after a loss.",
            ),
            meter.create_observable_counter(
                "circuit_breaker.store.transitions_received",
                callbacks=[self._store_received],
                unit="{transition}",
                description="Transitions heard from other replicas through the shared store.",
            ),
            meter.create_observable_counter(
                "circuit_breaker.store.transitions_dropped",
                callbacks=[self._store_dropped],
                unit="{transition}",
                description="Transitions not sent because the shared store's server was "
                "unreachable.",
            ),
            meter.create_observable_up_down_counter(
                "circuit_breaker.store.keys",
                callbacks=[self._store_keys],
                unit="{key}",
                description="Breaker keys the shared store shares.",
            ),
            meter.create_observable_up_down_counter(
                "circuit_breaker.store.queued",
                callbacks=[self._store_queued],
                unit="{operation}",
                description="Work waiting for the shared store's thread.",
            ),
        )

    def close(self) -> None:
        """Stop reporting: every callback returns no observations from now on."""
        self._closed = True

    def _read(self) -> Iterator[tuple[str, BreakerMetrics]]:
        """Each breaker's name and a fresh snapshot; nothing once closed."""
        if self._closed:
            return
        for breaker in resolve_breakers(self._breakers):
            yield breaker.name, breaker.get_metrics()

    def _requests(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            yield Observation(
                m.successful_requests, {_NAME: name, "circuit_breaker.outcome": "success"}
            )
            yield Observation(
                m.failed_requests, {_NAME: name, "circuit_breaker.outcome": "failure"}
            )
            yield Observation(
                m.ignored_requests, {_NAME: name, "circuit_breaker.outcome": "ignored"}
            )

    def _rejected(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            yield Observation(m.rejected_requests, {_NAME: name})

    def _state_changes(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            for (old, new), count in state_change_counts(m).items():
                yield Observation(
                    count,
                    {
                        _NAME: name,
                        "circuit_breaker.from_state": old,
                        "circuit_breaker.to_state": new,
                    },
                )

    def _state(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            current = m.state.value
            for value in _STATES:
                yield Observation(
                    1 if value == current else 0, {_NAME: name, "circuit_breaker.state": value}
                )

    def _response_time(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            yield Observation(m.total_response_time, {_NAME: name})

    def _time_in_state(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            for value, spent in state_seconds(m).items():
                yield Observation(spent, {_NAME: name, "circuit_breaker.state": value})

    def _availability(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            yield Observation(m.availability, {_NAME: name})

    def _throughput(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            yield Observation(m.throughput, {_NAME: name})

    def _bulkhead_rejected(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            if m.bulkhead_limit is not None:
                yield Observation(m.bulkhead_rejected_requests, {_NAME: name})

    def _bulkhead_in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            if m.bulkhead_limit is not None:
                yield Observation(m.bulkhead_in_flight_requests or 0, {_NAME: name})

    def _bulkhead_waiting(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            if m.bulkhead_limit is not None:
                yield Observation(m.bulkhead_waiting_requests or 0, {_NAME: name})

    def _bulkhead_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, m in self._read():
            if m.bulkhead_limit is not None:
                yield Observation(m.bulkhead_limit, {_NAME: name})

    # -- shared stores ----------------------------------------------------------------

    def _read_stores(self) -> Iterator[tuple[dict[str, str], StoreHealth]]:
        if self._closed:
            return
        for namespace, server, health in store_rows(resolve_stores(self._stores, self._breakers)):
            yield {_NAMESPACE: namespace, _SERVER: server}, health

    def _store_connected(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, health in self._read_stores():
            yield Observation(1 if health.connected else 0, attributes)

    def _store_state(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, health in self._read_stores():
            for value in STORE_STATES:
                yield Observation(
                    1 if value == health.state else 0,
                    {**attributes, "circuit_breaker.store.state": value},
                )

    def _store_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, health in self._read_stores():
            if health.lag is not None:
                yield Observation(health.lag, attributes)

    def _store_reconnects(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, health in self._read_stores():
            yield Observation(health.reconnects, attributes)

    def _store_received(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, health in self._read_stores():
            yield Observation(health.messages, attributes)

    def _store_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, health in self._read_stores():
            yield Observation(health.dropped, attributes)

    def _store_keys(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, health in self._read_stores():
            yield Observation(health.keys, attributes)

    def _store_queued(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, health in self._read_stores():
            yield Observation(health.queued, attributes)

    def __repr__(self) -> str:
        return (
            f"<RegisteredMetrics on meter {self.meter.name!r}{' closed' if self._closed else ''}>"
        )


def register_metrics(
    breakers: BreakerSource = None,
    *,
    meter_provider: MeterProvider | None = None,
    stores: StoreSource = None,
) -> RegisteredMetrics:
    """Create the circuit breaker instruments on `meter_provider`'s ``httpx_breaker`` meter.

    Args:
        breakers: which breakers to report: None for every live breaker (the default;
            breakers created later are picked up), a `BreakerRegistry` or other mapping
            of name to breaker, a list of breakers, or a callable returning either.
        meter_provider: the provider to register on; the global one by default.
        stores: which shared stores to report (a list, or a callable returning one); by
            default the stores that go with `breakers` (see the module docstring).

    Counters are exact and monotonic however many state changes happen between two
    collections: they come from the breaker's lifetime counters (`state_change_counts`,
    `total_response_time`, `state_seconds`), not from the trimmed `state_changes`
    history. Call once
    per provider: registering twice reports every breaker twice.
    """
    provider = meter_provider if meter_provider is not None else get_meter_provider()
    meter = provider.get_meter(METER_NAME, _version())
    return RegisteredMetrics(meter, freeze_source(breakers), freeze_stores(stores))
