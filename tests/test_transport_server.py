"""The async transport against a real HTTP server on 127.0.0.1 (`Upstream`).

Connections, bodies that break mid-stream, cancellation, deadlines, concurrency, and
the invariant users rely on: an open breaker sends the upstream nothing. Each test that
takes `lib` runs with httpx and with httpx2 (tests/libraries.py).
"""

from __future__ import annotations

import gc
import socket

import anyio
import httpx
import pytest

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    CircuitTimeoutError,
)
from httpx_breaker._upstream import Upstream

from .conftest import FakeClock
from .libraries import ASYNC_BASES, Library

pytestmark = pytest.mark.anyio


def make(
    lib: Library,
    clock: FakeClock | None = None,
    inner: httpx.AsyncBaseTransport | None = None,
    **config: object,
) -> AsyncCircuitBreakerTransport:
    settings: dict[str, object] = {"failure_threshold": 1, "reset_timeout": 5.0}
    settings.update(config)
    registry = BreakerRegistry(default=CircuitBreakerConfig(**settings), clock=clock)  # type: ignore[arg-type]
    return lib.AsyncCircuitBreakerTransport(inner, registry=registry)


def key_of(upstream: Upstream) -> str:
    return f"127.0.0.1:{upstream.port}"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def trip(client: httpx.AsyncClient, upstream: Upstream) -> None:
    """Open the upstream's breaker (failure_threshold=1) with one 503."""
    assert (await client.get(f"{upstream.url}/status/503")).status_code == 503


# -- the invariant -------------------------------------------------------------------


