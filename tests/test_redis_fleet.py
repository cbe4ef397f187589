"""A fleet: replica processes (sync, asyncio, trio) sharing breakers through a real Valkey.

Every replica is a process of its own (tests/fleet_replica.py, multiprocessing's spawn
context) with its own `RedisStore`, a `BreakerRegistry(store=...)` on a fake clock and a
real transport, all calling one loopback upstream in this process, which goes down and
recovers. The upstream's own log says what reached it. The fleet's open periods end
on the server's clock when the test writes the key's end time, and on the replicas'
clocks when the test advances them: no test waits through an open period. Waits are
bounded polls for an outcome; the only durations checked are bounds that a request
waiting on Redis (whose command timeout here is 30 s) could not meet.

The scenario, in order (one test, about 10 s; the soak runs it bigger and longer):

1. The upstream fails; the fast replica (failure_threshold=3) opens; the slow ones
   (threshold 100), which sent two failures each, learn the open from the fleet and
   refuse before any I/O.
2. Half-open rounds while it still fails, then after it recovers: the upstream gets at
   most `half_open_max_requests` probes per round, fleet-wide; every replica closes.
3. The server is frozen (SIGSTOP): requests neither fail nor slow down, the fast
   replica opens on its own, and the fleet learns it once the server is thawed.
4. A replica killed while it holds the only probe lease of a round: the round goes on
   once the lease expires (lease_ttl), and no other probe went while it was valid.

Plus: no process sent a byte to Redis from any thread but its store's.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest

from httpx_breaker._upstream import Upstream

from . import fleet_replica
from .redis_servers import Server, running, wait_until

BUDGET = 2
LEASE_KEY = "lease-test"  # a second breaker (per-request key), with a budget of 1
LEASE_TTL = 0.5
STORE_TIMEOUT = 30.0  # a command to a frozen server would hang this long
NAMESPACE = "fleet-test"
FAST, SLOW = 3, 100


class Fleet:
    """The replica processes, spoken to over pipes."""

    def __init__(self, server: Server, upstream: Upstream, runtimes: list[str]) -> None:
        self.server = server
        self.upstream = upstream
        self.ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        self.runtimes = runtimes
        for index, runtime in enumerate(runtimes):
            spec = {
                "runtime": runtime,
                "redis": server.url,
                "namespace": NAMESPACE,
                "store_options": {"lease_ttl": LEASE_TTL, "timeout": STORE_TIMEOUT},
                "upstream": upstream.url,
                "config": {
                    "failure_threshold": FAST if index == 0 else SLOW,
                    "reset_timeout": 30.0,
                    "half_open_max_requests": BUDGET,
                },
                "policies": {LEASE_KEY: {"half_open_max_requests": 1}},
            }
            parent, child = self.ctx.Pipe()
            process = self.ctx.Process(
                target=fleet_replica.run, args=(index, child, spec), daemon=True
            )
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)
        for index in range(len(runtimes)):
            assert self.receive(index, timeout=60) == "ready", f"replica {index} did not connect"

    def receive(self, index: int, timeout: float = 20.0) -> Any:
        pipe = self.pipes[index]
        if not pipe.poll(timeout):
            raise AssertionError(f"replica {index} ({self.runtimes[index]}) did not answer")
        return pipe.recv()

    def ask(self, indexes: list[int] | range, *command: Any, timeout: float = 20.0) -> list[Any]:
        """Send `command` to each replica at once, then collect the answers in order."""
        for index in indexes:
            self.pipes[index].send(command)
        return [self.receive(index, timeout) for index in indexes]

    @property
    def alive(self) -> list[int]:
        return [i for i, p in enumerate(self.processes) if p.is_alive()]

    def states(self, key: str | None = None, indexes: list[int] | None = None) -> list[str | None]:
        return [r["state"] for r in self.ask(indexes or self.alive, "report", key)]

    def wait_for(self, state: str, key: str | None = None, what: str = "") -> None:
        wait_until(
            lambda: set(self.states(key)) == {state}, timeout=15, what=what or f"all {state}"
        )

    def end_the_fleets_period(self) -> None:
        with self.server.client() as client:
            for key in client.keys(f"httpx-breaker:{NAMESPACE}:k:*"):
                if client.hget(key, "s") == "o":
                    client.hset(key, "u", 1)

    def hits(self, since: int, path: str = "/") -> list[float]:
        return [t for t, _, p in self.upstream.requests[since:] if p == path]

    def _stop(self, index: int) -> None:
        try:
            self.pipes[index].send(("stop",))
            self.receive(index, timeout=10)
        except (AssertionError, OSError):
            pass  # it is killed below

    def close(self) -> None:
        for index in self.alive:
            self._stop(index)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Server]:
    with running("valkey") as started:
        yield started


def responses(outcomes: list[Any]) -> list[int]:
    return [o[2] for o in outcomes if o[1] == "response"]


def run_scenario(server: Server, runtimes: list[str], down_rounds: int) -> dict[str, Any]:
    """The scenario of the module docstring; returns what it measured on the way."""
    found: dict[str, Any] = {}
    with Upstream("healthy") as upstream:
        fleet = Fleet(server, upstream, [*runtimes, "sync"])  # the last one is killed in 4.
        everyone = range(len(runtimes) + 1)
        slow = range(1, len(runtimes) + 1)
        victim = len(runtimes)
        try:
            # -- 1. the open travels -------------------------------------------------------
            for answers in fleet.ask(everyone, "send", "/ok", 1, None):
                assert responses(answers) == [200]
            upstream.mode = "failing"
            for answers in fleet.ask(slow, "send", "/", 2, None):
                assert responses(answers) == [503, 503]  # below their own threshold
            [answers] = fleet.ask([0], "send", "/", FAST, None)
            assert responses(answers) == [503] * FAST
            fleet.wait_for("open", what="the fleet's open everywhere")
            sent = upstream.request_count
            for answers in fleet.ask(slow, "send", "/", 5, None):
                assert [o[1:3] for o in answers] == [("refused", "open")] * 5
            assert upstream.request_count == sent  # refused before any I/O
            for report in fleet.ask(slow, "report", None):
                assert [c[2:] for c in report["changes"]] == [("closed", "open", "fleet")]

            # -- 2. half-open rounds: at most BUDGET probes each, fleet-wide ----------------
            found["probes"] = []
            for _ in range(down_rounds):
                fleet.end_the_fleets_period()
                fleet.ask(everyone, "advance", 3600.0)
                since = upstream.request_count
                rounds = fleet.ask(everyone, "until", "/", "open", None, 10.0)
                probes = fleet.hits(since)
                assert 1 <= len(probes) <= BUDGET, rounds
                found["probes"].append(len(probes))
                fleet.wait_for("open", what="the fleet's reopen")
            upstream.mode = "slow"
            upstream.delay = 0.3  # probes in flight together, so that the budget is tested
            fleet.end_the_fleets_period()
            fleet.ask(everyone, "advance", 3600.0)
            since = upstream.request_count
            rounds = fleet.ask(everyone, "until", "/", "closed", None, 10.0)
            fleet.wait_for("closed", what="every replica closed")
            reports = fleet.ask(everyone, "report", None)
            first_close = min(c[0] for r in reports for c in r["changes"] if c[3] == "closed")
            before_close = [t for t in fleet.hits(since) if t < first_close]
            admitted_half_open = [
                o for answers in rounds for o in answers
                if o[1] == "response" and o[3] == "half_open"
            ]  # fmt: skip
            assert 1 <= len(before_close) <= BUDGET
            assert 1 <= len(admitted_half_open) <= BUDGET
            assert all(o[2] == 200 for o in admitted_half_open)
            found["probes"].append(len(before_close))
            upstream.mode = "healthy"

            # -- 3. a frozen server: nothing fails, nothing waits ---------------------------
            server.freeze()
            try:
                for answers in fleet.ask(everyone, "send", "/ok", 3, None):
                    assert responses(answers) == [200, 200, 200]
                    assert max(o[4] for o in answers) < STORE_TIMEOUT / 10
                upstream.mode = "failing"
                [answers] = fleet.ask([0], "send", "/", FAST + 2, None)
                assert [o[1] for o in answers] == ["response"] * FAST + ["refused"] * 2
                assert max(o[4] for o in answers) < STORE_TIMEOUT / 10
                for answers in fleet.ask(slow, "send", "/", 2, None):
                    assert responses(answers) == [503, 503]  # their own, local decisions
                    assert max(o[4] for o in answers) < STORE_TIMEOUT / 10
            finally:
                server.thaw()
            fleet.wait_for("open", what="the open made during the freeze, after the thaw")

            # -- 4. a replica dies holding the round's only lease -----------------------------
            upstream.mode = "healthy"
            fleet.ask(everyone, "send", "/ok", 1, LEASE_KEY)
            upstream.mode = "failing"
            fleet.ask([0], "send", "/", FAST, LEASE_KEY)
            fleet.wait_for("open", LEASE_KEY, what="the lease key open everywhere")
            upstream.mode = "healthy"
            fleet.end_the_fleets_period()
            fleet.ask(everyone, "advance", 3600.0)
            since = upstream.request_count
            asked = time.monotonic()
            fleet.pipes[victim].send(("hang", "/delay/30", LEASE_KEY))
            wait_until(lambda: bool(fleet.hits(since, "/delay/30")), what="the doomed probe")
            [probe_arrived] = fleet.hits(since, "/delay/30")
            fleet.processes[victim].kill()
            fleet.processes[victim].join(timeout=5)
            survivors = [i for i in everyone if i != victim]
            fleet.ask(survivors, "until", "/", "closed", LEASE_KEY, 15.0, timeout=30)
            fleet.wait_for("closed", LEASE_KEY, what="the lease key closed")
            after = fleet.hits(since)
            assert after, "no probe after the lease expired"
            # While the dead lease was valid (it was granted after `asked`), no other probe.
            assert not [t for t in after if t < asked + LEASE_TTL]
            found["lease_delay"] = after[0] - probe_arrived

            # -- no Redis command on a request's thread or task, in any process ------------
            for report in fleet.ask(fleet.alive, "report", None):
                assert report["senders"] == [f"httpx-breaker-redis-{NAMESPACE}"]
                assert report["health"] == "connected"
        finally:
            fleet.close()
    return found


def test_a_fleet_of_sync_asyncio_and_trio_replicas_shares_one_breaker(server: Server) -> None:
    """The whole scenario of the module docstring with four replicas (sync fast; asyncio,
    trio and sync slow) and a fifth that is killed holding a lease."""
    found = run_scenario(server, ["sync", "asyncio", "trio", "sync"], down_rounds=1)
    # A round held up by a dead lease resumes once it expires (bounded, not timed: a
    # lease that never expired would hang the round until the 15 s wait gives up).
    assert found["lease_delay"] < LEASE_TTL + 5.0


@pytest.mark.soak
def test_a_bigger_fleet_through_many_rounds(server: Server) -> None:
    """Eight replicas, ten failed rounds before the recovery."""
    runtimes = ["sync", "asyncio", "trio", "sync", "asyncio", "trio", "sync", "asyncio"]
    found = run_scenario(server, runtimes, down_rounds=10)
    assert len(found["probes"]) == 11
