"""The bulkhead in the engine (`call`, `call_async`, `@circuit_breaker`), how its
refusals and gauges are counted and exported, and the registry's eviction rule.

Calls are held inside the breaker with events the test controls; nothing sleeps, and
no test asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from httpx_breaker import (
    BreakerRegistry,
    BulkheadFullError,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    circuit_breaker,
)
from httpx_breaker._bulkhead import Bulkhead
from httpx_breaker.events import BreakerEvent
from httpx_breaker.monitoring import dashboard

from .conftest import FakeClock

pytestmark = pytest.mark.anyio

LONG = 60.0
OPEN, HALF_OPEN, CLOSED = CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED


def bulkhead_of(breaker: CircuitBreaker) -> Bulkhead:
    bulkhead = breaker.bulkhead
    assert bulkhead is not None
    return bulkhead


async def until_async(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 (other threads change it)
            await anyio.sleep(0.001)


def until(condition: Callable[[], bool]) -> None:
    import time

    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


# -- call_async ---------------------------------------------------------------------------


async def test_call_async_holds_a_slot_and_refuses_over_the_limit() -> None:
    """Two calls in flight fill a limit of 2; a third is refused without being called;
    the breaker does not move; the slots come back when the calls end."""
    breaker = CircuitBreaker("engine", CircuitBreakerConfig(max_concurrent=2, failure_threshold=1))
    bulkhead = bulkhead_of(breaker)
    go = anyio.Event()
    called = []

    async def held() -> str:
        called.append("held")
        await go.wait()
        return "done"

    async def never() -> None:
        called.append("never")

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call_async, held)
        tg.start_soon(breaker.call_async, held)
        await until_async(lambda: bulkhead.in_use == 2)
        with pytest.raises(BulkheadFullError) as info:
            await breaker.call_async(never)
        assert (info.value.key, info.value.limit) == ("engine", 2)
        go.set()
    assert called == ["held", "held"]
    metrics = breaker.get_metrics()
    assert breaker.state is CLOSED
    assert (metrics.successful_requests, metrics.failed_requests) == (2, 0)
    assert (metrics.rejected_requests, metrics.bulkhead_rejected_requests) == (0, 1)
    assert (metrics.bulkhead_in_flight_requests, metrics.bulkhead_waiting_requests) == (0, 0)


async def test_call_async_waits_for_a_slot_in_order() -> None:
    """With max_wait, calls over the limit wait and run in arrival order."""
    breaker = CircuitBreaker("fifo", CircuitBreakerConfig(max_concurrent=1, max_wait=LONG))
    bulkhead = bulkhead_of(breaker)
    go = anyio.Event()
    order: list[int] = []

    async def first() -> None:
        await go.wait()

    async def later(i: int) -> None:
        order.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call_async, first)
        await until_async(lambda: bulkhead.in_use == 1)
        for i in range(1, 5):
            tg.start_soon(breaker.call_async, later, i)
            await until_async(lambda i=i: bulkhead.waiting == i)  # type: ignore[misc]
        go.set()
    assert order == [1, 2, 3, 4]
    assert bulkhead.in_use == 0


async def test_call_async_gives_the_slot_back_on_error_and_cancellation() -> None:
    """A call that raises, and one that is cancelled, each return their slot."""
    breaker = CircuitBreaker("errors", CircuitBreakerConfig(max_concurrent=1))
    bulkhead = bulkhead_of(breaker)

    async def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await breaker.call_async(boom)
    assert bulkhead.in_use == 0

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call_async, anyio.sleep_forever)
        await until_async(lambda: bulkhead.in_use == 1)
        tg.cancel_scope.cancel()
    assert bulkhead.in_use == 0
    assert (breaker.get_metrics().failed_requests, breaker.get_metrics().ignored_requests) == (1, 1)


async def test_call_async_probe_waits_without_its_permit(clock: FakeClock) -> None:
    """A half-open probe waiting for a slot holds no probe permit; it takes one when it
    gets the slot, and its success closes the breaker."""
    config = CircuitBreakerConfig(max_concurrent=1, max_wait=LONG, half_open_max_requests=1)
    breaker = CircuitBreaker("probe", config, clock=clock)
    bulkhead = bulkhead_of(breaker)
    go = anyio.Event()

    async def held() -> None:
        await go.wait()

    async def probe() -> str:
        return "ok"

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call_async, held)
        await until_async(lambda: bulkhead.in_use == 1)
        breaker.transition_to(HALF_OPEN, cause="testing")
        tg.start_soon(breaker.call_async, probe)
        await until_async(lambda: bulkhead.waiting == 1)
        assert breaker.retry_after == 0.0  # the probe permit is free while it waits
        go.set()
    assert breaker.state is CLOSED


# -- call (threads) -----------------------------------------------------------------------


def test_call_waits_in_its_thread_and_refuses_without_wait() -> None:
    """`call`: a thread waits up to max_wait for a slot; with max_wait=0 it is refused
    without `fn` being called."""
    waiting = CircuitBreaker("threads", CircuitBreakerConfig(max_concurrent=1, max_wait=LONG))
    refusing = CircuitBreaker("nowait", CircuitBreakerConfig(max_concurrent=1))
    go = threading.Event()
    order: list[str] = []

    def held(name: str) -> None:
        order.append(f"{name} in")
        go.wait(10)

    holder = threading.Thread(target=waiting.call, args=(held, "first"))
    holder.start()
    until(lambda: bulkhead_of(waiting).in_use == 1)
    second = threading.Thread(target=waiting.call, args=(order.append, "second"))
    second.start()
    until(lambda: bulkhead_of(waiting).waiting == 1)
    assert order == ["first in"]

    blocker = threading.Thread(target=refusing.call, args=(held, "other"))
    blocker.start()
    until(lambda: bulkhead_of(refusing).in_use == 1)
    with pytest.raises(BulkheadFullError):
        refusing.call(order.append, "never")

    go.set()
    for thread in (holder, second, blocker):
        thread.join(10)
    assert order == ["first in", "other in", "second"]
    assert bulkhead_of(waiting).in_use == bulkhead_of(refusing).in_use == 0
    assert refusing.get_metrics().bulkhead_rejected_requests == 1


def test_call_gives_the_slot_back_when_fn_raises() -> None:
    breaker = CircuitBreaker("raises", CircuitBreakerConfig(max_concurrent=1))

    def boom() -> None:
        raise ValueError("boom")

    for _ in range(3):
        with pytest.raises(ValueError, match="boom"):
            breaker.call(boom)
    assert bulkhead_of(breaker).in_use == 0
    assert breaker.call(lambda: 7) == 7


# -- the decorator ---------------------------------------------------------------------------


async def test_decorated_async_function_honours_the_limit() -> None:
    go = anyio.Event()

    @circuit_breaker(name="decorated-async", config=CircuitBreakerConfig(max_concurrent=1))
    async def fetch() -> str:
        await go.wait()
        return "ok"

    bulkhead = bulkhead_of(fetch.circuit_breaker())
    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch)
        await until_async(lambda: bulkhead.in_use == 1)
        with pytest.raises(BulkheadFullError):
            await fetch()
        go.set()
    assert bulkhead.in_use == 0


def test_decorated_sync_function_honours_the_limit() -> None:
    go = threading.Event()

    @circuit_breaker(name="decorated-sync", config=CircuitBreakerConfig(max_concurrent=1))
    def work() -> str:
        go.wait(10)
        return "ok"

    bulkhead = bulkhead_of(work.circuit_breaker())
    thread = threading.Thread(target=work)
    thread.start()
    until(lambda: bulkhead.in_use == 1)
    with pytest.raises(BulkheadFullError):
        work()
    go.set()
    thread.join(10)
    assert bulkhead.in_use == 0


async def test_a_plain_function_returning_a_coroutine_holds_the_slot_until_awaited() -> None:
    """The decorator on a plain function that returns an awaitable: the slot is held
    until the await ends; a coroutine dropped unawaited gives it back when collected;
    in an event loop a full bulkhead refuses at once rather than block the loop."""
    config = CircuitBreakerConfig(max_concurrent=1, max_wait=LONG)

    class Answer:
        """An awaitable that is not a coroutine: dropping it unawaited warns of nothing."""

        def __await__(self) -> Any:
            yield from ()
            return 42

    @circuit_breaker(name="deferred", config=config)
    def deferred() -> Any:
        return Answer()

    bulkhead = bulkhead_of(deferred.circuit_breaker())
    pending = deferred()
    assert bulkhead.in_use == 1
    with pytest.raises(BulkheadFullError):
        deferred()  # in the loop: refused at once despite max_wait
    assert await pending == 42
    assert bulkhead.in_use == 0

    dropped = deferred()
    assert bulkhead.in_use == 1
    dropped.close()
    del dropped
    gc.collect()
    assert bulkhead.in_use == 0
    assert await deferred() == 42


# -- counting and reporting -------------------------------------------------------------------


def test_metrics_without_a_bulkhead_have_no_gauges() -> None:
    metrics = CircuitBreaker("plain").get_metrics()
    assert metrics.bulkhead_rejected_requests == 0
    assert metrics.bulkhead_in_flight_requests is None
    assert metrics.bulkhead_waiting_requests is None
    assert metrics.bulkhead_limit is None
    assert CircuitBreaker("plain").bulkhead is None


def test_metrics_to_dict_and_dashboard_show_the_bulkhead() -> None:
    """The gauges and the refusal count appear in to_dict() and in the dashboard row
    and summary; the health score ignores a refusal."""
    breaker = CircuitBreaker("dash", CircuitBreakerConfig(max_concurrent=3))
    bulkhead = bulkhead_of(breaker)
    for _ in range(3):
        assert bulkhead.try_acquire()
    with pytest.raises(BulkheadFullError):
        breaker.call(lambda: None)
    data = breaker.get_metrics().to_dict()
    assert {k: v for k, v in data.items() if k.startswith("bulkhead_")} == {
        "bulkhead_rejected_requests": 1,
        "bulkhead_in_flight_requests": 3,
        "bulkhead_waiting_requests": 0,
        "bulkhead_limit": 3,
    }
    board = dashboard([breaker, CircuitBreaker("no-bulkhead")])
    rows = {row["name"]: row for row in board["breakers"]}
    assert rows["dash"]["bulkhead"] == {
        "limit": 3,
        "in_flight": 3,
        "waiting": 0,
        "rejected_requests": 1,
    }
    assert rows["no-bulkhead"]["bulkhead"] is None
    assert rows["dash"]["metrics"]["rejected_requests"] == 0
    assert rows["dash"]["health_score"] == 100.0
    assert board["summary"]["bulkhead_rejected_requests"] == 1
    for _ in range(3):
        bulkhead.release()


def test_a_refusal_is_an_event_of_its_own_and_a_debug_record(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Listeners hear "bulkhead_rejected" (not "rejected"); the log says why at DEBUG,
    with structured fields and nothing from the request."""
    caplog.set_level(logging.DEBUG, logger="httpx_breaker")
    breaker = CircuitBreaker("events", CircuitBreakerConfig(max_concurrent=1), clock=clock)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    assert bulkhead_of(breaker).try_acquire()
    with pytest.raises(BulkheadFullError):
        breaker.call(lambda: None)
    assert [(e.kind, e.name, e.state, e.time) for e in events] == [
        ("bulkhead_rejected", "events", CLOSED, clock.now)
    ]
    [record] = [r for r in caplog.records if getattr(r, "reason", None) == "bulkhead"]
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == (
        "circuit breaker 'events': bulkhead full (1 in flight, max_concurrent=1); request refused"
    )
    assert (record.circuit_breaker, record.limit) == ("events", 1)  # type: ignore[attr-defined]


