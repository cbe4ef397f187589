"""The transports judge what really happened, and change nothing else httpx users rely on.

Regression tests for issue 10: partial reads, the wrapped transport's lifecycle, errors
caused by closing the client, `outcome_at`, strict per-request options, sync deadlines
that raise `CircuitTimeoutError`, and deadlines that keep no event loop alive. Each test
that takes `lib` runs with httpx and with httpx2 (tests/libraries.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from types import MappingProxyType, TracebackType
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx
from respx.transports import MockTransport

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
    CircuitTimeoutError,
    _deadline,
    _transport,
)
from httpx_breaker._upstream import Upstream
from httpx_breaker.testing import set_state

from .conftest import FakeClock
from .libraries import Library

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/events"
KEY = "api.example.com"
LINES = b"".join(b"line %d\n" % i for i in range(50))


def registry(clock: FakeClock, **config: object) -> BreakerRegistry:
    settings: dict[str, object] = {"failure_threshold": 1, "half_open_max_requests": 1}
    settings.update(config)
    return BreakerRegistry(default=CircuitBreakerConfig(**settings), clock=clock)  # type: ignore[arg-type]


async def chunks(status_holder: list[int] | None = None) -> AsyncIterator[bytes]:
    for i in range(0, len(LINES), 16):
        yield LINES[i : i + 16]


def sync_chunks() -> Iterator[bytes]:
    for i in range(0, len(LINES), 16):
        yield LINES[i : i + 16]


def async_inner(lib: Library, status: int = 200) -> Any:
    """A transport whose responses stream their bodies (so the breaker wraps them)."""
    return lib.MockTransport(lambda request: lib.Response(status, content=chunks()))


def sync_inner(lib: Library, status: int = 200) -> Any:
    return lib.MockTransport(lambda request: lib.Response(status, content=sync_chunks()))


# -- a caller that stops reading early is not an error -------------------------------

# Under trio, httpx's own generators (aiter_lines -> aiter_text -> ... -> its byte
# streams) left unexhausted warn when collected; that is httpx's and trio's business.
# The breaker's stream is an iterator, not a generator: it has nothing to warn about.
# (Python 3.14 words it "Exception ignored while finalizing generator".)
TRIO_ASYNCGEN_WARNING = pytest.mark.filterwarnings(
    "ignore:Exception ignored (in.|while finalizing generator) <async_generator object:"
    "pytest.PytestUnraisableExceptionWarning"
)


@TRIO_ASYNCGEN_WARNING
@pytest.mark.parametrize("how", ["break", "finalised_first", "close_unread"])
async def test_async_probe_read_partly_closes_the_breaker(
    lib: Library, how: str, clock: FakeClock
) -> None:
    """A half-open probe whose reader walks away early is judged on its status (200: close)."""
    transport = lib.AsyncCircuitBreakerTransport(async_inner(lib), registry=registry(clock))
    breaker = set_state(transport, KEY, CircuitState.HALF_OPEN)
    client = lib.AsyncClient(transport=transport)
    async with client, client.stream("GET", URL) as response:
        if how == "break":
            async for line in response.aiter_lines():
                if line == "line 3":
                    break
        elif how == "finalised_first":
            lines = response.aiter_lines()
            assert await lines.__anext__() == "line 0"
            # The abandoned generators are finalised by the event loop before the
            # response is closed: GeneratorExit reaches the breaker's stream first.
            await lines.aclose()
            del lines
            gc.collect()
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
        # "close_unread": leave the block without reading anything.
    assert breaker.state is CircuitState.CLOSED
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.ignored_requests) == (1, 0)


def test_sync_probe_read_partly_closes_the_breaker(lib: Library, clock: FakeClock) -> None:
    """Breaking out of iter_lines() closes the generators with GeneratorExit: not an error."""
    transport = lib.CircuitBreakerTransport(sync_inner(lib), registry=registry(clock))
    breaker = set_state(transport, KEY, CircuitState.HALF_OPEN)
    with lib.Client(transport=transport) as client, client.stream("GET", URL) as response:
        for line in response.iter_lines():
            if line == "line 3":
                break
        gc.collect()  # whatever finalisation CPython would do later, done now
    assert breaker.state is CircuitState.CLOSED
    # And with send(stream=True) and an explicit close, after iter_bytes.
    set_state(transport, KEY, CircuitState.HALF_OPEN)
    with lib.Client(transport=transport) as client:
        response = client.send(client.build_request("GET", URL), stream=True)
        for _chunk in response.iter_bytes(chunk_size=4):
            break
        response.close()
    assert breaker.state is CircuitState.CLOSED


@TRIO_ASYNCGEN_WARNING
async def test_async_partly_read_503_is_a_failure(lib: Library, clock: FakeClock) -> None:
    """A 503 whose reader stops early still counts as a failure: the status decides."""
    transport = lib.AsyncCircuitBreakerTransport(async_inner(lib, 503), registry=registry(clock))
    client = lib.AsyncClient(transport=transport)
    async with client, client.stream("GET", URL) as response:
        async for _line in response.aiter_lines():
            break
    breaker = transport.registry[KEY]
    assert breaker.state is CircuitState.OPEN
    assert breaker.get_metrics().failed_requests == 1


def test_sync_partly_read_503_is_a_failure(lib: Library, clock: FakeClock) -> None:
    transport = lib.CircuitBreakerTransport(sync_inner(lib, 503), registry=registry(clock))
    with lib.Client(transport=transport) as client, client.stream("GET", URL) as response:
        for _line in response.iter_lines():
            break
    assert transport.registry[KEY].state is CircuitState.OPEN


async def test_an_error_while_streaming_is_still_a_failure(lib: Library, clock: FakeClock) -> None:
    """Only walking away is forgiven: a body that breaks mid-stream fails the probe."""

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise lib.ReadError("connection reset mid-body")

    inner = lib.MockTransport(lambda request: lib.Response(200, content=broken()))
    transport = lib.AsyncCircuitBreakerTransport(inner, registry=registry(clock))
    breaker = set_state(transport, KEY, CircuitState.HALF_OPEN)
    async with lib.AsyncClient(transport=transport) as client:
        with pytest.raises(lib.ReadError):
            await client.get(URL)
    assert breaker.state is CircuitState.OPEN


# -- errors caused by closing the client are not the host's ---------------------------


@pytest.mark.parametrize("close", ["aclose", "leave_block"])
async def test_async_closing_the_client_mid_body_is_not_a_host_failure(
    lib: Library, clock: FakeClock, close: str
) -> None:
    """A read that fails because the client was closed under it is ignored, closed by
    `aclose()` or by leaving its ``async with`` block (which exits the transport's)."""
    closed = anyio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await closed.wait()
        raise lib.ReadError("the pool closed the connection")

    inner = lib.MockTransport(lambda request: lib.Response(200, content=body()))
    transport = lib.AsyncCircuitBreakerTransport(inner, registry=registry(clock))
    breaker = set_state(transport, KEY, CircuitState.HALF_OPEN)
    client = lib.AsyncClient(transport=transport)
    if close == "leave_block":
        await client.__aenter__()
    response = await client.send(client.build_request("GET", URL), stream=True)
    chunks_read = response.aiter_bytes()
    assert await chunks_read.__anext__() == b"first"
    if close == "leave_block":
        await client.__aexit__(None, None, None)
    else:
        await client.aclose()
    closed.set()
    with pytest.raises(lib.ReadError):
        await chunks_read.__anext__()
    await response.aclose()
    assert breaker.state is CircuitState.HALF_OPEN  # not reopened
    metrics = breaker.get_metrics()
    assert (metrics.failed_requests, metrics.ignored_requests) == (0, 1)
    # The probe slot came back: the next request would be let through now.
    assert breaker.retry_after == 0.0


@pytest.mark.parametrize("close", ["close", "leave_block"])
def test_sync_closing_the_client_mid_body_is_not_a_host_failure(
    lib: Library, clock: FakeClock, close: str
) -> None:
    """The sync twin: closed by `close()` or by leaving the client's ``with`` block."""
    state = {"closed": False}

    def body() -> Iterator[bytes]:
        yield b"first"
        assert state["closed"]
        raise lib.ReadError("the pool closed the connection")

    inner = lib.MockTransport(lambda request: lib.Response(200, content=body()))
    transport = lib.CircuitBreakerTransport(inner, registry=registry(clock))
    breaker = set_state(transport, KEY, CircuitState.HALF_OPEN)
    client = lib.Client(transport=transport)
    if close == "leave_block":
        client.__enter__()
    response = client.send(client.build_request("GET", URL), stream=True)
    reader = response.iter_bytes()
    assert next(reader) == b"first"
    if close == "leave_block":
        client.__exit__(None, None, None)
    else:
        client.close()
    state["closed"] = True
    with pytest.raises(lib.ReadError):
        next(reader)
    response.close()
    assert breaker.state is CircuitState.HALF_OPEN
    metrics = breaker.get_metrics()
    assert (metrics.failed_requests, metrics.ignored_requests) == (0, 1)
    assert breaker.retry_after == 0.0  # the probe slot came back


# -- outcome_at="headers" --------------------------------------------------------------


async def test_outcome_at_headers_frees_the_probe_slot_while_the_stream_runs(
    lib: Library, clock: FakeClock
) -> None:
    """With outcome_at="headers" a long stream used as the only probe closes the breaker
    when its headers arrive, so the next request passes while it still streams."""
    transport = lib.AsyncCircuitBreakerTransport(
        async_inner(lib), registry=registry(clock, outcome_at="headers")
    )
    breaker = set_state(transport, KEY, CircuitState.HALF_OPEN)
    client = lib.AsyncClient(transport=transport)
    async with client, client.stream("GET", URL) as stream:
        assert breaker.state is CircuitState.CLOSED
        assert (await client.get(URL)).status_code == 200
        await stream.aread()
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.total_requests) == (2, 2)


