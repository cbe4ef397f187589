"""`BreakerRegistry.add_listener`: the events of every breaker in the registry."""

from __future__ import annotations

import logging
import threading

import httpx
import pytest

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitState,
)
from httpx_breaker.events import BreakerEvent

from .conftest import FakeClock

pytestmark = pytest.mark.anyio

ONE_FAILURE = CircuitBreakerConfig(failure_threshold=1, reset_timeout=30.0)


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503 if request.url.host.startswith("down") else 200)


async def test_listener_hears_breakers_made_before_and_after(clock: FakeClock) -> None:
    """Events of the registry's existing breakers and of those it makes later arrive."""
    registry = BreakerRegistry(default=ONE_FAILURE, clock=clock)
    transport = AsyncCircuitBreakerTransport(httpx.MockTransport(_answer), registry=registry)
    events: list[BreakerEvent] = []
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://before.example/")
        registry.add_listener(events.append)
        await client.get("https://before.example/")
        await client.get("https://down.example/")  # made after add_listener; opens
    assert [(e.name, e.kind) for e in events] == [
        ("before.example", "success"),
        ("down.example", "failure"),
        ("down.example", "state_change"),
    ]
    assert events[-1].new_state is CircuitState.OPEN


def test_listener_hears_policy_breakers_and_manual_control(clock: FakeClock) -> None:
    """Every breaker of the registry reports, the per-request policy ones included."""
    registry = BreakerRegistry(policies={"*.example": ONE_FAILURE}, clock=clock)
    seen: list[tuple[str, str]] = []
    registry.add_listener(lambda event: seen.append((event.name, event.kind)))
    registry.breaker_for("a.example", policy="*.example").force_open()
    registry.breaker_for("b.example").reset()
    assert seen == [("a.example#*.example", "state_change")]


def test_removed_listener_hears_nothing_and_breakers_regain_the_fast_path(
    clock: FakeClock,
) -> None:
    """After `remove_listener`, nothing more arrives; once the last one is gone the
    breakers carry no listener at all (the engine's fast path for successes needs
    that), and a registry that never had one never gave its breakers one."""
    registry = BreakerRegistry(clock=clock)
    quiet = registry.breaker_for("quiet.example")
    assert quiet._listeners == ()  # white-box: no per-request cost without listeners
    heard: list[str] = []
    also: list[str] = []

    def first(event: BreakerEvent) -> None:
        heard.append(event.name)

    registry.add_listener(first)
    registry.add_listener(also.append)
    a = registry.breaker_for("a.example")
    a.force_open()
    registry.remove_listener(first)
    a.reset()
    assert heard == ["a.example"]
    assert len(also) == 2
    registry.remove_listener(also.append)  # equal bound method, not the same object
    registry.remove_listener(also.append)  # never raises for an unknown listener
    a.force_open()
    assert len(also) == 2
    assert a._listeners == () and quiet._listeners == ()
    assert registry.breaker_for("new.example")._listeners == ()


def test_raising_listener_is_logged_and_the_request_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener that raises is logged; later listeners still hear the event and the
    request gets its response."""
    registry = BreakerRegistry(default=ONE_FAILURE)
    after: list[str] = []

    def broken(event: BreakerEvent) -> None:
        raise RuntimeError("listener bug")

    registry.add_listener(broken)
    registry.add_listener(lambda event: after.append(event.kind))
    transport = CircuitBreakerTransport(httpx.MockTransport(_answer), registry=registry)
    with caplog.at_level(logging.ERROR, logger="httpx_breaker"), httpx.Client(
        transport=transport
    ) as client:
        response = client.get("https://down.example/")
    assert response.status_code == 503
    assert after == ["failure", "state_change"]
    assert "listener of circuit breaker 'down.example' raised" in caplog.text
    assert "listener bug" in caplog.text


def test_listeners_run_outside_every_lock(clock: FakeClock) -> None:
    """A listener may use the registry and the breaker (both take their locks): it is
    called after they are released, so this neither deadlocks nor raises."""
    registry = BreakerRegistry(default=ONE_FAILURE, max_size=2, clock=clock)
    reads: list[int] = []

    def reentrant(event: BreakerEvent) -> None:
        breaker = registry[event.name]
        reads.append(breaker.get_metrics().total_requests)
        registry.breaker_for(f"from-listener-{len(reads)}.example")  # may evict
        _ = registry.snapshot()

    registry.add_listener(reentrant)
    breaker = registry.breaker_for("a.example")
    breaker.call(lambda: None)
    assert reads == [1]


def test_listener_is_not_callable() -> None:
    """A listener that is not callable is refused at once."""
    with pytest.raises(TypeError, match="listener must be callable"):
        BreakerRegistry().add_listener("print")  # type: ignore[arg-type]


def test_breakers_made_while_a_listener_is_added_all_report() -> None:
    """Threads creating breakers while another adds the listener: every breaker that is
    in the registry afterwards reports to it."""
    registry = BreakerRegistry(max_size=10_000)
    names: set[str] = set()
    lock = threading.Lock()
    start = threading.Barrier(3)

    def listener(event: BreakerEvent) -> None:
        with lock:
            names.add(event.name)

    def create(prefix: str) -> None:
        start.wait()
        for i in range(500):
            registry.breaker_for(f"{prefix}{i}.example")

    threads = [threading.Thread(target=create, args=(p,)) for p in ("x", "y")]
    for thread in threads:
        thread.start()
    start.wait()
    registry.add_listener(listener)
    for thread in threads:
        thread.join()
    for breaker in registry.values():
        breaker.force_open()
    assert names == set(registry)
    assert len(names) == 1_000
