"""The bulkhead (`max_concurrent`, `max_wait`) in the transports, against real servers.

Every request goes over loopback to a real `Upstream`; a host is made "slow" with its
``/hold`` path, which answers only when the test releases it, so nothing here sleeps.
Order is forced by waiting for conditions (``bulkhead.waiting == n``), never by timing,
and no test asserts on how long anything took. The async tests run under asyncio and
trio, with httpx and with httpx2 (the `lib` fixture).
"""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from httpx_breaker import (
    BreakerRegistry,
    BulkheadFullError,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    RequestRejected,
)
from httpx_breaker._bulkhead import Bulkhead
from httpx_breaker._upstream import Upstream

from .conftest import FakeClock
from .libraries import ASYNC_BASES, SYNC_BASES, Library

pytestmark = pytest.mark.anyio

TASKS = 200
THREADS = 16
LONG = 60.0  # a max_wait no test reaches: waits end by a release or a cancellation
OPEN, HALF_OPEN, CLOSED = CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED


# -- helpers ---------------------------------------------------------------------------


def config(**overrides: Any) -> CircuitBreakerConfig:
    settings: dict[str, Any] = {"failure_threshold": 1, "reset_timeout": 5.0}
    settings.update(overrides)
    return CircuitBreakerConfig(**settings)


def registry(clock: FakeClock | None = None, **overrides: Any) -> BreakerRegistry:
    return BreakerRegistry(default=config(**overrides), clock=clock)


def key_of(upstream: Upstream) -> str:
    return f"127.0.0.1:{upstream.port}"


def bulkhead_of(breaker: CircuitBreaker) -> Bulkhead:
    bulkhead = breaker.bulkhead
    assert bulkhead is not None
    return bulkhead


def until(condition: Callable[[], bool], what: str = "condition") -> None:
    """Wait (in a thread) until `condition()` holds; fail after 10 s."""
    deadline = time.monotonic() + 10.0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


async def until_async(condition: Callable[[], bool]) -> None:
    """Wait (in a task) until `condition()` holds; fail after 10 s."""
    with anyio.fail_after(10):
        # Polled: server threads change these counts, with no event to await.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.001)


async def let_the_loop_finalise() -> None:
    """Collect garbage and give the event loop turns to finalise what it dropped."""
    gc.collect()
    for _ in range(20):
        await anyio.lowlevel.checkpoint()
    gc.collect()


class Peak:
    """How many are inside now, and the most ever inside at once (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inside = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.inside -= 1


class CountingAsync(*ASYNC_BASES):  # type: ignore[misc]
    """The wrapped transport, counting the requests inside it at once."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gauge = Peak()

    async def handle_async_request(self, request: Any) -> Any:
        with self.gauge:
            return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class CountingSync(*SYNC_BASES):  # type: ignore[misc]
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gauge = Peak()

    def handle_request(self, request: Any) -> Any:
        with self.gauge:
            return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the limit under load ----------------------------------------------------------------


async def test_never_more_than_the_limit_inside_the_wrapped_transport(
    lib: Library, upstream: Upstream
) -> None:
    """200 tasks, a limit of 5: exactly 5 reach the wrapped transport, the rest queue,
    and when the host lets go every one is served, never more than 5 at once."""
    inner = CountingAsync(lib.AsyncHTTPTransport())
    transport = lib.AsyncCircuitBreakerTransport(
        inner, registry=registry(max_concurrent=5, max_wait=LONG)
    )
    statuses: list[int] = []
    async with lib.AsyncClient(transport=transport, timeout=LONG) as client:

        async def one() -> None:
            statuses.append((await client.get(f"{upstream.url}/hold")).status_code)

        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        async with anyio.create_task_group() as tg:
            for _ in range(TASKS):
                tg.start_soon(one)
            await until_async(lambda: upstream.holding == 5 and bulkhead.waiting == TASKS - 5)
            assert inner.gauge.inside == 5
            upstream.release()
    assert statuses == [200] * TASKS
    assert inner.gauge.peak == 5
    assert upstream.max_holding == 5
    assert upstream.request_count == TASKS
    assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (0, 0, 0)


