"""Dashboards, health scores and alerts, against hand-computed values of the seed's formulas."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from httpx_breaker import (
    BreakerMetrics,
    BreakerRegistry,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
)
from httpx_breaker.monitoring import (
    POSSIBLE_STATE_CHANGES,
    Alert,
    alerts,
    dashboard,
    freeze_source,
    freeze_stores,
    health_score,
    resolve_breakers,
    state_change_counts,
)
from httpx_breaker.redis import RedisStore, StoreHealth

from .conftest import FakeClock
from .redis_servers import running, wait_until


def _metrics(
    *, ok: int, failed: int, avg: float, ignored: int = 0, rejected: int = 0
) -> BreakerMetrics:
    recorded = ok + failed
    return BreakerMetrics(
        total_requests=ok + failed + ignored,
        successful_requests=ok,
        failed_requests=failed,
        rejected_requests=rejected,
        ignored_requests=ignored,
        success_rate=ok / recorded if recorded else 1.0,
        failure_rate=failed / recorded if recorded else 0.0,
        average_response_time=avg,
        state_changes=(),
    )


def _drive(
    breaker: CircuitBreaker, clock: FakeClock, *, ok: int, failed: int, duration: float
) -> None:
    """Make `ok` successful and `failed` failed calls, each `duration` long on the clock."""

    def succeed() -> None:
        clock.advance(duration)

    def fail() -> None:
        clock.advance(duration)
        raise RuntimeError("boom")

    for _ in range(ok):
        breaker.call(succeed)
    for _ in range(failed):
        with pytest.raises(RuntimeError):
            breaker.call(fail)


def _quiet() -> CircuitBreakerConfig:
    """A policy that never opens by itself, so tests choose the state."""
    return CircuitBreakerConfig(failure_threshold=10_000, window_size=1000, timeout=None)


# -- health_score -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ok", "failed", "avg", "expected"),
    [
        (10, 0, 0.0, 100.0),  # 70 + 30: full marks only at 0 s
        (10, 0, 0.2, 98.8),  # 70 + (5 - 0.2) * 6 = 70 + 28.8
        (10, 0, 1.0, 94.0),  # 70 + 24 (the seed's code, not its comment: see health_score)
        (8, 2, 3.0, 68.0),  # 0.8 * 70 = 56, (5 - 3) * 6 = 12
        (1, 3, 2.5, 32.5),  # 0.25 * 70 = 17.5, (5 - 2.5) * 6 = 15
        (10, 0, 4.6, 72.4),  # 70, (5 - 4.6) * 6 = 2.4
        (5, 5, 5.0, 35.0),  # 0.5 * 70, response time at 5 s earns nothing
        (5, 5, 9.0, 35.0),  # beyond 5 s it stays at nothing, never negative
        (0, 4, 0.1, 29.4),  # all failed, fast: (5 - 0.1) * 6
    ],
)
def test_health_score_matches_the_seed_formula(
    ok: int, failed: int, avg: float, expected: float
) -> None:
    """70 points scale with the success rate; 30 fall by 6 a second from 0 s to nothing at 5 s."""
    assert health_score(_metrics(ok=ok, failed=failed, avg=avg)) == pytest.approx(expected)


def test_health_score_is_100_without_traffic() -> None:
    """A breaker that has seen no calls is perfectly healthy, whatever else it holds."""
    assert health_score(_metrics(ok=0, failed=0, avg=0.0, rejected=7)) == 100.0


def test_health_score_of_ignored_only_traffic_counts_as_traffic() -> None:
    """Ignored calls are traffic: with no outcomes the success rate is 1.0 and time 0 s."""
    assert health_score(_metrics(ok=0, failed=0, avg=0.0, ignored=3)) == 100.0


def test_health_score_from_a_real_breaker(clock: FakeClock) -> None:
    """Four 2 s successes and one 2 s failure score 0.8 * 70 + (5 - 2) * 6 = 74."""
    breaker = CircuitBreaker("svc", _quiet(), clock=clock)
    _drive(breaker, clock, ok=4, failed=1, duration=2.0)
    assert health_score(breaker.get_metrics()) == pytest.approx(74.0)


# -- dashboard --------------------------------------------------------------------


def _three(clock: FakeClock) -> list[CircuitBreaker]:
    config = _quiet()
    healthy = CircuitBreaker("healthy", config, clock=clock)
    slow = CircuitBreaker("slow", config, clock=clock)
    broken = CircuitBreaker("broken", config, clock=clock)
    _drive(healthy, clock, ok=10, failed=0, duration=0.5)  # 70 + 27 = 97
    _drive(slow, clock, ok=9, failed=1, duration=4.0)  # 63 + 6 = 69
    _drive(broken, clock, ok=1, failed=3, duration=1.0)  # 17.5 + 24 = 41.5
    broken.force_open()
    return [healthy, slow, broken]


def test_dashboard_summary_rows_and_order(clock: FakeClock) -> None:
    """The summary counts states; rows are sorted by health, lowest first, with exact values."""
    healthy, slow, broken = _three(clock)
    idle = CircuitBreaker("idle", _quiet(), clock=clock)
    idle.force_open()
    idle.reset()
    probing = CircuitBreaker(
        "probing", CircuitBreakerConfig(failure_threshold=1, reset_timeout=5.0), clock=clock
    )
    _drive(probing, clock, ok=0, failed=1, duration=0.0)
    clock.advance(5.0)
    assert probing.state is CircuitState.HALF_OPEN

    data = dashboard([healthy, slow, broken, idle, probing])

    assert data["summary"] == {
        "total_breakers": 5,
        "open_breakers": 1,
        "half_open_breakers": 1,
        "closed_breakers": 3,
        "bulkhead_rejected_requests": 0,
    }
    assert [row["name"] for row in data["breakers"]] == [
        "probing",  # 0 * 70 + 30 = 30
        "broken",
        "slow",
        "healthy",  # 97
        "idle",
    ]
    scores = {row["name"]: row["health_score"] for row in data["breakers"]}
    assert scores == pytest.approx(
        {"probing": 30.0, "broken": 41.5, "slow": 69.0, "healthy": 97.0, "idle": 100.0}
    )
    broken_row = data["breakers"][1]
    assert broken_row["state"] == "open"
    assert broken_row["metrics"] == {
        "total_requests": 4,
        "successful_requests": 1,
        "failed_requests": 3,
        "ignored_requests": 0,
        "rejected_requests": 0,
        "success_rate": 0.25,
        "failure_rate": 0.75,
        "average_response_time": pytest.approx(1.0),
        # Made at 1000 s, 4 calls between 1045 and 1049 s, forced open at 1049 s, read
        # at 1054 s: 4 calls in the last 60 s, and open 5 of its 54 s.
        "throughput": pytest.approx(4 / 60),
        "availability": pytest.approx(49 / 54),
    }
    assert data["breakers"][0]["state"] == "half_open"


def test_dashboard_is_json_serialisable(clock: FakeClock) -> None:
    """json.dumps takes the whole dashboard, and it comes back equal."""
    data = dashboard(_three(clock))
    assert json.loads(json.dumps(data)) == data


def test_dashboard_of_nothing() -> None:
    """No breakers: all counts zero, no rows."""
    assert dashboard([]) == {
        "summary": {
            "total_breakers": 0,
            "open_breakers": 0,
            "half_open_breakers": 0,
            "closed_breakers": 0,
            "bulkhead_rejected_requests": 0,
        },
        "breakers": [],
    }


def test_dashboard_defaults_to_every_live_breaker(clock: FakeClock) -> None:
    """With no argument the dashboard shows the process's live breakers."""
    breaker = CircuitBreaker("monitoring-live-one", _quiet(), clock=clock)
    breaker.force_open()
    rows = {row["name"]: row for row in dashboard()["breakers"]}
    assert rows["monitoring-live-one"]["state"] == "open"


