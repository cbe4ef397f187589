# The timing loops catch inside the loop on purpose: raise + catch is what they measure,
# and contextlib.suppress would add its own cost to every iteration.
# ruff: noqa: PERF203, SIM105
"""The variants: ours, their floors and the peers, for each runtime (asyncio, sync, trio).

Each runner is written out as its own loop, so that every variant pays exactly the
loop, the work and its own wrapper, nothing shared through an extra call. Every variant
names its floor (the bare baseline it is compared with, measured in the same round).

Two sets: the *hot path* rows (`python -m benchmarks hotpath`: ours and their floors,
what issue 12 measures) and, in a full run, the peers and a few more of ours on top.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import repeat
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

from .harness import YIELD_EVERY, Check, Variant, clock
from .transports import (
    BODY,
    KEY,
    InnerAsync,
    InnerSync,
    PassAsync,
    PassSync,
    RaisingAsync,
    RaisingSync,
    ScopedPassTrio,
    TracingInnerAsync,
    make_request,
    trip_async,
    trip_sync,
)

FAR = 3600.0  # an open period longer than any benchmark run
DEADLINE = 10.0  # the `timeout` of the deadline rows: never reached
BULKHEAD = 100  # `max_concurrent` of the bulkhead row: never reached (uncontended)

TRIP_FAST = CircuitBreakerConfig(failure_threshold=1, reset_timeout=FAR)
WITH_DEADLINE = CircuitBreakerConfig(timeout=DEADLINE)

Pause = Callable[[], Awaitable[Any]]  # lets the event loop run once


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


@dataclass
class Built:
    """What a runtime's builder returns: the variants, and the rows it could not make."""

    variants: list[Variant] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *variants: Variant) -> None:
        self.variants.extend(variants)


def bulkhead_config() -> tuple[CircuitBreakerConfig | None, str]:
    """`CircuitBreakerConfig(max_concurrent=BULKHEAD)`, or None and why not."""
    try:
        return CircuitBreakerConfig(max_concurrent=BULKHEAD), ""
    except TypeError as exc:
        return None, (
            "skipped: CircuitBreakerConfig has no `max_concurrent` field yet "
            f"(issue 13, the bulkhead, adds it; {exc})"
        )


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


# -- checks --------------------------------------------------------------------------


_IN_FLIGHT = ("in_flight", "in_flight_requests", "concurrent_requests")


def _metrics_of(get_breaker: Callable[[], CircuitBreaker]) -> Any | None:
    try:
        return get_breaker().get_metrics()
    except KeyError:
        return None


def counts(
    get_breaker: Callable[[], CircuitBreaker],
    counter: str,
    request: httpx.Request | None = None,
) -> Check:
    """Check that the breaker counted exactly one `counter` per call (warm-up included),
    that nothing is left in flight, and that `request.extensions` was left as given.
    """
    before = _metrics_of(get_breaker)
    offset = getattr(before, counter) if before is not None else 0
    extensions = dict(request.extensions) if request is not None else None

    def check(calls: int) -> list[str]:
        problems = []
        metrics = _metrics_of(get_breaker)
        got = (getattr(metrics, counter) if metrics is not None else 0) - offset
        if got != calls:
            problems.append(f"{calls} calls made, but the breaker counted {got} {counter}")
        for name in _IN_FLIGHT:
            left = getattr(metrics, name, 0)
            if left:
                problems.append(f"{left} still {name} after every response was closed")
        if request is not None and extensions is not None:
            now = request.extensions
            added = sorted(set(now) - set(extensions))
            changed = sorted(k for k in extensions if k not in now or now[k] is not extensions[k])
            if added or changed:
                problems.append(
                    "the transport left request.extensions changed "
                    f"(added {added}, changed or removed {changed}): "
                    "a request sent again (a retry) would see it"
                )
        return problems

    return check


def _in_registry(transport: Any, key: str = KEY) -> Callable[[], CircuitBreaker]:
    return lambda: transport.registry[key]


# -- loop makers: async (asyncio or trio, through `pause`) ---------------------------


def a_calls(call: Any, fn: Any, pause: Pause) -> Any:
    async def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                await call(fn)
            await pause()
        return clock() - t

    return run


