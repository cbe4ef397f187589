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

from typing import Any

import pytest

from httpx_breaker import CircuitBreakerConfig, CircuitState

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
    late response is returned and recorded as a failure, as the sync transport does
    for any request it cannot bound."""
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
            late = client.get(http2_server.url(f"/delay/{LATE_HEADERS}"))
            assert late.status_code == 200
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
