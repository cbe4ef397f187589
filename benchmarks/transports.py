"""The transports the transport rows are measured over, and the floors' wrappers.

Every inner transport hands out a fresh, cheap response per request, so the floor the
overheads are measured against is as low, and as steady, as it can be:
`stream=ByteStream(...)` rather than `content=...` (no body encoding, no
Content-Length header: a seventh of the cost).

`TracingInnerAsync` calls the request's ``trace`` extension exactly as httpcore 1.0
does on a reused keep-alive HTTP/1.1 connection (the hot path of a real client):
``http11.send_request_headers``, ``http11.send_request_body`` and
``http11.receive_response_headers``, each ``.started`` then ``.complete``, before the
headers are returned; ``http11.receive_response_body`` around the body and
``http11.response_closed`` when it is closed. Like httpcore it checks that the callback
returned a coroutine, it calls nothing when the request carries no ``trace``, and it
reads the hook anew for every step, as each of httpcore's ``Trace(...)`` scopes does:
a hook that hands tracing back after the first event (as the breaker's deadline does)
is not called again, and one that stays pays for every call.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx

URL = "http://bench.test/"
KEY = "bench.test"  # the breaker key of URL
BODY = b'{"ok":true}'


def make_request() -> httpx.Request:
    return httpx.Request("GET", URL)


class InnerAsync(httpx.AsyncBaseTransport):
    """A fresh 200 per request with `body` (status settable, to trip breakers)."""

    def __init__(self, body: bytes = b"", *, closed: bool = False) -> None:
        self.status = 200
        self.body = body
        self.closed = closed  # hand out responses already read (as a cache or mock does)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = httpx.Response(self.status, stream=httpx.ByteStream(self.body))
        if self.closed:
            response.is_closed = True
        return response


class InnerSync(httpx.BaseTransport):
    def __init__(self, body: bytes = b"") -> None:
        self.status = 200
        self.body = body

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(self.status, stream=httpx.ByteStream(self.body))


async def _atrace(
    trace: Callable[[str, dict[str, Any]], Any], name: str, info: dict[str, Any]
) -> None:
    """httpcore's `Trace.atrace`: call the hook, insist on a coroutine, await it."""
    coro = trace(name, info)
    if not inspect.iscoroutine(coro):
        raise TypeError("the `trace` extension of an async request must be an async function")
    await coro


_HEADERS_DONE: tuple[bytes, int, bytes, list[tuple[bytes, bytes]]] = (b"HTTP/1.1", 200, b"OK", [])


class _TracedBody(httpx.AsyncByteStream):
    """The body of `TracingInnerAsync`: traces its reading and closing like httpcore."""

    def __init__(self, trace: Any, request: httpx.Request, body: bytes) -> None:
        self._trace = trace
        self._request = request
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        trace = self._trace
        if trace is not None:
            await _atrace(trace, "http11.receive_response_body.started", {"request": self._request})
        if self._body:
            yield self._body
        if trace is not None:
            await _atrace(trace, "http11.receive_response_body.complete", {"return_value": None})

    async def aclose(self) -> None:
        trace = self._trace
        if trace is not None:
            await _atrace(trace, "http11.response_closed.started", {})
            await _atrace(trace, "http11.response_closed.complete", {"return_value": None})


class TracingInnerAsync(httpx.AsyncBaseTransport):
    """Calls the ``trace`` extension as httpcore does on a reused connection (see above)."""

    def __init__(self, body: bytes = b"") -> None:
        self.status = 200
        self.body = body

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # httpcore reads the hook anew for every step (each `Trace(...)` it opens), so a
        # hook that removes itself is not called again; so here.
        kwargs = {"request": request}
        extensions = request.extensions
        for step, done in (
            ("send_request_headers", None),
            ("send_request_body", None),
            ("receive_response_headers", _HEADERS_DONE),
        ):
            trace = extensions.get("trace")
            if trace is not None:
                await _atrace(trace, f"http11.{step}.started", kwargs)
                await _atrace(trace, f"http11.{step}.complete", {"return_value": done})
        return httpx.Response(
            self.status, stream=_TracedBody(extensions.get("trace"), request, self.body)
        )


class SlowInnerAsync(httpx.AsyncBaseTransport):
    """For the behaviour probes: waits `pool_wait` s before any trace event (as for a
    pooled connection), then traces like httpcore if `traces`, then waits `server_wait` s.
    """

    def __init__(self, *, pool_wait: float, server_wait: float, traces: bool) -> None:
        self.pool_wait = pool_wait
        self.server_wait = server_wait
        self.traces = traces

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.pool_wait:
            await anyio.sleep(self.pool_wait)
        trace = request.extensions.get("trace") if self.traces else None
        if trace is not None:
            await _atrace(trace, "http11.send_request_headers.started", {"request": request})
            await _atrace(trace, "http11.send_request_headers.complete", {"return_value": None})
        if self.server_wait:
            await anyio.sleep(self.server_wait)
        if trace is not None:
            await _atrace(
                trace, "http11.receive_response_headers.complete", {"return_value": _HEADERS_DONE}
            )
        return httpx.Response(200, stream=_TracedBody(trace, request, b""))


class PassAsync(httpx.AsyncBaseTransport):
    """The floor: a wrapper that only forwards."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport.handle_async_request(request)


class PassSync(httpx.BaseTransport):
    def __init__(self, transport: httpx.BaseTransport) -> None:
        self._transport = transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._transport.handle_request(request)


class ScopedPassTrio(httpx.AsyncBaseTransport):
    """Reference under trio: the floor inside trio's own cancel scope with a deadline,
    which is what any deadline under trio costs at least.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport, timeout: float) -> None:
        import trio

        self._transport = transport
        self._timeout = timeout
        self._scope = trio.CancelScope
        self._now = trio.current_time

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with self._scope(deadline=self._now() + self._timeout):
            return await self._transport.handle_async_request(request)
        raise httpx.ReadTimeout("deadline", request=request)  # pragma: no cover


class RaisingAsync(httpx.AsyncBaseTransport):
    """The rejection floor: a transport that fails at once with a TransportError."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)


class RaisingSync(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)


async def trip_async(transport: httpx.AsyncBaseTransport, inner: Any, times: int) -> None:
    """Open a breaker: `times` requests answered 503 by `inner`."""
    inner.status = 503
    for _ in range(times):
        response = await transport.handle_async_request(make_request())
        await response.aclose()
    inner.status = 200


def trip_sync(transport: httpx.BaseTransport, inner: Any, times: int) -> None:
    inner.status = 503
    for _ in range(times):
        transport.handle_request(make_request()).close()
    inner.status = 200