def test_dry_run_lets_the_call_through_and_counts_it() -> None:
    """dry_run: over the limit, the call runs at once (no wait, no slot) and is counted."""
    config = CircuitBreakerConfig(max_concurrent=1, max_wait=LONG, dry_run=True)
    breaker = CircuitBreaker("dry", config)
    bulkhead = bulkhead_of(breaker)
    assert bulkhead.try_acquire()
    assert breaker.call(lambda: "ran") == "ran"
    assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (1, 0, 1)
    bulkhead.release()


def test_reset_and_forcing_leave_the_bulkhead_alone() -> None:
    """The bulkhead is the breaker's for life: reset() and forcing keep it and its slots."""
    breaker = CircuitBreaker("kept", CircuitBreakerConfig(max_concurrent=2))
    bulkhead = bulkhead_of(breaker)
    assert bulkhead.try_acquire()
    breaker.force_open()
    breaker.reset()
    breaker.force_closed()
    assert breaker.bulkhead is bulkhead and bulkhead.in_use == 1
    bulkhead.release()


def test_prometheus_series_for_breakers_with_a_bulkhead_only() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from httpx_breaker.prometheus import CircuitBreakerCollector

    limited = CircuitBreaker("limited", CircuitBreakerConfig(max_concurrent=4))
    bulkhead = bulkhead_of(limited)
    for _ in range(4):
        assert bulkhead.try_acquire()
    with pytest.raises(BulkheadFullError):
        limited.call(lambda: None)
    registry = CollectorRegistry()
    registry.register(CircuitBreakerCollector([limited, CircuitBreaker("unlimited")]))
    samples = {
        (sample.name, sample.labels["circuit_breaker"]): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if sample.name.startswith("circuit_breaker_bulkhead_")
        or sample.name == "circuit_breaker_rejected_requests_total"
    }
    assert samples == {
        ("circuit_breaker_rejected_requests_total", "limited"): 0.0,
        ("circuit_breaker_rejected_requests_total", "unlimited"): 0.0,
        ("circuit_breaker_bulkhead_rejected_requests_total", "limited"): 1.0,
        ("circuit_breaker_bulkhead_in_flight_requests", "limited"): 4.0,
        ("circuit_breaker_bulkhead_waiting_requests", "limited"): 0.0,
        ("circuit_breaker_bulkhead_limit", "limited"): 4.0,
    }
    for _ in range(4):
        bulkhead.release()


