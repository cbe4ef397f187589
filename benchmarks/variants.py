# The timing loops catch inside the loop on purpose: raise + catch is what they measure,
# and contextlib.suppress would add its own cost to every iteration.
# ruff: noqa: PERF203, SIM105
"""The variants of the engine and transport sections: ours, the baselines and the peers.

Each runner is written out as its own loop, so that every variant pays exactly the
loop, the work function and its own wrapper, nothing shared through an extra call.
Peers that are not installed are skipped (the smoke test runs without them).

Peer APIs used (the cheapest documented path of each, to be fair to them):
- circuitbreaker 2.1.3: the decorator (`call()` alone never checks the open state).
- aiobreaker 1.2.0: `call_async` / `call`.
- pybreaker 1.4.1: `call` (its `call_async` needs tornado: sync only).
- purgatory 3.0.1: a breaker fetched once with `get_breaker`, then `async with` / `with`.
- interlock-cb 2.8.2: `call_async` / `call_sync`, and its httpx transports.
- httpx-retries 0.6.0: `RetryTransport` with its default `Retry()`.
"""

from __future__ import annotations

import asyncio
import importlib.util
from datetime import timedelta
from itertools import repeat
from time import perf_counter_ns
from typing import Any

import httpx

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
)

from .harness import Variant

_sleep0 = asyncio.sleep

FAR = 3600.0  # an open period longer than any benchmark run

# Async loops let the event loop run once every YIELD_EVERY calls, identically in every
# variant: a real request always yields, and a loop that never runs would let the
# cancelled deadline timers of the deadline variants pile up in its heap (each push
# then costs more), which no application sees.
YIELD_EVERY = 64

NO_TIMEOUT = CircuitBreakerConfig(timeout=None)
TRIP_FAST = CircuitBreakerConfig(failure_threshold=1, reset_timeout=FAR, timeout=None)
TRIP_FAST_DEADLINE = CircuitBreakerConfig(failure_threshold=1, reset_timeout=FAR)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


PEERS = {
    "circuitbreaker": "circuitbreaker",
    "aiobreaker": "aiobreaker",
    "pybreaker": "pybreaker",
    "purgatory": "purgatory",
    "interlock-cb": "interlock",
    "httpx-retries": "httpx_retries",
}


def missing_peers() -> list[str]:
    return [name for name, module in PEERS.items() if not installed(module)]


# -- the work ----------------------------------------------------------------------


def work_sync() -> int:
    return 1


async def work() -> int:
    return 1


class BareError(Exception):
    pass


def fail_sync() -> int:
    raise ValueError("boom")


async def fail() -> int:
    raise ValueError("boom")


def raise_bare() -> int:
    raise BareError("circuit open")


async def raise_bare_async() -> int:
    raise BareError("circuit open")


# -- loop makers -------------------------------------------------------------------


def _sync_calls(call: Any, fn: Any) -> Any:
    def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n):
            call(fn)
        return perf_counter_ns() - t

    return run


def _sync_rejects(call: Any, fn: Any, exc: type[BaseException]) -> Any:
    def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n):
            try:
                call(fn)
            except exc:
                pass
        return perf_counter_ns() - t

    return run


def _async_calls(call: Any, fn: Any) -> Any:
    async def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                await call(fn)
            await _sleep0(0)
        return perf_counter_ns() - t

    return run


def _async_rejects(call: Any, fn: Any, exc: type[BaseException]) -> Any:
    async def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                try:
                    await call(fn)
                except exc:
                    pass
            await _sleep0(0)
        return perf_counter_ns() - t

    return run


def _sync_direct(fn: Any) -> Any:
    def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n):
            fn()
        return perf_counter_ns() - t

    return run


def _sync_direct_rejects(fn: Any, exc: type[BaseException]) -> Any:
    def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n):
            try:
                fn()
            except exc:
                pass
        return perf_counter_ns() - t

    return run


def _async_direct(fn: Any) -> Any:
    async def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                await fn()
            await _sleep0(0)
        return perf_counter_ns() - t

    return run