def test_registry_snapshot_is_the_dashboard_of_its_breakers(clock: FakeClock) -> None:
    """BreakerRegistry.snapshot() has the dashboard's shape for the registry's breakers."""
    registry = BreakerRegistry(default=_quiet(), clock=clock)
    a = registry.breaker_for("a.example")
    b = registry.breaker_for("b.example:8443")
    _drive(a, clock, ok=3, failed=1, duration=2.0)  # 52.5 + (5 - 2) * 6 = 70.5
    b.force_open()
    snapshot = registry.snapshot()
    assert snapshot == dashboard(registry)
    assert snapshot == dashboard([a, b])
    assert snapshot["summary"]["open_breakers"] == 1
    assert [row["name"] for row in snapshot["breakers"]] == ["a.example", "b.example:8443"]
    assert snapshot["breakers"][0]["health_score"] == pytest.approx(70.5)
    assert json.loads(json.dumps(snapshot)) == snapshot


# -- alerts -----------------------------------------------------------------------


def test_alerts_critical_for_open_and_warning_for_high_failure_rate(clock: FakeClock) -> None:
    """An open breaker is critical; a closed one above the threshold warns; criticals first."""
    config = _quiet()
    flaky = CircuitBreaker("flaky", config, clock=clock)
    _drive(flaky, clock, ok=1, failed=3, duration=0.1)  # failure rate 0.75
    down = CircuitBreaker("down", config, clock=clock)
    _drive(down, clock, ok=1, failed=1, duration=0.1)
    down.force_open()
    fine = CircuitBreaker("fine", config, clock=clock)
    _drive(fine, clock, ok=9, failed=1, duration=0.1)

    found = alerts([flaky, fine, down], failure_rate_threshold=0.3)

    assert found == [
        Alert(
            "critical",
            "down",
            "circuit breaker 'down' is OPEN",
            {"failure_rate": 0.5, "total_requests": 2},
        ),
        Alert(
            "warning",
            "flaky",
            "circuit breaker 'flaky' has a high failure rate",
            {"failure_rate": 0.75, "threshold": 0.3},
        ),
    ]
    assert [a.to_dict() for a in found][1] == {
        "severity": "warning",
        "breaker": "flaky",
        "message": "circuit breaker 'flaky' has a high failure rate",
        "details": {"failure_rate": 0.75, "threshold": 0.3},
    }
    assert json.loads(json.dumps([a.to_dict() for a in found])) == [a.to_dict() for a in found]


