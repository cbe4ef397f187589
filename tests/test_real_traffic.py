"""The transports under real traffic: the defects of issue 10, against real servers.

Each test drives a real uvicorn server (tests/servers.py) through httpx and the
breaker, so what is judged is what a user's client really sees: streams read in part,
server-sent events with long pauses, a saturated local pool, a real hishel cache, a
client closed under an open body. The contract is DESIGN.md's "Version 0.2 additions".

Timing: no test asserts on elapsed time. A server delay is a lower bound the client
cannot beat, so "the headers come later than the deadline" uses a delay well above
the deadline; "the headers come in time" uses a deadline well above a loopback answer.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx
from respx.transports import MockTransport

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
    CircuitTimeoutError,
)

from .conftest import FakeClock
from .servers import SSL_CONTEXT, Server, new_tag, require, tagged

pytestmark = pytest.mark.anyio

RESET = 5.0
CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
GENEROUS = httpx.Timeout(30.0)  # httpx's own timeouts, out of the way unless a test sets them


def config(**overrides: object) -> CircuitBreakerConfig:
    settings: dict[str, object] = {"failure_threshold": 1, "reset_timeout": RESET}
    settings.update(overrides)
    return CircuitBreakerConfig(**settings)  # type: ignore[arg-type]


def async_transport(
    clock: FakeClock | None = None,
    inner: httpx.AsyncBaseTransport | None = None,
    **overrides: object,
) -> AsyncCircuitBreakerTransport:
    registry = BreakerRegistry(default=config(**overrides), clock=clock)
    if inner is None:
        inner = httpx.AsyncHTTPTransport(verify=SSL_CONTEXT)
    return AsyncCircuitBreakerTransport(inner, registry=registry)


def sync_transport(
    clock: FakeClock | None = None,
    inner: httpx.BaseTransport | None = None,
    **overrides: object,
) -> CircuitBreakerTransport:
    registry = BreakerRegistry(default=config(**overrides), clock=clock)
    if inner is None:
        inner = httpx.HTTPTransport(verify=SSL_CONTEXT)
    return CircuitBreakerTransport(inner, registry=registry)


def breaker_of(response: httpx.Response) -> CircuitBreaker:
    breaker = response.extensions["circuit_breaker"]["breaker"]
    assert isinstance(breaker, CircuitBreaker)
    return breaker


async def half_open(client: httpx.AsyncClient, server: Server, clock: FakeClock) -> CircuitBreaker:
    """Open the server's breaker with one 503 (failure_threshold=1), then let it half-open."""
    response = await client.get(server.url("/status/503"))
    assert response.status_code == 503
    breaker = breaker_of(response)
    assert breaker.state is OPEN
    clock.advance(RESET)
    assert breaker.state is HALF_OPEN
    return breaker


def half_open_sync(client: httpx.Client, server: Server, clock: FakeClock) -> CircuitBreaker:
    """The sync twin of `half_open`."""
    response = client.get(server.url("/status/503"))
    assert response.status_code == 503
    breaker = breaker_of(response)
    assert breaker.state is OPEN
    clock.advance(RESET)
    assert breaker.state is HALF_OPEN
    return breaker


async def let_the_loop_finalise() -> None:
    """Collect garbage and give the event loop turns to finalise abandoned async generators,
    as it does at some point in a real program (asyncio and trio both run their aclose())."""
    gc.collect()
    for _ in range(20):
        await anyio.lowlevel.checkpoint()
    gc.collect()


# -- defect 1: a caller that stops reading early -----------------------------------

ASYNC_WALK_AWAY = ["aiter_lines", "aiter_bytes", "aiter_raw", "aclose", "leave_block"]
SYNC_WALK_AWAY = ["iter_lines", "iter_bytes", "iter_raw", "close", "leave_block"]


async def walk_away(response: httpx.Response, how: str) -> None:
    """Stop reading `response` after at most one piece, the way `how` says."""
    if how == "aiter_lines":
        async for line in response.aiter_lines():
            assert line == "chunk 0"
            break
    elif how == "aiter_bytes":
        async for chunk in response.aiter_bytes():
            assert chunk.startswith(b"chunk 0")
            break
    elif how == "aiter_raw":
        async for chunk in response.aiter_raw():
            assert chunk.startswith(b"chunk 0")
            break
    elif how == "aclose":
        chunks = response.aiter_bytes()
        assert (await chunks.__anext__()).startswith(b"chunk 0")
        await response.aclose()
    else:
        assert how == "leave_block"
    await let_the_loop_finalise()


