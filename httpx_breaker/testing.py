"""Helpers for your own test suites: a clock you move by hand, breakers in any state,
and a real HTTP server to put behind them.

Tests of code that sits behind a breaker should never wait for an open period to
end. Hand the breakers a `FakeClock`, or swap one in for the duration of a test:

```python
from httpx_breaker import AsyncCircuitBreakerTransport, CircuitState
from httpx_breaker.testing import breaker_testing, set_state

async def test_falls_back_while_payments_is_down():
    transport = AsyncCircuitBreakerTransport(...)
    with breaker_testing(transport) as clock:
        set_state(transport, "payments.internal", CircuitState.OPEN)
        ...                                   # the code under test sees CircuitOpenError
        clock.advance(transport.registry["payments.internal"].retry_after)
        ...                                   # the next request is a probe
```

Nothing here needs an event loop, so the helpers work the same under pytest-asyncio,
anyio's pytest plugin, trio or plain synchronous tests.

`Upstream` is a programmable HTTP/1.1 server on 127.0.0.1, on a thread of its own, for
tests that need real connections (timeouts, resets, truncated bodies, concurrency). Its
paths pick the answer: ``/ok``, ``/status/<code>``, ``/delay/<seconds>``, ``/reset``
(connection reset), ``/cut`` (body cut short), ``/flaky`` (503 with probability
`failure_rate`), ``/retry-after/<value>``; every other path follows `mode`
(``"healthy"``, ``"failing"``, ``"slow"``, ``"reset"``, ``"cut"`` or ``"flaky"``),
which a test may change at any time. It records what reached it (`request_count`,
`requests`), so a test can prove an open breaker sent nothing:

```python
from httpx_breaker.testing import Upstream

def test_no_request_reaches_a_down_host():
    with Upstream(mode="failing") as upstream:
        ...                                   # trip the breaker on upstream.url
        before = upstream.request_count
        ...                                   # calls now raise CircuitOpenError
        assert upstream.request_count == before
```

With pytest installed this module is also a pytest plugin: ``-p httpx_breaker.testing``
(or ``pytest_plugins = ["httpx_breaker.testing"]`` in your top-level ``conftest.py``)
gives every test the `breaker_clock` fixture, a fresh `FakeClock`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, overload

from ._breaker import CircuitBreaker
from ._registry import BreakerRegistry
from ._state import CircuitState
from ._transport import AsyncCircuitBreakerTransport, CircuitBreakerTransport
from ._upstream import Upstream

# `breaker_clock` (defined at the end when pytest is importable) is a fixture, not an API.
__all__ = ["FakeClock", "Upstream", "breaker_testing", "set_state"]

Target = Any
"""A `CircuitBreaker`, a `BreakerRegistry`, either transport, or a function decorated
with `@circuit_breaker`."""


class FakeClock:
    """A monotonic clock that moves only when `advance` is called.

    Pass it as ``clock=`` to `CircuitBreaker`, `BreakerRegistry` or `@circuit_breaker`,
    or let `breaker_testing` swap it in.

    Args:
        start: the time it reads at first, in seconds.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        """The time it reads."""
        return self._now

    def advance(self, seconds: float | timedelta | None) -> None:
        """Move the clock forward by `seconds` (float or `timedelta`).

        `None` is accepted and does nothing, so that ``clock.advance(breaker.retry_after)``
        also works on a breaker that is not open.

        Raises:
            ValueError: `seconds` is negative or not finite; a monotonic clock never
                goes back.
        """
        if seconds is None:
            return
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a monotonic clock only moves forward, got advance({seconds!r})")
        self._now += seconds

    def __repr__(self) -> str:
        return f"<FakeClock now={self._now:g}>"