def test_alerts_threshold_is_strictly_above(clock: FakeClock) -> None:
    """A failure rate equal to the threshold does not warn; the default threshold is 0.5."""
    breaker = CircuitBreaker("half", _quiet(), clock=clock)
    _drive(breaker, clock, ok=1, failed=1, duration=0.1)
    assert alerts([breaker]) == []
    assert alerts([breaker], failure_rate_threshold=0.49)[0].severity == "warning"


def test_alerts_for_an_open_breaker_without_traffic(clock: FakeClock) -> None:
    """A forced-open breaker that never saw a call still raises a critical alert."""
    breaker = CircuitBreaker("forced", _quiet(), clock=clock)
    breaker.force_open()
    (alert,) = alerts([breaker])
    assert alert.to_dict()["details"] == {"failure_rate": 0.0, "total_requests": 0}


def test_alerts_threshold_may_be_0_or_1(clock: FakeClock) -> None:
    """Both ends of [0, 1] are accepted: 0 warns on any failure, 1 never warns."""
    flaky = CircuitBreaker("flaky", _quiet(), clock=clock)
    _drive(flaky, clock, ok=9, failed=1, duration=0.1)
    fine = CircuitBreaker("fine", _quiet(), clock=clock)
    _drive(fine, clock, ok=3, failed=0, duration=0.1)
    assert [a.breaker for a in alerts([flaky, fine], failure_rate_threshold=0.0)] == ["flaky"]
    broken = CircuitBreaker("broken", _quiet(), clock=clock)
    _drive(broken, clock, ok=0, failed=2, duration=0.1)
    assert alerts([broken], failure_rate_threshold=1.0) == []


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_alerts_rejects_a_threshold_outside_0_1(threshold: float) -> None:
    """The threshold is a share: outside [0, 1] is a ValueError naming it."""
    with pytest.raises(ValueError, match="failure_rate_threshold"):
        alerts([], failure_rate_threshold=threshold)