def test_sixteen_threads_never_exceed_the_limit(lib: Library, upstream: Upstream) -> None:
    """16 threads through one sync transport, a limit of 4: 4 inside, 12 waiting; after
    the host lets go, 5 more requests each, never more than 4 inside at once."""
    inner = CountingSync(lib.HTTPTransport())
    transport = lib.CircuitBreakerTransport(
        inner, registry=registry(max_concurrent=4, max_wait=LONG)
    )
    bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
    with lib.Client(transport=transport, timeout=LONG) as client:

        def work() -> list[int]:
            codes = [client.get(f"{upstream.url}/hold").status_code]
            codes += [client.get(f"{upstream.url}/ok").status_code for _ in range(5)]
            return codes

        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(work) for _ in range(THREADS)]
            until(lambda: upstream.holding == 4 and bulkhead.waiting == THREADS - 4, "4 in")
            assert inner.gauge.inside == 4
            upstream.release()
            results = [future.result(timeout=30) for future in futures]
    assert results == [[200] * 6] * THREADS
    assert inner.gauge.peak == 4
    assert upstream.request_count == THREADS * 6
    assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (0, 0, 0)


async def test_waiters_are_served_first_come_first_served(
    lib: Library, upstream: Upstream
) -> None:
    """With a limit of 1, requests that queue behind an open stream get the slot in the
    order they arrived."""
    transport = lib.AsyncCircuitBreakerTransport(
        registry=registry(max_concurrent=1, max_wait=LONG)
    )
    order: list[int] = []
    async with lib.AsyncClient(transport=transport) as client:
        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        first = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)

        async def waiter(i: int) -> None:
            async with client.stream("GET", f"{upstream.url}/ok") as response:
                assert response.status_code == 200
                order.append(i)

        async with anyio.create_task_group() as tg:
            for i in range(1, 6):
                tg.start_soon(waiter, i)
                await until_async(lambda i=i: bulkhead.waiting == i)  # type: ignore[misc]
            await first.aclose()
    assert order == [1, 2, 3, 4, 5]
    assert bulkhead.in_use == 0


def test_thread_waiters_are_served_first_come_first_served(
    lib: Library, upstream: Upstream
) -> None:
    """The same through the sync transport: threads queue, and are served in order."""
    transport = lib.CircuitBreakerTransport(registry=registry(max_concurrent=1, max_wait=LONG))
    order: list[int] = []
    with lib.Client(transport=transport) as client:
        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        first = client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)

        def waiter(i: int) -> None:
            with client.stream("GET", f"{upstream.url}/ok") as response:
                assert response.status_code == 200
                order.append(i)

        threads = []
        for i in range(1, 6):
            thread = threading.Thread(target=waiter, args=(i,))
            thread.start()
            threads.append(thread)
            until(lambda i=i: bulkhead.waiting == i, f"{i} waiting")  # type: ignore[misc]
        first.close()
        for thread in threads:
            thread.join(timeout=30)
    assert order == [1, 2, 3, 4, 5]
    assert bulkhead.in_use == 0


# -- refusals ----------------------------------------------------------------------------