def a_rejects(call: Any, fn: Any, exc: type[BaseException], pause: Pause) -> Any:
    async def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                try:
                    await call(fn)
                except exc:
                    pass
            await pause()
        return clock() - t

    return run


def a_direct(fn: Any, pause: Pause) -> Any:
    async def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                await fn()
            await pause()
        return clock() - t

    return run


def a_direct_rejects(fn: Any, exc: type[BaseException], pause: Pause) -> Any:
    async def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                try:
                    await fn()
                except exc:
                    pass
            await pause()
        return clock() - t

    return run


def a_with(cm: Any, fn: Any, pause: Pause) -> Any:
    async def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                async with cm:
                    await fn()
            await pause()
        return clock() - t

    return run


def a_with_rejects(cm: Any, fn: Any, exc: type[BaseException], pause: Pause) -> Any:
    async def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                try:
                    async with cm:
                        await fn()
                except exc:
                    pass
            await pause()
        return clock() - t

    return run


def a_requests(transport: httpx.AsyncBaseTransport, request: httpx.Request, pause: Pause) -> Any:
    """Request, then close the response unread (the outcome is recorded at close)."""
    handle = transport.handle_async_request

    async def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                response = await handle(request)
                await response.aclose()
            await pause()
        return clock() - t

    return run


def a_requests_read(
    transport: httpx.AsyncBaseTransport, request: httpx.Request, pause: Pause
) -> Any:
    """Request, then read the body with `aread()` (iterates the stream, then closes it):
    what `client.get()` does with every response that is not streamed.
    """
    handle = transport.handle_async_request

    async def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                response = await handle(request)
                await response.aread()
            await pause()
        return clock() - t

    return run


def a_rejected_requests(
    transport: httpx.AsyncBaseTransport, request: httpx.Request, pause: Pause
) -> Any:
    handle = transport.handle_async_request

    async def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n // YIELD_EVERY):
            for _ in repeat(None, YIELD_EVERY):
                try:
                    response = await handle(request)
                    await response.aclose()
                except httpx.TransportError:
                    pass
            await pause()
        return clock() - t

    return run


# -- loop makers: sync -----------------------------------------------------------------


def s_calls(call: Any, fn: Any) -> Any:
    def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n):
            call(fn)
        return clock() - t

    return run


def s_rejects(call: Any, fn: Any, exc: type[BaseException]) -> Any:
    def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n):
            try:
                call(fn)
            except exc:
                pass
        return clock() - t

    return run


def s_direct(fn: Any) -> Any:
    def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n):
            fn()
        return clock() - t

    return run


def s_direct_rejects(fn: Any, exc: type[BaseException]) -> Any:
    def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n):
            try:
                fn()
            except exc:
                pass
        return clock() - t

    return run


def s_with(cm: Any, fn: Any) -> Any:
    def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n):
            with cm:
                fn()
        return clock() - t

    return run


def s_with_rejects(cm: Any, fn: Any, exc: type[BaseException]) -> Any:
    def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n):
            try:
                with cm:
                    fn()
            except exc:
                pass
        return clock() - t

    return run


def s_requests(transport: httpx.BaseTransport, request: httpx.Request) -> Any:
    handle = transport.handle_request

    def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n):
            response = handle(request)
            response.close()
        return clock() - t

    return run


def s_rejected_requests(transport: httpx.BaseTransport, request: httpx.Request) -> Any:
    handle = transport.handle_request

    def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n):
            try:
                response = handle(request)
                response.close()
            except httpx.TransportError:
                pass
        return clock() - t

    return run


def _trip_engine_sync(call: Any, times: int) -> None:
    for _ in range(times):
        try:
            call(fail_sync)
        except ValueError:
            pass


async def _trip_engine_async(call: Any, times: int) -> None:
    for _ in range(times):
        try:
            await call(fail)
        except ValueError:
            pass


# -- async transport rows, shared by asyncio and trio ------------------------------------