async def test_outcome_at_headers_judges_the_status_and_not_the_body(
    lib: Library, clock: FakeClock
) -> None:
    """A 503 fails at once; a later body error is not counted."""

    async def broken() -> AsyncIterator[bytes]:
        yield b"x"
        raise lib.ReadError("cut")

    inner = lib.MockTransport(
        lambda request: lib.Response(int(request.url.path.strip("/")), content=broken())
    )
    transport = lib.AsyncCircuitBreakerTransport(
        inner, registry=registry(clock, outcome_at="headers", failure_threshold=2)
    )
    async with lib.AsyncClient(transport=transport) as client:
        with pytest.raises(lib.ReadError):
            await client.get("https://api.example.com/200")
        breaker = transport.registry[KEY]
        assert breaker.get_metrics().successful_requests == 1
        async with client.stream("GET", "https://api.example.com/503"):
            metrics = breaker.get_metrics()
            assert metrics.failed_requests == 1  # known before the body is touched
    assert breaker.get_metrics().failed_requests == 1


# -- per-request options ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["false", 1, 0, None, "yes"])
async def test_bypass_must_be_a_bool(lib: Library, value: object, clock: FakeClock) -> None:
    """A non-bool bypass raises TypeError before any I/O."""
    with lib.mock(assert_all_called=False) as mock:
        route = mock.get(URL).respond(200)
        transport = lib.AsyncCircuitBreakerTransport(registry=registry(clock))
        async with lib.AsyncClient(transport=transport) as client:
            with pytest.raises(TypeError, match=r'\["bypass"\] must be a bool'):
                await client.get(URL, extensions={"circuit_breaker": {"bypass": value}})
            ok = await client.get(URL, extensions={"circuit_breaker": {"bypass": False}})
            assert ok.status_code == 200
            breaker = set_state(transport, KEY, CircuitState.OPEN)
            with pytest.raises(CircuitOpenError):
                await client.get(URL, extensions={"circuit_breaker": {"bypass": False}})
            bypassed = await client.get(URL, extensions={"circuit_breaker": {"bypass": True}})
            assert bypassed.status_code == 200
    assert route.call_count == 2
    metrics = breaker.get_metrics()  # the bypassed request is not the breaker's
    assert (metrics.total_requests, metrics.rejected_requests) == (1, 1)