async def test_full_with_no_wait_refuses_before_any_io(
    lib: Library, upstream: Upstream
) -> None:
    """max_wait=0: a request over the limit raises BulkheadFullError at once, carrying
    key, limit and request; the server receives nothing; the breaker does not move."""
    transport = lib.AsyncCircuitBreakerTransport(registry=registry(max_concurrent=1))
    async with lib.AsyncClient(transport=transport) as client:
        held = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        assert upstream.request_count == 1
        for _ in range(3):
            with pytest.raises(lib.BulkheadFullError) as info:
                await client.get(f"{upstream.url}/status/503")
            error = info.value
            assert isinstance(error, RequestRejected) and isinstance(error, BulkheadFullError)
            assert isinstance(error, lib.TransportError)
            assert (error.key, error.limit) == (key_of(upstream), 1)
            assert isinstance(error.request, lib.Request)
            assert str(error.request.url) == f"{upstream.url}/status/503"
        assert upstream.request_count == 1
        breaker = transport.breaker_for_url(upstream.url)
        metrics = breaker.get_metrics()
        assert breaker.state is CLOSED
        assert (metrics.failed_requests, metrics.rejected_requests) == (0, 0)
        assert metrics.bulkhead_rejected_requests == 3
        assert metrics.bulkhead_in_flight_requests == 1
        await held.aclose()
        assert (await client.get(f"{upstream.url}/ok")).status_code == 200
    assert upstream.request_count == 2


def test_full_with_no_wait_refuses_before_any_io_sync(lib: Library, upstream: Upstream) -> None:
    """The same through the sync transport."""
    transport = lib.CircuitBreakerTransport(registry=registry(max_concurrent=1))
    with lib.Client(transport=transport) as client:
        held = client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        with pytest.raises(lib.BulkheadFullError) as info:
            client.get(f"{upstream.url}/status/503")
        assert (info.value.key, info.value.limit) == (key_of(upstream), 1)
        assert str(info.value.request.url) == f"{upstream.url}/status/503"
        assert upstream.request_count == 1
        breaker = transport.breaker_for_url(upstream.url)
        assert breaker.state is CLOSED and breaker.get_metrics().failed_requests == 0
        held.close()
        assert client.get(f"{upstream.url}/ok").status_code == 200


async def test_a_waiter_that_runs_out_of_time_is_refused(
    lib: Library, upstream: Upstream
) -> None:
    """With a short max_wait and nothing freeing, the waiter is refused after its wait."""
    transport = lib.AsyncCircuitBreakerTransport(
        registry=registry(max_concurrent=1, max_wait=0.01)
    )
    async with lib.AsyncClient(transport=transport) as client:
        held = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        with pytest.raises(lib.BulkheadFullError):
            await client.get(f"{upstream.url}/ok")
        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (1, 0, 1)
        await held.aclose()
    assert upstream.request_count == 1


# -- every way a request ends gives its slot back -------------------------------------------


async def test_slot_returned_when_the_body_is_closed(lib: Library, upstream: Upstream) -> None:
    """A stream holds its slot until it is closed, read or not."""
    transport = lib.AsyncCircuitBreakerTransport(registry=registry(max_concurrent=2))
    async with lib.AsyncClient(transport=transport) as client:
        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        async with client.stream("GET", f"{upstream.url}/ok") as response:
            assert response.status_code == 200
            assert bulkhead.in_use == 1
        assert bulkhead.in_use == 0  # left unread: closed by the block
        async with client.stream("GET", f"{upstream.url}/ok") as response:
            assert bulkhead.in_use == 1
            await response.aread()
            assert bulkhead.in_use == 0  # httpx closes a response once it is read whole
        assert (await client.get(f"{upstream.url}/ok")).status_code == 200
        assert bulkhead.in_use == 0


async def test_slot_returned_on_errors(lib: Library, upstream: Upstream) -> None:
    """A reset connection, a refused connection and a body cut short each give the slot
    back (and count as the failures they are)."""
    transport = lib.AsyncCircuitBreakerTransport(
        registry=registry(max_concurrent=1, failure_threshold=100)
    )
    async with lib.AsyncClient(transport=transport) as client:
        with pytest.raises(lib.TransportError):
            await client.get(f"{upstream.url}/reset")
        with pytest.raises(lib.TransportError):
            await client.get(f"{upstream.url}/cut")
        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        assert bulkhead.in_use == 0
        refused_url = f"http://127.0.0.1:{closed_port()}/"
        with pytest.raises(lib.ConnectError):
            await client.get(refused_url)
        # The limit is per breaker: the refused port's breaker has its own, now free.
        refused = transport.breaker_for_url(refused_url)
        assert bulkhead_of(refused).in_use == 0
        assert refused.get_metrics().failed_requests == 1
        assert (await client.get(f"{upstream.url}/ok")).status_code == 200
    breaker = transport.breaker_for_url(upstream.url)
    assert breaker.get_metrics().failed_requests == 2
    assert bulkhead.in_use == 0