def walk_away_sync(response: httpx.Response, how: str) -> None:
    if how == "iter_lines":
        for line in response.iter_lines():
            assert line == "chunk 0"
            break
    elif how == "iter_bytes":
        for chunk in response.iter_bytes():
            assert chunk.startswith(b"chunk 0")
            break
    elif how == "iter_raw":
        for chunk in response.iter_raw():
            assert chunk.startswith(b"chunk 0")
            break
    elif how == "close":
        chunks = response.iter_bytes()
        assert next(chunks).startswith(b"chunk 0")
        response.close()
    else:
        assert how == "leave_block"
    gc.collect()


# trio warns (ResourceWarning) about every async generator a caller abandons, which is
# what breaking out of aiter_lines() does, with or without a breaker: trio's advice to
# the user, not what these tests judge.
ABANDONED_GENERATORS = pytest.mark.filterwarnings(
    "ignore:Async generator .* was garbage collected before it had been exhausted:ResourceWarning"
)


@ABANDONED_GENERATORS
@pytest.mark.parametrize("how", ASYNC_WALK_AWAY)
@pytest.mark.parametrize(("status", "after"), [(200, CLOSED), (503, OPEN)])
async def test_probe_read_in_part_is_judged_on_its_status(
    http1_server: Server, clock: FakeClock, how: str, status: int, after: CircuitState
) -> None:
    """A half-open probe the caller stops reading closes the breaker on a 200, reopens it on a 503."""
    transport = async_transport(clock, half_open_max_requests=1)
    async with httpx.AsyncClient(transport=transport, timeout=GENEROUS) as client:
        breaker = await half_open(client, http1_server, clock)
        url = http1_server.url(f"/stream?chunks=200&status={status}")
        async with client.stream("GET", url) as response:
            assert response.status_code == status
            await walk_away(response, how)
        await let_the_loop_finalise()
        assert breaker.state is after
        metrics = breaker.get_metrics()
        assert metrics.ignored_requests == 0
        assert (metrics.successful_requests, metrics.failed_requests) == (
            (1, 1) if status == 200 else (0, 2)
        )


@pytest.mark.parametrize("how", SYNC_WALK_AWAY)
@pytest.mark.parametrize(("status", "after"), [(200, CLOSED), (503, OPEN)])
def test_probe_read_in_part_is_judged_on_its_status_sync(
    http1_server: Server, clock: FakeClock, how: str, status: int, after: CircuitState
) -> None:
    """The sync transport judges a probe read in part on its status too."""
    transport = sync_transport(clock, half_open_max_requests=1)
    with httpx.Client(transport=transport, timeout=GENEROUS) as client:
        breaker = half_open_sync(client, http1_server, clock)
        url = http1_server.url(f"/stream?chunks=200&status={status}")
        with client.stream("GET", url) as response:
            assert response.status_code == status
            walk_away_sync(response, how)
        gc.collect()
        assert breaker.state is after
        metrics = breaker.get_metrics()
        assert metrics.ignored_requests == 0
        assert (metrics.successful_requests, metrics.failed_requests) == (
            (1, 1) if status == 200 else (0, 2)
        )


@ABANDONED_GENERATORS
async def test_probes_read_in_part_never_stick_half_open(
    http1_server: Server, clock: FakeClock
) -> None:
    """Three probes that each break out of aiter_lines() close a breaker that needs three."""
    transport = async_transport(clock, half_open_max_requests=3)
    async with httpx.AsyncClient(transport=transport, timeout=GENEROUS) as client:
        breaker = await half_open(client, http1_server, clock)
        for _ in range(3):
            async with client.stream("GET", http1_server.url("/stream?chunks=200")) as response:
                await walk_away(response, "aiter_lines")
        await let_the_loop_finalise()
        assert breaker.state is CLOSED
        # and the breaker passes requests again
        assert (await client.get(http1_server.url("/ok"))).status_code == 200


# -- defect 7: the wrapper forwards the context-manager protocol --------------------


def respx_transport() -> MockTransport:
    """A respx MockTransport whose router asserts on exit that its route was called."""
    router = respx.Router(assert_all_called=True, base_url="https://mocked.example")
    router.get("/a").respond(200, text="a")
    with pytest.warns(DeprecationWarning, match="MockTransport is deprecated"):
        transport = MockTransport(router=router)
    return transport


def test_wrapper_forwards_exit_to_respx_sync() -> None:
    """`with CircuitBreakerTransport(respx_mock)` raises respx's assertion on exit."""
    wrapper = CircuitBreakerTransport(respx_transport())
    with pytest.raises(AssertionError, match="some routes were not called"):  # noqa: SIM117
        with wrapper as entered:
            assert entered is wrapper