@pytest.mark.parametrize("threshold", [True, "0.5", None])
def test_alerts_rejects_a_threshold_that_is_not_a_number(threshold: object) -> None:
    """A bool (though an int) or a string is a TypeError naming the field."""
    with pytest.raises(TypeError, match="failure_rate_threshold must be a number"):
        alerts([], failure_rate_threshold=threshold)  # type: ignore[arg-type]


def test_alert_is_frozen() -> None:
    """Alerts are values: they cannot be changed after the fact."""
    alert = Alert("warning", "x", "m", {})
    with pytest.raises(AttributeError):
        alert.severity = "critical"  # type: ignore[misc]


# -- which breakers ---------------------------------------------------------------


def test_sources_callable_mapping_and_duplicates(clock: FakeClock) -> None:
    """A callable is called on each read; a mapping gives its values; a name shows once."""
    first = CircuitBreaker("dup", _quiet(), clock=clock)
    second = CircuitBreaker("dup", _quiet(), clock=clock)
    other = CircuitBreaker("other", _quiet(), clock=clock)
    pool = [first]
    source: Callable[[], list[CircuitBreaker]] = lambda: list(pool)
    assert resolve_breakers(source) == [first]
    pool.append(other)
    assert resolve_breakers(source) == [first, other]
    assert resolve_breakers({"x": other}) == [other]
    assert resolve_breakers([first, other, second]) == [other, second]


def test_one_shot_iterators_are_kept_for_every_read(clock: FakeClock) -> None:
    """A generator given as the source is read into a tuple once, not exhausted."""
    breaker = CircuitBreaker("gen", _quiet(), clock=clock)
    frozen = freeze_source(b for b in [breaker])
    assert resolve_breakers(frozen) == [breaker]
    assert resolve_breakers(frozen) == [breaker]


@pytest.mark.parametrize("bad", [42, "name", [object()]])
def test_sources_of_the_wrong_type_are_a_type_error(bad: object) -> None:
    """Anything but breakers is refused with a TypeError."""
    with pytest.raises(TypeError):
        resolve_breakers(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [42, "name", b"name"])
def test_a_source_that_is_no_collection_of_breakers_says_what_is_accepted(bad: object) -> None:
    """A number, or a name where breakers belong, is refused as a source, not read
    character by character."""
    with pytest.raises(TypeError, match="breakers must be None, a mapping"):
        resolve_breakers(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="breakers must be None, a mapping"):
        freeze_source(bad)  # type: ignore[arg-type]


def test_none_callables_and_collections_are_read_afresh(clock: FakeClock) -> None:
    """freeze_source keeps None, a callable and a list as they are, so later reads see
    the breakers alive (or appended) by then."""
    assert freeze_source(None) is None
    first = CircuitBreaker("first", _quiet(), clock=clock)
    pool = [first]

    def source() -> list[CircuitBreaker]:
        return list(pool)

    assert freeze_source(source) is source
    assert freeze_source(pool) is pool
    second = CircuitBreaker("second", _quiet(), clock=clock)
    pool.append(second)
    assert resolve_breakers(freeze_source(source)) == [first, second]


def test_stores_sources_are_kept_or_read_once_and_checked() -> None:
    """freeze_stores keeps None, collections and callables; reads a generator once;
    refuses anything else. A store source that is no collection of stores says so."""
    pool: list[object] = []

    def source() -> list[object]:
        return pool

    assert freeze_stores(None) is None
    assert freeze_stores(pool) is pool
    assert freeze_stores(source) is source
    assert freeze_stores(s for s in pool) == ()
    with pytest.raises(TypeError, match="stores must be"):
        freeze_stores(42)  # type: ignore[arg-type]
    for bad in (42, "redis://127.0.0.1:6379/0"):
        with pytest.raises(TypeError, match="stores must be an iterable of stores"):
            dashboard([], stores=bad)  # type: ignore[arg-type]


# -- shared stores ----------------------------------------------------------------


def _trip(breaker: CircuitBreaker) -> None:
    """One failure, which opens a breaker with failure_threshold=1."""
    now = breaker.clock()
    breaker.record(breaker.admit(), 1, now, now)