async def test_slot_returned_when_a_request_is_cancelled(
    lib: Library, upstream: Upstream
) -> None:
    """A request cancelled while the host holds it gives its slot back."""
    transport = lib.AsyncCircuitBreakerTransport(registry=registry(max_concurrent=1))
    async with lib.AsyncClient(transport=transport, timeout=LONG) as client:
        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get, f"{upstream.url}/hold")
            await until_async(lambda: upstream.holding == 1)
            assert bulkhead.in_use == 1
            tg.cancel_scope.cancel()
        assert bulkhead.in_use == 0
        upstream.release()
        assert (await client.get(f"{upstream.url}/ok")).status_code == 200
    assert transport.breaker_for_url(upstream.url).get_metrics().ignored_requests == 1


async def test_a_cancelled_waiter_takes_no_slot_and_sends_nothing(
    lib: Library, upstream: Upstream
) -> None:
    """A request cancelled while it waits for a slot leaves the queue, holds nothing and
    never reaches the host; the slot then goes to the next request."""
    transport = lib.AsyncCircuitBreakerTransport(
        registry=registry(max_concurrent=1, max_wait=LONG)
    )
    async with lib.AsyncClient(transport=transport) as client:
        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        held = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get, f"{upstream.url}/ok")
            await until_async(lambda: bulkhead.waiting == 1)
            tg.cancel_scope.cancel()
        assert (bulkhead.in_use, bulkhead.waiting) == (1, 0)
        await held.aclose()
        assert bulkhead.in_use == 0
        assert (await client.get(f"{upstream.url}/ok")).status_code == 200
    assert upstream.request_count == 2
    metrics = transport.breaker_for_url(upstream.url).get_metrics()
    assert (metrics.total_requests, metrics.bulkhead_rejected_requests) == (2, 0)


async def test_slot_returned_when_an_unread_response_is_collected(
    lib: Library, upstream: Upstream
) -> None:
    """A response nobody reads or closes gives its slot back when it is collected."""
    transport = lib.AsyncCircuitBreakerTransport(registry=registry(max_concurrent=1))
    async with lib.AsyncClient(transport=transport) as client:
        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        response = await client.send(
            client.build_request("GET", f"{upstream.url}/ok"), stream=True
        )
        assert bulkhead.in_use == 1
        del response
        await let_the_loop_finalise()
        assert bulkhead.in_use == 0
        assert (await client.get(f"{upstream.url}/ok")).status_code == 200


def test_slot_returned_when_an_unread_response_is_collected_sync(
    lib: Library, upstream: Upstream
) -> None:
    transport = lib.CircuitBreakerTransport(registry=registry(max_concurrent=1))
    with lib.Client(transport=transport) as client:
        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        response = client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        assert bulkhead.in_use == 1
        del response
        gc.collect()
        assert bulkhead.in_use == 0
        assert client.get(f"{upstream.url}/ok").status_code == 200


def test_slot_returned_on_close_and_on_errors_sync(lib: Library, upstream: Upstream) -> None:
    """The sync transport gives the slot back on close and on an error."""
    transport = lib.CircuitBreakerTransport(
        registry=registry(max_concurrent=1, failure_threshold=100)
    )
    with lib.Client(transport=transport) as client:
        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        with client.stream("GET", f"{upstream.url}/ok") as response:
            assert bulkhead.in_use == 1
            next(response.iter_raw(1))
        assert bulkhead.in_use == 0
        with pytest.raises(lib.TransportError):
            client.get(f"{upstream.url}/reset")
        assert bulkhead.in_use == 0
        assert client.get(f"{upstream.url}/ok").status_code == 200
    assert bulkhead.in_use == 0