def _async_direct_rejects(fn: Any, exc: type[BaseException]) -> Any:
    async def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                try:
                    await fn()
                except exc:
                    pass
            await _sleep0(0)
        return perf_counter_ns() - t

    return run


def _sync_with(cm: Any, fn: Any) -> Any:
    def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n):
            with cm:
                fn()
        return perf_counter_ns() - t

    return run


def _sync_with_rejects(cm: Any, fn: Any, exc: type[BaseException]) -> Any:
    def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n):
            try:
                with cm:
                    fn()
            except exc:
                pass
        return perf_counter_ns() - t

    return run


def _async_with(cm: Any, fn: Any) -> Any:
    async def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                async with cm:
                    await fn()
            await _sleep0(0)
        return perf_counter_ns() - t

    return run


def _async_with_rejects(cm: Any, fn: Any, exc: type[BaseException]) -> Any:
    async def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                try:
                    async with cm:
                        await fn()
                except exc:
                    pass
            await _sleep0(0)
        return perf_counter_ns() - t

    return run


def _trip_sync(call: Any, times: int) -> None:
    for _ in range(times):
        try:
            call(fail_sync)
        except ValueError:
            pass


async def _trip_async(call: Any, times: int) -> None:
    for _ in range(times):
        try:
            await call(fail)
        except ValueError:
            pass


# -- section 1: engine, CLOSED -----------------------------------------------------


async def engine_closed_async() -> list[Variant]:
    v = [
        Variant("direct await", _async_direct(work), "baseline"),
        Variant(
            "httpx-breaker call_async (timeout=None)",
            _async_calls(CircuitBreaker("bench-ea-none", NO_TIMEOUT).call_async, work),
            "ours",
        ),
        Variant(
            "httpx-breaker call_async (default, 10 s deadline)",
            _async_calls(CircuitBreaker("bench-ea-default").call_async, work),
            "ours",
        ),
    ]
    if installed("circuitbreaker"):
        import circuitbreaker

        cb = circuitbreaker.CircuitBreaker(recovery_timeout=FAR, name="bench-ea-cb")
        v.append(Variant("circuitbreaker (decorator)", _async_direct(cb(work))))
    if installed("aiobreaker"):
        import aiobreaker

        ab = aiobreaker.CircuitBreaker(timeout_duration=timedelta(seconds=FAR))
        v.append(Variant("aiobreaker call_async", _async_calls(ab.call_async, work)))
    if installed("purgatory"):
        import purgatory

        factory = purgatory.AsyncCircuitBreakerFactory(default_ttl=FAR)
        brk = await factory.get_breaker("bench-ea-purgatory")
        v.append(Variant("purgatory (async with)", _async_with(brk, work)))
    if installed("interlock"):
        import interlock

        ib = interlock.CircuitBreaker(name="bench-ea-interlock")
        v.append(Variant("interlock-cb call_async", _async_calls(ib.call_async, work)))
    return v


def engine_closed_sync() -> list[Variant]:
    v = [
        Variant("direct call", _sync_direct(work_sync), "baseline"),
        Variant(
            "httpx-breaker call (timeout=None)",
            _sync_calls(CircuitBreaker("bench-es-none", NO_TIMEOUT).call, work_sync),
            "ours",
        ),
        Variant(
            "httpx-breaker call (default, 10 s timeout)",
            _sync_calls(CircuitBreaker("bench-es-default").call, work_sync),
            "ours",
        ),
    ]
    if installed("circuitbreaker"):
        import circuitbreaker

        cb = circuitbreaker.CircuitBreaker(recovery_timeout=FAR, name="bench-es-cb")
        v.append(Variant("circuitbreaker (decorator)", _sync_direct(cb(work_sync))))
    if installed("aiobreaker"):
        import aiobreaker

        ab = aiobreaker.CircuitBreaker(timeout_duration=timedelta(seconds=FAR))
        v.append(Variant("aiobreaker call", _sync_calls(ab.call, work_sync)))
    if installed("pybreaker"):
        import pybreaker

        pb = pybreaker.CircuitBreaker(reset_timeout=FAR)
        v.append(Variant("pybreaker call", _sync_calls(pb.call, work_sync)))
    if installed("purgatory"):
        import purgatory

        sync_factory = purgatory.SyncCircuitBreakerFactory(default_ttl=FAR)
        v.append(
            Variant(
                "purgatory (with)",
                _sync_with(sync_factory.get_breaker("bench-es-purgatory"), work_sync),
            )
        )
    if installed("interlock"):
        import interlock

        ib = interlock.CircuitBreaker(name="bench-es-interlock")
        v.append(Variant("interlock-cb call_sync", _sync_calls(ib.call_sync, work_sync)))
    return v