# -- the wrapped transport's lifecycle -------------------------------------------------


class Lifecycle:
    """Records the context-manager calls httpx makes on a client's transport (mixed
    into a library's MockTransport by `lifecycle`)."""

    calls: list[str]

    def __enter__(self) -> Any:
        self.calls.append("enter")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.calls.append(f"exit:{exc_type.__name__ if exc_type else None}")

    async def __aenter__(self) -> Any:
        self.calls.append("aenter")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.calls.append(f"aexit:{exc_type.__name__ if exc_type else None}")


def lifecycle(lib: Library) -> Any:
    """A MockTransport of `lib` (answering 204) that records its context-manager calls."""
    inner = type("Lifecycle", (Lifecycle, lib.MockTransport), {})(lambda request: lib.Response(204))
    inner.calls = []
    return inner


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
def test_breaker_for_url_of_a_bypassing_request_is_the_breaker_it_would_use(
    lib: Library, sync: bool
) -> None:
    """`breaker_for_url(request)` of a request that bypasses the breaker returns the
    breaker that request would use without bypassing (its ``key`` option honoured)."""
    kind = lib.CircuitBreakerTransport if sync else lib.AsyncCircuitBreakerTransport
    transport = kind()
    bypassing = lib.Request("GET", URL, extensions={"circuit_breaker": {"bypass": True}})
    assert transport.breaker_for_url(bypassing) is transport.breaker_for_url(URL)
    named = {"circuit_breaker": {"bypass": True, "key": "billing"}}
    assert transport.breaker_for_url(lib.Request("GET", URL, extensions=named)).name == "billing"


async def test_async_context_manager_calls_reach_the_wrapped_transport(lib: Library) -> None:
    """A client's `async with` reaches the wrapped transport's __aenter__/__aexit__."""
    inner = lifecycle(lib)
    async with lib.AsyncClient(transport=lib.AsyncCircuitBreakerTransport(inner)) as client:
        await client.get(URL)
    assert inner.calls == ["aenter", "aexit:None"]
    inner.calls.clear()
    with pytest.raises(KeyError):
        async with lib.AsyncCircuitBreakerTransport(inner) as transport:
            assert isinstance(transport, lib.AsyncCircuitBreakerTransport)
            raise KeyError("boom")
    assert inner.calls == ["aenter", "aexit:KeyError"]


def test_sync_context_manager_calls_reach_the_wrapped_transport(lib: Library) -> None:
    inner = lifecycle(lib)
    with lib.Client(transport=lib.CircuitBreakerTransport(inner)) as client:
        client.get(URL)
    assert inner.calls == ["enter", "exit:None"]


async def test_respx_assert_all_called_still_asserts_through_the_wrapper() -> None:
    """A wrapped respx transport that checks on exit still does (respx's MockTransport)."""
    router = respx.Router(assert_all_called=True)
    router.get(URL).respond(200)
    router.get("https://api.example.com/never").respond(200)
    with pytest.warns(DeprecationWarning, match="MockTransport is deprecated"):
        inner = MockTransport(router=router)
    with pytest.raises(AssertionError, match="not called"):
        async with httpx.AsyncClient(transport=AsyncCircuitBreakerTransport(inner)) as client:
            await client.get(URL)
    with (
        pytest.raises(AssertionError, match="not called"),
        httpx.Client(transport=CircuitBreakerTransport(inner)) as sync_client,
    ):
        sync_client.get(URL)  # noqa: ASYNC212 (the sync transport's exit, in this test)


