"""A fallback chain: the live service through its breaker, then a cache, then a default.

`get_user` asks the user service through an `AsyncCircuitBreakerTransport`. A good
answer is cached. When the call fails, or the breaker refuses it (no request is
sent), the cached copy is served, marked stale; a user never seen before gets a
default profile. The caller always gets an answer and can tell where it came from.

As the seed cautions, the fallbacks can fail too and their data can be old: the
cache here is only as fresh as the last good answer, and the default is clearly
marked as one.

Shows: CLOSED -> OPEN, OPEN -> HALF_OPEN, HALF_OPEN -> CLOSED, and answers from
"service", "cache" and "default". Runs against a loopback server it starts itself;
about a second.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker.testing import Upstream  # a loopback server for the demo

CONFIG = CircuitBreakerConfig(failure_threshold=2, reset_timeout=0.3, half_open_max_requests=1)


class UserDirectory:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.transport = AsyncCircuitBreakerTransport(default=CONFIG)
        self.client = httpx.AsyncClient(transport=self.transport)
        self.cache: dict[str, dict[str, Any]] = {}
        self.lookups = 0

    async def get_user(self, user_id: str) -> tuple[str, dict[str, Any]]:
        """`(source, user)`: source is "service", "cache" or "default"."""
        self.lookups += 1
        try:
            response = await self.client.get(f"{self.base_url}/users/{user_id}")
            response.raise_for_status()
        except CircuitOpenError:
            reason = "breaker open, service not called"
        except httpx.HTTPError as exc:
            reason = f"service failed: {exc.__class__.__name__}"
        else:
            user = {"id": user_id, "name": f"User {user_id}"}
            self.cache[user_id] = user
            return "service", user
        cached = self.cache.get(user_id)
        if cached is not None:
            return "cache", {**cached, "stale": True, "why": reason}
        return "default", {"id": user_id, "name": "Unknown User", "why": reason}

    async def aclose(self) -> None:
        await self.client.aclose()


def announce(old: CircuitState, new: CircuitState) -> None:
    print(f"    breaker: {old.name} -> {new.name}")


async def lookups(directory: UserDirectory, ids: list[str]) -> None:
    for user_id in ids:
        source, user = await directory.get_user(user_id)
        why = f"  ({user['why']})" if "why" in user else ""
        print(f"user {user_id}: {source:<7} {user['name']}{why}")


async def main() -> None:
    with Upstream() as service:
        directory = UserDirectory(service.url)
        key = f"127.0.0.1:{service.port}"
        directory.transport.registry.breaker_for(key).on_state_change = announce
        try:
            print("-- the user service is healthy")
            await lookups(directory, ["1", "2"])
            print("-- the user service fails")
            service.mode = "failing"
            await lookups(directory, ["1", "2", "1", "3"])
            print("-- it recovers; waiting for the open period to end")
            service.mode = "healthy"
            await asyncio.sleep(CONFIG.reset_timeout)
            await lookups(directory, ["3", "1"])
        finally:
            await directory.aclose()
        print(
            f"the service received {service.request_count} requests for {directory.lookups} lookups"
        )


if __name__ == "__main__":
    asyncio.run(main())
