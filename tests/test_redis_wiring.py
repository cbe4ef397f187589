"""Real breakers behind real transports, sharing state through a real Redis or Valkey.

Each "replica" here is a transport with a `RedisStore` of its own (its own connections
and worker thread) in this process; their breakers read a fake clock, so no test waits
through an open period (a test ends the fleet's period on the server's clock by
writing the key's end time). The multi-process fleet is tests/test_redis_fleet.py.
Waits are bounded polls for an outcome, never measurements.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker._state import BreakerEvent
from httpx_breaker._upstream import Upstream
from httpx_breaker.redis import RedisStore

from .conftest import FakeClock
from .redis_servers import KINDS, Server, running, wait_until
from .test_redis_security import Monitor

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
CONFIG = CircuitBreakerConfig(failure_threshold=2, reset_timeout=30.0, half_open_max_requests=2)
THREAD = "httpx-breaker-redis-checkout"


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with running(request.param) as started:
        yield started


class Replica:
    """One replica: a store, a fake-clock registry on it, and its events."""

    def __init__(self, url: str, config: CircuitBreakerConfig = CONFIG, **options: Any) -> None:
        self.store = RedisStore.from_url(url, namespace="checkout", **options)
        self.clock = FakeClock()
        self.registry = BreakerRegistry(default=config, clock=self.clock, store=self.store)
        self.events: list[BreakerEvent] = []
        self.registry.add_listener(self.events.append)

    def breaker(self, url: str) -> CircuitBreaker:
        return self.registry._breaker_for_url(httpx.URL(url))

    def changes(self) -> list[tuple[str, str, str | None]]:
        return [
            (e.old_state.value, e.new_state.value, e.cause)
            for e in self.events
            if e.kind == "state_change" and e.old_state and e.new_state
        ]

    def has_lease(self, url: str) -> bool:
        side = self.breaker(url)._fleet
        return side is not None and bool(side.link.leases)  # type: ignore[union-attr]


@pytest.fixture
def replicas(server: Server) -> Iterator[list[Replica]]:
    made = [Replica(server.url) for _ in range(2)]
    wait_until(lambda: all(r.store.connected for r in made), what="connections")
    yield made
    for replica in made:
        replica.store.close()


def end_the_fleets_period(server: Server) -> None:
    """As if the open period had passed on the server's clock."""
    with server.client() as client:
        for key in client.keys("httpx-breaker:*:k:*"):
            client.hset(key, "u", 1)


def test_an_open_reaches_the_other_replica_before_it_sends_anything(
    replicas: list[Replica], upstream: Upstream
) -> None:
    """One replica's failures open it; the other refuses before any I/O, cause "fleet"."""
    first, second = replicas
    url = f"{upstream.url}/"
    with httpx.Client(transport=CircuitBreakerTransport(registry=first.registry)) as one, \
         httpx.Client(transport=CircuitBreakerTransport(registry=second.registry)) as two:  # fmt: skip
        assert two.get(url).status_code == 200
        upstream.mode = "failing"
        one.get(url)
        one.get(url)
        assert first.breaker(url).state is OPEN
        wait_until(lambda: second.breaker(url).state is OPEN, what="the fleet's open")
        sent = upstream.request_count
        with pytest.raises(CircuitOpenError) as info:
            two.get(url)
        assert upstream.request_count == sent
        assert info.value.retry_after is not None and 29.0 < info.value.retry_after <= 30.0
    assert second.changes() == [("closed", "open", "fleet")]
    assert first.changes() == [("closed", "open", "failure_threshold")]
    assert second.breaker(url).get_metrics().state_change_counts == ((CLOSED, OPEN, 1),)


def test_one_probe_round_for_the_fleet_and_everyone_closes(
    replicas: list[Replica], upstream: Upstream, server: Server
) -> None:
    """Half-open: a request without a lease is refused and asks for one; the fleet's
    leases let half_open_max_requests probes through in all; their success closes every
    replica."""
    first, second = replicas
    url = f"{upstream.url}/"
    with httpx.Client(transport=CircuitBreakerTransport(registry=first.registry)) as one, \
         httpx.Client(transport=CircuitBreakerTransport(registry=second.registry)) as two:  # fmt: skip
        upstream.mode = "failing"
        one.get(url)
        one.get(url)
        wait_until(lambda: second.breaker(url).state is OPEN, what="the fleet's open")
        upstream.mode = "healthy"
        end_the_fleets_period(server)
        for replica in replicas:
            replica.clock.advance(30.0)
        before = upstream.request_count
        for client in (one, two):
            with pytest.raises(CircuitOpenError) as info:
                client.get(url)  # no lease yet: refused, and one is fetched
            assert info.value.state is HALF_OPEN
        wait_until(lambda: first.has_lease(url) and second.has_lease(url), what="a lease each")
        assert upstream.request_count == before
        assert one.get(url).status_code == 200
        assert two.get(url).status_code == 200
        wait_until(
            lambda: all(r.breaker(url).state is CLOSED for r in replicas),
            what="every replica closed",
        )
        assert upstream.request_count == before + 2
        assert one.get(url).status_code == 200
    for replica in replicas:
        assert replica.changes()[-1][:2] == ("half_open", "closed")


