"""Defects found by using the transports the way users do, against real servers.

Each test here reproduces something that broke when 0.2 was driven through real
clients and servers (tests/servers.py: uvicorn for HTTP/1.1, hypercorn for HTTP/2)
rather than through the project's own scenarios. They run with httpx and httpx2 (the
`lib` fixture) and, when async, under asyncio and trio.

Timing: no test asserts on elapsed time. A server delay is a lower bound the client
cannot beat, so "later than the deadline" uses a delay several times the deadline, and
"a pause in the body" a pause several times the deadline.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from httpx_breaker import CircuitBreakerConfig, CircuitState
from httpx_breaker.testing import Upstream

from .libraries import Library
from .servers import Server

pytestmark = pytest.mark.anyio

# The breaker's deadline on headers, far below the delay of the slow request and the
# pause between the events of the stream that shares its HTTP/2 connection.
DEADLINE = 0.3
LATE_HEADERS = 2.0
PAUSE = 1.0


def http2_only(lib: Library, *, sync: bool) -> Any:
    """The library's own transport, speaking HTTP/2 with prior knowledge (hypercorn)."""
    return (lib.HTTPTransport if sync else lib.AsyncHTTPTransport)(http1=False, http2=True)


# -- HTTP/2: one request's deadline must not cut the other streams of its connection --


def test_sync_deadline_never_cuts_another_stream_on_the_http2_connection(
    lib: Library, http2_server: Server
) -> None:
    """A sync request whose headers come later than `timeout` leaves the bodies of the
    other requests on its HTTP/2 connection alone: the client set no read timeout, so
    httpx alone would never cut them. httpcore's HTTP/2 connection fails every stream
    after one read timeout, so there the deadline cannot be a lowered read timeout: the
    late request raises `CircuitTimeoutError` once its headers have come (and counts as
    a failure), as the sync transport does for any request it cannot bound."""
    transport = lib.CircuitBreakerTransport(
        http2_only(lib, sync=True), default=CircuitBreakerConfig(timeout=DEADLINE)
    )
    events = f"/sse?events=3&pause={PAUSE}"
    with lib.Client(transport=transport, timeout=None) as client:  # noqa: SIM117
        with client.stream("GET", http2_server.url(events)) as stream:
            assert stream.http_version == "HTTP/2"
            lines = stream.iter_lines()
            assert next(lines) == "data: 0"
            # Same connection (HTTP/2 multiplexing): its headers come too late.
            with pytest.raises(lib.CircuitTimeoutError):
                client.get(http2_server.url(f"/delay/{LATE_HEADERS}"))
            rest = [line for line in lines if line]
    assert rest == ["data: 1", "data: 2"]
    breaker = transport.registry[http2_server.key]
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (1, 1)


async def test_async_deadline_never_cuts_another_stream_on_the_http2_connection(
    lib: Library, http2_server: Server
) -> None:
    """The async twin: the deadline cancels the late request only."""
    transport = lib.AsyncCircuitBreakerTransport(
        http2_only(lib, sync=False), default=CircuitBreakerConfig(timeout=DEADLINE)
    )
    events = f"/sse?events=3&pause={PAUSE}"
    async with (
        lib.AsyncClient(transport=transport, timeout=None) as client,
        client.stream("GET", http2_server.url(events)) as stream,
    ):
        assert stream.http_version == "HTTP/2"
        lines = stream.aiter_lines()
        assert await lines.__anext__() == "data: 0"
        with pytest.raises(lib.CircuitTimeoutError):
            await client.get(http2_server.url(f"/delay/{LATE_HEADERS}"))
        rest = [line async for line in lines if line]
    assert rest == ["data: 1", "data: 2"]
    breaker = transport.registry[http2_server.key]
    assert breaker.state is CircuitState.CLOSED
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (1, 1)


# -- a transport shared by clients that come and go ------------------------------------
#
# `with httpx.Client(transport=shared) as client:` per call is how code shares one
# transport's breakers between short-lived clients; each client closes the transport
# when it leaves its block (httpx's transport pool works on after a close).


async def test_a_transport_reused_by_successive_clients_keeps_counting_failures(
    lib: Library, upstream: Upstream
) -> None:
    """Errors after an earlier client closed the transport are the host's again: a reset
    connection and a body cut mid-stream count as failures in every client's turn (they
    used to be ignored as "caused by closing" from the first close on, for good)."""
    transport = lib.AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(failure_threshold=100)
    )
    for _ in range(3):
        async with lib.AsyncClient(transport=transport) as client:
            with pytest.raises(lib.TransportError):
                await client.get(f"{upstream.url}/reset")
            with pytest.raises(lib.TransportError):
                await client.get(f"{upstream.url}/cut")
    metrics = transport.breaker_for_url(upstream.url).get_metrics()
    assert (metrics.failed_requests, metrics.ignored_requests) == (6, 0)


