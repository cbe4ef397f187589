"""Storms: mass cancellation around half-open, many threads on one client, unread probes.

After each storm the breaker must not stick (a healthy upstream closes it in exactly
`half_open_max_requests` probes), no probe permit may be left behind, and the counters
must balance: every attempt was either let through (and counted once as a success, a
failure or ignored) or rejected.
"""

from __future__ import annotations

import gc
import json
import random
import threading
from collections import Counter
from collections.abc import Callable

import anyio
import anyio.lowlevel
import httpx
import pytest

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker._upstream import Upstream

from .conftest import FakeClock

OPEN, HALF_OPEN, CLOSED = CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED

CONFIG = CircuitBreakerConfig(
    failure_threshold=2, reset_timeout=5.0, half_open_max_requests=3, timeout=None
)


def _print_figures(name: str, figures: dict[str, int]) -> None:
    print(f"\n{name}:", json.dumps(figures, sort_keys=True))


class Counting(httpx.AsyncBaseTransport):
    """Counts the requests handed to the breaker transport: the attempts."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class SlowBody(httpx.AsyncByteStream):
    """A body of a few chunks, each after a short real pause (a place to be cancelled)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for _ in range(3):
            await anyio.sleep(self.rng.random() * 0.001)
            yield b"chunk"