# -- deadlines -----------------------------------------------------------------------------


def test_sync_headers_past_the_deadline_raise_circuit_timeout(
    lib: Library, upstream: Upstream
) -> None:
    """The sync transport raises CircuitTimeoutError (an httpx.TimeoutException), as the
    async one does, and counts it as a failure."""
    transport = lib.CircuitBreakerTransport(
        default=CircuitBreakerConfig(timeout=0.2, failure_threshold=2)
    )
    with lib.Client(transport=transport, timeout=30.0) as client:
        with pytest.raises(lib.CircuitTimeoutError) as info:
            client.get(f"{upstream.url}/delay/3")
        assert isinstance(info.value, lib.TimeoutException)
        assert isinstance(info.value, CircuitTimeoutError)
        assert info.value.request.url.path == "/delay/3"
        assert isinstance(info.value.__cause__, lib.ReadTimeout)
        # The request's own timeouts are back, for the next request and for bodies.
        ok = client.get(f"{upstream.url}/ok")
        assert ok.request.extensions["timeout"] == lib.Timeout(30.0).as_dict()
    metrics = transport.registry[f"127.0.0.1:{upstream.port}"].get_metrics()
    assert (metrics.failed_requests, metrics.successful_requests) == (1, 1)


async def test_a_deadline_and_the_callers_scope_expiring_together_cancel_only_the_request(
    lib: Library, anyio_backend: str
) -> None:
    """The caller's own cancel scope runs out just after the policy's deadline, while the
    request waits in a task group (as httpcore's connect does). Under asyncio the two
    cancellations can fold into one that carries no word of the scope's; the scope must
    still catch its own (or the caller gets our timeout): no cancellation may escape it
    and cancel the caller's task. The fold depends on the order the loop runs things,
    so the test sweeps the scope's deadline across ours (before the fix about one
    request in eight let a cancellation escape)."""

    class Waits(lib.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        async def handle_async_request(self, request: Any) -> Any:
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.sleep, 10)
            raise AssertionError("not cancelled")

    transport = lib.AsyncCircuitBreakerTransport(
        Waits(), default=CircuitBreakerConfig(timeout=0.05), classifier=lambda *_: None
    )
    escaped = 0
    async with lib.AsyncClient(transport=transport) as client:
        for i in range(40):
            try:
                with anyio.move_on_after(0.0505 + (i % 8) * 0.0005):
                    with contextlib.suppress(lib.TimeoutException):  # our deadline's
                        await client.get("https://api.example.com/")
                await anyio.lowlevel.checkpoint()  # nothing may cancel the task now
            except anyio.get_cancelled_exc_class():  # noqa: PERF203  # counted, per request
                escaped += 1
                if anyio_backend == "asyncio":
                    current = asyncio.current_task()
                    assert current is not None
                    current.uncancel()
    assert escaped == 0