def test_client_over_wrapper_forwards_exit_to_respx_sync() -> None:
    """A client over the wrapper raises respx's assertion when the client's block ends."""
    wrapper = CircuitBreakerTransport(respx_transport())
    with pytest.raises(AssertionError, match="some routes were not called"):  # noqa: SIM117
        with httpx.Client(transport=wrapper):
            pass


def test_wrapper_exit_passes_when_every_route_was_called_sync() -> None:
    """Forwarding changes nothing when respx is satisfied: the route called, no assertion."""
    wrapper = CircuitBreakerTransport(respx_transport())
    with httpx.Client(transport=wrapper) as client:
        assert client.get("https://mocked.example/a").text == "a"


def test_wrapper_forwards_the_exception_to_exit_sync() -> None:
    """An exception in the block reaches the wrapped __exit__ (respx then does not assert)."""
    wrapper = CircuitBreakerTransport(respx_transport())
    with pytest.raises(KeyError, match="in the block"), wrapper:
        raise KeyError("in the block")


async def test_wrapper_forwards_aexit_to_respx() -> None:
    """`async with AsyncCircuitBreakerTransport(respx_mock)` raises respx's assertion on exit."""
    wrapper = AsyncCircuitBreakerTransport(respx_transport())
    with pytest.raises(AssertionError, match="some routes were not called"):
        async with wrapper as entered:
            assert entered is wrapper


async def test_async_client_over_wrapper_forwards_aexit_to_respx() -> None:
    """An AsyncClient over the wrapper raises respx's assertion when its block ends."""
    wrapper = AsyncCircuitBreakerTransport(respx_transport())
    with pytest.raises(AssertionError, match="some routes were not called"):
        async with httpx.AsyncClient(transport=wrapper):
            pass


async def test_async_wrapper_exit_passes_when_every_route_was_called() -> None:
    """With the route called, leaving the async client's block raises nothing."""
    wrapper = AsyncCircuitBreakerTransport(respx_transport())
    async with httpx.AsyncClient(transport=wrapper) as client:
        assert (await client.get("https://mocked.example/a")).text == "a"


# -- defect 8: no deadline unless asked; when asked, on the headers only ------------


def test_timeout_defaults_to_none() -> None:
    """No deadline nobody asked for."""
    assert CircuitBreakerConfig().timeout is None


async def test_no_timeout_means_no_deadline(http1_server: Server) -> None:
    """With the default config and a client with timeout=None, a slow answer is a success."""
    inner = httpx.AsyncHTTPTransport(verify=SSL_CONTEXT)
    transport = AsyncCircuitBreakerTransport(inner, default=CircuitBreakerConfig())
    async with httpx.AsyncClient(transport=transport, timeout=None) as client:
        response = await client.get(http1_server.url("/delay/0.3"))
    assert response.status_code == 200
    metrics = breaker_of(response).get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (1, 0)


def test_no_timeout_means_no_deadline_sync(http1_server: Server) -> None:
    """The sync transport with the default config sets no timeout of its own either."""
    inner = httpx.HTTPTransport(verify=SSL_CONTEXT)
    transport = CircuitBreakerTransport(inner, default=CircuitBreakerConfig())
    with httpx.Client(transport=transport, timeout=None) as client:
        response = client.get(http1_server.url("/delay/0.3"))
    assert response.status_code == 200
    metrics = breaker_of(response).get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (1, 0)


# The deadline is generous for loopback headers; the pause between events is longer.
SSE_TIMEOUT = 1.0
SSE_PAUSE = 1.5


# One slow call out of one would open the breaker (minimum_requests=1, and the slow
# rate threshold is 1.0): the stream must count as neither slow nor failed.
SSE_POLICY: dict[str, float] = {
    "timeout": SSE_TIMEOUT,
    "slow_call_duration": SSE_TIMEOUT,
    "minimum_requests": 1,
}


async def test_sse_pause_longer_than_timeout_is_read_whole(http1_server: Server) -> None:
    """An SSE stream pausing longer than `timeout` between events is read whole: a success, not slow."""
    transport = async_transport(None, None, **SSE_POLICY)
    url = http1_server.url(f"/sse?events=2&pause={SSE_PAUSE}")
    async with (
        httpx.AsyncClient(transport=transport, timeout=GENEROUS) as client,
        client.stream("GET", url) as response,
    ):
        events = [line async for line in response.aiter_lines() if line]
    assert events == ["data: 0", "data: 1"]
    breaker = breaker_of(response)
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (1, 0)
    assert metrics.slow_requests == 0
    assert breaker.state is CLOSED


