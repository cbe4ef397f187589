"""Shared stores in the exporters and the dashboard: connection state, sync lag, counters.

Read from `store.health` at scrape time. The stores are real `RedisStore`s on a real,
password-protected Valkey (the password must never reach a label), and one on a port
where nothing listens (an unreachable server is a state, not an error).
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from httpx_breaker import BreakerRegistry, CircuitBreakerConfig
from httpx_breaker.monitoring import dashboard
from httpx_breaker.opentelemetry import register_metrics
from httpx_breaker.prometheus import CircuitBreakerCollector
from httpx_breaker.redis import RedisStore

from .redis_servers import Server, running, wait_until

PASSWORD = "pw-9c1f-S3cret"
CONFIG = CircuitBreakerConfig(failure_threshold=1, reset_timeout=30.0)
KEY = "api.example.com"


@pytest.fixture
def server() -> Iterator[Server]:
    with running("valkey", password=PASSWORD) as started:
        yield started


class Pair:
    """Two replicas; the first opens KEY, the second hears it (one message, some lag)."""

    def __init__(self, server: Server) -> None:
        self.stores = [RedisStore.from_url(server.url, namespace="shop") for _ in range(2)]
        self.registries = [BreakerRegistry(default=CONFIG, store=s) for s in self.stores]
        wait_until(lambda: all(s.connected for s in self.stores), what="connections")
        heard = self.registries[1].breaker_for(KEY)
        opener = self.registries[0].breaker_for(KEY)
        now = opener.clock()
        opener.record(opener.admit(), 1, now, now)
        wait_until(lambda: heard.is_open(), what="the fleet's open")
        wait_until(lambda: self.stores[1].health.lag is not None, what="the lag")

    @property
    def listener(self) -> RedisStore:
        return self.stores[1]

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def pair(server: Server) -> Iterator[Pair]:
    made = Pair(server)
    yield made
    made.close()


def scrape(
    collector: CircuitBreakerCollector,
) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def store_samples(samples: dict[Any, float]) -> dict[Any, float]:
    return {k: v for k, v in samples.items() if k[0].startswith("circuit_breaker_store_")}


def by_state(samples: dict[Any, float]) -> dict[tuple[str, str | None], float]:
    """The store samples by (name, its `state` label or None): one store row's."""
    return {
        (name, dict(labels).get("state")): value
        for (name, labels), value in store_samples(samples).items()
    }


def unreachable_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://:{PASSWORD}@127.0.0.1:{port}/0"  # nothing listens there now


def test_prometheus_exports_a_registrys_store(pair: Pair, server: Server) -> None:
    """Connection state, lag and counters of the registry's own store, labelled by
    namespace and server; the password in no label."""
    text, samples = scrape(CircuitBreakerCollector(pair.registries[1]))
    labels = {"namespace": "shop", "server": f"redis://***@127.0.0.1:{server.port}/0"}

    def value(name: str, **extra: str) -> float:
        return samples[(name, frozenset({**labels, **extra}.items()))]

    assert value("circuit_breaker_store_connected") == 1.0
    assert value("circuit_breaker_store_state", state="connected") == 1.0
    for other in ("connecting", "disconnected", "closed"):
        assert value("circuit_breaker_store_state", state=other) == 0.0
    assert 0.0 <= value("circuit_breaker_store_sync_lag_seconds") < 60.0
    assert value("circuit_breaker_store_transitions_received_total") == 1.0
    assert value("circuit_breaker_store_reconnects_total") == 0.0
    assert value("circuit_breaker_store_transitions_dropped_total") == 0.0
    assert value("circuit_breaker_store_keys") == 1.0
    assert "circuit_breaker_store_queued" in {name for name, _ in samples}
    assert PASSWORD not in text
    # The registry's breaker is there too, having heard the fleet.
    assert (
        samples[("circuit_breaker_state", frozenset({"circuit_breaker": KEY, "state": "open"}.items()))]
        == 1.0
    )


def test_prometheus_default_exports_every_live_store_until_it_is_closed(pair: Pair) -> None:
    collector = CircuitBreakerCollector()
    _, samples = scrape(collector)
    namespaces = {dict(labels)["namespace"] for name, labels in store_samples(samples)}
    assert namespaces == {"shop"}
    # Both replicas of this process, with one server and one namespace: one fleet link.
    connected = [v for (name, _), v in samples.items() if name == "circuit_breaker_store_connected"]
    assert connected == [1.0]
    received = [
        v for (name, _), v in samples.items()
        if name == "circuit_breaker_store_transitions_received_total"
    ]  # fmt: skip
    assert received == [1.0]  # the opener's own message is not counted
    keys = [v for (name, _), v in samples.items() if name == "circuit_breaker_store_keys"]
    assert keys == [2.0]
    pair.close()
    _, samples = scrape(collector)
    assert store_samples(samples) == {}


def test_prometheus_exports_stores_only_when_asked_for_other_sources(pair: Pair) -> None:
    """A list of breakers brings no store; stores= names them."""
    breaker = pair.registries[1][KEY]
    _, samples = scrape(CircuitBreakerCollector([breaker]))
    assert store_samples(samples) == {}
    _, samples = scrape(CircuitBreakerCollector([breaker], stores=[pair.listener]))
    assert {dict(labels)["namespace"] for _, labels in store_samples(samples)} == {"shop"}
    _, samples = scrape(CircuitBreakerCollector(stores=[]))
    assert store_samples(samples) == {}


