"""A client for several microservices: per-service policies, an order flow with a
compensating action, and a system health summary.

One `httpx.AsyncClient` talks to four services (user, order, payment, notification)
through one `AsyncCircuitBreakerTransport`, which keeps a breaker per service. Each
service gets its own policy through `policies=`: payment, the critical one, opens
after 2 failures; the others after 3. (In production the services have their own
hosts and `policies={"payment.internal": ...}` matches them by host; here all four
are loopback servers on 127.0.0.1, so a `key=` function names each by its port.)

The order flow: check the user, create the order, charge the payment, notify. When
the payment fails, or its breaker refuses, the order is cancelled again (the
compensating action). A failed notification does not fail the order.

The health summary is the seed's: healthy when no breaker is open, degraded while
fewer than half are open, unhealthy otherwise.

Shows: payment CLOSED -> OPEN, user CLOSED -> OPEN, OPEN -> HALF_OPEN,
HALF_OPEN -> CLOSED, and the system going healthy -> degraded -> unhealthy ->
healthy. Runs against loopback servers it starts itself; about a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker.events import BreakerEvent
from httpx_breaker.testing import Upstream  # a loopback server for the demo

SERVICES = ("user", "order", "payment", "notification")

# Short open periods so the example finishes quickly, yet long enough that a busy
# machine cannot end one between the two outages.
STANDARD = CircuitBreakerConfig(failure_threshold=3, reset_timeout=1.5, half_open_max_requests=1)
CRITICAL = STANDARD.replace(failure_threshold=2)
POLICIES = {
    "user": STANDARD,
    "order": STANDARD,
    "payment": CRITICAL,
    "notification": STANDARD,
}


@dataclasses.dataclass(frozen=True)
class Success:
    value: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Failure:
    error: str


class ServiceRegistry:
    """Clients for the services, sharing one client and one breaker transport."""

    def __init__(self, servers: dict[str, Upstream]) -> None:
        self.urls = {name: server.url for name, server in servers.items()}
        by_port = {server.port: name for name, server in servers.items()}
        self.transport = AsyncCircuitBreakerTransport(
            policies=POLICIES,
            key=lambda request: by_port[request.url.port or 0],
        )
        self.client = httpx.AsyncClient(transport=self.transport, timeout=5.0)
        for name in SERVICES:
            self.transport.registry.breaker_for(name).add_listener(self._announce)

    @staticmethod
    def _announce(event: BreakerEvent) -> None:
        if event.kind == "state_change":
            assert event.old_state is not None and event.new_state is not None
            print(f"    breaker {event.name}: {event.old_state.name} -> {event.new_state.name}")

    async def call(
        self, service: str, method: str, path: str, json: Any = None
    ) -> Success | Failure:
        try:
            response = await self.client.request(method, self.urls[service] + path, json=json)
            response.raise_for_status()
        except CircuitOpenError:
            return Failure(f"{service}: breaker open, not called")
        except httpx.HTTPStatusError as exc:
            return Failure(f"{service}: HTTP {exc.response.status_code}")
        except httpx.HTTPError as exc:
            return Failure(f"{service}: {exc.__class__.__name__}")
        return Success(response.json())

    async def create_order(self, n: int) -> Success | Failure:
        order_id = f"order-{n}"
        user = await self.call("user", "GET", "/users/user123")
        if isinstance(user, Failure):
            return user
        order = await self.call("order", "POST", f"/orders/{order_id}", {"items": 2})
        if isinstance(order, Failure):
            return order
        payment = await self.call("payment", "POST", "/payments", {"order_id": order_id})
        if isinstance(payment, Failure):
            await self.cancel_order(order_id)  # the compensating action
            return Failure(f"{payment.error}; {order_id} cancelled")
        notified = await self.call("notification", "POST", "/notifications", {"order_id": order_id})
        if isinstance(notified, Failure):
            print(f"    notification failed ({notified.error}); the order stands")
        return Success({"id": order_id})

    async def cancel_order(self, order_id: str) -> None:
        result = await self.call("order", "POST", f"/orders/{order_id}/cancel")
        if isinstance(result, Failure):
            print(f"    could not cancel {order_id}: {result.error}")

    def get_system_health(self) -> dict[str, Any]:
        states = {}
        for name in SERVICES:
            breaker = self.transport.registry.get(name)
            states[name] = breaker.state.name if breaker is not None else "CLOSED"
        open_count = sum(state == CircuitState.OPEN.name for state in states.values())
        if open_count == 0:
            overall = "healthy"
        elif open_count < len(SERVICES) / 2:
            overall = "degraded"
        else:
            overall = "unhealthy"
        return {"overall_status": overall, "services": states}

    async def aclose(self) -> None:
        await self.client.aclose()


async def orders(registry: ServiceRegistry, numbers: range) -> None:
    for n in numbers:
        result = await registry.create_order(n)
        if isinstance(result, Success):
            print(f"order {n:2}: created {result.value['id']}")
        else:
            print(f"order {n:2}: failed: {result.error}")


def health(registry: ServiceRegistry) -> None:
    report = registry.get_system_health()
    services = ", ".join(f"{name} {state}" for name, state in report["services"].items())
    print(f"  system health: {report['overall_status']} ({services})")


async def main() -> None:
    servers = {name: Upstream() for name in SERVICES}
    for server in servers.values():
        server.start()
    registry = ServiceRegistry(servers)
    try:
        print("-- all services healthy (one notification fails)")
        await orders(registry, range(1, 2))
        servers["notification"].mode = "failing"
        await orders(registry, range(2, 3))
        servers["notification"].mode = "healthy"
        health(registry)
        print("-- the payment service fails")
        servers["payment"].mode = "failing"
        await orders(registry, range(3, 6))
        health(registry)
        print("-- the user service fails too")
        servers["user"].mode = "failing"
        await orders(registry, range(6, 9))
        health(registry)
        print("-- everything recovers; waiting for the open periods to end")
        for server in servers.values():
            server.mode = "healthy"
        await asyncio.sleep(STANDARD.reset_timeout)
        await orders(registry, range(9, 11))
        health(registry)
    finally:
        await registry.aclose()
        for server in servers.values():
            server.stop()
    cancelled = [
        path.split("/")[2] for _, _, path in servers["order"].requests if path.endswith("/cancel")
    ]
    print(f"the order service received cancellations for: {', '.join(cancelled)}")
    print(f"the payment service received {servers['payment'].request_count} charge requests")


if __name__ == "__main__":
    asyncio.run(main())