async def test_a_request_that_fails_at_once_leaves_no_deadline_behind(lib: Library) -> None:
    """A wrapped transport that raises before the deadline: the deadline is taken
    down with the request, and the caller's task is not cancelled when it would have
    come (the sleep below outlasts it)."""

    class Refuses(lib.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        async def handle_async_request(self, request: Any) -> Any:
            raise lib.ConnectError("refused", request=request)

    transport = lib.AsyncCircuitBreakerTransport(
        Refuses(), default=CircuitBreakerConfig(timeout=0.05)
    )
    with pytest.raises(lib.ConnectError):
        await transport.handle_async_request(lib.Request("GET", URL))
    await anyio.sleep(0.2)  # past the deadline: nothing may cancel this task


def queueing(lib: Library) -> Any:
    """A wrapped transport that is not httpx's own: it waits `wait` seconds, as for a
    connection of its own pool, then reports its connection through the ``trace`` hook
    (a hook of the breaker's is there when the policy sets `timeout`) and answers 200."""

    class Queueing(lib.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        wait = 0.0

        async def handle_async_request(self, request: Any) -> Any:
            await anyio.sleep(self.wait)  # waiting for a connection of its own
            await request.extensions["trace"]("connection.connect_tcp.started", {})
            return lib.Response(200)

    return Queueing()


@pytest.mark.parametrize("pool", ["none", "unreadable"])
async def test_a_traced_transport_of_another_kind_may_queue_outside_the_deadline(
    lib: Library, pool: str
) -> None:
    """A wrapped transport that is not httpx's own (or whose pool is not httpcore's as
    we know it) but reports its connection through the ``trace`` hook (learned from its
    first traced request) may hold a request back, waiting for a connection of its own
    pool, before it reports: that pool cannot be read, so with no pool timeout the
    deadline starts at the connection, however long the wait."""
    inner = queueing(lib)
    if pool == "unreadable":
        inner._pool = object()  # type: ignore[attr-defined]  # no _requests to count
    transport = lib.AsyncCircuitBreakerTransport(inner, default=CircuitBreakerConfig(timeout=0.05))
    no_pool_timeout = lib.Timeout(5.0, pool=None)
    async with lib.AsyncClient(transport=transport, timeout=no_pool_timeout) as client:
        assert (await client.get(URL)).status_code == 200  # it traces: learned here
        inner.wait = 0.25  # five deadlines, all of them before the connection
        assert (await client.get(URL)).status_code == 200
    metrics = transport.registry[KEY].get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (2, 0)


async def test_a_pool_timeout_in_any_mapping_bounds_the_wait_for_a_connection(
    lib: Library,
) -> None:
    """Until the wrapped transport reports a connection, the deadline allows the pool's
    own timeout on top of `timeout`, and no more: a request held back longer is cut. The
    request's ``timeout`` extension is read whatever mapping holds it (httpx puts a
    dict there; a caller may put any mapping)."""
    inner = queueing(lib)
    transport = lib.AsyncCircuitBreakerTransport(inner, default=CircuitBreakerConfig(timeout=0.05))
    timeouts = MappingProxyType({"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 0.05})
    async with lib.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == 200  # it traces: learned here
        inner.wait = 30.0  # never reports a connection within the pool's timeout
        with anyio.fail_after(10), pytest.raises(lib.CircuitTimeoutError):
            await client.get(URL, extensions={"timeout": timeouts})
    metrics = transport.registry[KEY].get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (1, 1)


async def test_a_transport_that_swallows_the_deadlines_cancellation_leaves_the_task_uncancelled(
    lib: Library, anyio_backend: str
) -> None:
    """A wrapped transport that catches the cancellation the deadline sends and answers
    anyway: its answer is returned, and the caller's task is not left cancelled (under
    asyncio its count of cancellation requests is back to zero, or the next timeout or
    task group of the caller would take a cancellation that is not there)."""

    class Swallows(lib.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        async def handle_async_request(self, request: Any) -> Any:
            with contextlib.suppress(anyio.get_cancelled_exc_class()):
                await anyio.sleep(10)
            return lib.Response(200)

    transport = lib.AsyncCircuitBreakerTransport(
        Swallows(), default=CircuitBreakerConfig(timeout=0.05)
    )
    response = await transport.handle_async_request(lib.Request("GET", URL))
    assert response.status_code == 200
    await anyio.lowlevel.checkpoint()  # nothing may cancel the task now
    if anyio_backend == "asyncio" and sys.version_info >= (3, 11):  # cancelling() is 3.11's
        current = asyncio.current_task()
        assert current is not None
        assert current.cancelling() == 0


async def test_the_callers_cancellation_of_a_request_under_a_deadline_stays_a_cancellation(
    lib: Library,
) -> None:
    """The caller cancels a request while the policy's deadline is still running: the
    cancellation reaches the caller's scope as a cancellation (not our timeout), and
    counts as neither a success nor a failure."""
    started = anyio.Event()

    class Waits(lib.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        async def handle_async_request(self, request: Any) -> Any:
            started.set()
            await anyio.sleep_forever()

    transport = lib.AsyncCircuitBreakerTransport(
        Waits(), default=CircuitBreakerConfig(timeout=30.0)
    )
    async with anyio.create_task_group() as group:
        group.start_soon(transport.handle_async_request, lib.Request("GET", URL))
        await started.wait()
        group.cancel_scope.cancel()
    metrics = transport.registry[KEY].get_metrics()
    assert (metrics.failed_requests, metrics.ignored_requests) == (0, 1)


@pytest.fixture
def trickling_server() -> Iterator[tuple[str, threading.Event, threading.Thread]]:
    """A loopback server that sends its response headers one byte every 10 ms (about
    0.7 s in all), in a thread that sets the event once the last byte is sent and ends
    when the client closes the connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sent = threading.Event()
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: abcdefghijklmnop\r\n" * 2 + b"Content-Length: 2\r\n\r\n"

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            try:
                for i in range(len(head)):
                    connection.sendall(head[i : i + 1])
                    time.sleep(0.01)
                sent.set()
                connection.sendall(b"ok")
                connection.recv(1)  # until the client closes
            except OSError:  # the client went first
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/", sent, thread
    thread.join(timeout=10)
    listener.close()


def test_sync_headers_trickled_past_the_deadline_raise_once_they_have_come(
    lib: Library, trickling_server: tuple[str, threading.Event, threading.Thread]
) -> None:
    """A lowered timeout bounds each wait for the socket, not their sum: headers that
    trickle in, each byte within what is left, are waited for (a sync request cannot be
    abandoned), then raise CircuitTimeoutError and count one failure, as documented."""
    url, sent, _ = trickling_server
    transport = lib.CircuitBreakerTransport(default=CircuitBreakerConfig(timeout=0.2))
    with (
        lib.Client(transport=transport, timeout=30.0) as client,
        pytest.raises(lib.CircuitTimeoutError),
    ):
        client.get(url)
    assert sent.wait(10)  # the server sent every header byte: it was not cut
    metrics = transport.breaker_for_url(url).get_metrics()
    assert (metrics.failed_requests, metrics.successful_requests) == (1, 0)


async def test_async_headers_trickled_past_the_deadline_are_cut(
    lib: Library, trickling_server: tuple[str, threading.Event, threading.Thread]
) -> None:
    """The async transport stops the same request at the deadline, mid-headers."""
    url, sent, server = trickling_server
    transport = lib.AsyncCircuitBreakerTransport(default=CircuitBreakerConfig(timeout=0.2))
    async with lib.AsyncClient(transport=transport, timeout=30.0) as client:
        with pytest.raises(lib.CircuitTimeoutError):
            await client.get(url)
    server.join(timeout=10)  # it stops sending once the client has gone
    assert not server.is_alive()
    assert not sent.is_set()  # cut before the last header byte
    metrics = transport.breaker_for_url(url).get_metrics()
    assert (metrics.failed_requests, metrics.successful_requests) == (1, 0)


def timeouts_seen_by_steps(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch, caller: httpx.Timeout
) -> tuple[dict[str, object], httpx.Response]:
    """The ``timeout`` extension httpcore sees at each traced step of one GET sent with
    the caller's `caller` timeouts through a sync transport whose policy sets a 10 s
    deadline, on a clock that moves 1 s at each reading; and the response."""
    ticks = iter(range(100))
    monkeypatch.setattr(_transport, "_monotonic", lambda: float(next(ticks)))  # 1 s a read
    seen: dict[str, object] = {}

    def trace(name: str, info: dict[str, object]) -> None:
        seen[name] = dict(request.extensions["timeout"])

    transport = CircuitBreakerTransport(default=CircuitBreakerConfig(timeout=10.0))
    with httpx.Client(transport=transport, timeout=caller) as client:
        request = client.build_request("GET", f"{upstream.url}/ok", extensions={"trace": trace})
        return seen, client.send(request)


def test_sync_deadline_lowers_each_step_to_what_is_left(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step up to the headers gets what is left of the deadline as its timeout,
    counted from the first step (a connection is assigned); the body gets the caller's."""
    seen, response = timeouts_seen_by_steps(upstream, monkeypatch, httpx.Timeout(30.0, pool=4.0))
    caller = httpx.Timeout(30.0, pool=4.0).as_dict()
    left = {"connect": 10.0, "read": 10.0, "write": 10.0, "pool": 4.0}
    assert seen["connection.connect_tcp.started"] == left
    assert seen["http11.send_request_headers.started"] == {**left, "connect": 9.0, "read": 9.0, "write": 9.0}
    assert seen["http11.receive_response_headers.started"] == {
        "connect": 7.0, "read": 7.0, "write": 7.0, "pool": 4.0
    }
    assert seen["http11.receive_response_body.started"] == caller
    assert response.request.extensions["timeout"] == caller
    assert response.status_code == 200


def test_sync_deadline_keeps_the_callers_shorter_timeouts_and_fills_unset_ones(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's timeout the caller set shorter than what is left of the deadline stays
    the caller's (so a timeout of it stays httpx's); one the caller left unset (None, no
    limit) gets what is left."""
    own = httpx.Timeout(connect=None, read=5.0, write=30.0, pool=4.0)
    seen, response = timeouts_seen_by_steps(upstream, monkeypatch, own)
    assert seen["connection.connect_tcp.started"] == {
        "connect": 10.0, "read": 5.0, "write": 10.0, "pool": 4.0
    }
    assert seen["http11.receive_response_headers.started"] == {
        "connect": 7.0, "read": 5.0, "write": 7.0, "pool": 4.0
    }
    assert response.request.extensions["timeout"] == own.as_dict()
    assert response.status_code == 200


@pytest.mark.parametrize(("caller", "expected"), [(30.0, 10.0), (None, 10.0), (4.0, 4.0)])
def test_sync_deadline_lowers_the_timeout_the_connect_step_was_given(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch, caller: float | None, expected: float
) -> None:
    """httpcore reads the connect timeout before its first event and hands it to the
    `connect_tcp` step in the event's `info`: that is the value lowered to what is left
    (lowering only the extension came too late: a host slow to accept was not cut), and
    a caller's shorter one is kept."""
    ticks = iter(range(100))
    monkeypatch.setattr(_transport, "_monotonic", lambda: float(next(ticks)))  # 1 s a read
    given: dict[str, object] = {}

    def trace(name: str, info: dict[str, object]) -> None:  # called after our hook
        if name == "connection.connect_tcp.started":
            given["connect_tcp"] = info["timeout"]

    transport = CircuitBreakerTransport(default=CircuitBreakerConfig(timeout=10.0))
    with httpx.Client(transport=transport, timeout=httpx.Timeout(30.0, connect=caller)) as client:
        response = client.get(f"{upstream.url}/ok", extensions={"trace": trace})
    assert given == {"connect_tcp": expected}
    assert response.status_code == 200


@pytest.fixture
def silent_tls_server() -> Iterator[str]:
    """A loopback server that accepts TCP connections and never answers the TLS
    handshake: a host that is slow to shake hands."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener is closed at the end
            while True:
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}/"
    listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (a close alone does not)
    listener.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    for connection in held:
        connection.close()


def test_sync_deadline_cuts_a_tls_handshake_that_never_ends(
    lib: Library, silent_tls_server: str
) -> None:
    """The sync transport stops a handshake the host never finishes at `timeout`, not at
    the client's own connect timeout (30 s here): CircuitTimeoutError, one failure."""
    transport = lib.CircuitBreakerTransport(default=CircuitBreakerConfig(timeout=0.2))
    with lib.Client(transport=transport, timeout=30.0) as client:
        started = time.monotonic()
        with pytest.raises(lib.CircuitTimeoutError):
            client.get(silent_tls_server)
        assert time.monotonic() - started < 10  # 0.2 s; the client's own is 30 s
    metrics = transport.breaker_for_url(silent_tls_server).get_metrics()
    assert (metrics.failed_requests, metrics.successful_requests) == (1, 0)


# The policies that put a hook of ours in httpcore's `trace`: a deadline, or the
# slow-call rule alone (the duration then starts at the connection).
TIMED = pytest.mark.parametrize(
    "timed",
    [CircuitBreakerConfig(timeout=5.0), CircuitBreakerConfig(slow_call_duration=5.0)],
    ids=["timeout", "slow_call_duration"],
)


@TIMED
def test_sync_deadline_hands_back_the_callers_trace(
    lib: Library, upstream: Upstream, timed: CircuitBreakerConfig
) -> None:
    """A caller's own httpcore trace hook still sees every event, and is restored."""
    def events_through(transport: Any) -> tuple[list[str], Any, Any]:
        events: list[str] = []

        def hook(name: str, info: dict[str, object]) -> None:
            events.append(name)

        with lib.Client(transport=transport) as client:
            response = client.get(f"{upstream.url}/ok", extensions={"trace": hook})
        return events, hook, response.request.extensions["trace"]

    bare, _, _ = events_through(lib.HTTPTransport())
    transport = lib.CircuitBreakerTransport(default=timed)
    events, hook, left_on_request = events_through(transport)
    assert events == bare  # every event httpcore sends, none of ours
    assert "http11.receive_response_headers.started" in events
    assert left_on_request is hook


@TIMED
async def test_async_deadline_hands_back_the_callers_trace(
    lib: Library, upstream: Upstream, timed: CircuitBreakerConfig
) -> None:
    async def events_through(transport: Any) -> tuple[list[str], Any, Any]:
        events: list[str] = []

        async def trace(name: str, info: dict[str, object]) -> None:
            events.append(name)

        async with lib.AsyncClient(transport=transport) as client:
            response = await client.get(f"{upstream.url}/ok", extensions={"trace": trace})
        return events, trace, response.request.extensions["trace"]

    bare, _, _ = await events_through(lib.AsyncHTTPTransport())
    transport = lib.AsyncCircuitBreakerTransport(default=timed)
    events, trace, left_on_request = await events_through(transport)
    assert events == bare  # every event httpcore sends, none of ours
    assert "http11.receive_response_headers.started" in events
    assert "http11.response_closed.complete" in events
    assert left_on_request is trace


@TIMED
@pytest.mark.parametrize("given", [False, True], ids=["no-trace", "own-trace"])
async def test_a_transport_that_never_traces_gets_the_request_back_as_it_was(
    lib: Library, timed: CircuitBreakerConfig, given: bool
) -> None:
    """Over a wrapped transport that calls no trace hook (a mock), the hook the deadline
    put in the request's extensions is taken out when the request is done: the caller's
    own is back, or none, as before (a retry sends the same request again)."""

    async def own(name: str, info: dict[str, object]) -> None:
        pass

    transport = lib.AsyncCircuitBreakerTransport(
        lib.MockTransport(lambda request: lib.Response(200)), default=timed
    )
    request = lib.Request("GET", URL, extensions={"trace": own} if given else {})
    before = dict(request.extensions)
    response = await transport.handle_async_request(request)
    await response.aclose()
    assert request.extensions == before


@TIMED
@pytest.mark.parametrize("given", [False, True], ids=["no-trace", "own-trace"])
def test_a_sync_transport_that_never_traces_gets_the_request_back_as_it_was(
    lib: Library, timed: CircuitBreakerConfig, given: bool
) -> None:
    """The sync twin of the test above."""

    def own(name: str, info: dict[str, object]) -> None:
        pass

    transport = lib.CircuitBreakerTransport(
        lib.MockTransport(lambda request: lib.Response(200)), default=timed
    )
    request = lib.Request("GET", URL, extensions={"trace": own} if given else {})
    before = dict(request.extensions)
    transport.handle_request(request).close()
    assert request.extensions == before


# One cache hit per mark a cache leaves (`CACHE_MARKERS`), as hishel 2, 1 and 0.x set them.
CACHE_HITS = [{"caching": {"from_cache": True}}, {"hishel_from_cache": True}, {"from_cache": True}]


@TRIO_ASYNCGEN_WARNING
@pytest.mark.parametrize("marker", CACHE_HITS, ids=["hishel2", "hishel1", "hishel0"])
async def test_a_streamed_cache_hit_is_ignored_when_its_body_closes(
    lib: Library, marker: dict[str, object], clock: FakeClock
) -> None:
    """A 200 that a cache below the breaker served, streamed and read to the end, is
    ignored, not a success: the close path's shortcut for successes checks the marks."""
    inner = lib.MockTransport(
        lambda request: lib.Response(200, content=chunks(), extensions=dict(marker))
    )
    transport = lib.AsyncCircuitBreakerTransport(inner, registry=registry(clock))
    async with lib.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).content == LINES
        async with client.stream("GET", URL) as response:
            async for _ in response.aiter_bytes():
                break
    m = transport.registry[KEY].get_metrics()
    assert (m.successful_requests, m.ignored_requests) == (0, 2)


def test_cache_marked_knows_every_cache_marker() -> None:
    """The spelled-out checks agree with `CACHE_MARKERS`, the documented list."""
    from httpx_breaker._classify import CACHE_MARKERS, cache_marked

    assert all(cache_marked({name: True}) for name in CACHE_MARKERS)
    # The close path spells the marks out for speed: the streamed test above walks them all.
    assert {name for hit in CACHE_HITS for name in hit} == CACHE_MARKERS
    assert not cache_marked({"circuit_breaker": {}, "http_version": b"HTTP/1.1"})
    assert not cache_marked({})


async def test_a_deadline_leaves_no_reference_cycle_per_request(lib: Library) -> None:
    """With `timeout` set, a request leaves nothing for the garbage collector beyond what
    the same request leaves without the breaker: the trace hook the deadline installs is
    freed when the request is done (a hook that named itself made a cycle per request)."""
    calls: list[str] = []

    class Tracing(lib.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        async def handle_async_request(self, request: Any) -> Any:
            trace = request.extensions.get("trace")
            for event in ("http11.send_request_headers.started", "http11.receive_response_headers.started"):
                if trace is not None:
                    await trace(event, {})
                    calls.append(event)
            return lib.Response(200, content=chunks())

    async def garbage_of(transport: Any, n: int = 50) -> int:
        request = lib.Request("GET", URL)
        response = await transport.handle_async_request(request)
        await response.aread()
        gc.collect()
        gc.disable()
        try:
            for _ in range(n):
                response = await transport.handle_async_request(lib.Request("GET", URL))
                await response.aread()
            del response
            return gc.collect()
        finally:
            gc.enable()

    floor = await garbage_of(Tracing())
    ours = lib.AsyncCircuitBreakerTransport(
        transport=Tracing(), default=CircuitBreakerConfig(timeout=30.0)
    )
    assert await garbage_of(ours) == floor
    assert "http11.receive_response_headers.started" in calls  # the hook was called


def test_deadlines_keep_no_event_loop_alive() -> None:
    """asyncio.run() in a loop, each run with deadlines still pending at its end, leaves
    no loop (nor a sweeper) behind once collected."""
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one_run() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        # A deadline far in the future: its timer is still pending when the run ends.
        assert await _deadline.run_with_deadline(asyncio.sleep(0), 60.0, "svc") is None

    gc.collect()
    before = len(_deadline._sweepers)  # loops other tests keep running may have one
    for _ in range(5):
        asyncio.run(one_run())
    gc.collect()
    assert [ref() for ref in loops] == [None] * 5
    assert len(_deadline._sweepers) <= before


class _Unread(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """A fresh 200 per request, its body not read yet (so the transports wrap it)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"body"))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"body"))


def _fields(stream: object) -> dict[str, object]:
    names = (*_transport._Tracked.__slots__, *type(stream).__slots__)  # type: ignore[attr-defined]
    return {name: getattr(stream, name) for name in names}


async def test_the_transports_build_the_tracked_body_as_its_constructor_would(
    clock: FakeClock,
) -> None:
    """Both transports build the tracked body field by field (a class call costs more):
    every field the constructor sets is set, and what the transport hands it (core,
    breaker, request, response, slot, count of closes) is what the constructor would
    keep, so a field added to one and not the other fails here, not on a later close."""
    request = httpx.Request("GET", URL)
    transports: list[AsyncCircuitBreakerTransport | CircuitBreakerTransport] = [
        AsyncCircuitBreakerTransport(_Unread(), registry=registry(clock)),
        CircuitBreakerTransport(_Unread(), registry=registry(clock)),
    ]
    for transport in transports:
        if isinstance(transport, AsyncCircuitBreakerTransport):
            response = await transport.handle_async_request(request)
            cls: type[_transport._Tracked] = _transport._AsyncTrackedStream
        else:
            response = transport.handle_request(request)
            cls = _transport._SyncTrackedStream
        stream = response.stream
        assert type(stream) is cls
        fields = _fields(stream)  # every slot is set: reading one unset raises
        made = cls(
            fields["_stream"],
            transport._core,
            transport.registry[KEY],
            fields["_token"],  # type: ignore[arg-type]
            request,
            response,
            fields["_start"],  # type: ignore[arg-type]
            fields["_end"],  # type: ignore[arg-type]
            None,
            transport._core.closes,
        )
        assert _fields(made) == fields
        made._core = None  # settled by hand: its finaliser must not give a permit back
        if isinstance(transport, AsyncCircuitBreakerTransport):
            await response.aclose()
        else:
            response.close()
        assert transport.registry[KEY].get_metrics().successful_requests == 1