def test_prometheus_reads_a_fleet_link_as_live_when_one_of_its_stores_is_closed(
    pair: Pair,
) -> None:
    """Stores named with stores= stay listed when closed: a closed one among live ones
    does not hold `connected` at 0 (the alert on it would fire for a working link), and
    its counters still count, so the totals never go down."""
    collector = CircuitBreakerCollector(stores=pair.stores)
    _, before = scrape(collector)
    pair.stores[0].close()
    _, after = scrape(collector)
    mine = by_state(after)
    assert mine[("circuit_breaker_store_connected", None)] == 1.0
    assert mine[("circuit_breaker_store_state", "connected")] == 1.0
    assert mine[("circuit_breaker_store_state", "closed")] == 0.0
    assert mine[("circuit_breaker_store_keys", None)] == 1.0  # the live store's one key
    for name, labels in store_samples(before):
        if name.endswith("_total"):
            assert after[(name, labels)] >= before[(name, labels)], name
    pair.stores[1].close()
    _, closed = scrape(collector)
    mine = by_state(closed)
    assert mine[("circuit_breaker_store_connected", None)] == 0.0
    assert mine[("circuit_breaker_store_state", "closed")] == 1.0


def test_prometheus_shows_an_unreachable_store_as_disconnected() -> None:
    """No server: connected 0, state disconnected, no lag sample, no error."""
    store = RedisStore.from_url(unreachable_url(), namespace="lonely")
    try:
        wait_until(lambda: store.health.state == "disconnected", what="the failed connect")
        text, samples = scrape(CircuitBreakerCollector(stores=[store]))
        mine = by_state(samples)
        assert mine[("circuit_breaker_store_connected", None)] == 0.0
        assert mine[("circuit_breaker_store_state", "disconnected")] == 1.0
        assert ("circuit_breaker_store_sync_lag_seconds", None) not in mine
        assert PASSWORD not in text
    finally:
        store.close()


def test_a_stores_health_is_a_snapshot_that_cannot_be_changed() -> None:
    """`health` is a value taken when read: a later change of the store (here, closing
    it) shows in the next read, not in the one taken, and no reader can alter it."""
    store = RedisStore.from_url(unreachable_url(), namespace="lonely")
    try:
        before = store.health
    finally:
        store.close()
    assert store.health.state == "closed"
    assert before.state in ("connecting", "disconnected")
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.state = "closed"  # type: ignore[misc]


def test_stores_must_be_stores() -> None:
    with pytest.raises(TypeError, match="expected a store"):
        scrape(CircuitBreakerCollector(stores=["redis://127.0.0.1:6379/0"]))


# -- OpenTelemetry ----------------------------------------------------------------------------


def otel_points(reader: InMemoryMetricReader) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
    points = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    points[(metric.name, frozenset((point.attributes or {}).items()))] = point.value
    return points


def test_opentelemetry_reports_a_registrys_store(pair: Pair, server: Server) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        registered = register_metrics(pair.registries[1], meter_provider=provider)
        points = otel_points(reader)
    finally:
        provider.shutdown()
    attributes = {
        "circuit_breaker.store.namespace": "shop",
        "circuit_breaker.store.server": f"redis://***@127.0.0.1:{server.port}/0",
    }

    def point(name: str, **extra: str) -> Any:
        return points[(name, frozenset({**attributes, **extra}.items()))]

    assert point("circuit_breaker.store.connected") == 1
    assert point("circuit_breaker.store.state", **{"circuit_breaker.store.state": "connected"}) == 1
    assert point("circuit_breaker.store.state", **{"circuit_breaker.store.state": "closed"}) == 0
    assert 0.0 <= point("circuit_breaker.store.sync_lag") < 60.0
    assert point("circuit_breaker.store.transitions_received") == 1
    assert point("circuit_breaker.store.reconnects") == 0
    assert point("circuit_breaker.store.transitions_dropped") == 0
    assert point("circuit_breaker.store.keys") == 1
    assert point("circuit_breaker.store.queued") >= 0
    assert all(PASSWORD not in str(value) for key in points for value in dict(key[1]).values())
    registered.close()


def test_opentelemetry_reports_no_store_for_a_list_of_breakers(pair: Pair) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        register_metrics([pair.registries[1][KEY]], meter_provider=provider)
        names = {name for name, _ in otel_points(reader)}
    finally:
        provider.shutdown()
    assert "circuit_breaker.state" in names
    assert not {n for n in names if n.startswith("circuit_breaker.store.")}


def test_the_dashboard_shows_a_registrys_store(pair: Pair, server: Server) -> None:
    data = dashboard(pair.registries[1])
    [store] = data["stores"]
    assert store["namespace"] == "shop" and store["server"].startswith("redis://***@")
    assert store["connected"] is True and store["state"] == "connected"
    assert store["messages"] == 1 and store["lag"] is not None
    assert PASSWORD not in json.dumps(data)
    assert "stores" not in dashboard([pair.registries[1][KEY]])