def _registry_of(target: Target) -> BreakerRegistry | None:
    if isinstance(target, BreakerRegistry):
        return target
    if isinstance(target, (AsyncCircuitBreakerTransport, CircuitBreakerTransport)):
        return target.registry
    # The httpx2 transports (httpx_breaker.httpx2), without importing httpx2 here.
    twin = sys.modules.get("httpx_breaker._httpx2._transport")
    if twin is not None and isinstance(
        target, (twin.AsyncCircuitBreakerTransport, twin.CircuitBreakerTransport)
    ):
        registry: BreakerRegistry = target.registry
        return registry
    return None


def _breaker_of(target: Target) -> CircuitBreaker | None:
    if isinstance(target, CircuitBreaker):
        return target
    get = getattr(target, "circuit_breaker", None)
    if callable(get):
        breaker = get()
        if isinstance(breaker, CircuitBreaker):
            return breaker
    return None


def _describe(target: Target) -> str:
    return (
        "a CircuitBreaker, a BreakerRegistry, an (Async)CircuitBreakerTransport or a "
        f"function decorated with @circuit_breaker, got {target!r}"
    )


@overload
def set_state(target: Target, state: CircuitState, /, *, forced: bool = False) -> CircuitBreaker: ...


@overload
def set_state(
    target: Target, key: str, state: CircuitState, /, *, forced: bool = False
) -> CircuitBreaker: ...


def set_state(target: Target, *args: Any, forced: bool = False) -> CircuitBreaker:
    """Put a breaker into `state` now, and return it.

    Call it as ``set_state(breaker, state)`` (a breaker, or a function decorated with
    `@circuit_breaker`) or as ``set_state(transport_or_registry, key, state)``, where
    `key` is the registry key (``"host"`` or ``"host:port"``); the host's breaker is
    created if no request has made it yet.

    The breaker gets there the way it would on its own, so time moves it on as usual:

    - CLOSED: `CircuitBreaker.reset()` (empty window; counters kept).
    - OPEN: a fresh open period starts now, as long as the policy's `reset_timeout`
      (plus jitter, if configured). Advance the clock by ``breaker.retry_after`` and
      the next call is a probe. Listeners hear ``CLOSED -> OPEN`` with cause
      ``"testing"``; no failures are added to the metrics.
    - HALF_OPEN: opened as above for no time, so listeners also hear
      ``OPEN -> HALF_OPEN`` (cause ``"reset_timeout"``); no probe is in flight.

    A breaker that was in another state is `reset()` first, so it starts clean.

    Args:
        forced: hold the state until `reset()` with the breaker's own
            `force_open()` / `force_closed()` instead; time does not move a forced
            breaker, and a forced-open breaker's `retry_after` is `None`. Only for
            OPEN and CLOSED.

    Raises:
        TypeError: `target` is none of the kinds above, or the arguments do not match
            either form.
        ValueError: ``forced=True`` with HALF_OPEN.

    Warns:
        UserWarning: a URL given as the key (``"https://api.example.com"``): probably
            not the key any request uses.
    """
    if len(args) == 1:
        (state,) = args
        breaker = _breaker_of(target)
        if breaker is None:
            if _registry_of(target) is not None:
                raise TypeError(
                    "set_state(transport_or_registry, key, state) needs the key of the "
                    "host's breaker, such as 'api.example.com'"
                )
            raise TypeError(f"set_state() takes {_describe(target)}")
    elif len(args) == 2:
        key, state = args
        registry = _registry_of(target)
        if registry is None:
            raise TypeError(
                f"set_state(target, key, state) takes a registry or a transport, got {target!r}"
            )
        if not isinstance(key, str):
            raise TypeError(f"key must be a str such as 'api.example.com', got {key!r}")
        if "://" in key:
            # Legal (a key function may return anything), but the default keys are
            # "host[:port]": this probably makes a breaker no request uses.
            warnings.warn(
                f"set_state() was given a URL as the key ({key!r}); breaker keys are "
                "'host' or 'host:port' unless a key function says otherwise: for a URL's "
                "breaker, use set_state(transport.breaker_for_url(url), state)",
                stacklevel=2,
            )
        breaker = registry.breaker_for(key)
    else:
        raise TypeError(
            "set_state() takes (breaker, state) or (transport_or_registry, key, state)"
        )
    if not isinstance(state, CircuitState):
        raise TypeError(f"state must be a CircuitState, got {state!r}")

    if forced:
        if state is CircuitState.OPEN:
            breaker.force_open()
        elif state is CircuitState.CLOSED:
            breaker.force_closed()
        else:
            raise ValueError(
                "only OPEN and CLOSED can be forced (force_open / force_closed); "
                "use forced=False for HALF_OPEN"
            )
        return breaker

    breaker.reset()
    if state is not CircuitState.CLOSED:
        # From CLOSED to HALF_OPEN the engine passes through OPEN for no time.
        breaker.transition_to(state, cause="testing")
    return breaker


