"""Monitoring breakers: dashboard, health scores, alerts and a Prometheus scrape.

The seed's monitoring scenario, against three loopback services this script starts
itself: ``users`` answers 200, ``payments`` answers 503 until its breaker opens, and
``search`` fails every other request (often enough to warn, not to open). One
`AsyncCircuitBreakerTransport` serves all three; a key function names each breaker
after its service, so the dashboard and the metrics read ``users``, ``payments``,
``search`` rather than ``127.0.0.1:<port>``.

Then it prints what an operator would look at:

- the dashboard (`httpx_breaker.monitoring.dashboard`): counts by state, and every
  breaker with its health score, least healthy first;
- the alerts (`httpx_breaker.monitoring.alerts`): CRITICAL for an open breaker,
  WARNING for a failure rate above the threshold;
- the Prometheus text exposition of `httpx_breaker.prometheus.CircuitBreakerCollector`
  (needs ``pip install 'httpx-breaker[prometheus]'``), as a scrape would see it.

State changes are logged through the standard `logging` module (logger
``httpx_breaker``), so the opening of ``payments`` shows up as a WARNING line too.

Runs in well under a second; touches nothing but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import httpx

from httpx_breaker import AsyncCircuitBreakerTransport, CircuitBreakerConfig, CircuitOpenError
from httpx_breaker.classifiers import default_key
from httpx_breaker.monitoring import alerts, dashboard
from httpx_breaker.testing import Upstream  # a loopback server for the demo


async def drive(transport: AsyncCircuitBreakerTransport, urls: dict[str, str]) -> None:
    """Send each service its traffic: users all good, payments failing, search flaky."""
    async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
        for i in range(10):
            await client.get(f"{urls['users']}/ok")
            path = "/ok" if i % 2 else "/status/500"
            await client.get(f"{urls['search']}{path}")
            try:
                await client.get(f"{urls['payments']}/status/503")
            except CircuitOpenError as exc:
                # Refused before any I/O: the payments service is left alone to recover.
                assert exc.key == "payments"


def main() -> None:
    # Show the breakers' own records (state changes at INFO/WARNING), not httpx's per-request ones.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stdout, format="log: %(levelname)s %(message)s"
    )
    logging.getLogger("httpx_breaker").setLevel(logging.INFO)
    with Upstream() as users, Upstream() as payments, Upstream() as search:
        services = {users.port: "users", payments.port: "payments", search.port: "search"}

        def key(request: httpx.Request) -> str:
            # Bounded, credential-free names: the service, or host[:port] for anything else.
            return services.get(request.url.port or 0) or default_key(request)

        transport = AsyncCircuitBreakerTransport(
            default=CircuitBreakerConfig(failure_threshold=3, reset_timeout=30.0),
            policies={
                # search is allowed to be flaky: only a 90% failure rate would open it.
                "search": CircuitBreakerConfig(failure_threshold=100, failure_rate_threshold=0.9),
            },
            key=key,
        )
        urls = {"users": users.url, "payments": payments.url, "search": search.url}
        asyncio.run(drive(transport, urls))
        print(f"payments upstream saw {payments.request_count} of 10 requests")

    data = dashboard(transport.registry)
    summary = data["summary"]
    print()
    print(f"circuit breakers: {summary['total_breakers']}")
    print(
        f"OPEN: {summary['open_breakers']}, HALF_OPEN: {summary['half_open_breakers']}, "
        f"CLOSED: {summary['closed_breakers']}"
    )
    for row in data["breakers"]:  # least healthy first
        m = row["metrics"]
        print(
            f"  {row['name']:<9} {row['state']:<9} health {row['health_score']:5.1f}  "
            f"requests {m['total_requests']:>2}  failure rate {m['failure_rate']:.0%}  "
            f"rejected {m['rejected_requests']}"
        )

    print()
    for alert in alerts(transport.registry, failure_rate_threshold=0.3):
        print(f"[{alert.severity.upper()}] {alert.message}  {alert.details}")

    print()
    try:
        from prometheus_client import CollectorRegistry, generate_latest

        from httpx_breaker.prometheus import CircuitBreakerCollector
    except ImportError as exc:
        print(f"(no Prometheus exposition: {exc})")
        return
    registry = CollectorRegistry()
    registry.register(CircuitBreakerCollector(transport.registry))
    print(generate_latest(registry).decode(), end="")


if __name__ == "__main__":
    main()
