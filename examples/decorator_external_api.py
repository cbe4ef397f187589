"""The @circuit_breaker decorator on an external API call that returns a Result.

`fetch_quote` never raises for an HTTP failure: like the seed's example it returns a
`Success` or a `Failure`. A result classifier, `(result, exception) -> bool | None`,
tells the breaker that a `Failure` is a failure, so three of them in a row open it.
While it is open, calls raise `CircuitOpenError` before any I/O; after `reset_timeout`
two probes go through and, the API having recovered, close it again.

Shows: CLOSED -> OPEN, OPEN -> HALF_OPEN, HALF_OPEN -> CLOSED.
Runs against a loopback server it starts itself; takes about a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Generic, TypeVar

import httpx

from httpx_breaker import CircuitBreakerConfig, CircuitOpenError, CircuitState, circuit_breaker
from httpx_breaker.testing import Upstream  # a loopback server for the demo

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Success(Generic[T]):
    value: T


@dataclasses.dataclass(frozen=True)
class Failure:
    error: str


def result_is_failure(result: Any, exception: BaseException | None) -> bool | None:
    """A `Failure` result or any exception is a failure; a `Success` is a success."""
    if exception is not None:
        return True
    return isinstance(result, Failure)


CONFIG = CircuitBreakerConfig(
    failure_threshold=3,  # three failures in a row open it
    failure_rate_threshold=0.6,
    timeout=5.0,
    reset_timeout=0.3,  # short so the example finishes quickly; think 30 s in production
    half_open_max_requests=2,  # two successful probes close it
)

API = Upstream()  # started in main(); its URL is only known then


@circuit_breaker(name="external_api", config=CONFIG, classifier=result_is_failure)
async def fetch_quote(client: httpx.AsyncClient) -> Success[dict[str, Any]] | Failure:
    """Call the external API; HTTP errors come back as a `Failure`, not an exception."""
    try:
        response = await client.get(f"{API.url}/quote")
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return Failure(f"API call failed: {exc.__class__.__name__}")
    return Success(response.json())


def on_state_change(old: CircuitState, new: CircuitState) -> None:
    print(f"  breaker external_api: {old.name} -> {new.name}")


async def call(client: httpx.AsyncClient, n: int) -> None:
    try:
        result = await fetch_quote(client)
    except CircuitOpenError as exc:
        wait = "?" if exc.retry_after is None else f"{exc.retry_after:.2f}"
        print(f"call {n:2}: rejected by the breaker, no request sent (retry in {wait} s)")
        return
    if isinstance(result, Success):
        print(f"call {n:2}: success {result.value}")
    else:
        print(f"call {n:2}: failure: {result.error}")


async def main() -> None:
    breaker = fetch_quote.circuit_breaker()
    breaker.on_state_change = on_state_change
    with API:
        async with httpx.AsyncClient() as client:
            n = 0
            print("-- the API is healthy")
            for _ in range(2):
                n += 1
                await call(client, n)
            print("-- the API starts answering 503")
            API.mode = "failing"
            for _ in range(5):
                n += 1
                await call(client, n)
            print(
                f"-- the API recovers; waiting {CONFIG.reset_timeout} s for the open period to end"
            )
            API.mode = "healthy"
            await asyncio.sleep(CONFIG.reset_timeout)
            for _ in range(3):
                n += 1
                await call(client, n)
        received = API.request_count

    metrics = breaker.get_metrics()
    print()
    print(f"state: {breaker.state.name}")
    print(
        f"calls let through: {metrics.total_requests} ({metrics.successful_requests} ok, "
        f"{metrics.failed_requests} failed), rejected: {metrics.rejected_requests}, "
        f"success rate: {metrics.success_rate:.0%}"
    )
    print(f"the API received {received} requests (the rejected calls never reached it)")


if __name__ == "__main__":
    asyncio.run(main())