# -- section 2: engine, OPEN -------------------------------------------------------


def _interlock_open(name: str) -> Any:
    import interlock

    return interlock.CircuitBreaker(
        name=name, config=interlock.Config(wait_duration_in_open=FAR)
    )


async def engine_open_async() -> list[Variant]:
    ours = CircuitBreaker("bench-oa", TRIP_FAST)
    await _trip_async(ours.call_async, 1)
    assert ours.state is CircuitState.OPEN
    v = [
        Variant("bare raise + catch (awaited)", _async_direct_rejects(raise_bare_async, BareError), "baseline"),
        Variant(
            "httpx-breaker call_async rejected",
            _async_rejects(ours.call_async, work, CircuitOpenError),
            "ours",
        ),
    ]
    if installed("circuitbreaker"):
        import circuitbreaker

        cb = circuitbreaker.CircuitBreaker(recovery_timeout=FAR, name="bench-oa-cb")
        failing = cb(fail)
        await _trip_async(lambda _fn: failing(), 5)
        assert cb.opened
        v.append(
            Variant(
                "circuitbreaker rejected",
                _async_direct_rejects(cb(work), circuitbreaker.CircuitBreakerError),
            )
        )
    if installed("aiobreaker"):
        import aiobreaker

        ab = aiobreaker.CircuitBreaker(timeout_duration=timedelta(seconds=FAR))
        ab.open()
        v.append(
            Variant(
                "aiobreaker rejected",
                _async_rejects(ab.call_async, work, aiobreaker.CircuitBreakerError),
            )
        )
    if installed("purgatory"):
        import purgatory
        from purgatory.domain.model import OpenedState

        factory = purgatory.AsyncCircuitBreakerFactory(default_ttl=FAR)
        brk = await factory.get_breaker("bench-oa-purgatory")
        for _ in range(5):
            try:
                async with brk:
                    raise ValueError("boom")
            except ValueError:
                pass
        v.append(Variant("purgatory rejected", _async_with_rejects(brk, work, OpenedState)))
    if installed("interlock"):
        import interlock

        ib = _interlock_open("bench-oa-interlock")
        await _trip_async(ib.call_async, 10)
        assert ib.state is interlock.State.OPEN, ib.state
        v.append(
            Variant(
                "interlock-cb rejected",
                _async_rejects(ib.call_async, work, interlock.CircuitOpenError),
            )
        )
    return v