def test_a_replica_made_after_the_open_learns_it_at_its_first_request(
    replicas: list[Replica], upstream: Upstream, server: Server
) -> None:
    """A breaker attached while its key is open elsewhere reads the key at once."""
    first, _ = replicas
    url = f"{upstream.url}/"
    upstream.mode = "failing"
    with httpx.Client(transport=CircuitBreakerTransport(registry=first.registry)) as one:
        one.get(url)
        one.get(url)
    late = Replica(server.url)
    try:
        wait_until(lambda: late.store.connected, what="the connection")
        late.breaker(url)  # as a first request would
        wait_until(lambda: late.breaker(url).state is OPEN, what="the late breaker to open")
    finally:
        late.store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_no_redis_command_runs_on_a_requests_task_or_thread(
    server: Server, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole cycle through async and sync transports: every byte sent to Redis is
    sent by a store's own thread."""
    senders: set[str] = set()
    original = redis.connection.AbstractConnection.send_packed_command

    def spy(self: object, command: object, check_health: bool = True) -> None:
        if getattr(self, "client_name", None) == "httpx-breaker":
            senders.add(threading.current_thread().name)
        original(self, command, check_health)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", spy)
    first, second = Replica(server.url), Replica(server.url)
    url = f"{upstream.url}/"
    try:
        wait_until(lambda: first.store.connected and second.store.connected, what="connections")
        async with httpx.AsyncClient(
            transport=AsyncCircuitBreakerTransport(registry=first.registry)
        ) as one:
            with httpx.Client(transport=CircuitBreakerTransport(registry=second.registry)) as two:
                await anyio.to_thread.run_sync(two.get, url)
                upstream.mode = "failing"
                await one.get(url)
                await one.get(url)
                await anyio.to_thread.run_sync(
                    lambda: wait_until(lambda: second.breaker(url).state is OPEN, what="open")
                )
                upstream.mode = "healthy"
                end_the_fleets_period(server)
                for replica in (first, second):
                    replica.clock.advance(30.0)
                with pytest.raises(CircuitOpenError):
                    await one.get(url)
                with pytest.raises(CircuitOpenError):
                    await anyio.to_thread.run_sync(two.get, url)
                await anyio.to_thread.run_sync(
                    lambda: wait_until(
                        lambda: first.has_lease(url) and second.has_lease(url), what="leases"
                    )
                )
                await one.get(url)
                await anyio.to_thread.run_sync(two.get, url)
                await anyio.to_thread.run_sync(
                    lambda: wait_until(
                        lambda: (
                            first.breaker(url).state is CLOSED
                            and second.breaker(url).state is CLOSED
                        ),
                        what="closed",
                    )
                )
    finally:
        first.store.close()
        second.store.close()
    assert senders == {THREAD}


SECRETS = ("hunter2-pw", "secret-host-7f3a", "private-path-QWxh", "token-9c8b7a")


def test_url_secrets_never_reach_redis_through_a_transport(server: Server, tmp_path: Path) -> None:
    """Userinfo, host, path and query of requests through a transport with a store: none
    of it in any command the server receives (its own MONITOR)."""
    monitor = Monitor(server, tmp_path / "monitor.log")
    first, second = Replica(server.url, share_counts=True), Replica(server.url)
    url = f"https://alice:{SECRETS[0]}@{SECRETS[1]}.internal:8443/{SECRETS[2]}?key={SECRETS[3]}"
    failing = httpx.MockTransport(lambda request: httpx.Response(503))
    try:
        wait_until(lambda: first.store.connected and second.store.connected, what="connections")
        with httpx.Client(
            transport=CircuitBreakerTransport(failing, registry=first.registry)
        ) as one:
            one.get(url)
            one.get(url)
        second.breaker(url)
        wait_until(lambda: second.breaker(url).state is OPEN, what="the open")
        assert 29.0 < (second.breaker(url).retry_after or 0.0) <= 30.0
    finally:
        first.store.close()
        second.store.close()
    commands = monitor.stop()
    assert "EVALSHA" in commands.upper()
    for secret in SECRETS:
        assert secret not in commands