async def test_open_breaker_sends_the_upstream_nothing(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """While a host's breaker is open the upstream receives zero requests."""
    transport = make(lib, clock)
    async with lib.AsyncClient(transport=transport) as client:
        await trip(client, upstream)
        received = upstream.request_count
        assert received == 1
        errors = []
        for path in ("/ok", "/status/200", "/delay/0", "/anything"):
            for _ in range(10):
                with pytest.raises(lib.CircuitOpenError) as info:
                    await client.get(f"{upstream.url}{path}")
                errors.append(info.value)
        assert upstream.request_count == received
        clock.advance(4.9)
        with pytest.raises(CircuitOpenError):
            await client.get(f"{upstream.url}/ok")
        assert upstream.request_count == received
    assert {e.key for e in errors} == {key_of(upstream)}
    assert all(e.request.url.host == "127.0.0.1" for e in errors)
    # Each is the library's own TransportError (httpx2's, for httpx2) and ours.
    assert all(isinstance(e, lib.TransportError) for e in errors)
    assert all(isinstance(e, CircuitOpenError) for e in errors)
    assert transport.registry[key_of(upstream)].get_metrics().rejected_requests == 41


class Gate(*ASYNC_BASES):  # type: ignore[misc]
    """Holds admitted requests until every task has been admitted or rejected."""

    def __init__(self, lib: Library, tasks: int) -> None:
        self.inner = lib.AsyncHTTPTransport()
        self.tasks = tasks
        self.admitted = 0
        self.rejected = 0
        self.armed = False
        self.all_decided = anyio.Event()

    def decided(self) -> None:
        if self.admitted + self.rejected == self.tasks:
            self.all_decided.set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.armed:
            self.admitted += 1
            self.decided()
            await self.all_decided.wait()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_half_open_lets_at_most_max_probes_through(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """In HALF_OPEN the upstream receives at most half_open_max_requests, however many tasks race."""
    tasks = 20
    gate = Gate(lib, tasks)
    transport = make(lib, clock, inner=gate, half_open_max_requests=3)
    statuses: list[int] = []
    async with lib.AsyncClient(transport=transport) as client:
        await trip(client, upstream)
        clock.advance(5.0)
        before = upstream.request_count
        gate.armed = True

        async def one() -> None:
            try:
                response = await client.get(f"{upstream.url}/ok")
            except CircuitOpenError as exc:
                assert exc.state is CircuitState.HALF_OPEN
                gate.rejected += 1
                gate.decided()
            else:
                statuses.append(response.status_code)
                assert response.extensions["circuit_breaker"]["state"] is CircuitState.HALF_OPEN

        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(one)
    assert upstream.request_count - before == 3
    assert statuses == [200, 200, 200]
    assert gate.rejected == tasks - 3
    assert transport.registry[key_of(upstream)].state is CircuitState.CLOSED


# -- connection failures -------------------------------------------------------------


async def test_connection_refused_is_a_failure(lib: Library, clock: FakeClock) -> None:
    """A refused connection raises ConnectError and opens the breaker."""
    port = closed_port()
    transport = make(lib, clock)
    async with lib.AsyncClient(transport=transport) as client:
        with pytest.raises(lib.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(CircuitOpenError) as info:
            await client.get(f"http://127.0.0.1:{port}/")
    assert info.value.key == f"127.0.0.1:{port}"
    assert transport.registry[f"127.0.0.1:{port}"].get_metrics().failed_requests == 1


async def test_connection_reset_is_a_failure(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """A connection reset before any response is a failure."""
    transport = make(lib, clock)
    async with lib.AsyncClient(transport=transport) as client:
        with pytest.raises(lib.TransportError):
            await client.get(f"{upstream.url}/reset")
        with pytest.raises(CircuitOpenError):
            await client.get(f"{upstream.url}/ok")
    assert upstream.request_count == 1


# -- bodies ----------------------------------------------------------------------------


async def test_body_cut_mid_stream_reaches_the_classifier(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """A body cut short is classified as (request, response, exception) and fails at close."""
    seen: list[tuple[httpx.Request, httpx.Response | None, BaseException | None]] = []

    def classify(
        request: httpx.Request, response: httpx.Response | None, exc: BaseException | None
    ) -> bool | None:
        seen.append((request, response, exc))
        return lib.default_classifier(request, response, exc)  # type: ignore[no-any-return]

    transport = lib.AsyncCircuitBreakerTransport(
        registry=BreakerRegistry(default=CircuitBreakerConfig(failure_threshold=1), clock=clock),
        classifier=classify,
    )
    async with lib.AsyncClient(transport=transport) as client:
        with pytest.raises(lib.RemoteProtocolError):
            await client.get(f"{upstream.url}/cut")
        assert len(seen) == 1
        request, response, exc = seen[0]
        assert request.url.path == "/cut"
        assert response is not None and response.status_code == 200
        assert isinstance(exc, lib.RemoteProtocolError)
        with pytest.raises(CircuitOpenError):
            await client.get(f"{upstream.url}/ok")


async def test_outcome_is_recorded_when_the_body_is_closed(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """With client.stream the state does not move until the body is closed."""
    transport = make(lib, clock)
    async with lib.AsyncClient(transport=transport) as client:
        async with client.stream("GET", f"{upstream.url}/status/503") as response:
            assert response.status_code == 503
            breaker = response.extensions["circuit_breaker"]["breaker"]
            assert breaker.state is CircuitState.CLOSED
            assert breaker.get_metrics().total_requests == 0
        assert breaker.state is CircuitState.OPEN
        assert breaker.get_metrics().failed_requests == 1


async def test_reading_the_whole_body_closes_it(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """httpx closes a stream once it is read to the end, so the outcome is recorded then."""
    client = lib.AsyncClient(transport=make(lib, clock))
    async with client, client.stream("GET", f"{upstream.url}/status/503") as response:
        breaker = response.extensions["circuit_breaker"]["breaker"]
        assert breaker.state is CircuitState.CLOSED
        await response.aread()
        assert breaker.state is CircuitState.OPEN


async def test_unclosed_probe_returns_its_permit_when_collected(
    lib: Library,
    upstream: Upstream, clock: FakeClock
) -> None:
    """A probe response never read or closed gives its permit back when garbage-collected."""
    transport = make(lib, clock, half_open_max_requests=1)
    async with lib.AsyncClient(transport=transport) as client:
        await trip(client, upstream)
        clock.advance(5.0)
        response = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        breaker = response.extensions["circuit_breaker"]["breaker"]
        assert breaker.state is CircuitState.HALF_OPEN
        with pytest.raises(CircuitOpenError):
            await client.get(f"{upstream.url}/ok")  # the only probe slot is taken
        del response
        gc.collect()
        assert breaker.state is CircuitState.HALF_OPEN
        assert (await client.get(f"{upstream.url}/ok")).status_code == 200
        assert breaker.state is CircuitState.CLOSED
    assert breaker.get_metrics().ignored_requests == 1


async def test_cancelled_probe_returns_its_permit(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """A probe cancelled while waiting for headers frees its slot and counts as neither outcome."""
    transport = make(lib, clock, half_open_max_requests=1)
    async with lib.AsyncClient(transport=transport) as client:
        await trip(client, upstream)
        clock.advance(5.0)
        before = upstream.request_count
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def probe() -> None:
                with scope:
                    await client.get(f"{upstream.url}/delay/5")

            tg.start_soon(probe)
            # Wait until the probe is at the upstream; that runs on a thread of its own,
            # so there is nothing to await but time.
            while upstream.request_count == before:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            scope.cancel()
        breaker = transport.registry[key_of(upstream)]
        assert breaker.state is CircuitState.HALF_OPEN
        assert breaker.get_metrics().failed_requests == 1  # only the trip
        assert (await client.get(f"{upstream.url}/ok")).status_code == 200
        assert breaker.state is CircuitState.CLOSED


# -- deadlines ---------------------------------------------------------------------


async def test_timeout_on_headers_raises_circuit_timeout_error(
    lib: Library, upstream: Upstream
) -> None:
    """Headers later than `timeout` raise CircuitTimeoutError with .request, and count as a failure."""
    transport = make(lib, timeout=0.2, failure_threshold=2)
    async with lib.AsyncClient(transport=transport) as client:
        with pytest.raises(lib.CircuitTimeoutError) as info:
            await client.get(f"{upstream.url}/delay/2")
    error = info.value
    assert isinstance(error, lib.TimeoutException)
    assert isinstance(error, CircuitTimeoutError)
    assert error.request.url.path == "/delay/2"
    assert error.key == key_of(upstream)
    assert error.timeout == 0.2
    metrics = transport.registry[key_of(upstream)].get_metrics()
    assert (metrics.failed_requests, metrics.total_requests) == (1, 1)


async def test_timeout_does_not_cover_the_body(lib: Library, upstream: Upstream) -> None:
    """The deadline bounds the time to headers only; a body read later is not cut off."""
    transport = make(lib, timeout=0.1)
    client = lib.AsyncClient(transport=transport)
    async with client, client.stream("GET", f"{upstream.url}/ok") as response:
        await anyio.sleep(0.2)
        assert (await response.aread()) == b'{"ok": true}'
    assert transport.registry[key_of(upstream)].get_metrics().successful_requests == 1


async def test_the_wait_for_the_clients_own_pool_is_outside_the_deadline(
    lib: Library, upstream: Upstream
) -> None:
    """A request that waits for the client's only connection longer than `timeout` is not
    cut: its deadline starts when it gets the connection."""
    transport = lib.AsyncCircuitBreakerTransport.from_http_options(
        default=CircuitBreakerConfig(timeout=0.3), limits=lib.Limits(max_connections=1)
    )
    responses = []
    async with lib.AsyncClient(transport=transport, timeout=10.0) as client:
        holder = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        waiting = anyio.Event()

        async def waiter() -> None:
            waiting.set()
            responses.append(await client.get(f"{upstream.url}/ok"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await waiting.wait()
            await anyio.sleep(0.6)  # twice the deadline, in the pool
            assert responses == []
            await holder.aclose()
    assert [r.status_code for r in responses] == [200]
    metrics = transport.registry[key_of(upstream)].get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (2, 0)


# -- per request, closing, building ----------------------------------------------------


async def test_response_extensions_name_key_and_state(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """response.extensions["circuit_breaker"] has the key and the state at admission."""
    transport = make(lib, clock, half_open_max_requests=1)
    async with lib.AsyncClient(transport=transport) as client:
        await trip(client, upstream)
        clock.advance(5.0)
        r = await client.get(f"{upstream.url}/ok")
    info = r.extensions["circuit_breaker"]
    assert info["key"] == key_of(upstream)
    assert info["state"] is CircuitState.HALF_OPEN
    assert info["breaker"].state is CircuitState.CLOSED


async def test_bypass_reaches_the_upstream_while_open(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """A bypassing request reaches the upstream even while the breaker is open."""
    async with lib.AsyncClient(transport=make(lib, clock)) as client:
        await trip(client, upstream)
        r = await client.get(f"{upstream.url}/ok", extensions={"circuit_breaker": {"bypass": True}})
    assert r.status_code == 200
    assert upstream.request_count == 2


async def test_unknown_option_fails_before_io(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """An unknown per-request option raises ValueError and nothing reaches the upstream."""
    async with lib.AsyncClient(transport=make(lib, clock)) as client:
        with pytest.raises(ValueError, match="unknown options"):
            await client.get(f"{upstream.url}/ok", extensions={"circuit_breaker": {"bypas": True}})
    assert upstream.request_count == 0


class Recording(*ASYNC_BASES):  # type: ignore[misc]
    closed = False

    def __init__(self, lib: Library) -> None:
        self.lib = lib

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self.lib.Response(200)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        self.closed = True


async def test_closing_the_wrapper_closes_the_wrapped_transport(lib: Library) -> None:
    """aclose() on the wrapper (or leaving the client) closes the wrapped transport."""
    inner = Recording(lib)
    async with lib.AsyncClient(transport=lib.AsyncCircuitBreakerTransport(inner)) as client:
        await client.get("http://127.0.0.1:1/")
    assert inner.closed
    other = Recording(lib)
    await lib.AsyncCircuitBreakerTransport(other).aclose()
    assert other.closed


async def test_from_http_options_builds_the_inner_transport(
    lib: Library, upstream: Upstream
) -> None:
    """from_http_options passes its keyword arguments to AsyncHTTPTransport."""
    transport = lib.AsyncCircuitBreakerTransport.from_http_options(
        default=CircuitBreakerConfig(failure_threshold=2),
        retries=2,
        limits=lib.Limits(max_connections=3),
    )
    inner = transport.transport
    assert isinstance(inner, lib.AsyncHTTPTransport)
    assert inner._pool._retries == 2
    assert inner._pool._max_connections == 3
    async with lib.AsyncClient(transport=transport) as client:
        assert (await client.get(f"{upstream.url}/ok")).status_code == 200
    assert transport.registry[key_of(upstream)].config.failure_threshold == 2
    with pytest.raises(TypeError):
        lib.AsyncCircuitBreakerTransport.from_http_options(no_such_option=1)