def _transport_row(
    key: str,
    name: str,
    transport: AsyncCircuitBreakerTransport,
    floor: str,
    table: str,
    pause: Pause,
    *,
    read: bool = False,
    note: str = "",
) -> Variant:
    request = make_request()
    loop = a_requests_read if read else a_requests
    return Variant(
        key,
        name,
        loop(transport, request, pause),
        "ours",
        floor,
        table,
        note,
        counts(_in_registry(transport), "successful_requests", request),
    )


def _async_transport_rows(built: Built, pause: Pause, table: str, prefix: str = "") -> None:
    """The CLOSED rows of the async transport, with and without a deadline, over a
    transport that does not trace and over one that traces like httpcore.
    """
    plain, traced = InnerAsync(), TracingInnerAsync()
    p = prefix
    built.add(
        Variant(
            f"{p}floor",
            "pass-through wrapper (floor)",
            a_requests(PassAsync(plain), make_request(), pause),
            "baseline",
            table=table,
        ),
        Variant(
            f"{p}floor_again",
            "pass-through wrapper again (A/A: what this run tells from zero)",
            a_requests(PassAsync(plain), make_request(), pause),
            "reference",
            f"{p}floor",
            table,
            "the floor measured against itself: its spread is the run's resolution",
        ),
        Variant(
            f"{p}floor_traced",
            "pass-through wrapper over the tracing transport (floor)",
            a_requests(PassAsync(traced), make_request(), pause),
            "baseline",
            table=table,
        ),
        _transport_row(
            f"{p}transport_closed",
            "httpx-breaker, default config (no deadline)",
            AsyncCircuitBreakerTransport(plain),
            f"{p}floor",
            table,
            pause,
        ),
        _transport_row(
            f"{p}transport_closed_traced",
            "httpx-breaker, default config, over the tracing transport",
            AsyncCircuitBreakerTransport(traced),
            f"{p}floor_traced",
            table,
            pause,
            note="no deadline, so no trace hook is needed: should match the row above",
        ),
        _transport_row(
            f"{p}transport_deadline",
            f"httpx-breaker, timeout={DEADLINE:g} (inner transport does not trace)",
            AsyncCircuitBreakerTransport(plain, default=WITH_DEADLINE),
            f"{p}floor",
            table,
            pause,
            note="the deadline itself",
        ),
        _transport_row(
            f"{p}transport_deadline_traced",
            f"httpx-breaker, timeout={DEADLINE:g}, over the tracing transport",
            AsyncCircuitBreakerTransport(traced, default=WITH_DEADLINE),
            f"{p}floor_traced",
            table,
            pause,
            note="the deadline with the pooled-connection wait kept outside it (once "
            "the transport starts it from httpcore's trace hook)",
        ),
    )


# -- asyncio -------------------------------------------------------------------------


async def _pause_asyncio() -> None:
    await asyncio.sleep(0)


async def asyncio_variants(full: bool) -> Built:
    """The asyncio section: hot path rows, plus the peers when `full`."""
    pause = _pause_asyncio
    built = Built()
    _async_transport_rows(built, pause, "transport_async")

    config, why = bulkhead_config()
    if config is None:
        built.skipped.append(
            {
                "key": "transport_bulkhead",
                "name": f"httpx-breaker, max_concurrent={BULKHEAD}",
                "why": why,
            }
        )
    else:
        built.add(
            _transport_row(
                "transport_bulkhead",
                f"httpx-breaker, max_concurrent={BULKHEAD} (uncontended)",
                AsyncCircuitBreakerTransport(InnerAsync(), default=config),
                "floor",
                "transport_async",
                pause,
            )
        )

    body_inner = InnerAsync(BODY)
    built.add(
        Variant(
            "floor_body",
            "pass-through wrapper, body read (floor)",
            a_requests_read(PassAsync(body_inner), make_request(), pause),
            "baseline",
            table="transport_body_async",
        ),
        _transport_row(
            "transport_body",
            "httpx-breaker, default config, body read",
            AsyncCircuitBreakerTransport(body_inner),
            "floor_body",
            "transport_body_async",
            pause,
            read=True,
        ),
    )

    # Rejection while OPEN, over a transport that fails at once.
    inner = InnerAsync()
    ours = AsyncCircuitBreakerTransport(inner, default=TRIP_FAST)
    await trip_async(ours, inner, 1)
    assert ours.registry[KEY].state is CircuitState.OPEN
    request = make_request()
    built.add(
        Variant(
            "floor_raising",
            "raising transport + catch (floor)",
            a_rejected_requests(RaisingAsync(), make_request(), pause),
            "baseline",
            table="transport_open_async",
        ),
        Variant(
            "transport_rejected",
            "httpx-breaker rejected (OPEN)",
            a_rejected_requests(ours, request, pause),
            "ours",
            "floor_raising",
            "transport_open_async",
            check=counts(_in_registry(ours), "rejected_requests", request),
        ),
    )

    breaker = CircuitBreaker("bench-call-async")
    built.add(
        Variant(
            "floor_await",
            "direct await (floor)",
            a_direct(work, pause),
            "baseline",
            table="engine_closed_async",
        ),
        Variant(
            "call_async",
            "httpx-breaker call_async, default config",
            a_calls(breaker.call_async, work, pause),
            "ours",
            "floor_await",
            "engine_closed_async",
            check=counts(lambda: breaker, "successful_requests"),
        ),
    )
    if full:
        await _asyncio_full(built, pause)
    return built


