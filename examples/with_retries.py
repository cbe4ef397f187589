"""Retries and a breaker together, in the order where an open breaker stops the retries.

The order: retries outside, the breaker inside, the network last::

    client -> retry policy -> AsyncCircuitBreakerTransport -> network

- Every attempt passes through the breaker, so each failed attempt counts. A host
  that is down opens the breaker after `failure_threshold` attempts, not after
  `failure_threshold` whole retry sequences.
- Once the breaker is open, the next attempt fails at once with `CircuitOpenError`
  (no I/O). Retrying it cannot help before the open period ends (its `retry_after`),
  and that is the breaker's job. httpx-retries retries only timeouts, network errors
  and `RemoteProtocolError` by default, which leaves `CircuitOpenError` (a plain
  `httpx.TransportError`) out, so its retries end there. With stamina, whose `on=`
  usually names `httpx.HTTPError` or `httpx.TransportError` (both include
  `CircuitOpenError`), use `httpx_breaker.retries.backoff_hook`: it waits
  `retry_after` when that is within `max_wait`, and gives up at once otherwise (here
  the open period, 30 s, is longer than `max_wait`, 5 s). docs/stacking.md has the
  recipes for stamina, tenacity, httpx-retries, SDKs and caches.
- The other order (breaker outside the retries) also refuses calls while open, but
  it sees one outcome per retry sequence: it opens only after several sequences have
  each hammered the failing host, and in HALF_OPEN each probe becomes a burst of
  retries against a host that is just recovering. Part 1 prints both, side by side.

Part 1 uses httpx-retries' `RetryTransport`; part 2 uses stamina (its sleeps are
asyncio's or trio's, whichever runs; httpx-retries sleeps with asyncio only).

Shows: CLOSED -> OPEN during a retry sequence, and the retries stopping there.
Runs against loopback servers it starts itself; about a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import stamina
from httpx_retries import Retry, RetryTransport

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker.retries import backoff_hook
from httpx_breaker.testing import Upstream  # a loopback server for the demo

CONFIG = CircuitBreakerConfig(failure_threshold=3, reset_timeout=30.0)
RETRY = Retry(total=3, backoff_factor=0.01)  # up to 4 attempts per request; 503 is retried


def announce(label: str) -> Callable[[CircuitState, CircuitState], None]:
    def on_state_change(old: CircuitState, new: CircuitState) -> None:
        print(f"    [{label}] breaker: {old.name} -> {new.name}")

    return on_state_change


async def part1_httpx_retries() -> None:
    print("== part 1: httpx-retries RetryTransport")
    for order in ("retries outside, breaker inside", "breaker outside, retries inside"):
        with Upstream("failing") as upstream:
            if order.startswith("retries outside"):
                breaker_transport = AsyncCircuitBreakerTransport(default=CONFIG)
                transport: httpx.AsyncBaseTransport = RetryTransport(
                    transport=breaker_transport, retry=RETRY
                )
            else:
                breaker_transport = AsyncCircuitBreakerTransport(
                    RetryTransport(transport=httpx.AsyncHTTPTransport(), retry=RETRY),
                    default=CONFIG,
                )
                transport = breaker_transport
            key = f"127.0.0.1:{upstream.port}"
            breaker_transport.registry.breaker_for(key).on_state_change = announce(order)
            print(f"-- {order}")
            async with httpx.AsyncClient(transport=transport) as client:
                for n in range(1, 6):
                    before = upstream.request_count
                    try:
                        response = await client.get(f"{upstream.url}/data")
                        outcome = f"HTTP {response.status_code} after the retries ran out"
                    except CircuitOpenError:
                        outcome = "CircuitOpenError (not retried)"
                    sent = upstream.request_count - before
                    print(f"request {n}: {outcome}; {sent} attempts reached the upstream")
            print(f"   the failing upstream received {upstream.request_count} requests in all")


def worth_retrying(exc: Exception) -> bool:
    """Transport errors and 5xx. Refusals are backoff_hook's: it waits retry_after or gives up."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


async def part2_stamina() -> None:
    print("== part 2: stamina")
    with Upstream("failing") as upstream:
        transport = AsyncCircuitBreakerTransport(default=CONFIG)
        key = f"127.0.0.1:{upstream.port}"
        transport.registry.breaker_for(key).on_state_change = announce("stamina")
        async with httpx.AsyncClient(transport=transport) as client:

            @stamina.retry(
                on=backoff_hook(on=worth_retrying, max_wait=5.0),
                attempts=4,
                wait_initial=0.01,
                wait_max=0.02,
            )
            async def fetch() -> httpx.Response:
                response = await client.get(f"{upstream.url}/data")
                response.raise_for_status()
                return response

            for n in range(1, 4):
                before = upstream.request_count
                try:
                    await fetch()
                    outcome = "ok"
                except CircuitOpenError:
                    outcome = "CircuitOpenError (not retried)"
                except httpx.HTTPStatusError as exc:
                    outcome = f"HTTP {exc.response.status_code} after the retries ran out"
                sent = upstream.request_count - before
                print(f"request {n}: {outcome}; {sent} attempts reached the upstream")
        print(f"   the failing upstream received {upstream.request_count} requests in all")


async def main() -> None:
    # stamina reports each scheduled retry through logging and other hooks; keep the
    # example's output to what it prints itself.
    stamina.instrumentation.set_on_retry_hooks([])
    await part1_httpx_retries()
    await part2_stamina()


if __name__ == "__main__":
    asyncio.run(main())