def test_sse_pause_longer_than_timeout_is_read_whole_sync(http1_server: Server) -> None:
    """The sync transport does not shorten the body's per-read timeouts to `timeout`."""
    transport = sync_transport(None, None, **SSE_POLICY)
    url = http1_server.url(f"/sse?events=2&pause={SSE_PAUSE}")
    with (
        httpx.Client(transport=transport, timeout=GENEROUS) as client,
        client.stream("GET", url) as response,
    ):
        events = [line for line in response.iter_lines() if line]
    assert events == ["data: 0", "data: 1"]
    breaker = breaker_of(response)
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (1, 0)
    assert metrics.slow_requests == 0
    assert breaker.state is CLOSED


# The server waits four times the deadline before its headers: the deadline must win.
LATE_TIMEOUT = 0.25
LATE_DELAY = 1.0


async def test_headers_later_than_timeout_raise_circuit_timeout(http1_server: Server) -> None:
    """Headers later than `timeout` raise CircuitTimeoutError (an httpx.TimeoutException): a failure."""
    transport = async_transport(timeout=LATE_TIMEOUT)
    async with httpx.AsyncClient(transport=transport, timeout=GENEROUS) as client:
        with pytest.raises(CircuitTimeoutError) as info:
            await client.get(http1_server.url(f"/delay/{LATE_DELAY}"))
    assert isinstance(info.value, httpx.TimeoutException)
    assert info.value.request.url.path == f"/delay/{LATE_DELAY}"
    breaker = transport.registry[http1_server.key]
    assert breaker.get_metrics().failed_requests == 1
    assert breaker.state is OPEN


def test_headers_later_than_timeout_raise_circuit_timeout_sync(http1_server: Server) -> None:
    """The sync transport raises CircuitTimeoutError too (not httpx.ReadTimeout), and records a failure."""
    transport = sync_transport(timeout=LATE_TIMEOUT)
    with httpx.Client(transport=transport, timeout=GENEROUS) as client:  # noqa: SIM117
        with pytest.raises(CircuitTimeoutError) as info:
            client.get(http1_server.url(f"/delay/{LATE_DELAY}"))
    assert isinstance(info.value, httpx.TimeoutException)
    assert info.value.request.url.path == f"/delay/{LATE_DELAY}"
    breaker = transport.registry[http1_server.key]
    assert breaker.get_metrics().failed_requests == 1
    assert breaker.state is OPEN


# -- defect 9: waiting for the client's own pool is not the host's fault ------------

# One connection, eight requests each answered after 0.2 s: the last one waits at least
# 1.4 s for the connection, longer than the 1.0 s deadline, yet each answer takes 0.2 s.
POOL_REQUESTS = 8
POOL_DELAY = 0.2
POOL_TIMEOUT = 1.0


def one_connection() -> httpx.Limits:
    return httpx.Limits(max_connections=1, max_keepalive_connections=1)


