"""Presets per kind of service: database, external API, critical service.

The seed's advice is to tune a breaker to what sits behind it. These three
factories return a `CircuitBreakerConfig` each (the seed's numbers), and one
transport applies them by host pattern with `policies=`:

- database: fail fast and recover fast (3 failures, 30 % of the window, 2 s timeout,
  30 s open);
- external API: more tolerant, it is slower and noisier (5 failures, 60 %, 10 s
  timeout, 60 s open);
- critical service: very sensitive (2 failures, 20 %, 1 s timeout, 15 s open);
- anything else: the library's defaults.

Every upstream here fails, so each breaker opens after its own number of failures.
Rather than wait 15 to 60 s for the open periods, the example hands the transport's
registry a `FakeClock` from `httpx_breaker.testing` and moves it forward, as a test
would; the servers then recover and each breaker probes and closes.

Shows: for each preset CLOSED -> OPEN after its threshold, OPEN -> HALF_OPEN after
its own open period, HALF_OPEN -> CLOSED. Runs against loopback servers it starts
itself; well under a second.
"""

from __future__ import annotations

import asyncio

import httpx

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker.testing import (
    FakeClock,
    Upstream,
)


def database() -> CircuitBreakerConfig:
    """Databases: a low threshold and a quick retry; queries should be fast."""
    return CircuitBreakerConfig(
        failure_threshold=3, failure_rate_threshold=0.3, timeout=2.0, reset_timeout=30.0
    )


def external_api() -> CircuitBreakerConfig:
    """Third-party APIs: tolerate more noise and latency, back off longer."""
    return CircuitBreakerConfig(
        failure_threshold=5, failure_rate_threshold=0.6, timeout=10.0, reset_timeout=60.0
    )


def critical_service() -> CircuitBreakerConfig:
    """Services whose slowness hurts everyone: open early, probe again soon."""
    return CircuitBreakerConfig(
        failure_threshold=2, failure_rate_threshold=0.2, timeout=1.0, reset_timeout=15.0
    )


def config_for(service_type: str) -> CircuitBreakerConfig:
    """The seed's `get_circuit_breaker_config`: a preset by name, else the defaults."""
    presets = {
        "database": database,
        "external_api": external_api,
        "critical_service": critical_service,
    }
    factory = presets.get(service_type)
    return factory() if factory is not None else CircuitBreakerConfig()


POLICIES = {
    "*.db.internal": config_for("database"),
    "*.partner-api.com": config_for("external_api"),
    "payments.internal": config_for("critical_service"),
}
HOSTS = {
    "users.db.internal": "database",
    "maps.partner-api.com": "external_api",
    "payments.internal": "critical_service",
    "search.internal": "(default)",
}


async def until_open(client: httpx.AsyncClient, url: str) -> int:
    """Send requests until the breaker refuses one; return how many failed first."""
    failures = 0
    while True:
        try:
            await client.get(url)
        except CircuitOpenError:
            return failures
        failures += 1


async def main() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(policies=POLICIES, clock=clock)
    servers = {host: Upstream("failing") for host in HOSTS}
    for server in servers.values():
        server.start()
    by_port = {server.port: host for host, server in servers.items()}
    transport = AsyncCircuitBreakerTransport(
        registry=registry, key=lambda request: by_port[request.url.port or 0]
    )
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            print("-- every upstream fails")
            for host, kind in HOSTS.items():
                config = registry.config_for(host)
                failures = await until_open(client, f"{servers[host].url}/")
                breaker = registry[host]
                print(
                    f"{host:<22} {kind:<17} CLOSED -> {breaker.state.name} after {failures} "
                    f"failures (threshold {config.failure_threshold}); "
                    f"probes again in {breaker.retry_after:g} s"
                )
            print("-- the upstreams recover; the clock moves on, one open period at a time")
            for server in servers.values():
                server.mode = "healthy"
            waits = sorted((registry.config_for(host).reset_timeout, host) for host in HOSTS)
            elapsed = 0.0
            for reset_timeout, host in waits:
                clock.advance(reset_timeout - elapsed)
                elapsed = reset_timeout
                breaker = registry[host]
                before = breaker.state
                probes = 0
                while breaker.state is not CircuitState.CLOSED:
                    await client.get(f"{servers[host].url}/")
                    probes += 1
                print(
                    f"t+{elapsed:>4g} s  {host:<22} {CircuitState.OPEN.name} -> {before.name} "
                    f"-> CLOSED after {probes} successful probes"
                )
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
