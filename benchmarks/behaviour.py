"""Behaviour probes behind the deadline rows: is there a deadline, and where does it start?

A deadline row that got cheaper because the deadline stopped firing would be a lie.
So before trusting the rows, each backend (asyncio, trio) is probed with the same
kind of transport the rows use, with a short `timeout`:

- *fires*: the inner transport (tracing like httpcore or not) answers after `SLOW` s;
  the breaker must raise `CircuitTimeoutError` at about `PROBE_TIMEOUT`.
- *pool wait* (tracing transport only): the inner transport waits `POOL_WAIT` s (longer
  than the timeout) *before* its first trace event, as httpcore does while it waits for
  a pooled connection, then answers at once. "outside" means the request succeeded: the
  wait was not charged to the deadline; "inside" means `CircuitTimeoutError`.

And the bulkhead row (`max_concurrent`), once the field exists: with a limit of 1, a
second request while the first response is open must be refused, and let through once
it is closed; otherwise the row would time a limit that does nothing.

The deadline probes are wall-clock sleeps of a fraction of a second, reported, never asserted by the
smoke test (the lead's rewrite decides which answers are right).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from httpx_breaker import AsyncCircuitBreakerTransport, CircuitBreakerConfig, CircuitTimeoutError

from .transports import InnerAsync, SlowInnerAsync, make_request

PROBE_TIMEOUT = 0.05
SLOW = 0.5
POOL_WAIT = 0.2


async def _one(
    inner: httpx.AsyncBaseTransport, transport: AsyncCircuitBreakerTransport | None = None
) -> tuple[str, float, str]:
    """("response" | "timeout" | "error", elapsed ms, detail) of one request."""
    if transport is None:
        transport = AsyncCircuitBreakerTransport(
            inner, default=CircuitBreakerConfig(timeout=PROBE_TIMEOUT)
        )
    t = time.perf_counter()
    try:
        response = await transport.handle_async_request(make_request())
        await response.aclose()
    except CircuitTimeoutError:
        return "timeout", (time.perf_counter() - t) * 1e3, ""
    except Exception as exc:  # noqa: BLE001 (any other outcome is reported, not raised)
        return "error", (time.perf_counter() - t) * 1e3, f"{type(exc).__name__}: {exc}"
    return "response", (time.perf_counter() - t) * 1e3, ""


async def probe(backend: str) -> list[dict[str, Any]]:
    """Probe the running backend; one dict per inner transport."""
    out = []
    for traces in (False, True):
        got, ms, detail = await _one(SlowInnerAsync(pool_wait=0.0, server_wait=SLOW, traces=traces))
        fires = {"timeout": "yes", "response": "NO"}.get(got, f"error ({detail})")
        row: dict[str, Any] = {
            "backend": backend,
            "inner": "tracing like httpcore" if traces else "does not trace",
            "fires": fires,
            "fires_ms": ms,
            "pool_wait": "n/a (no trace events to start from)",
            "pool_wait_ms": None,
        }
        if traces:
            # A transport that is not httpx's own is known to report connection
            # assignment once it has: one request teaches it, as in a running client.
            inner = SlowInnerAsync(pool_wait=0.0, server_wait=0.0, traces=True)
            transport = AsyncCircuitBreakerTransport(
                inner, default=CircuitBreakerConfig(timeout=PROBE_TIMEOUT)
            )
            await _one(inner, transport)
            inner.pool_wait = POOL_WAIT
            got, ms, detail = await _one(inner, transport)
            row["pool_wait"] = {"response": "outside", "timeout": "inside"}.get(
                got, f"error ({detail})"
            )
            row["pool_wait_ms"] = ms
        out.append(row)
    return out


async def probe_bulkhead() -> dict[str, Any] | None:
    """With `max_concurrent=1` (and no wait), is a second request refused while the first
    response is open, and let through once it is closed? None while the field is missing.
    """
    try:
        config = CircuitBreakerConfig(max_concurrent=1)
    except TypeError:
        return None
    transport = AsyncCircuitBreakerTransport(InnerAsync(), default=config)
    first = await transport.handle_async_request(make_request())
    try:
        second = await transport.handle_async_request(make_request())
    except httpx.TransportError as exc:
        refused = f"yes ({type(exc).__name__})"
    else:
        await second.aclose()
        refused = "NO"
    await first.aclose()
    try:
        third = await transport.handle_async_request(make_request())
    except httpx.TransportError as exc:
        freed = f"NO ({type(exc).__name__})"
    else:
        await third.aclose()
        freed = "yes"
    return {"backend": "asyncio", "refused": refused, "freed": freed}


def describe_bulkhead(row: dict[str, Any] | None) -> str:
    if row is None:
        return "bulkhead: not probed (CircuitBreakerConfig has no max_concurrent field yet)"
    return (
        f"bulkhead ({row['backend']}, max_concurrent=1): a second request while the first "
        f"response is open is refused: {row['refused']}; once it is closed the next one "
        f"passes: {row['freed']}"
    )


def describe(row: dict[str, Any]) -> str:
    fires = (
        f"fires: {row['fires']} ({row['fires_ms']:.0f} ms; timeout {PROBE_TIMEOUT * 1e3:.0f} ms, "
        f"server answers at {SLOW * 1e3:.0f} ms)"
    )
    if row["pool_wait_ms"] is None:
        return f"{row['backend']}, inner transport {row['inner']}: {fires}"
    return (
        f"{row['backend']}, inner transport {row['inner']}: {fires}; "
        f"a {POOL_WAIT * 1e3:.0f} ms wait before the first trace event is {row['pool_wait']} "
        f"the deadline ({row['pool_wait_ms']:.0f} ms)"
    )