async def test_queueing_for_own_pool_never_opens_the_breaker(http1_server: Server) -> None:
    """Eight requests queued on one pooled connection: all succeed, the breaker never opens."""
    inner = httpx.AsyncHTTPTransport(limits=one_connection(), verify=SSL_CONTEXT)
    transport = async_transport(inner=inner, timeout=POOL_TIMEOUT)
    outcomes: list[object] = []

    async def one(client: httpx.AsyncClient) -> None:
        try:
            response = await client.get(http1_server.url(f"/delay/{POOL_DELAY}"))
        except httpx.HTTPError as exc:
            outcomes.append(repr(exc))
        else:
            outcomes.append(response.status_code)

    async with (
        httpx.AsyncClient(transport=transport, timeout=GENEROUS) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(POOL_REQUESTS):
            tg.start_soon(one, client)
    assert outcomes == [200] * POOL_REQUESTS
    metrics = transport.registry[http1_server.key].get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (POOL_REQUESTS, 0)
    assert metrics.state_changes == ()


def test_queueing_for_own_pool_never_opens_the_breaker_sync(http1_server: Server) -> None:
    """Eight threads sharing one pooled connection: all succeed, the breaker never opens."""
    inner = httpx.HTTPTransport(limits=one_connection(), verify=SSL_CONTEXT)
    transport = sync_transport(inner=inner, timeout=POOL_TIMEOUT)

    def one(client: httpx.Client) -> object:
        try:
            return client.get(http1_server.url(f"/delay/{POOL_DELAY}")).status_code
        except httpx.HTTPError as exc:
            return repr(exc)

    with (
        httpx.Client(transport=transport, timeout=GENEROUS) as client,
        ThreadPoolExecutor(POOL_REQUESTS) as pool,
    ):
        outcomes = list(pool.map(lambda _: one(client), range(POOL_REQUESTS)))
    assert outcomes == [200] * POOL_REQUESTS
    metrics = transport.registry[http1_server.key].get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (POOL_REQUESTS, 0)
    assert metrics.state_changes == ()


# The client's pool wait gives up after 0.05 s while the test holds the only connection.
POOL_WAIT = httpx.Timeout(5.0, pool=0.05)


async def test_pool_timeout_is_neither_success_nor_failure(http1_server: Server) -> None:
    """An httpx.PoolTimeout (our own pool full) is ignored by the default classifier."""
    inner = httpx.AsyncHTTPTransport(limits=one_connection(), verify=SSL_CONTEXT)
    transport = async_transport(inner=inner)
    async with (
        httpx.AsyncClient(transport=transport, timeout=POOL_WAIT) as client,
        client.stream("GET", http1_server.url("/ok")) as held,
    ):
        with pytest.raises(httpx.PoolTimeout):
            await client.get(http1_server.url("/ok"))
        breaker = breaker_of(held)
        metrics = breaker.get_metrics()
        assert (metrics.failed_requests, metrics.ignored_requests) == (0, 1)
        assert breaker.state is CLOSED
        await held.aread()
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (1, 0)


def test_pool_timeout_is_neither_success_nor_failure_sync(http1_server: Server) -> None:
    """The sync transport ignores an httpx.PoolTimeout too."""
    inner = httpx.HTTPTransport(limits=one_connection(), verify=SSL_CONTEXT)
    transport = sync_transport(inner=inner)
    with (
        httpx.Client(transport=transport, timeout=POOL_WAIT) as client,
        client.stream("GET", http1_server.url("/ok")) as held,
    ):
        with pytest.raises(httpx.PoolTimeout):
            client.get(http1_server.url("/ok"))
        breaker = breaker_of(held)
        metrics = breaker.get_metrics()
        assert (metrics.failed_requests, metrics.ignored_requests) == (0, 1)
        assert breaker.state is CLOSED
        held.read()
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (1, 0)


# The slow-call rule over one connection: two slow outcomes in two would open it.
SLOW_RULE = {
    "slow_call_duration": 1.0,
    "slow_call_rate_threshold": 0.5,
    "minimum_requests": 2,
    "window_size": 2,
}


def waiting_for_the_pool(inner: httpx.AsyncHTTPTransport | httpx.HTTPTransport) -> int:
    """How many requests httpcore's pool holds, in use or queued (httpcore internals: the
    test must know the second request is queued before the clock moves)."""
    return len(inner._pool._requests)


@pytest.mark.parametrize("deadline", [None, 5.0])
async def test_queueing_for_own_pool_is_not_slow(http1_server: Server, deadline: float | None) -> None:
    """Ten seconds (on the breaker's clock) queued for the client's only connection make
    neither call slow: the duration starts when the request has its connection, so a
    saturated pool cannot open a healthy host's breaker through the slow-call rule."""
    clock = FakeClock()
    inner = httpx.AsyncHTTPTransport(limits=one_connection(), verify=SSL_CONTEXT)
    transport = async_transport(clock, inner, timeout=deadline, **SLOW_RULE)
    statuses: list[int] = []

    async def queued(client: httpx.AsyncClient) -> None:
        statuses.append((await client.get(http1_server.url("/ok"))).status_code)

    async with (
        httpx.AsyncClient(transport=transport, timeout=GENEROUS) as client,
        client.stream("GET", http1_server.url("/ok")) as held,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(queued, client)
        with anyio.fail_after(10):
            # httpcore's pool signals nothing a test could wait on: poll it.
            while waiting_for_the_pool(inner) < 2:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        clock.advance(10.0)  # the queued request waits 10 s for the connection
        await held.aread()
        await held.aclose()
    assert statuses == [200]
    breaker = transport.registry[http1_server.key]
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.slow_requests) == (2, 0)
    assert metrics.average_response_time == 0.0
    assert breaker.state is CLOSED


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_queueing_for_own_pool_is_not_slow_sync(http1_server: Server, timeout: float | None) -> None:
    """The sync transport starts the duration at the connection too."""
    clock = FakeClock()
    inner = httpx.HTTPTransport(limits=one_connection(), verify=SSL_CONTEXT)
    transport = sync_transport(clock, inner, timeout=timeout, **SLOW_RULE)
    with (
        httpx.Client(transport=transport, timeout=GENEROUS) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        with client.stream("GET", http1_server.url("/ok")) as held:
            queued = pool.submit(lambda: client.get(http1_server.url("/ok")).status_code)
            deadline = time.monotonic() + 10
            while waiting_for_the_pool(inner) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert waiting_for_the_pool(inner) == 2
            clock.advance(10.0)
            held.read()
        assert queued.result(timeout=10) == 200
    breaker = transport.registry[http1_server.key]
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.slow_requests) == (2, 0)
    assert metrics.average_response_time == 0.0
    assert breaker.state is CLOSED


# -- defect 10: a cache hit proves nothing about the host (real hishel 2) ------------


@pytest.fixture
def hishel_storage_path(tmp_path: Path) -> Iterator[Path]:
    require("hishel", "anysqlite")  # dev dependencies: a skip locally, a failure under CI
    yield tmp_path / "hishel.db"


async def test_cache_hit_below_the_breaker_does_not_close_it(
    http1_server: Server, clock: FakeClock, hishel_storage_path: Path
) -> None:
    """hishel below the breaker: a cached 200 during HALF_OPEN is ignored; the host's 503 reopens."""
    from hishel import AsyncSqliteStorage
    from hishel.httpx import AsyncCacheTransport

    tag = new_tag()
    cached = f"/cache/{tag}"
    cache = AsyncCacheTransport(
        httpx.AsyncHTTPTransport(verify=SSL_CONTEXT),
        storage=AsyncSqliteStorage(database_path=hishel_storage_path),
        rfc=True,
    )
    transport = async_transport(clock, inner=cache, half_open_max_requests=1)
    async with httpx.AsyncClient(
        transport=transport, headers=tagged(tag), timeout=GENEROUS
    ) as client:
        first = await client.get(http1_server.url(cached))
        assert first.status_code == 200
        assert first.extensions["caching"]["from_cache"] is False
        breaker = await half_open(client, http1_server, clock)
        http1_server.flip_cache(tag, 503)  # the host now fails this resource

        hit = await client.get(http1_server.url(cached))
        assert hit.status_code == 200
        assert hit.extensions["caching"]["from_cache"] is True  # how hishel 2 marks a hit
        assert http1_server.count(tag, cached) == 1  # the hit never reached the host
        assert breaker.state is HALF_OPEN
        metrics = breaker.get_metrics()
        assert (metrics.successful_requests, metrics.ignored_requests) == (1, 1)

        # The probe slot is free again, and a real request to the failing host reopens.
        miss = await client.get(http1_server.url(cached), params={"miss": "1"})
        assert miss.status_code == 503
        assert breaker.state is OPEN


async def test_cache_above_the_breaker_serves_hits_while_open(
    http1_server: Server, clock: FakeClock, hishel_storage_path: Path
) -> None:
    """hishel above the breaker: cached responses are served while the breaker is OPEN."""
    from hishel import AsyncSqliteStorage
    from hishel.httpx import AsyncCacheTransport

    tag = new_tag()
    cached = f"/cache/{tag}"
    transport = async_transport(clock, inner=httpx.AsyncHTTPTransport(verify=SSL_CONTEXT))
    cache = AsyncCacheTransport(
        transport, storage=AsyncSqliteStorage(database_path=hishel_storage_path), rfc=True
    )
    async with httpx.AsyncClient(transport=cache, headers=tagged(tag), timeout=GENEROUS) as client:
        assert (await client.get(http1_server.url(cached))).status_code == 200
        assert (await client.get(http1_server.url("/status/503"))).status_code == 503
        breaker = transport.registry[http1_server.key]
        assert breaker.state is OPEN

        hit = await client.get(http1_server.url(cached))
        assert hit.status_code == 200
        assert hit.extensions["caching"]["from_cache"] is True
        with pytest.raises(CircuitOpenError):
            await client.get(http1_server.url(cached), params={"miss": "1"})
    assert http1_server.count(tag, cached) == 1
    assert breaker.state is OPEN


def test_cache_hit_below_the_breaker_does_not_close_it_sync(
    http1_server: Server, clock: FakeClock, hishel_storage_path: Path
) -> None:
    """The sync transport over hishel's CacheTransport ignores cache hits too."""
    from hishel import SqliteStorage
    from hishel.httpx import CacheTransport

    tag = new_tag()
    cached = f"/cache/{tag}"
    cache = CacheTransport(
        httpx.HTTPTransport(verify=SSL_CONTEXT),
        storage=SqliteStorage(database_path=hishel_storage_path),
        rfc=True,
    )
    transport = sync_transport(clock, inner=cache, half_open_max_requests=1)
    with httpx.Client(transport=transport, headers=tagged(tag), timeout=GENEROUS) as client:
        assert client.get(http1_server.url(cached)).status_code == 200
        breaker = half_open_sync(client, http1_server, clock)
        http1_server.flip_cache(tag, 503)

        hit = client.get(http1_server.url(cached))
        assert hit.status_code == 200
        assert hit.extensions["caching"]["from_cache"] is True
        assert http1_server.count(tag, cached) == 1
        assert breaker.state is HALF_OPEN

        assert client.get(http1_server.url(cached), params={"miss": "1"}).status_code == 503
        assert breaker.state is OPEN


def test_cache_above_the_breaker_serves_hits_while_open_sync(
    http1_server: Server, clock: FakeClock, hishel_storage_path: Path
) -> None:
    """hishel's CacheTransport above the sync breaker serves hits while it is OPEN."""
    from hishel import SqliteStorage
    from hishel.httpx import CacheTransport

    tag = new_tag()
    cached = f"/cache/{tag}"
    transport = sync_transport(clock, inner=httpx.HTTPTransport(verify=SSL_CONTEXT))
    cache = CacheTransport(
        transport, storage=SqliteStorage(database_path=hishel_storage_path), rfc=True
    )
    with httpx.Client(transport=cache, headers=tagged(tag), timeout=GENEROUS) as client:
        assert client.get(http1_server.url(cached)).status_code == 200
        assert client.get(http1_server.url("/status/503")).status_code == 503
        breaker = transport.registry[http1_server.key]
        assert breaker.state is OPEN
        hit = client.get(http1_server.url(cached))
        assert (hit.status_code, hit.extensions["caching"]["from_cache"]) == (200, True)
        with pytest.raises(CircuitOpenError):
            client.get(http1_server.url(cached), params={"miss": "1"})
    assert http1_server.count(tag, cached) == 1


# -- defect 11: closing the client under an open body ------------------------------


@pytest.mark.parametrize("close", ["client", "transport"])
async def test_closing_the_client_under_an_open_body_is_ignored(
    http1_server: Server, clock: FakeClock, close: str
) -> None:
    """Closing the client (or transport) mid-body fails the next read; a half-open breaker stays half-open."""
    transport = async_transport(clock, half_open_max_requests=1)
    client = httpx.AsyncClient(transport=transport, timeout=GENEROUS)
    breaker = await half_open(client, http1_server, clock)
    async with client.stream("GET", http1_server.url("/stream?chunks=3&pause=0.5")) as response:
        chunks = response.aiter_raw()
        assert await chunks.__anext__() == b"chunk 0\n"
        if close == "client":
            await client.aclose()
        else:
            await transport.aclose()
        with pytest.raises(httpx.ReadError):
            await chunks.__anext__()
    await client.aclose()
    assert breaker.state is HALF_OPEN
    metrics = breaker.get_metrics()
    assert (metrics.failed_requests, metrics.ignored_requests) == (1, 1)  # the trip, the close


@pytest.mark.parametrize("close", ["client", "transport"])
def test_closing_the_client_under_an_open_body_is_ignored_sync(
    http1_server: Server, clock: FakeClock, close: str
) -> None:
    """The sync transport ignores the read error that closing the client causes."""
    transport = sync_transport(clock, half_open_max_requests=1)
    client = httpx.Client(transport=transport, timeout=GENEROUS)
    breaker = half_open_sync(client, http1_server, clock)
    with client.stream("GET", http1_server.url("/stream?chunks=3&pause=0.5")) as response:
        chunks = response.iter_raw()
        assert next(chunks) == b"chunk 0\n"
        if close == "client":
            client.close()
        else:
            transport.close()
        with pytest.raises(httpx.ReadError):
            next(chunks)
    client.close()
    assert breaker.state is HALF_OPEN
    metrics = breaker.get_metrics()
    assert (metrics.failed_requests, metrics.ignored_requests) == (1, 1)


# -- outcome_at="headers": a long stream does not hold the probe slot ----------------


async def test_outcome_at_headers_frees_the_probe_slot(
    http1_server: Server, clock: FakeClock
) -> None:
    """The only probe is a long SSE stream: the breaker closes at its headers; others pass meanwhile."""
    transport = async_transport(clock, half_open_max_requests=1, outcome_at="headers")
    async with httpx.AsyncClient(transport=transport, timeout=GENEROUS) as client:
        breaker = await half_open(client, http1_server, clock)
        url = http1_server.url("/sse?events=2&pause=0.2")
        async with client.stream("GET", url) as stream:
            assert stream.status_code == 200
            assert breaker.state is CLOSED
            assert (await client.get(http1_server.url("/ok"))).status_code == 200
            events = [line async for line in stream.aiter_lines() if line]
        assert events == ["data: 0", "data: 1"]
        assert breaker.state is CLOSED
        metrics = breaker.get_metrics()
        assert (metrics.successful_requests, metrics.failed_requests) == (2, 1)


def test_outcome_at_headers_frees_the_probe_slot_sync(
    http1_server: Server, clock: FakeClock
) -> None:
    """The sync transport records at the headers too with outcome_at="headers"."""
    transport = sync_transport(clock, half_open_max_requests=1, outcome_at="headers")
    with httpx.Client(transport=transport, timeout=GENEROUS) as client:
        breaker = half_open_sync(client, http1_server, clock)
        with client.stream("GET", http1_server.url("/sse?events=2&pause=0.2")) as stream:
            assert breaker.state is CLOSED
            assert client.get(http1_server.url("/ok")).status_code == 200
            events = [line for line in stream.iter_lines() if line]
        assert events == ["data: 0", "data: 1"]
        assert breaker.state is CLOSED
        metrics = breaker.get_metrics()  # the stream counted once, at its headers
        assert (metrics.successful_requests, metrics.failed_requests) == (2, 1)


async def test_outcome_at_headers_does_not_count_a_later_body_error(http1_server: Server) -> None:
    """With outcome_at="headers" the status decides: a body cut later is not a failure."""
    transport = async_transport(outcome_at="headers")
    async with httpx.AsyncClient(transport=transport, timeout=GENEROUS) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(http1_server.url("/cut"))
    breaker = transport.registry[http1_server.key]
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (1, 0)
    assert breaker.state is CLOSED


def test_outcome_at_headers_does_not_count_a_later_body_error_sync(http1_server: Server) -> None:
    """The sync twin: a body cut after a 200's headers is not counted with outcome_at="headers"."""
    transport = sync_transport(outcome_at="headers")
    with httpx.Client(transport=transport, timeout=GENEROUS) as client:  # noqa: SIM117
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(http1_server.url("/cut"))
    breaker = transport.registry[http1_server.key]
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests, metrics.ignored_requests) == (1, 0, 0)
    assert breaker.state is CLOSED


