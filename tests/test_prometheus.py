"""The Prometheus collector, scraped through a real CollectorRegistry and parsed back."""

from __future__ import annotations

import contextlib
import gc
import subprocess
import sys
import textwrap
import threading

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from httpx_breaker import (
    BreakerRegistry,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
)
from httpx_breaker.monitoring import BreakerSource
from httpx_breaker.prometheus import CircuitBreakerCollector

from .conftest import FakeClock, one_holding_one_waiting

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

NAMES = {
    "circuit_breaker_requests_total",
    "circuit_breaker_rejected_requests_total",
    "circuit_breaker_state_changes_total",
    "circuit_breaker_state",
    "circuit_breaker_response_time_seconds_count",
    "circuit_breaker_response_time_seconds_sum",
    "circuit_breaker_state_seconds_total",
    "circuit_breaker_availability_ratio",
    "circuit_breaker_throughput_requests_per_second",
}


def _scrape_text(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def _parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def _registry(breakers: BreakerSource = None) -> tuple[CollectorRegistry, CircuitBreakerCollector]:
    registry = CollectorRegistry()
    collector = CircuitBreakerCollector(breakers)
    registry.register(collector)
    return registry, collector


def _scrape(registry: CollectorRegistry) -> Samples:
    return _parse(_scrape_text(registry))


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _call(breaker: CircuitBreaker, clock: FakeClock, duration: float, *, fail: bool) -> None:
    def fn() -> None:
        clock.advance(duration)
        if fail:
            raise RuntimeError("boom")

    with contextlib.suppress(RuntimeError, CircuitOpenError):
        breaker.call(fn)


def test_exposition_names_types_and_values(clock: FakeClock) -> None:
    """Each series has the seed's exact name and type, and the breaker's numbers."""
    config = CircuitBreakerConfig(failure_threshold=2, reset_timeout=10.0, timeout=None)
    breaker = CircuitBreaker("api.example.com", config, clock=clock)
    _call(breaker, clock, 0.25, fail=False)
    _call(breaker, clock, 0.5, fail=False)
    _call(breaker, clock, 1.0, fail=True)
    _call(breaker, clock, 2.0, fail=True)  # opens
    _call(breaker, clock, 0.0, fail=False)  # rejected
    clock.advance(1.25)  # closed 3.75 s, then open 1.25 s
    registry, _ = _registry([breaker])

    text = _scrape_text(registry)
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types == {
        "circuit_breaker_requests": "counter",
        "circuit_breaker_rejected_requests": "counter",
        "circuit_breaker_state_changes": "counter",
        "circuit_breaker_state": "gauge",
        "circuit_breaker_response_time_seconds": "summary",
        "circuit_breaker_state_seconds": "counter",
        "circuit_breaker_availability_ratio": "gauge",
        "circuit_breaker_throughput_requests_per_second": "gauge",
    }
    samples = _parse(text)
    assert {name for name, _ in samples} == NAMES
    name = "api.example.com"
    for kind, expected in {"total": 4, "success": 2, "failure": 2, "ignored": 0}.items():
        assert (
            _value(samples, "circuit_breaker_requests_total", circuit_breaker=name, type=kind)
            == expected
        )
    assert _value(samples, "circuit_breaker_rejected_requests_total", circuit_breaker=name) == 1
    assert (
        _value(
            samples,
            "circuit_breaker_state_changes_total",
            circuit_breaker=name,
            from_state="closed",
            to_state="open",
        )
        == 1
    )
    assert {
        state: _value(samples, "circuit_breaker_state", circuit_breaker=name, state=state)
        for state in ("closed", "open", "half_open")
    } == {"closed": 0, "open": 1, "half_open": 0}
    assert _value(samples, "circuit_breaker_response_time_seconds_count", circuit_breaker=name) == 4
    assert _value(
        samples, "circuit_breaker_response_time_seconds_sum", circuit_breaker=name
    ) == pytest.approx(3.75)
    assert {
        state: _value(samples, "circuit_breaker_state_seconds_total", circuit_breaker=name, state=state)
        for state in ("closed", "open", "half_open")
    } == pytest.approx({"closed": 3.75, "open": 1.25, "half_open": 0.0})
    assert _value(
        samples, "circuit_breaker_availability_ratio", circuit_breaker=name
    ) == pytest.approx(0.75)
    assert _value(
        samples, "circuit_breaker_throughput_requests_per_second", circuit_breaker=name
    ) == pytest.approx(4 / 60)


def test_every_possible_state_change_is_exported_from_zero(clock: FakeClock) -> None:
    """The five transitions are there at 0 before they happen, so rate() sees the first."""
    breaker = CircuitBreaker("fresh", clock=clock)
    registry, _ = _registry([breaker])
    changes = {
        (dict(labels)["from_state"], dict(labels)["to_state"]): value
        for (name, labels), value in _scrape(registry).items()
        if name == "circuit_breaker_state_changes_total"
    }
    assert changes == {
        ("closed", "open"): 0,
        ("open", "half_open"): 0,
        ("open", "closed"): 0,
        ("half_open", "closed"): 0,
        ("half_open", "open"): 0,
    }


def test_a_full_cycle_is_counted_per_transition(clock: FakeClock) -> None:
    """closed -> open -> half_open -> open -> half_open -> closed, each counted once or twice."""
    config = CircuitBreakerConfig(
        failure_threshold=1, reset_timeout=5.0, half_open_max_requests=1, timeout=None
    )
    breaker = CircuitBreaker("cycle", config, clock=clock)
    registry, _ = _registry([breaker])
    _call(breaker, clock, 0.0, fail=True)
    clock.advance(5.0)
    _call(breaker, clock, 0.0, fail=True)  # probe fails
    clock.advance(5.0)
    _call(breaker, clock, 0.0, fail=False)  # probe succeeds
    samples = _scrape(registry)

    def changes(old: str, new: str) -> float:
        return _value(
            samples,
            "circuit_breaker_state_changes_total",
            circuit_breaker="cycle",
            from_state=old,
            to_state=new,
        )

    assert changes("closed", "open") == 1
    assert changes("open", "half_open") == 2
    assert changes("half_open", "open") == 1
    assert changes("half_open", "closed") == 1
    assert changes("open", "closed") == 0


def _changes_key(name: str, old: str, new: str) -> tuple[str, frozenset[tuple[str, str]]]:
    labels = {"circuit_breaker": name, "from_state": old, "to_state": new}
    return ("circuit_breaker_state_changes_total", frozenset(labels.items()))


def test_state_change_counters_stay_monotonic_past_the_1000_kept_changes(
    clock: FakeClock,
) -> None:
    """Over 3,000 changes and 300 scrapes, no counter ever goes down and the totals are exact."""
    breaker = CircuitBreaker("flapping", clock=clock)
    registry, _ = _registry([breaker])
    previous: Samples = {}
    for cycle in range(1, 1501):
        breaker.force_open()
        breaker.reset()
        if cycle % 5 == 0:
            samples = _scrape(registry)
            for key, value in previous.items():
                if key[0].endswith("_total"):
                    assert samples[key] >= value, key
            assert samples[_changes_key("flapping", "closed", "open")] == cycle
            previous = samples
    assert len(breaker.get_metrics().state_changes) == 1000
    final = _scrape(registry)
    assert final[_changes_key("flapping", "closed", "open")] == 1500
    assert final[_changes_key("flapping", "open", "closed")] == 1500
    # Scraping again with nothing new changes nothing.
    assert _scrape(registry) == final


def test_more_than_1000_changes_between_two_scrapes_are_all_counted(clock: FakeClock) -> None:
    """2,500 changes between two scrapes, far past the 1,000 kept, are counted exactly."""
    breaker = CircuitBreaker("burst", clock=clock)
    registry, _ = _registry([breaker])
    breaker.force_open()
    first = _scrape(registry)
    assert first[_changes_key("burst", "closed", "open")] == 1
    for _ in range(1250):
        breaker.reset()
        breaker.force_open()
    second = _scrape(registry)
    assert second[_changes_key("burst", "closed", "open")] == 1251
    assert second[_changes_key("burst", "open", "closed")] == 1250
    assert len(breaker.get_metrics().state_changes) == 1000


def test_concurrent_scrapes_count_each_state_change_once(clock: FakeClock) -> None:
    """Scrapes from several threads while the breaker flaps still count every change once."""
    breaker = CircuitBreaker("contended", clock=clock)
    registry, _ = _registry([breaker])
    stop = threading.Event()

    def scrape_until_stopped() -> None:
        while not stop.is_set():
            generate_latest(registry)

    threads = [threading.Thread(target=scrape_until_stopped) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(400):
            breaker.force_open()
            breaker.reset()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    labels = frozenset(
        {"circuit_breaker": "contended", "from_state": "closed", "to_state": "open"}.items()
    )
    assert _scrape(registry)[("circuit_breaker_state_changes_total", labels)] == 400


def test_a_late_first_scrape_counts_every_change_ever_made(clock: FakeClock) -> None:
    """First scraped after 1,200 changes (200 more than the history keeps): all are counted."""
    breaker = CircuitBreaker("late", clock=clock)
    for _ in range(600):
        breaker.force_open()
        breaker.reset()
    registry, _ = _registry([breaker])
    assert _scrape(registry)[_changes_key("late", "closed", "open")] == 600
    breaker.force_open()
    assert _scrape(registry)[_changes_key("late", "closed", "open")] == 601


def test_response_time_sum_is_the_breakers_exact_total_and_never_dips(
    clock: FakeClock,
) -> None:
    """The summary's sum is `total_response_time` itself at every scrape: never lower."""
    config = CircuitBreakerConfig(failure_threshold=10_000, timeout=None)
    breaker = CircuitBreaker("sums", config, clock=clock)
    registry, _ = _registry([breaker])
    durations = [0.1, 0.2, 0.3, 0.0, 0.7] * 60
    previous = 0.0
    for i, duration in enumerate(durations, 1):
        _call(breaker, clock, duration, fail=i % 3 == 0)
        samples = _scrape(registry)
        value = _value(samples, "circuit_breaker_response_time_seconds_sum", circuit_breaker="sums")
        assert value >= previous
        assert value == breaker.get_metrics().total_response_time
        assert (
            _value(samples, "circuit_breaker_response_time_seconds_count", circuit_breaker="sums")
            == i
        )
        previous = value
    assert previous == pytest.approx(sum(durations))


def test_response_time_summary_counts_successes_and_failures_only(clock: FakeClock) -> None:
    """Ignored calls are not timed: the summary's count is successes plus failures."""
    config = CircuitBreakerConfig(exclude_exceptions=(KeyError,), timeout=None)
    breaker = CircuitBreaker("timed", config, clock=clock)

    def ignored() -> None:
        clock.advance(9.0)
        raise KeyError("not a failure")

    with pytest.raises(KeyError):
        breaker.call(ignored)
    _call(breaker, clock, 0.5, fail=False)
    samples = _scrape(_registry([breaker])[0])
    assert (
        _value(samples, "circuit_breaker_requests_total", circuit_breaker="timed", type="ignored")
        == 1
    )
    assert (
        _value(samples, "circuit_breaker_response_time_seconds_count", circuit_breaker="timed") == 1
    )
    assert _value(
        samples, "circuit_breaker_response_time_seconds_sum", circuit_breaker="timed"
    ) == pytest.approx(0.5)


def test_default_source_follows_live_breakers() -> None:
    """With no argument, breakers made after registration appear and dropped ones vanish."""
    registry, _ = _registry()
    breaker = CircuitBreaker("prom-live-breaker")
    assert (
        "circuit_breaker_rejected_requests_total",
        frozenset({"circuit_breaker": "prom-live-breaker"}.items()),
    ) in _scrape(registry)
    del breaker
    gc.collect()
    assert not any(
        dict(labels).get("circuit_breaker") == "prom-live-breaker"
        for _, labels in _scrape(registry)
    )


def test_registry_source_follows_new_keys(clock: FakeClock) -> None:
    """A BreakerRegistry is read at each scrape, so keys created later are exported."""
    breakers = BreakerRegistry(clock=clock)
    registry, _ = _registry(breakers)
    assert _scrape(registry) == {}
    breakers.breaker_for("a.example")
    breakers.breaker_for("b.example:8080")
    names = {dict(labels)["circuit_breaker"] for _, labels in _scrape(registry)}
    assert names == {"a.example", "b.example:8080"}


def test_callable_source_is_called_per_scrape(clock: FakeClock) -> None:
    """A callable source is asked again on every scrape."""
    pool: list[CircuitBreaker] = []
    registry, _ = _registry(lambda: pool)
    assert _scrape(registry) == {}
    pool.append(CircuitBreaker("late-comer", clock=clock))
    names = {dict(labels)["circuit_breaker"] for _, labels in _scrape(registry)}
    assert names == {"late-comer"}


def test_describe_names_the_families_without_reading_breakers() -> None:
    """describe() gives the families with no samples, so a registry can check clashes."""
    collector = CircuitBreakerCollector(lambda: pytest.fail("describe must not read"))
    families = list(collector.describe())
    assert [f.name for f in families] == [
        "circuit_breaker_requests",
        "circuit_breaker_rejected_requests",
        "circuit_breaker_state_changes",
        "circuit_breaker_state",
        "circuit_breaker_response_time_seconds",
        "circuit_breaker_state_seconds",
        "circuit_breaker_availability_ratio",
        "circuit_breaker_throughput_requests_per_second",
        "circuit_breaker_bulkhead_rejected_requests",
        "circuit_breaker_bulkhead_in_flight_requests",
        "circuit_breaker_bulkhead_waiting_requests",
        "circuit_breaker_bulkhead_limit",
        "circuit_breaker_store_connected",
        "circuit_breaker_store_state",
        "circuit_breaker_store_sync_lag_seconds",
        "circuit_breaker_store_reconnects",
        "circuit_breaker_store_transitions_received",
        "circuit_breaker_store_transitions_dropped",
        "circuit_breaker_store_keys",
        "circuit_breaker_store_queued",
    ]
    assert all(not f.samples for f in families)
    registry = CollectorRegistry()
    registry.register(collector)
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(CircuitBreakerCollector([]))


def test_labels_hold_only_the_host_never_credentials_path_or_query() -> None:
    """A request URL with userinfo, path and query yields labels with the host alone."""
    transport = CircuitBreakerTransport(default=CircuitBreakerConfig(failure_threshold=1))
    registry, _ = _registry(transport.registry)
    with respx.mock(assert_all_called=True) as mock:
        mock.get(url__startswith="https://api.example.com").respond(503)
        with httpx.Client(transport=transport) as client:
            client.get("https://alice:s3cret@api.example.com/v1/users/42?token=abc123")
            with pytest.raises(CircuitOpenError):
                client.get("https://alice:s3cret@api.example.com/v1/users/43?token=abc123")
    text = _scrape_text(registry)
    samples = _parse(text)
    label_values = {value for _, labels in samples for _, value in labels}
    assert label_values == {
        "api.example.com",
        "total",
        "success",
        "failure",
        "ignored",
        "closed",
        "open",
        "half_open",
    }
    for secret in ("alice", "s3cret", "/v1", "token", "abc123", "users"):
        assert secret not in text


def test_scrapes_cost_nothing_on_the_request_path(clock: FakeClock) -> None:
    """The collector adds no listener: a breaker being scraped has none."""
    breaker = CircuitBreaker("no-listeners", clock=clock)
    registry, _ = _registry([breaker])
    _scrape(registry)
    assert breaker._listeners == ()


def test_import_error_names_the_extra() -> None:
    """Without prometheus_client, importing the exporter says which extra to install."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None
        import httpx_breaker
        try:
            import httpx_breaker.prometheus
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without prometheus_client")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'httpx-breaker[prometheus]'" in done.stdout


def test_availability_over_a_range_from_the_state_seconds_counter(clock: FakeClock) -> None:
    """The documented PromQL, done by hand on two scrapes: 1 - increase(open) / increase(all)
    is the share of that range not spent OPEN; the counters never go down meanwhile."""
    config = CircuitBreakerConfig(failure_threshold=1, reset_timeout=30.0, half_open_max_requests=1)
    breaker = CircuitBreaker("ranged", config, clock=clock)
    registry, _ = _registry([breaker])
    clock.advance(100.0)

    def seconds() -> dict[str, float]:
        samples = _scrape(registry)
        return {
            state: _value(samples, "circuit_breaker_state_seconds_total", circuit_breaker="ranged", state=state)
            for state in ("closed", "open", "half_open")
        }

    first = seconds()
    _call(breaker, clock, 0.0, fail=True)  # opens at 100 s
    clock.advance(45.0)  # 30 s open, then 15 s half-open, unnoticed
    middle = seconds()
    _call(breaker, clock, 5.0, fail=False)  # the probe, 5 s long, closes
    clock.advance(50.0)
    last = seconds()
    for earlier, later in ((first, middle), (middle, last)):
        assert all(later[s] >= earlier[s] for s in earlier)
    increase = {state: last[state] - first[state] for state in last}
    assert sum(increase.values()) == pytest.approx(100.0)  # the range: 100 s to 200 s
    assert 1 - increase["open"] / sum(increase.values()) == pytest.approx(0.7)
    assert increase == pytest.approx({"closed": 50.0, "open": 30.0, "half_open": 20.0})


def test_bulkhead_gauges_count_the_slots_held_and_the_requests_waiting() -> None:
    """An idle bulkhead reads 0 in flight and 0 waiting; with one call holding the only
    slot and another waiting for it, both gauges read 1."""
    breaker = CircuitBreaker("gated", CircuitBreakerConfig(max_concurrent=1, max_wait=60.0))
    registry, _ = _registry([breaker])

    def gauges() -> tuple[float, float, float]:
        samples = _scrape(registry)
        return (
            _value(samples, "circuit_breaker_bulkhead_in_flight_requests", circuit_breaker="gated"),
            _value(samples, "circuit_breaker_bulkhead_waiting_requests", circuit_breaker="gated"),
            _value(samples, "circuit_breaker_bulkhead_limit", circuit_breaker="gated"),
        )

    assert gauges() == (0.0, 0.0, 1.0)
    with one_holding_one_waiting(breaker):
        assert gauges() == (1.0, 1.0, 1.0)
    assert gauges() == (0.0, 0.0, 1.0)


def test_repr_names_the_breaker_source() -> None:
    """The repr says which breakers the collector exports: every live one by default,
    else the kind of source it was given."""
    assert repr(CircuitBreakerCollector()) == "<CircuitBreakerCollector of every live breaker>"
    listed = CircuitBreakerCollector([CircuitBreaker("listed")])
    assert repr(listed) == "<CircuitBreakerCollector of list>"
    assert repr(CircuitBreakerCollector(BreakerRegistry())) == (
        "<CircuitBreakerCollector of BreakerRegistry>"
    )