class FakeUpstream(httpx.AsyncBaseTransport):
    """A fake inner transport: /ok, /fail (503), /error (ConnectError), after a short pause."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.calls = 0
        self.healthy = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        await anyio.sleep(self.rng.random() * 0.002)
        path = "/ok" if self.healthy else request.url.path
        if path == "/error":
            raise httpx.ConnectError("refused", request=request)
        status = 503 if path == "/fail" else 200
        return httpx.Response(status, stream=SlowBody(self.rng))


def _assert_no_permit_left(breaker: CircuitBreaker) -> None:
    """White-box: no half-open probe slot is still taken once every call has ended."""
    gc.collect()
    breaker.get_metrics()  # counts permits that finalizers handed back under the lock
    assert breaker._probes_in_flight == 0


async def _recover(
    client: httpx.AsyncClient, clock: FakeClock, breaker: CircuitBreaker, url: str = "http://svc/ok"
) -> None:
    """A healthy upstream closes the breaker in exactly half_open_max_requests probes."""
    if breaker.state is OPEN:
        clock.advance(breaker.config.reset_timeout)
    if breaker.state is HALF_OPEN:
        for _ in range(breaker.config.half_open_max_requests):
            assert (await client.get(url)).status_code == 200
    assert breaker.state is CLOSED


def _async_transport(
    inner: httpx.AsyncBaseTransport, clock: FakeClock
) -> tuple[Counting, AsyncCircuitBreakerTransport]:
    breaker_transport = AsyncCircuitBreakerTransport(
        inner, registry=BreakerRegistry(default=CONFIG, clock=clock)
    )
    return Counting(breaker_transport), breaker_transport


async def _storm(
    client: httpx.AsyncClient,
    rng: random.Random,
    url: Callable[[], str],
    tasks: int,
    max_wait: float,
    outcomes: Counter[str],
    clock: FakeClock | None = None,
) -> None:
    """`tasks` staggered requests, each cancelled at a random moment up to `max_wait`.

    With `clock`, a ticker moves the fake clock on by half an open period every tick,
    so the breaker cycles OPEN -> HALF_OPEN -> ... while the storm is raging.
    """
    remaining = tasks

    async def one(target: str) -> None:
        nonlocal remaining
        with anyio.move_on_after(rng.random() * max_wait) as scope:
            await anyio.sleep(rng.random() * max_wait / 2)
            try:
                response = await client.get(target)
            except CircuitOpenError:
                outcomes["rejected"] += 1
            except httpx.TransportError:
                outcomes["error"] += 1
            else:
                outcomes[f"status_{response.status_code}"] += 1
        if scope.cancelled_caught:
            outcomes["cancelled"] += 1
        remaining -= 1

    async def ticker() -> None:
        assert clock is not None
        while remaining:
            clock.advance(CONFIG.reset_timeout / 2)
            await anyio.sleep(max_wait / 10)

    async with anyio.create_task_group() as tg:
        if clock is not None:
            tg.start_soon(ticker)
        for _ in range(tasks):
            tg.start_soon(one, url())


async def _open(client: httpx.AsyncClient, breaker: CircuitBreaker, url: str) -> None:
    while breaker.state is CLOSED:
        await client.get(url)
    assert breaker.state is OPEN


@pytest.mark.anyio
async def test_cancellation_storm_around_half_open(clock: FakeClock) -> None:
    """Thousands of requests cancelled at random moments across half-open rounds leave no
    permit behind, never stick the breaker, and balance the counters."""
    rng = random.Random(1)
    fake = FakeUpstream(rng)
    counting, transport = _async_transport(fake, clock)
    outcomes: Counter[str] = Counter()
    async with httpx.AsyncClient(transport=counting) as client:
        breaker = transport.registry.breaker_for("svc")
        for _ in range(8):
            # Open it and let the open period run out: the storm meets HALF_OPEN.
            await _open(client, breaker, "http://svc/fail")
            clock.advance(CONFIG.reset_timeout)
            await _storm(
                client,
                rng,
                lambda: "http://svc" + rng.choice(["/ok", "/ok", "/fail", "/error"]),
                tasks=300,
                max_wait=0.01,
                outcomes=outcomes,
                clock=clock,
            )
            _assert_no_permit_left(breaker)
            if breaker.state is not CLOSED:
                fake.healthy = True
                await _recover(client, clock, breaker)
                fake.healthy = False

    metrics = breaker.get_metrics()
    assert outcomes["cancelled"] > 100, outcomes  # the storm did cancel, a lot
    assert outcomes["rejected"] > 100, outcomes  # and met a breaker with its slots taken
    assert metrics.total_requests + metrics.rejected_requests == counting.attempts
    assert metrics.total_requests == fake.calls  # let through == reached the upstream
    assert metrics.rejected_requests == outcomes["rejected"]
    # Admitted calls that were cancelled are ignored: neither success nor failure.
    assert 0 < metrics.ignored_requests <= outcomes["cancelled"]
    _print_figures(
        "cancellation storm",
        {
            "requests": counting.attempts,
            "cancelled": outcomes["cancelled"],
            "rejected": outcomes["rejected"],
            "ignored": metrics.ignored_requests,
        },
    )


@pytest.mark.anyio
async def test_cancellation_storm_real_upstream(upstream: Upstream, clock: FakeClock) -> None:
    """Probes to a real upstream cancelled mid-request or mid-body return their permits."""
    rng = random.Random(2)
    counting, transport = _async_transport(httpx.AsyncHTTPTransport(), clock)
    outcomes: Counter[str] = Counter()
    async with httpx.AsyncClient(transport=counting) as client:
        breaker = transport.registry.breaker_for(f"127.0.0.1:{upstream.port}")
        for _ in range(3):
            await _open(client, breaker, f"{upstream.url}/status/503")
            before = upstream.request_count
            clock.advance(CONFIG.reset_timeout)
            await _storm(
                client,
                rng,
                lambda: f"{upstream.url}/delay/0.01",
                tasks=100,
                max_wait=0.02,
                outcomes=outcomes,
            )
            _assert_no_permit_left(breaker)
            # Admitted probes only: never more than the slots a round can hand out,
            # plus those handed back by cancelled probes.
            reached = upstream.request_count - before
            assert reached <= CONFIG.half_open_max_requests + outcomes["cancelled"]
            await _recover(client, clock, breaker, f"{upstream.url}/ok")
    metrics = breaker.get_metrics()
    assert outcomes["cancelled"] > 0, outcomes
    assert metrics.total_requests + metrics.rejected_requests == counting.attempts
    assert metrics.rejected_requests == outcomes["rejected"]


@pytest.mark.anyio
async def test_unread_probe_bodies_return_their_permits(clock: FakeClock) -> None:
    """Half-open probes whose responses are dropped unread hand their slots back on gc."""
    fake = FakeUpstream(random.Random(3))
    counting, transport = _async_transport(fake, clock)
    async with httpx.AsyncClient(transport=counting) as client:
        breaker = transport.registry.breaker_for("svc")
        for _ in range(8):
            await _open(client, breaker, "http://svc/fail")
            clock.advance(CONFIG.reset_timeout)
            for _ in range(CONFIG.half_open_max_requests):
                request = client.build_request("GET", "http://svc/ok")
                response = await client.send(request, stream=True)
                assert response.status_code == 200
                del response  # never read, never closed
            with pytest.raises(CircuitOpenError):
                await client.get("http://svc/ok")  # every slot is taken
            # trio (seen on Python 3.13) holds the last value it resumed a task with
            # until the task's next checkpoint: let it go, then collect.
            await anyio.lowlevel.checkpoint()
            gc.collect()
            assert breaker.state is HALF_OPEN
            await _recover(client, clock, breaker)
    metrics = breaker.get_metrics()
    assert metrics.ignored_requests == 8 * CONFIG.half_open_max_requests
    assert metrics.total_requests + metrics.rejected_requests == counting.attempts


@pytest.mark.anyio
async def test_unread_probe_bodies_real_upstream(upstream: Upstream, clock: FakeClock) -> None:
    """Streamed probe responses from a real upstream dropped unread free their slots."""
    counting, transport = _async_transport(httpx.AsyncHTTPTransport(), clock)
    async with httpx.AsyncClient(transport=counting) as client:
        breaker = transport.registry.breaker_for(f"127.0.0.1:{upstream.port}")
        await _open(client, breaker, f"{upstream.url}/status/503")
        clock.advance(CONFIG.reset_timeout)
        responses = [
            await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
            for _ in range(CONFIG.half_open_max_requests)
        ]
        assert [r.status_code for r in responses] == [200] * CONFIG.half_open_max_requests
        # Drop them without reading; close the streams' connections through httpcore
        # only by letting the garbage collector find the responses.
        del responses
        gc.collect()
        assert breaker.state is HALF_OPEN
        for _ in range(CONFIG.half_open_max_requests):
            assert (await client.get(f"{upstream.url}/ok")).status_code == 200
        assert breaker.state is CLOSED


def test_thread_storm_on_one_sync_client(clock: FakeClock) -> None:
    """Sixteen threads sharing one sync client through flapping faults never stick the
    breaker, and the counters balance exactly."""
    lock = threading.Lock()
    health = {"failure_rate": 0.0}
    calls = Counter[str]()
    rngs = threading.local()

    def handler(request: httpx.Request) -> httpx.Response:
        rng = rngs.__dict__.setdefault("rng", random.Random(threading.get_ident()))
        with lock:
            calls["inner"] += 1
        if rng.random() < health["failure_rate"]:
            if rng.random() < 0.5:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(503)
        return httpx.Response(200, json={"ok": True})

    class LockedClock(FakeClock):
        def advance(self, seconds: float) -> None:
            with lock:
                self.now += seconds

    tclock = LockedClock()
    transport = CircuitBreakerTransport(
        httpx.MockTransport(handler),
        registry=BreakerRegistry(default=CONFIG.replace(reset_timeout=0.5), clock=tclock),
    )
    outcomes: Counter[str] = Counter()
    attempts = [0]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        local: Counter[str] = Counter()
        for _ in range(150):
            try:
                response = client.get("http://svc/x")
            except CircuitOpenError:
                local["rejected"] += 1
            except httpx.TransportError:
                local["error"] += 1
            else:
                local[f"status_{response.status_code}"] += 1
            tclock.advance(rng.random() * 0.02)
        with lock:
            outcomes.update(local)
            attempts[0] += 150

    with httpx.Client(transport=transport) as client:
        breaker = transport.registry.breaker_for("svc")
        for failure_rate in (0.0, 0.9, 0.3, 1.0, 0.0):
            health["failure_rate"] = failure_rate
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
                assert not t.is_alive()
        _assert_no_permit_left(breaker)
        health["failure_rate"] = 0.0
        tclock.advance(1.0)
        for _ in range(CONFIG.half_open_max_requests):
            if breaker.state is CLOSED:
                break
            assert client.get("http://svc/x").status_code == 200
            attempts[0] += 1
            outcomes["status_200"] += 1
        assert breaker.state is CLOSED

    metrics = breaker.get_metrics()
    assert sum(outcomes.values()) == attempts[0] >= 5 * 16 * 150
    assert outcomes["rejected"] > 0 and outcomes["error"] > 0
    assert metrics.total_requests + metrics.rejected_requests == attempts[0]
    assert metrics.rejected_requests == outcomes["rejected"]
    assert metrics.successful_requests == outcomes["status_200"]
    assert metrics.failed_requests == outcomes["status_503"] + outcomes["error"]
    assert metrics.total_requests == calls["inner"]
    assert metrics.ignored_requests == 0


def test_thread_storm_real_upstream(upstream: Upstream) -> None:
    """Eight threads on one sync client against a flaky real upstream: counters balance."""
    upstream.mode = "flaky"
    upstream.random.seed(4)
    transport = CircuitBreakerTransport(default=CONFIG.replace(reset_timeout=0.05, timeout=2.0))
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        local: Counter[str] = Counter()
        for _ in range(40):
            try:
                local[f"status_{client.get(f'{upstream.url}/x').status_code}"] += 1
            except CircuitOpenError:  # noqa: PERF203 (each ending is what we count)
                local["rejected"] += 1
        with lock:
            outcomes.update(local)

    with httpx.Client(transport=transport) as client:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive()
        breaker = transport.registry[f"127.0.0.1:{upstream.port}"]
        _assert_no_permit_left(breaker)
    metrics = breaker.get_metrics()
    assert sum(outcomes.values()) == 8 * 40
    assert metrics.total_requests + metrics.rejected_requests == 8 * 40
    assert metrics.total_requests == upstream.request_count
    assert metrics.successful_requests == outcomes["status_200"]
    assert metrics.failed_requests == outcomes["status_503"]