def test_a_callable_returning_a_registry_brings_the_registrys_store() -> None:
    """The default stores of a callable source are those of what it returns: a
    registry's own store (here one whose server is unreachable, a state not an error)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", namespace="lonely", timeout=0.2)
    try:
        registry = BreakerRegistry(store=store)
        [row] = dashboard(lambda: registry)["stores"]
        assert row["namespace"] == "lonely" and row["connected"] is False
        assert "stores" not in dashboard(lambda: list(registry.values()))
    finally:
        store.close()


def test_stores_of_one_namespace_and_server_are_one_row() -> None:
    """Two stores of this process on one server and namespace are one fleet link:
    connected only if both are, the least healthy state, a last error if either has
    one, the largest lag, the counts added up; a closed one adds only its totals."""
    config = CircuitBreakerConfig(failure_threshold=1, reset_timeout=30.0)
    with running("valkey") as server:
        opener, listener = (
            RedisStore.from_url(server.url, namespace="merged", timeout=0.2) for _ in range(2)
        )
        try:
            mine, theirs = (BreakerRegistry(default=config, store=s) for s in (opener, listener))
            wait_until(lambda: opener.connected and listener.connected, what="connections")
            theirs.breaker_for("api.example.com")
            _trip(mine.breaker_for("api.example.com"))
            wait_until(lambda: listener.health.lag is not None, what="the lag")
            opener.close()

            server.stop()
            wait_until(lambda: listener.health.state == "disconnected", what="the loss")
            _trip(theirs.breaker_for("other.example.com"))  # not sent: counted as dropped
            error = listener.health.last_error
            [row] = dashboard([], stores=[opener, listener])["stores"]
            assert opener.health.last_error is None and error is not None
            assert (row["connected"], row["state"], row["last_error"]) == (
                False,
                "disconnected",
                error,
            )

            server.start()
            wait_until(
                lambda: listener.connected and listener.health.dropped == 1, what="the return"
            )
            [row] = dashboard([], stores=[opener, listener])["stores"]
            lag = listener.health.lag
            assert opener.health.lag is None and lag is not None
            # The closed store is gone, not down: the row reads as the live link.
            assert (row["connected"], row["state"], row["lag"]) == (True, "connected", lag)
            closed, live = opener.health, listener.health
            assert (closed.state, closed.connected, closed.keys) == ("closed", False, 1)
            assert row["keys"] == live.keys == 2
            assert (closed.reconnects, live.reconnects, row["reconnects"]) == (0, 1, 1)
            assert (closed.dropped, live.dropped, row["dropped"]) == (0, 1, 1)
            assert (closed.messages, live.messages, row["messages"]) == (0, 1, 1)
        finally:
            opener.close()
            listener.close()


class _Link:
    """A store as the exporters see it: a label and a health snapshot."""

    def __init__(self, health: StoreHealth, server: str = "redis://127.0.0.1:6379/0") -> None:
        self.namespace, self.server, self.health = "fleet", server, health


def _health(
    state: str, *, since: float = 0.0, lag: float | None = None, **counts: int
) -> StoreHealth:
    totals = dict.fromkeys(("reconnects", "keys", "queued", "dropped", "messages"), 0)
    return StoreHealth(
        connected=state == "connected",
        state=state,
        since=since,
        last_error="ConnectionError: refused" if state == "disconnected" else None,
        lag=lag,
        **(totals | counts),
    )


@pytest.mark.parametrize(
    ("states", "row"),
    [
        (("connected", "connected"), (True, "connected")),
        (("connected", "connecting"), (False, "connecting")),
        (("connecting", "disconnected"), (False, "disconnected")),
        (("closed", "connected"), (True, "connected")),
        (("disconnected", "closed"), (False, "disconnected")),
        (("closed", "closed"), (False, "closed")),
    ],
)
def test_a_merged_row_is_as_healthy_as_its_least_healthy_open_store(
    states: tuple[str, str], row: tuple[bool, str]
) -> None:
    links = [_Link(_health(state)) for state in states]
    [merged] = dashboard([], stores=links)["stores"]
    assert (merged["connected"], merged["state"]) == row
    assert merged["last_error"] == (
        "ConnectionError: refused" if row[1] == "disconnected" else None
    )


def test_a_closed_store_adds_its_totals_to_the_row_but_not_its_gauges() -> None:
    """Counters stay monotonic when a store of the fleet closes; what is waiting, shared
    and lagging now is the live links' alone."""
    closed = _health("closed", since=1.0, lag=9.0, reconnects=2, dropped=3, messages=5, keys=7)
    live = _health("connected", since=4.0, lag=0.5, reconnects=1, messages=1, keys=2, queued=1)
    other = _Link(_health("connected", keys=11), server="redis://10.0.0.2:6379/0")
    rows = {
        r["server"]: r for r in dashboard([], stores=[_Link(closed), _Link(live), other])["stores"]
    }
    row = rows["redis://127.0.0.1:6379/0"]
    assert (row["reconnects"], row["dropped"], row["messages"]) == (3, 3, 6)
    assert (row["keys"], row["queued"], row["lag"], row["since"]) == (2, 1, 0.5, 4.0)
    assert rows["redis://10.0.0.2:6379/0"]["keys"] == 11