async def test_slot_returned_at_once_for_a_response_already_read(lib: Library) -> None:
    """A response the wrapped transport hands out already read (a mock, a cache) holds
    no slot after the request returns."""
    inner = lib.MockTransport(lambda request: lib.Response(200, content=b"done"))
    transport = lib.AsyncCircuitBreakerTransport(inner, registry=registry(max_concurrent=1))
    async with lib.AsyncClient(transport=transport) as client:
        for _ in range(3):
            assert (await client.get("https://mocked.example/")).status_code == 200
    assert bulkhead_of(transport.breaker_for_url("https://mocked.example/")).in_use == 0


async def test_outcome_at_headers_still_holds_the_slot_until_close(
    lib: Library, upstream: Upstream
) -> None:
    """With outcome_at="headers" the outcome is recorded at the headers, but the slot is
    held until the body is closed: the connection is busy until then."""
    transport = lib.AsyncCircuitBreakerTransport(
        registry=registry(max_concurrent=1, outcome_at="headers")
    )
    async with lib.AsyncClient(transport=transport) as client:
        breaker = transport.breaker_for_url(upstream.url)
        bulkhead = bulkhead_of(breaker)
        async with client.stream("GET", f"{upstream.url}/ok") as response:
            assert response.status_code == 200
            assert breaker.get_metrics().successful_requests == 1
            assert bulkhead.in_use == 1
            with pytest.raises(lib.BulkheadFullError):
                await client.get(f"{upstream.url}/ok")
        assert bulkhead.in_use == 0
        # Dropped unread: given back when collected, with nothing recorded twice.
        unread = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        assert bulkhead.in_use == 1
        del unread
        await let_the_loop_finalise()
        assert bulkhead.in_use == 0
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.ignored_requests) == (2, 0)


def test_outcome_at_headers_still_holds_the_slot_until_close_sync(
    lib: Library, upstream: Upstream
) -> None:
    transport = lib.CircuitBreakerTransport(
        registry=registry(max_concurrent=1, outcome_at="headers")
    )
    with lib.Client(transport=transport) as client:
        breaker = transport.breaker_for_url(upstream.url)
        with client.stream("GET", f"{upstream.url}/ok"):
            assert breaker.get_metrics().successful_requests == 1
            assert bulkhead_of(breaker).in_use == 1
            with pytest.raises(lib.BulkheadFullError):
                client.get(f"{upstream.url}/ok")
        assert bulkhead_of(breaker).in_use == 0
    metrics = breaker.get_metrics()  # recorded once, at the headers, not again at close
    assert (metrics.successful_requests, metrics.ignored_requests) == (1, 0)


# -- per host, bypass, and the breaker in front ------------------------------------------


async def test_each_host_has_its_own_limit(lib: Library, upstream: Upstream) -> None:
    """A host at its limit does not hold back another host."""
    transport = lib.AsyncCircuitBreakerTransport(registry=registry(max_concurrent=1))
    with Upstream() as other:
        async with lib.AsyncClient(transport=transport) as client:
            held = await client.send(
                client.build_request("GET", f"{upstream.url}/ok"), stream=True
            )
            for _ in range(3):
                assert (await client.get(f"{other.url}/ok")).status_code == 200
            with pytest.raises(lib.BulkheadFullError) as info:
                await client.get(f"{upstream.url}/ok")
            assert info.value.key == key_of(upstream)
            await held.aclose()
        assert other.request_count == 3
    assert upstream.request_count == 1