async def test_outcome_at_close_counts_a_body_cut_mid_stream(http1_server: Server) -> None:
    """The default outcome_at="close" still counts a body cut mid-stream as a failure."""
    transport = async_transport()
    async with httpx.AsyncClient(transport=transport, timeout=GENEROUS) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(http1_server.url("/cut"))
    breaker = transport.registry[http1_server.key]
    assert (breaker.get_metrics().failed_requests, breaker.state) == (1, OPEN)


# -- bypass must be a bool ------------------------------------------------------------

NOT_BOOLS = ["false", 1, 0]


@pytest.mark.parametrize("bypass", NOT_BOOLS)
async def test_bypass_that_is_not_a_bool_raises_before_any_io(
    http1_server: Server, bypass: object
) -> None:
    """`{"bypass": "false"}` (or 1, or 0) raises TypeError and sends nothing."""
    tag = new_tag()
    transport = async_transport()
    async with httpx.AsyncClient(transport=transport, headers=tagged(tag)) as client:
        with pytest.raises(TypeError, match="bypass"):
            await client.get(
                http1_server.url("/ok"), extensions={"circuit_breaker": {"bypass": bypass}}
            )
        # A real bool works, so the server is there: only the bad value sent nothing.
        response = await client.get(
            http1_server.url("/ok"), extensions={"circuit_breaker": {"bypass": True}}
        )
        assert response.status_code == 200
    assert http1_server.count(tag) == 1


@pytest.mark.parametrize("bypass", NOT_BOOLS)
def test_bypass_that_is_not_a_bool_raises_before_any_io_sync(
    http1_server: Server, bypass: object
) -> None:
    """The sync transport checks the type of bypass before any I/O too."""
    tag = new_tag()
    transport = sync_transport()
    with httpx.Client(transport=transport, headers=tagged(tag)) as client:
        with pytest.raises(TypeError, match="bypass"):
            client.get(http1_server.url("/ok"), extensions={"circuit_breaker": {"bypass": bypass}})
        response = client.get(
            http1_server.url("/ok"), extensions={"circuit_breaker": {"bypass": False}}
        )
        assert response.status_code == 200
    assert http1_server.count(tag) == 1