def test_a_transport_reused_by_successive_clients_keeps_counting_failures_sync(
    lib: Library, upstream: Upstream
) -> None:
    """The sync twin."""
    transport = lib.CircuitBreakerTransport(default=CircuitBreakerConfig(failure_threshold=100))
    for _ in range(3):
        with lib.Client(transport=transport) as client:
            with pytest.raises(lib.TransportError):
                client.get(f"{upstream.url}/reset")
            with pytest.raises(lib.TransportError):
                client.get(f"{upstream.url}/cut")
    metrics = transport.breaker_for_url(upstream.url).get_metrics()
    assert (metrics.failed_requests, metrics.ignored_requests) == (6, 0)


def test_a_close_is_blamed_only_for_the_bodies_open_then_sync(
    lib: Library, http1_server: Server, upstream: Upstream
) -> None:
    """One client of a shared transport closes it under another client's open body: that
    body's read error is ignored (the close caused it), and the next request's error,
    admitted after the close, is a failure."""
    transport = lib.CircuitBreakerTransport(default=CircuitBreakerConfig(failure_threshold=100))
    reader = lib.Client(transport=transport)
    with reader.stream("GET", http1_server.url("/stream?chunks=3&pause=0.5")) as stream:
        chunks = stream.iter_raw()
        assert next(chunks) == b"chunk 0\n"
        with lib.Client(transport=transport):
            pass  # another client leaves its block: the shared transport is closed
        with pytest.raises(lib.ReadError):
            next(chunks)
    with lib.Client(transport=transport) as client, pytest.raises(lib.TransportError):
        client.get(f"{upstream.url}/reset")
    reader.close()
    server = transport.breaker_for_url(http1_server.url("/")).get_metrics()
    assert (server.failed_requests, server.ignored_requests) == (0, 1)
    host = transport.breaker_for_url(upstream.url).get_metrics()
    assert (host.failed_requests, host.ignored_requests) == (1, 0)


# -- the caller's own timeouts stay the caller's ---------------------------------------


@contextlib.contextmanager
def never_reads() -> Iterator[str]:
    """A server on 127.0.0.1 that accepts connections and never reads from them, so an
    upload blocks once the socket buffers are full: only a write timeout ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/upload"
    finally:
        listener.close()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()


UPLOAD = b"x" * (64 << 20)  # far more than the socket buffers of a loopback connection
OWN_WRITE_TIMEOUT = 0.3
LONG_DEADLINE = 30.0  # the breaker's, far away


def test_the_callers_own_write_timeout_stays_a_write_timeout_sync(lib: Library) -> None:
    """With a breaker `timeout` set, a write timeout the caller set (and that fired long
    before the deadline) is raised as httpx's `WriteTimeout`, not as a
    `CircuitTimeoutError` saying the 30 s deadline ran out; a failure either way."""
    transport = lib.CircuitBreakerTransport(
        default=CircuitBreakerConfig(timeout=LONG_DEADLINE, failure_threshold=100)
    )
    own = lib.Timeout(None, write=OWN_WRITE_TIMEOUT)
    with never_reads() as url, lib.Client(transport=transport, timeout=own) as client:
        with pytest.raises(lib.WriteTimeout) as raised:
            client.post(url, content=UPLOAD)
        assert not isinstance(raised.value, lib.CircuitTimeoutError)
        metrics = transport.breaker_for_url(url).get_metrics()
    assert metrics.failed_requests == 1


# trio warns about httpx's own request-body generator, which the write timeout abandons
# (with or without a breaker): httpx's business, not what this test judges.
@pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx.*ByteStream.__aiter__' was garbage collected:ResourceWarning"
)
async def test_the_callers_own_write_timeout_stays_a_write_timeout(lib: Library) -> None:
    """The async twin (its deadline is a cancellation, never a lowered timeout)."""
    transport = lib.AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(timeout=LONG_DEADLINE, failure_threshold=100)
    )
    own = lib.Timeout(None, write=OWN_WRITE_TIMEOUT)
    with never_reads() as url:
        async with lib.AsyncClient(transport=transport, timeout=own) as client:
            with pytest.raises(lib.WriteTimeout) as raised:
                await client.post(url, content=UPLOAD)
            assert not isinstance(raised.value, lib.CircuitTimeoutError)
        metrics = transport.breaker_for_url(url).get_metrics()
    assert metrics.failed_requests == 1


@pytest.mark.parametrize("deadline", [1e10, 1e300])
def test_a_deadline_beyond_what_a_socket_takes_is_no_error_sync(
    lib: Library, http1_server: Server, deadline: float
) -> None:
    """`CircuitBreakerConfig(timeout=1e10)` ("practically none") is accepted, so it must
    work: the sync transport used to lower the socket timeouts to it and every request
    failed with OverflowError (beyond what a socket timeout can hold)."""
    transport = lib.CircuitBreakerTransport(default=CircuitBreakerConfig(timeout=deadline))
    with lib.Client(transport=transport, timeout=None) as client:
        assert client.get(http1_server.url("/ok")).status_code == 200