def engine_open_sync() -> list[Variant]:
    ours = CircuitBreaker("bench-os", TRIP_FAST)
    _trip_sync(ours.call, 1)
    assert ours.state is CircuitState.OPEN
    v = [
        Variant("bare raise + catch", _sync_direct_rejects(raise_bare, BareError), "baseline"),
        Variant(
            "httpx-breaker call rejected",
            _sync_rejects(ours.call, work_sync, CircuitOpenError),
            "ours",
        ),
    ]
    if installed("circuitbreaker"):
        import circuitbreaker

        cb = circuitbreaker.CircuitBreaker(recovery_timeout=FAR, name="bench-os-cb")
        failing = cb(fail_sync)
        _trip_sync(lambda _fn: failing(), 5)
        assert cb.opened
        v.append(
            Variant(
                "circuitbreaker rejected",
                _sync_direct_rejects(cb(work_sync), circuitbreaker.CircuitBreakerError),
            )
        )
    if installed("aiobreaker"):
        import aiobreaker

        ab = aiobreaker.CircuitBreaker(timeout_duration=timedelta(seconds=FAR))
        ab.open()
        v.append(
            Variant(
                "aiobreaker rejected",
                _sync_rejects(ab.call, work_sync, aiobreaker.CircuitBreakerError),
            )
        )
    if installed("pybreaker"):
        import pybreaker

        pb = pybreaker.CircuitBreaker(reset_timeout=FAR)
        pb.open()
        v.append(
            Variant(
                "pybreaker rejected",
                _sync_rejects(pb.call, work_sync, pybreaker.CircuitBreakerError),
            )
        )
    if installed("purgatory"):
        import purgatory
        from purgatory.domain.model import OpenedState

        sync_factory = purgatory.SyncCircuitBreakerFactory(default_ttl=FAR)
        brk = sync_factory.get_breaker("bench-os-purgatory")
        for _ in range(5):
            try:
                with brk:
                    raise ValueError("boom")
            except ValueError:
                pass
        v.append(Variant("purgatory rejected", _sync_with_rejects(brk, work_sync, OpenedState)))
    if installed("interlock"):
        import interlock

        ib = _interlock_open("bench-os-interlock")
        _trip_sync(ib.call_sync, 10)
        assert ib.state is interlock.State.OPEN, ib.state
        v.append(
            Variant(
                "interlock-cb rejected",
                _sync_rejects(ib.call_sync, work_sync, interlock.CircuitOpenError),
            )
        )
    return v


# -- sections 3 and 4: transports --------------------------------------------------


class InnerAsync(httpx.AsyncBaseTransport):
    """Returns a fresh, cheap response each call (status settable to trip breakers).

    `stream=ByteStream(b"")` rather than `content=b""`: the same empty body for a
    seventh of the cost (no body encoding, no Content-Length header), so the floor
    the overheads are measured against is as low, and as steady, as it can be.
    """

    status = 200

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(self.status, stream=httpx.ByteStream(b""))


class InnerSync(httpx.BaseTransport):
    status = 200

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(self.status, stream=httpx.ByteStream(b""))


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


