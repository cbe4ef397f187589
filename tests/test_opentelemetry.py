"""The OpenTelemetry instruments, read through the SDK's InMemoryMetricReader."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import httpx_breaker.opentelemetry as otel
from httpx_breaker import BreakerRegistry, CircuitBreaker, CircuitBreakerConfig, CircuitOpenError
from httpx_breaker.opentelemetry import register_metrics
from httpx_breaker.redis import RedisStore

from .conftest import FakeClock, one_holding_one_waiting
from .redis_servers import wait_until

Points = dict[tuple[str, frozenset[tuple[str, Any]]], float]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


def _collect(reader: InMemoryMetricReader) -> tuple[Points, dict[str, Any]]:
    """Data points by (instrument, attributes), and each instrument's metric record."""
    points: Points = {}
    metrics: dict[str, Any] = {}
    data = reader.get_metrics_data()
    if data is None:
        return points, metrics
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "httpx_breaker"
            for metric in scope.metrics:
                metrics[metric.name] = metric
                for point in metric.data.data_points:
                    key = (metric.name, frozenset((point.attributes or {}).items()))
                    assert key not in points
                    points[key] = point.value
    return points, metrics


def _point(points: Points, name: str, **attributes: str) -> float:
    return points[(name, frozenset(attributes.items()))]


def _call(breaker: CircuitBreaker, clock: FakeClock, duration: float, *, fail: bool) -> None:
    def fn() -> None:
        clock.advance(duration)
        if fail:
            raise RuntimeError("boom")

    try:
        breaker.call(fn)
    except (RuntimeError, CircuitOpenError):
        return