async def _asyncio_full(built: Built, pause: Pause) -> None:
    """Peers, and the rows of ours that only the full run compares."""
    deadline = CircuitBreaker("bench-call-async-deadline", WITH_DEADLINE)
    built.add(
        Variant(
            "call_async_deadline",
            f"httpx-breaker call_async, timeout={DEADLINE:g}",
            a_calls(deadline.call_async, work, pause),
            "ours",
            "floor_await",
            "engine_closed_async",
            check=counts(lambda: deadline, "successful_requests"),
        )
    )
    plain = InnerAsync()
    if installed("interlock"):
        from interlock.integrations.httpx import AsyncCircuitBreakerTransport as ITransport

        built.add(
            Variant(
                "interlock_transport_async",
                "interlock-cb AsyncCircuitBreakerTransport",
                a_requests(ITransport(plain), make_request(), pause),
                floor="floor",
                table="transport_async",
            )
        )
    if installed("httpx_retries"):
        from httpx_retries import RetryTransport

        built.add(
            Variant(
                "retries_transport_async",
                "httpx-retries RetryTransport",
                a_requests(RetryTransport(plain), make_request(), pause),
                floor="floor",
                table="transport_async",
            )
        )
    if installed("interlock"):
        import interlock
        from interlock.integrations.httpx import AsyncCircuitBreakerTransport as ITransport

        inner = InnerAsync()
        theirs = ITransport(inner, config=interlock.Config(wait_duration_in_open=FAR))
        await trip_async(theirs, inner, 10)
        assert theirs.registry.get(KEY).state is interlock.State.OPEN
        built.add(
            Variant(
                "interlock_transport_rejected_async",
                "interlock-cb rejected",
                a_rejected_requests(theirs, make_request(), pause),
                floor="floor_raising",
                table="transport_open_async",
            )
        )

    # Engine, CLOSED.
    t = "engine_closed_async"
    if installed("circuitbreaker"):
        import circuitbreaker

        cb = circuitbreaker.CircuitBreaker(recovery_timeout=FAR, name="bench-ea-cb")
        built.add(
            Variant(
                "circuitbreaker_async",
                "circuitbreaker (decorator)",
                a_direct(cb(work), pause),
                floor="floor_await",
                table=t,
            )
        )
    if installed("aiobreaker"):
        import aiobreaker

        ab = aiobreaker.CircuitBreaker(timeout_duration=timedelta(seconds=FAR))
        built.add(
            Variant(
                "aiobreaker_async",
                "aiobreaker call_async",
                a_calls(ab.call_async, work, pause),
                floor="floor_await",
                table=t,
            )
        )
    if installed("purgatory"):
        import purgatory

        factory = purgatory.AsyncCircuitBreakerFactory(default_ttl=FAR)
        brk = await factory.get_breaker("bench-ea-purgatory")
        built.add(
            Variant(
                "purgatory_async",
                "purgatory (async with)",
                a_with(brk, work, pause),
                floor="floor_await",
                table=t,
            )
        )
    if installed("interlock"):
        import interlock

        ib = interlock.CircuitBreaker(name="bench-ea-interlock")
        built.add(
            Variant(
                "interlock_async",
                "interlock-cb call_async",
                a_calls(ib.call_async, work, pause),
                floor="floor_await",
                table=t,
            )
        )

    # Engine, OPEN.
    t = "engine_open_async"
    ours = CircuitBreaker("bench-oa", TRIP_FAST)
    await _trip_engine_async(ours.call_async, 1)
    assert ours.state is CircuitState.OPEN
    built.add(
        Variant(
            "floor_await_raise",
            "awaited bare raise + catch (floor)",
            a_direct_rejects(raise_bare_async, BareError, pause),
            "baseline",
            table=t,
        ),
        Variant(
            "call_async_rejected",
            "httpx-breaker call_async rejected",
            a_rejects(ours.call_async, work, CircuitOpenError, pause),
            "ours",
            "floor_await_raise",
            t,
            check=counts(lambda: ours, "rejected_requests"),
        ),
    )
    if installed("circuitbreaker"):
        import circuitbreaker

        cb = circuitbreaker.CircuitBreaker(recovery_timeout=FAR, name="bench-oa-cb")
        failing = cb(fail)
        await _trip_engine_async(lambda _fn: failing(), 5)
        assert cb.opened
        built.add(
            Variant(
                "circuitbreaker_rejected_async",
                "circuitbreaker rejected",
                a_direct_rejects(cb(work), circuitbreaker.CircuitBreakerError, pause),
                floor="floor_await_raise",
                table=t,
            )
        )
    if installed("aiobreaker"):
        import aiobreaker

        ab = aiobreaker.CircuitBreaker(timeout_duration=timedelta(seconds=FAR))
        ab.open()
        built.add(
            Variant(
                "aiobreaker_rejected_async",
                "aiobreaker rejected",
                a_rejects(ab.call_async, work, aiobreaker.CircuitBreakerError, pause),
                floor="floor_await_raise",
                table=t,
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
        built.add(
            Variant(
                "purgatory_rejected_async",
                "purgatory rejected",
                a_with_rejects(brk, work, OpenedState, pause),
                floor="floor_await_raise",
                table=t,
            )
        )
    if installed("interlock"):
        import interlock

        ib = interlock.CircuitBreaker(
            name="bench-oa-interlock", config=interlock.Config(wait_duration_in_open=FAR)
        )
        await _trip_engine_async(ib.call_async, 10)
        assert ib.state is interlock.State.OPEN, ib.state
        built.add(
            Variant(
                "interlock_rejected_async",
                "interlock-cb rejected",
                a_rejects(ib.call_async, work, interlock.CircuitOpenError, pause),
                floor="floor_await_raise",
                table=t,
            )
        )


# -- trio --------------------------------------------------------------------------------


async def trio_variants(full: bool) -> Built:
    """The trio section (run inside `trio.run`): the async transport with and without a
    deadline, and trio's own cancel scope around the floor as the reference.
    """
    import trio

    pause = trio.lowlevel.checkpoint
    built = Built()
    _async_transport_rows(built, pause, "transport_trio", "trio_")
    built.add(
        Variant(
            "trio_cancel_scope",
            f"trio.CancelScope(deadline=now+{DEADLINE:g}) around the floor (reference)",
            a_requests(ScopedPassTrio(PassAsync(InnerAsync()), DEADLINE), make_request(), pause),
            "reference",
            "trio_floor",
            "transport_trio",
            "what any deadline under trio costs at least",
        )
    )
    return built


# -- sync --------------------------------------------------------------------------------


def sync_variants(full: bool) -> Built:
    built = Built()
    inner = InnerSync()
    ours = CircuitBreakerTransport(inner)
    request = make_request()
    breaker = CircuitBreaker("bench-call")
    built.add(
        Variant(
            "sync_floor",
            "pass-through wrapper (floor)",
            s_requests(PassSync(inner), make_request()),
            "baseline",
            table="transport_sync",
        ),
        Variant(
            "sync_transport_closed",
            "httpx-breaker, default config (no deadline)",
            s_requests(ours, request),
            "ours",
            "sync_floor",
            "transport_sync",
            check=counts(_in_registry(ours), "successful_requests", request),
        ),
        Variant(
            "sync_floor_again",
            "pass-through wrapper again (A/A: what this run tells from zero)",
            s_requests(PassSync(inner), make_request()),
            "reference",
            "sync_floor",
            "transport_sync",
            "the floor measured against itself: its spread is the run's resolution",
        ),
        Variant(
            "direct_call",
            "direct call (floor)",
            s_direct(work_sync),
            "baseline",
            table="engine_closed_sync",
        ),
        Variant(
            "call",
            "httpx-breaker call, default config",
            s_calls(breaker.call, work_sync),
            "ours",
            "direct_call",
            "engine_closed_sync",
            check=counts(lambda: breaker, "successful_requests"),
        ),
    )
    if full:
        _sync_full(built, inner)
    return built


def _sync_full(built: Built, inner: InnerSync) -> None:
    deadline = CircuitBreakerTransport(inner, default=WITH_DEADLINE)
    request = make_request()
    built.add(
        Variant(
            "sync_transport_deadline",
            f"httpx-breaker, timeout={DEADLINE:g} (caps httpx's timeouts)",
            s_requests(deadline, request),
            "ours",
            "sync_floor",
            "transport_sync",
            check=counts(_in_registry(deadline), "successful_requests"),
        )
    )
    if installed("interlock"):
        from interlock.integrations.httpx import CircuitBreakerTransport as ITransport

        built.add(
            Variant(
                "interlock_transport_sync",
                "interlock-cb CircuitBreakerTransport",
                s_requests(ITransport(inner), make_request()),
                floor="sync_floor",
                table="transport_sync",
            )
        )
    if installed("httpx_retries"):
        from httpx_retries import RetryTransport

        built.add(
            Variant(
                "retries_transport_sync",
                "httpx-retries RetryTransport",
                s_requests(RetryTransport(inner), make_request()),
                floor="sync_floor",
                table="transport_sync",
            )
        )

    # Transport, OPEN.
    t = "transport_open_sync"
    tripped = InnerSync()
    ours = CircuitBreakerTransport(tripped, default=TRIP_FAST)
    trip_sync(ours, tripped, 1)
    assert ours.registry[KEY].state is CircuitState.OPEN
    request = make_request()
    built.add(
        Variant(
            "sync_floor_raising",
            "raising transport + catch (floor)",
            s_rejected_requests(RaisingSync(), make_request()),
            "baseline",
            table=t,
        ),
        Variant(
            "sync_transport_rejected",
            "httpx-breaker rejected (OPEN)",
            s_rejected_requests(ours, request),
            "ours",
            "sync_floor_raising",
            t,
            check=counts(_in_registry(ours), "rejected_requests", request),
        ),
    )
    if installed("interlock"):
        import interlock
        from interlock.integrations.httpx import CircuitBreakerTransport as ITransport

        tripped = InnerSync()
        theirs = ITransport(tripped, config=interlock.Config(wait_duration_in_open=FAR))
        trip_sync(theirs, tripped, 10)
        assert theirs.registry.get(KEY).state is interlock.State.OPEN
        built.add(
            Variant(
                "interlock_transport_rejected_sync",
                "interlock-cb rejected",
                s_rejected_requests(theirs, make_request()),
                floor="sync_floor_raising",
                table=t,
            )
        )

    # Engine, CLOSED.
    t = "engine_closed_sync"
    if installed("circuitbreaker"):
        import circuitbreaker

        cb = circuitbreaker.CircuitBreaker(recovery_timeout=FAR, name="bench-es-cb")
        built.add(
            Variant(
                "circuitbreaker_sync",
                "circuitbreaker (decorator)",
                s_direct(cb(work_sync)),
                floor="direct_call",
                table=t,
            )
        )
    if installed("aiobreaker"):
        import aiobreaker

        ab = aiobreaker.CircuitBreaker(timeout_duration=timedelta(seconds=FAR))
        built.add(
            Variant(
                "aiobreaker_sync",
                "aiobreaker call",
                s_calls(ab.call, work_sync),
                floor="direct_call",
                table=t,
            )
        )
    if installed("pybreaker"):
        import pybreaker

        pb = pybreaker.CircuitBreaker(reset_timeout=FAR)
        built.add(
            Variant(
                "pybreaker_sync",
                "pybreaker call",
                s_calls(pb.call, work_sync),
                floor="direct_call",
                table=t,
            )
        )
    if installed("purgatory"):
        import purgatory

        factory = purgatory.SyncCircuitBreakerFactory(default_ttl=FAR)
        built.add(
            Variant(
                "purgatory_sync",
                "purgatory (with)",
                s_with(factory.get_breaker("bench-es-purgatory"), work_sync),
                floor="direct_call",
                table=t,
            )
        )
    if installed("interlock"):
        import interlock

        ib = interlock.CircuitBreaker(name="bench-es-interlock")
        built.add(
            Variant(
                "interlock_sync",
                "interlock-cb call_sync",
                s_calls(ib.call_sync, work_sync),
                floor="direct_call",
                table=t,
            )
        )

    # Engine, OPEN.
    t = "engine_open_sync"
    engine = CircuitBreaker("bench-os", TRIP_FAST)
    _trip_engine_sync(engine.call, 1)
    assert engine.state is CircuitState.OPEN
    built.add(
        Variant(
            "bare_raise",
            "bare raise + catch (floor)",
            s_direct_rejects(raise_bare, BareError),
            "baseline",
            table=t,
        ),
        Variant(
            "call_rejected",
            "httpx-breaker call rejected",
            s_rejects(engine.call, work_sync, CircuitOpenError),
            "ours",
            "bare_raise",
            t,
            check=counts(lambda: engine, "rejected_requests"),
        ),
    )
    if installed("circuitbreaker"):
        import circuitbreaker

        cb = circuitbreaker.CircuitBreaker(recovery_timeout=FAR, name="bench-os-cb")
        failing = cb(fail_sync)
        _trip_engine_sync(lambda _fn: failing(), 5)
        assert cb.opened
        built.add(
            Variant(
                "circuitbreaker_rejected_sync",
                "circuitbreaker rejected",
                s_direct_rejects(cb(work_sync), circuitbreaker.CircuitBreakerError),
                floor="bare_raise",
                table=t,
            )
        )
    if installed("aiobreaker"):
        import aiobreaker

        ab = aiobreaker.CircuitBreaker(timeout_duration=timedelta(seconds=FAR))
        ab.open()
        built.add(
            Variant(
                "aiobreaker_rejected_sync",
                "aiobreaker rejected",
                s_rejects(ab.call, work_sync, aiobreaker.CircuitBreakerError),
                floor="bare_raise",
                table=t,
            )
        )
    if installed("pybreaker"):
        import pybreaker

        pb = pybreaker.CircuitBreaker(reset_timeout=FAR)
        pb.open()
        built.add(
            Variant(
                "pybreaker_rejected_sync",
                "pybreaker rejected",
                s_rejects(pb.call, work_sync, pybreaker.CircuitBreakerError),
                floor="bare_raise",
                table=t,
            )
        )
    if installed("purgatory"):
        import purgatory
        from purgatory.domain.model import OpenedState

        factory = purgatory.SyncCircuitBreakerFactory(default_ttl=FAR)
        brk = factory.get_breaker("bench-os-purgatory")
        for _ in range(5):
            try:
                with brk:
                    raise ValueError("boom")
            except ValueError:
                pass
        built.add(
            Variant(
                "purgatory_rejected_sync",
                "purgatory rejected",
                s_with_rejects(brk, work_sync, OpenedState),
                floor="bare_raise",
                table=t,
            )
        )
    if installed("interlock"):
        import interlock

        ib = interlock.CircuitBreaker(
            name="bench-os-interlock", config=interlock.Config(wait_duration_in_open=FAR)
        )
        _trip_engine_sync(ib.call_sync, 10)
        assert ib.state is interlock.State.OPEN, ib.state
        built.add(
            Variant(
                "interlock_rejected_sync",
                "interlock-cb rejected",
                s_rejects(ib.call_sync, work_sync, interlock.CircuitOpenError),
                floor="bare_raise",
                table=t,
            )
        )