class RaisingAsync(httpx.AsyncBaseTransport):
    """The rejection baseline: a transport that fails at once with a TransportError."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)


class RaisingSync(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)


URL = "http://bench.test/"


def _request() -> httpx.Request:
    return httpx.Request("GET", URL)


def _async_requests(transport: httpx.AsyncBaseTransport) -> Any:
    handle = transport.handle_async_request
    request = _request()

    async def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                response = await handle(request)
                await response.aclose()
            await _sleep0(0)
        return perf_counter_ns() - t

    return run


def _async_rejected_requests(transport: httpx.AsyncBaseTransport) -> Any:
    handle = transport.handle_async_request
    request = _request()

    async def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                try:
                    response = await handle(request)
                    await response.aclose()
                except httpx.TransportError:
                    pass
            await _sleep0(0)
        return perf_counter_ns() - t

    return run


def _sync_requests(transport: httpx.BaseTransport) -> Any:
    handle = transport.handle_request
    request = _request()

    def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n):
            response = handle(request)
            response.close()
        return perf_counter_ns() - t

    return run


def _sync_rejected_requests(transport: httpx.BaseTransport) -> Any:
    handle = transport.handle_request
    request = _request()

    def run(n: int) -> int:
        t = perf_counter_ns()
        for _ in repeat(None, n):
            try:
                response = handle(request)
                response.close()
            except httpx.TransportError:
                pass
        return perf_counter_ns() - t

    return run


async def transport_closed_async() -> list[Variant]:
    inner = InnerAsync()
    v = [
        Variant("pass-through wrapper (floor)", _async_requests(PassAsync(inner)), "baseline"),
        Variant(
            "httpx-breaker (timeout=None)",
            _async_requests(AsyncCircuitBreakerTransport(inner, default=NO_TIMEOUT)),
            "ours",
        ),
        Variant(
            "httpx-breaker (default, 10 s deadline)",
            _async_requests(AsyncCircuitBreakerTransport(inner)),
            "ours",
        ),
    ]
    if installed("interlock"):
        from interlock.integrations.httpx import AsyncCircuitBreakerTransport as ITransport

        v.append(Variant("interlock-cb AsyncCircuitBreakerTransport", _async_requests(ITransport(inner))))
    if installed("httpx_retries"):
        from httpx_retries import RetryTransport

        v.append(Variant("httpx-retries RetryTransport", _async_requests(RetryTransport(inner))))
    return v


def transport_closed_sync() -> list[Variant]:
    inner = InnerSync()
    v = [
        Variant("pass-through wrapper (floor)", _sync_requests(PassSync(inner)), "baseline"),
        Variant(
            "httpx-breaker (timeout=None)",
            _sync_requests(CircuitBreakerTransport(inner, default=NO_TIMEOUT)),
            "ours",
        ),
        Variant(
            "httpx-breaker (default, 10 s timeout)",
            _sync_requests(CircuitBreakerTransport(inner)),
            "ours",
        ),
    ]
    if installed("interlock"):
        from interlock.integrations.httpx import CircuitBreakerTransport as ITransport

        v.append(Variant("interlock-cb CircuitBreakerTransport", _sync_requests(ITransport(inner))))
    if installed("httpx_retries"):
        from httpx_retries import RetryTransport

        v.append(Variant("httpx-retries RetryTransport", _sync_requests(RetryTransport(inner))))
    return v


async def _trip_transport_async(transport: httpx.AsyncBaseTransport, inner: InnerAsync, times: int) -> None:
    inner.status = 503
    for _ in range(times):
        response = await transport.handle_async_request(_request())
        await response.aclose()
    inner.status = 200


def _trip_transport_sync(transport: httpx.BaseTransport, inner: InnerSync, times: int) -> None:
    inner.status = 503
    for _ in range(times):
        transport.handle_request(_request()).close()
    inner.status = 200


async def transport_open_async() -> list[Variant]:
    v = [Variant("bare raising transport + catch", _async_rejected_requests(RaisingAsync()), "baseline")]
    for label, config in (("timeout=None", TRIP_FAST), ("default deadline", TRIP_FAST_DEADLINE)):
        inner = InnerAsync()
        ours = AsyncCircuitBreakerTransport(inner, default=config)
        await _trip_transport_async(ours, inner, 1)
        assert ours.registry["bench.test"].state is CircuitState.OPEN
        v.append(Variant(f"httpx-breaker rejected ({label})", _async_rejected_requests(ours), "ours"))
    if installed("interlock"):
        import interlock
        from interlock.integrations.httpx import AsyncCircuitBreakerTransport as ITransport

        inner = InnerAsync()
        theirs = ITransport(inner, config=interlock.Config(wait_duration_in_open=FAR))
        await _trip_transport_async(theirs, inner, 10)
        assert theirs.registry.get("bench.test").state is interlock.State.OPEN
        v.append(Variant("interlock-cb rejected", _async_rejected_requests(theirs)))
    return v


def transport_open_sync() -> list[Variant]:
    v = [Variant("bare raising transport + catch", _sync_rejected_requests(RaisingSync()), "baseline")]
    for label, config in (("timeout=None", TRIP_FAST), ("default timeout", TRIP_FAST_DEADLINE)):
        inner = InnerSync()
        ours = CircuitBreakerTransport(inner, default=config)
        _trip_transport_sync(ours, inner, 1)
        assert ours.registry["bench.test"].state is CircuitState.OPEN
        v.append(Variant(f"httpx-breaker rejected ({label})", _sync_rejected_requests(ours), "ours"))
    if installed("interlock"):
        import interlock
        from interlock.integrations.httpx import CircuitBreakerTransport as ITransport

        inner = InnerSync()
        theirs = ITransport(inner, config=interlock.Config(wait_duration_in_open=FAR))
        _trip_transport_sync(theirs, inner, 10)
        assert theirs.registry.get("bench.test").state is interlock.State.OPEN
        v.append(Variant("interlock-cb rejected", _sync_rejected_requests(theirs)))
    return v