@contextlib.contextmanager
def breaker_testing(*targets: Target, clock: FakeClock | None = None) -> Iterator[FakeClock]:
    """Run the block with a `FakeClock` in place of the targets' clocks; yield the clock.

    Each target is a breaker, a registry, a transport or a decorated function. For a
    registry (or a transport's registry), the breakers it already holds and those it
    creates inside the block read the fake clock. The clocks are swapped both ways
    with `CircuitBreaker.set_clock`, which keeps every time a breaker holds as old as
    it was: an open period running when the block starts (or ends) keeps the time it
    has left, and outcomes in the window keep their age, so they leave it
    `window_duration` after they were recorded, on either clock.

    Args:
        clock: the clock to use; by default a new `FakeClock` that starts at the
            current `time.monotonic()`, rounded down to a whole second, so that whole
            (and binary-fraction) seconds add up exactly: a 60 s open period set in the
            block reads back as ``retry_after == 60.0``, whatever the machine's uptime
            (from an uneven start, it can be off by a rounding error, 60.00000000000364).

    Raises:
        TypeError: no targets, or one of an unknown kind.
    """
    if not targets:
        raise TypeError(
            "breaker_testing() needs at least one breaker, registry, transport or "
            "decorated function"
        )
    registries: list[BreakerRegistry] = []
    breakers: list[CircuitBreaker] = []
    for target in targets:
        registry = _registry_of(target)
        if registry is not None:
            registries.append(registry)
            continue
        breaker = _breaker_of(target)
        if breaker is None:
            raise TypeError(f"breaker_testing() takes {_describe(target)}")
        breakers.append(breaker)

    fake = clock if clock is not None else FakeClock(math.floor(time.monotonic()))
    # The clock each breaker goes back to on exit, and each registry's.
    originals: dict[int, tuple[CircuitBreaker, Callable[[], float]]] = {}
    registry_clocks = [(registry, registry.set_clock(fake)) for registry in registries]

    def swap(breaker: CircuitBreaker, back_to: Callable[[], float] | None = None) -> None:
        if id(breaker) not in originals:
            old = breaker.set_clock(fake)
            originals[id(breaker)] = (breaker, back_to or old)

    for registry in registries:
        for breaker in registry.values():
            swap(breaker)
    for breaker in breakers:
        swap(breaker)
    try:
        yield fake
    finally:
        for registry, old_clock in registry_clocks:
            registry.set_clock(old_clock)
            # Breakers made inside the block go to the clock the registry gives.
            for breaker in registry.values():
                if breaker.clock is fake:
                    swap(breaker, old_clock or time.monotonic)
        for breaker, old_clock in originals.values():
            breaker.set_clock(old_clock)


try:
    import pytest
except ImportError:  # pytest is optional: everything above works in any test runner
    pass
else:

    @pytest.fixture
    def breaker_clock() -> FakeClock:
        """A fresh `FakeClock` at 0.0: pass it as ``clock=`` to breakers and registries."""
        return FakeClock()