def test_instruments_report_the_breakers_numbers(
    clock: FakeClock, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Each instrument has its OTel name, kind and unit, and the breaker's exact values."""
    config = CircuitBreakerConfig(failure_threshold=2, timeout=None)
    breaker = CircuitBreaker("api.example.com", config, clock=clock)
    _call(breaker, clock, 0.25, fail=False)
    _call(breaker, clock, 0.5, fail=True)
    _call(breaker, clock, 1.0, fail=True)  # opens
    _call(breaker, clock, 0.0, fail=False)  # rejected
    _call(breaker, clock, 0.0, fail=False)  # rejected
    clock.advance(0.25)  # closed 1.75 s, then open 0.25 s
    register_metrics([breaker], meter_provider=provider)

    points, metrics = _collect(reader)

    kinds = {
        name: (type(m.data).__name__, getattr(m.data, "is_monotonic", None), m.unit)
        for name, m in metrics.items()
    }
    assert kinds == {
        "circuit_breaker.requests": ("Sum", True, "{request}"),
        "circuit_breaker.rejected_requests": ("Sum", True, "{request}"),
        "circuit_breaker.state_changes": ("Sum", True, "{change}"),
        "circuit_breaker.state": ("Sum", False, "{breaker}"),
        "circuit_breaker.response_time": ("Sum", True, "s"),
        "circuit_breaker.time_in_state": ("Sum", True, "s"),
        "circuit_breaker.availability": ("Gauge", None, "1"),
        "circuit_breaker.throughput": ("Gauge", None, "{request}/s"),
    }
    name = {"circuit_breaker.name": "api.example.com"}
    outcomes = {
        outcome: _point(
            points, "circuit_breaker.requests", **name, **{"circuit_breaker.outcome": outcome}
        )
        for outcome in ("success", "failure", "ignored")
    }
    assert outcomes == {"success": 1, "failure": 2, "ignored": 0}
    assert _point(points, "circuit_breaker.rejected_requests", **name) == 2
    assert (
        _point(
            points,
            "circuit_breaker.state_changes",
            **name,
            **{"circuit_breaker.from_state": "closed", "circuit_breaker.to_state": "open"},
        )
        == 1
    )
    states = {
        state: _point(points, "circuit_breaker.state", **name, **{"circuit_breaker.state": state})
        for state in ("closed", "open", "half_open")
    }
    assert states == {"closed": 0, "open": 1, "half_open": 0}
    assert _point(points, "circuit_breaker.response_time", **name) == pytest.approx(1.75)
    time_in_state = {
        state: _point(
            points, "circuit_breaker.time_in_state", **name, **{"circuit_breaker.state": state}
        )
        for state in ("closed", "open", "half_open")
    }
    assert time_in_state == pytest.approx({"closed": 1.75, "open": 0.25, "half_open": 0.0})
    assert _point(points, "circuit_breaker.availability", **name) == pytest.approx(0.875)
    assert _point(points, "circuit_breaker.throughput", **name) == pytest.approx(3 / 60)


def _changes_key(name: str, old: str, new: str) -> tuple[str, frozenset[tuple[str, Any]]]:
    attributes = {
        "circuit_breaker.name": name,
        "circuit_breaker.from_state": old,
        "circuit_breaker.to_state": new,
    }
    return ("circuit_breaker.state_changes", frozenset(attributes.items()))


def test_state_changes_stay_monotonic_past_the_1000_kept(
    clock: FakeClock, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Collected every 10 changes over 2,400 changes, counts never drop and stay exact."""
    breaker = CircuitBreaker("flapping", clock=clock)
    register_metrics([breaker], meter_provider=provider)
    key = _changes_key("flapping", "closed", "open")
    previous = 0.0
    for cycle in range(1, 1201):
        breaker.force_open()
        breaker.reset()
        if cycle % 5 == 0:
            value = _collect(reader)[0][key]
            assert value >= previous
            assert value == cycle
            previous = value
    assert previous == 1200


def test_more_than_1000_changes_between_two_collections_are_all_counted(
    clock: FakeClock, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """2,500 changes between two collections, far past the 1,000 kept, are counted exactly."""
    breaker = CircuitBreaker("burst", clock=clock)
    register_metrics([breaker], meter_provider=provider)
    breaker.force_open()
    assert _collect(reader)[0][_changes_key("burst", "closed", "open")] == 1
    for _ in range(1250):
        breaker.reset()
        breaker.force_open()
    points, _ = _collect(reader)
    assert points[_changes_key("burst", "closed", "open")] == 1251
    assert points[_changes_key("burst", "open", "closed")] == 1250
    assert len(breaker.get_metrics().state_changes) == 1000


def test_response_time_is_the_breakers_exact_total_and_never_dips(
    clock: FakeClock, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """The response-time counter is `total_response_time` itself at every collection."""
    config = CircuitBreakerConfig(failure_threshold=10_000, timeout=None)
    breaker = CircuitBreaker("sums", config, clock=clock)
    register_metrics([breaker], meter_provider=provider)
    key = ("circuit_breaker.response_time", frozenset({"circuit_breaker.name": "sums"}.items()))
    durations = [0.1, 0.2, 0.3, 0.0, 0.7] * 20
    previous = 0.0
    for i, duration in enumerate(durations, 1):
        _call(breaker, clock, duration, fail=i % 3 == 0)
        value = _collect(reader)[0][key]
        assert value >= previous
        assert value == breaker.get_metrics().total_response_time
        previous = value
    assert previous == pytest.approx(sum(durations))


def test_registry_source_and_the_global_provider(
    clock: FakeClock,
    provider: MeterProvider,
    reader: InMemoryMetricReader,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without meter_provider the global one is used; a registry's new keys show up."""
    monkeypatch.setattr(otel, "get_meter_provider", lambda: provider)
    breakers = BreakerRegistry(clock=clock)
    register_metrics(breakers)
    assert _collect(reader)[0] == {}
    breakers.breaker_for("a.example").force_open()
    points, _ = _collect(reader)
    names = {dict(attrs)["circuit_breaker.name"] for _, attrs in points}
    assert names == {"a.example"}


def test_close_stops_reporting(
    clock: FakeClock, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """After close() the callbacks report nothing."""
    breaker = CircuitBreaker("closing", clock=clock)
    registered = register_metrics([breaker], meter_provider=provider)
    assert len(registered.instruments) == 20  # 8 for breakers, 4 bulkhead, 8 for stores
    assert _collect(reader)[0]
    registered.close()
    assert not _collect(reader)[0]
    assert "closed" in repr(registered)


def test_attributes_are_bounded(
    clock: FakeClock, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Only the name, outcome, state and state-change attributes are ever reported,
    and every possible state change is there from 0."""
    breaker = CircuitBreaker("bounded", clock=clock)
    _call(breaker, clock, 0.1, fail=False)
    register_metrics([breaker], meter_provider=provider)
    points, _ = _collect(reader)
    keys = {k for _, attrs in points for k, _ in attrs}
    assert keys == {
        "circuit_breaker.name",
        "circuit_breaker.outcome",
        "circuit_breaker.state",
        "circuit_breaker.from_state",
        "circuit_breaker.to_state",
    }
    changes = {
        (dict(attrs)["circuit_breaker.from_state"], dict(attrs)["circuit_breaker.to_state"]): v
        for name, attrs in points
        if name == "circuit_breaker.state_changes"
        for v in [points[(name, attrs)]]
    }
    assert changes == {
        ("closed", "open"): 0,
        ("open", "half_open"): 0,
        ("open", "closed"): 0,
        ("half_open", "closed"): 0,
        ("half_open", "open"): 0,
    }


def test_import_error_names_the_extra() -> None:
    """Without opentelemetry-api, importing the exporter says which extra to install."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None
        import httpx_breaker
        try:
            import httpx_breaker.opentelemetry
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without opentelemetry")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'httpx-breaker[opentelemetry]'" in done.stdout


def test_bulkhead_gauges_count_the_slots_held_and_the_requests_waiting(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """An idle bulkhead reports 0 in flight and 0 waiting; with one call holding the only
    slot and another waiting for it, both gauges report 1."""
    breaker = CircuitBreaker("gated", CircuitBreakerConfig(max_concurrent=1, max_wait=60.0))
    register_metrics([breaker], meter_provider=provider)

    def gauges() -> tuple[float, float, float]:
        points, _ = _collect(reader)
        name = {"circuit_breaker.name": "gated"}
        return (
            _point(points, "circuit_breaker.bulkhead.in_flight_requests", **name),
            _point(points, "circuit_breaker.bulkhead.waiting_requests", **name),
            _point(points, "circuit_breaker.bulkhead.limit", **name),
        )

    assert gauges() == (0, 0, 1)
    with one_holding_one_waiting(breaker):
        assert gauges() == (1, 1, 1)
    assert gauges() == (0, 0, 1)


def test_an_unreachable_store_reports_disconnected(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """A store whose server does not answer: connected 0, state disconnected, no lag."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", namespace="lonely")
    try:
        wait_until(lambda: store.health.state == "disconnected", what="the failed connect")
        register_metrics([], stores=[store], meter_provider=provider)
        points, _ = _collect(reader)
    finally:
        store.close()
    attributes = {
        "circuit_breaker.store.namespace": "lonely",
        "circuit_breaker.store.server": f"redis://127.0.0.1:{port}/0",
    }
    assert _point(points, "circuit_breaker.store.connected", **attributes) == 0
    states = {
        state: _point(
            points, "circuit_breaker.store.state", **attributes, **{"circuit_breaker.store.state": state}
        )
        for state in ("connecting", "connected", "disconnected", "closed")
    }
    assert states == {"connecting": 0, "connected": 0, "disconnected": 1, "closed": 0}
    assert not [key for key in points if key[0] == "circuit_breaker.store.sync_lag"]