def test_opentelemetry_instruments_for_breakers_with_a_bulkhead_only() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from httpx_breaker.opentelemetry import register_metrics

    limited = CircuitBreaker("limited", CircuitBreakerConfig(max_concurrent=4))
    bulkhead = bulkhead_of(limited)
    assert bulkhead.try_acquire()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        register_metrics([limited, CircuitBreaker("unlimited")], meter_provider=provider)
        data: Any = reader.get_metrics_data()
        assert data is not None
        points = {
            (metric.name, point.attributes["circuit_breaker.name"]): point.value
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name.startswith("circuit_breaker.bulkhead.")
            for point in metric.data.data_points
        }
    finally:
        provider.shutdown()
    assert points == {
        ("circuit_breaker.bulkhead.rejected_requests", "limited"): 0,
        ("circuit_breaker.bulkhead.in_flight_requests", "limited"): 1,
        ("circuit_breaker.bulkhead.waiting_requests", "limited"): 0,
        ("circuit_breaker.bulkhead.limit", "limited"): 4,
    }
    bulkhead.release()


# -- the registry -------------------------------------------------------------------------------


def test_a_breaker_with_requests_in_flight_is_never_evicted(clock: FakeClock) -> None:
    """A full registry drops an idle breaker, never one whose bulkhead is in use (a new
    one would give the host a second, empty bulkhead); once idle, it may go."""
    registry = BreakerRegistry(
        default=CircuitBreakerConfig(max_concurrent=1), max_size=2, clock=clock
    )
    busy = registry.breaker_for("busy.example")  # the least recently used
    registry.breaker_for("idle.example")
    assert bulkhead_of(busy).try_acquire()
    registry.breaker_for("new.example")
    assert "busy.example" in registry and "idle.example" not in registry
    registry.breaker_for("newer.example")
    assert set(registry) == {"busy.example", "newer.example"}
    bulkhead_of(busy).release()
    registry.breaker_for("newest.example")
    assert "busy.example" not in registry