async def test_a_bypassed_request_skips_the_bulkhead(lib: Library, upstream: Upstream) -> None:
    """extensions["circuit_breaker"]["bypass"] goes around the limit, and takes no slot."""
    transport = lib.AsyncCircuitBreakerTransport(registry=registry(max_concurrent=1))
    async with lib.AsyncClient(transport=transport) as client:
        bulkhead = bulkhead_of(transport.breaker_for_url(upstream.url))
        held = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        bypass = {"circuit_breaker": {"bypass": True}}
        async with client.stream("GET", f"{upstream.url}/ok", extensions=bypass) as response:
            assert response.status_code == 200
            assert bulkhead.in_use == 1
        await held.aclose()
    assert (bulkhead.in_use, bulkhead.rejected) == (0, 0)


async def test_an_open_breaker_refuses_before_the_bulkhead_is_asked(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """An open host never queues for a slot: CircuitOpenError at once, even with a full
    bulkhead and a long max_wait, and the bulkhead counts nothing."""
    transport = lib.AsyncCircuitBreakerTransport(
        registry=registry(clock, max_concurrent=1, max_wait=LONG)
    )
    async with lib.AsyncClient(transport=transport) as client:
        breaker = transport.breaker_for_url(upstream.url)
        bulkhead = bulkhead_of(breaker)
        held = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        breaker.transition_to(OPEN, cause="testing")
        with anyio.fail_after(10), pytest.raises(lib.CircuitOpenError):
            await client.get(f"{upstream.url}/ok")
        assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (1, 0, 0)
        await held.aclose()
    assert upstream.request_count == 1


async def test_a_half_open_probe_holds_no_probe_permit_while_it_waits(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """A probe that waits for a slot hands its probe permit back meanwhile (another
    probe could start), takes one again when it gets the slot, and its success closes
    the breaker."""
    transport = lib.AsyncCircuitBreakerTransport(
        registry=registry(clock, max_concurrent=1, max_wait=LONG, half_open_max_requests=1)
    )
    async with lib.AsyncClient(transport=transport) as client:
        breaker = transport.breaker_for_url(upstream.url)
        bulkhead = bulkhead_of(breaker)
        held = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        breaker.transition_to(HALF_OPEN, cause="testing")
        assert breaker.retry_after == 0.0  # the one probe permit is free
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get, f"{upstream.url}/ok")
            await until_async(lambda: bulkhead.waiting == 1)
            assert breaker.state is HALF_OPEN
            assert breaker.retry_after == 0.0  # still free: the waiting probe holds none
            await held.aclose()
        assert breaker.state is CLOSED
    assert bulkhead.in_use == 0


async def test_a_breaker_that_opens_while_a_request_waits_refuses_it_after(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """The breaker is asked again once the slot comes: open by then, the request is
    refused with CircuitOpenError (carrying it), and its slot goes back."""
    transport = lib.AsyncCircuitBreakerTransport(
        registry=registry(clock, max_concurrent=1, max_wait=LONG)
    )
    errors: list[BaseException] = []
    async with lib.AsyncClient(transport=transport) as client:
        breaker = transport.breaker_for_url(upstream.url)
        bulkhead = bulkhead_of(breaker)
        held = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)

        async def waiter() -> None:
            try:
                await client.get(f"{upstream.url}/waiting")
            except lib.CircuitOpenError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await until_async(lambda: bulkhead.waiting == 1)
            breaker.transition_to(OPEN, cause="testing")
            await held.aclose()
        [error] = errors
        assert isinstance(error, CircuitOpenError)
        assert str(error.request.url) == f"{upstream.url}/waiting"
    assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (0, 0, 0)
    assert upstream.request_count == 1


async def test_dry_run_never_waits_or_refuses_but_counts(
    lib: Library, upstream: Upstream
) -> None:
    """In dry-run a request over the limit goes through at once without a slot, and is
    counted (and reported) as a bulkhead rejection."""
    transport = lib.AsyncCircuitBreakerTransport(
        registry=registry(max_concurrent=1, max_wait=LONG, dry_run=True)
    )
    events: list[str] = []
    transport.registry.add_listener(lambda event: events.append(event.kind))
    async with lib.AsyncClient(transport=transport) as client:
        breaker = transport.breaker_for_url(upstream.url)
        held = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        async with client.stream("GET", f"{upstream.url}/ok") as over:
            assert over.status_code == 200
            metrics = breaker.get_metrics()
            assert metrics.bulkhead_rejected_requests == 1
            assert metrics.bulkhead_in_flight_requests == 1  # slot holders only
            assert metrics.bulkhead_waiting_requests == 0
        await held.aclose()
    assert upstream.request_count == 2
    assert bulkhead_of(breaker).in_use == 0
    assert events.count("bulkhead_rejected") == 1


# -- the starvation story ------------------------------------------------------------------

POOL = 4  # the client's whole pool, for every host together
SLOW_REQUESTS = 8
HEALTHY_REQUESTS = 10


async def starve(lib: Library, policy: CircuitBreakerConfig) -> dict[str, int]:
    """A slow host and a healthy one share one client's pool of `POOL` connections.

    8 requests go to the slow host (which holds them) and, once it holds all it can, 10
    go one after the other to the healthy host with a short pool timeout. Returns what
    happened: the most the slow host held at once, the healthy host's requests served
    and those that ended in PoolTimeout, and the slow host's requests served in the end.
    """
    with Upstream() as slow, Upstream() as healthy:
        transport = lib.AsyncCircuitBreakerTransport.from_http_options(
            limits=lib.Limits(max_connections=POOL),
            policies={key_of(slow): policy},
        )
        limit = policy.max_concurrent or POOL
        served = pool_timeouts = slow_served = 0
        async with lib.AsyncClient(transport=transport, timeout=LONG) as client:

            async def to_healthy() -> int | None:
                """The status, or None for a PoolTimeout (the pool was full throughout)."""
                try:
                    response = await client.get(
                        f"{healthy.url}/ok", timeout=lib.Timeout(LONG, pool=0.05)
                    )
                except lib.PoolTimeout:
                    return None
                return int(response.status_code)

            async def to_slow() -> None:
                nonlocal slow_served
                response = await client.get(f"{slow.url}/hold")
                slow_served += response.status_code == 200

            async with anyio.create_task_group() as tg:
                for _ in range(SLOW_REQUESTS):
                    tg.start_soon(to_slow)
                await until_async(lambda: slow.holding == limit)
                for _ in range(HEALTHY_REQUESTS):
                    status = await to_healthy()
                    served += status == 200
                    pool_timeouts += status is None
                slow.release()
        return {
            "slow_in_flight_max": slow.max_holding,
            "slow_served": slow_served,
            "healthy_served": served,
            "healthy_pool_timeouts": pool_timeouts,
            "healthy_reached": healthy.request_count,
        }


async def test_a_slow_host_starves_a_healthy_one_without_a_limit(lib: Library) -> None:
    """No limit: the slow host takes the whole pool; every request to the healthy host
    ends in PoolTimeout, and none reaches it."""
    got = await starve(lib, CircuitBreakerConfig())
    assert got == {
        "slow_in_flight_max": POOL,
        "slow_served": SLOW_REQUESTS,
        "healthy_served": 0,
        "healthy_pool_timeouts": HEALTHY_REQUESTS,
        "healthy_reached": 0,
    }


async def test_max_concurrent_on_the_slow_host_keeps_the_healthy_one_served(
    lib: Library,
) -> None:
    """max_concurrent=2 on the slow host's policy: it holds 2 connections at most, the
    rest of its requests queue in its bulkhead, and the healthy host is served in full."""
    got = await starve(lib, CircuitBreakerConfig(max_concurrent=2, max_wait=LONG))
    assert got == {
        "slow_in_flight_max": 2,
        "slow_served": SLOW_REQUESTS,
        "healthy_served": HEALTHY_REQUESTS,
        "healthy_pool_timeouts": 0,
        "healthy_reached": HEALTHY_REQUESTS,
    }
