"""A database service with a breaker for the primary and one for the replica, and a fallback.

Each database is reached over HTTP (a data API); here two loopback servers play
them. Every query goes through `CircuitBreaker.call_async` directly, with the
seed's policies: the primary opens after 5 failures in a row, the replica after 3.
`get_user` reads from the primary, falls back to the replica when the primary
fails or its breaker refuses, and returns a `Failure` when both are unavailable.

The story: both healthy -> the primary fails (reads move to the replica, the
primary's breaker opens and stops sending it queries) -> the replica fails too (its
breaker opens; callers get an answer at once instead of waiting on two dead
databases) -> both recover: the primary's breaker probes and closes, and reads go
back to it. The replica's breaker ends HALF_OPEN: its open period is over, but no
read has needed the replica since, and a breaker only learns from calls made
through it. The next read that reaches the replica will be its probe.

Shows: primary_db CLOSED -> OPEN -> HALF_OPEN -> CLOSED; replica_db CLOSED -> OPEN
-> HALF_OPEN. Runs against loopback servers it starts itself; about a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx

from httpx_breaker import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError, CircuitState
from httpx_breaker.testing import Upstream  # a loopback server for the demo

# Short open periods so the example finishes quickly; the seed uses 60 s and 30 s.
PRIMARY_CONFIG = CircuitBreakerConfig(
    failure_threshold=5,
    failure_rate_threshold=0.5,
    timeout=3.0,
    reset_timeout=0.4,
    half_open_max_requests=1,
)
REPLICA_CONFIG = CircuitBreakerConfig(
    failure_threshold=3,
    failure_rate_threshold=0.7,
    timeout=2.0,
    reset_timeout=0.2,
    half_open_max_requests=1,
)


@dataclasses.dataclass(frozen=True)
class Success:
    value: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Failure:
    error: str


class DatabaseService:
    """Reads users from the primary, or from the replica when the primary is unavailable."""

    def __init__(self, client: httpx.AsyncClient, primary_url: str, replica_url: str) -> None:
        self.client = client
        self.urls = {"primary": primary_url, "replica": replica_url}
        self.primary_db_breaker = CircuitBreaker("primary_db", PRIMARY_CONFIG)
        self.replica_db_breaker = CircuitBreaker("replica_db", REPLICA_CONFIG)
        for breaker in (self.primary_db_breaker, self.replica_db_breaker):
            breaker.on_state_change = self._announce(breaker.name)

    @staticmethod
    def _announce(name: str) -> Any:
        def on_state_change(old: CircuitState, new: CircuitState) -> None:
            print(f"    breaker {name}: {old.name} -> {new.name}")

        return on_state_change

    async def _query(self, db: str, user_id: str) -> dict[str, Any]:
        """One query; a 5xx or a connection error raises, which the breaker counts."""
        response = await self.client.get(f"{self.urls[db]}/users/{user_id}")
        response.raise_for_status()
        return {"id": user_id, "name": "John", "source": db}

    async def get_user(self, user_id: str) -> Success | Failure:
        """The user from the primary, else from the replica, else a `Failure`."""
        problems: list[str] = []
        for db, breaker in (
            ("primary", self.primary_db_breaker),
            ("replica", self.replica_db_breaker),
        ):
            row = await self._try(db, breaker, user_id, problems)
            if row is not None:
                return Success(row)
        return Failure("all databases unavailable: " + ", ".join(problems))

    async def _try(
        self, db: str, breaker: CircuitBreaker, user_id: str, problems: list[str]
    ) -> dict[str, Any] | None:
        try:
            return await breaker.call_async(self._query, db, user_id)
        except CircuitOpenError:
            # No query was sent: the breaker already knows this database is down.
            problems.append(f"{db} skipped (breaker open)")
        except httpx.HTTPError as exc:
            problems.append(f"{db} failed ({exc.__class__.__name__})")
        return None

    def get_status(self) -> dict[str, str]:
        return {b.name: b.state.name for b in (self.primary_db_breaker, self.replica_db_breaker)}


async def lookups(service: DatabaseService, count: int, start: int) -> int:
    for n in range(start, start + count):
        result = await service.get_user("user123")
        if isinstance(result, Success):
            print(f"lookup {n:2}: ok, {result.value['name']} from the {result.value['source']}")
        else:
            print(f"lookup {n:2}: failed: {result.error}")
    return start + count


async def main() -> None:
    with Upstream() as primary, Upstream() as replica:
        async with httpx.AsyncClient() as client:
            service = DatabaseService(client, primary.url, replica.url)
            n = 1
            print("-- both databases healthy")
            n = await lookups(service, 2, n)
            print("-- the primary starts failing")
            primary.mode = "failing"
            n = await lookups(service, 7, n)
            print("-- the replica fails too")
            replica.mode = "failing"
            n = await lookups(service, 5, n)
            print(f"   status: {service.get_status()}")
            print("-- both recover; waiting for the open periods to end")
            primary.mode = replica.mode = "healthy"
            await asyncio.sleep(PRIMARY_CONFIG.reset_timeout)
            n = await lookups(service, 2, n)
            print(f"   status: {service.get_status()}")
        print(
            f"queries received: primary {primary.request_count}, replica {replica.request_count} "
            f"(lookups that found a breaker open sent nothing there)"
        )


if __name__ == "__main__":
    asyncio.run(main())