def test_a_breaker_with_requests_waiting_is_never_evicted(clock: FakeClock) -> None:
    """Waiting counts too: a waiter holds no slot yet, but will."""
    registry = BreakerRegistry(
        default=CircuitBreakerConfig(max_concurrent=1, max_wait=LONG), max_size=1, clock=clock
    )
    breaker = registry.breaker_for("queue.example")
    bulkhead = bulkhead_of(breaker)
    assert bulkhead.try_acquire()

    async def wait_then_release() -> None:
        assert await bulkhead.acquire_async()
        bulkhead.release()

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(wait_then_release())
        loop.run_until_complete(asyncio.sleep(0))
        assert (bulkhead.in_use, bulkhead.waiting) == (1, 1)
        registry.breaker_for("other.example")  # full, and nothing may go: it grows
        assert set(registry) == {"queue.example", "other.example"}
        bulkhead.release()  # handed to the waiter, which holds it until it runs
        loop.run_until_complete(task)
    finally:
        loop.close()
    assert (bulkhead.in_use, bulkhead.waiting) == (0, 0)
    registry.breaker_for("third.example")
    assert "queue.example" not in registry


def test_open_breaker_refuses_before_the_bulkhead_in_call(clock: FakeClock) -> None:
    """`call` on an open breaker raises CircuitOpenError without touching the bulkhead."""
    breaker = CircuitBreaker("open", CircuitBreakerConfig(max_concurrent=1), clock=clock)
    bulkhead = bulkhead_of(breaker)
    assert bulkhead.try_acquire()
    breaker.transition_to(OPEN, cause="testing")
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    assert (bulkhead.in_use, bulkhead.rejected) == (1, 0)
    bulkhead.release()