def test_work_queued_in_stores_of_one_fleet_is_added_up() -> None:
    """The merged row's `queued` is the work waiting in both stores: each store's worker
    hangs on a frozen server with one trip sent, and the next trip waits behind it."""
    config = CircuitBreakerConfig(failure_threshold=1, reset_timeout=30.0)
    hosts = ("a.example.com", "b.example.com", "first.example.com", "second.example.com")
    with running("valkey") as server:
        stores = [
            RedisStore.from_url(server.url, namespace="queued", timeout=30.0) for _ in range(2)
        ]
        try:
            registries = [BreakerRegistry(default=config, store=store) for store in stores]
            for registry in registries:
                for host in hosts:
                    registry.breaker_for(host)
            wait_until(lambda: all(store.connected for store in stores), what="connections")
            wait_until(lambda: all(s.health.queued == 0 for s in stores), what="the attaches")
            # A trip each store's worker sends after its attaches, seen by the other
            # store: both workers are idle before the server freezes.
            for mine, theirs, host in zip(registries, registries[::-1], hosts[:2], strict=True):
                _trip(mine.breaker_for(host))
                wait_until(
                    lambda r=theirs, h=host: r.breaker_for(h).state is CircuitState.OPEN,
                    what=host,
                )
            server.freeze()
            for registry, store in zip(registries, stores, strict=True):
                _trip(registry.breaker_for("first.example.com"))
                wait_until(lambda s=store: s.health.queued == 0, what="the worker to hang")
                _trip(registry.breaker_for("second.example.com"))
            queued = [store.health.queued for store in stores]
            [row] = dashboard([], stores=stores)["stores"]
            assert min(queued) > 0
            assert row["queued"] == sum(queued)
        finally:
            server.thaw()
            for store in stores:
                store.close()


def test_state_change_counts_start_every_change_at_zero_and_count_past_the_history(
    clock: FakeClock,
) -> None:
    """The exporters' counts list all five changes from 0 and count beyond the 1,000 kept."""
    breaker = CircuitBreaker("counted", _quiet(), clock=clock)
    assert state_change_counts(breaker.get_metrics()) == dict.fromkeys(POSSIBLE_STATE_CHANGES, 0)
    for _ in range(700):
        breaker.force_open()
        breaker.reset()
    counts = state_change_counts(breaker.get_metrics())
    assert counts == {
        ("closed", "open"): 700,
        ("open", "closed"): 700,
        ("open", "half_open"): 0,
        ("half_open", "closed"): 0,
        ("half_open", "open"): 0,
    }


def test_import_without_the_extras() -> None:
    """`import httpx_breaker` and its monitoring work with neither extra installed."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None
        sys.modules["opentelemetry"] = None
        import httpx_breaker, httpx_breaker.monitoring
        print(httpx_breaker.monitoring.dashboard([])["summary"]["total_breakers"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
