"""RedisStore on real servers, driven through the `_store` seam by stand-in breakers.

Each "replica" is a `RedisStore` of its own (its own connections and worker thread)
with a `Member` stand-in for its breaker. Waits are bounded polls for an outcome
(`wait_until`), never measurements.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator

import pytest
import redis

from httpx_breaker import CircuitBreakerConfig
from httpx_breaker._store import LocalTransition, ProbeOutcome, SharedBreaker
from httpx_breaker.redis import RedisStore

from .fleet_member import CLOSED, HALF_OPEN, OPEN, Member
from .redis_servers import KINDS, Server, running, wait_until

CONFIG = CircuitBreakerConfig(reset_timeout=30.0, half_open_max_requests=2)
KEY = "api.example.com"


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with running(request.param) as started:
        yield started


class Fleet:
    """Replicas of one service: a store and a stand-in breaker for KEY each."""

    def __init__(self, url: str, **options: object) -> None:
        self.url = url
        self.options = options
        self.stores: list[RedisStore] = []

    def replica(self, config: CircuitBreakerConfig = CONFIG, key: str = KEY) -> Member:
        store = RedisStore.from_url(self.url, namespace="checkout", **self.options)  # type: ignore[arg-type]
        self.stores.append(store)
        member = Member(config)
        member.link = store.attach(key, member, config)
        member.store = store  # type: ignore[attr-defined]
        return member

    def connected(self) -> None:
        wait_until(lambda: all(s.connected for s in self.stores), what="connections")

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def fleet(server: Server) -> Iterator[Fleet]:
    made = Fleet(server.url)
    yield made
    made.close()


def shared_keys(server: Server) -> dict[str, dict[str, str]]:
    with server.client() as client:
        return {key: client.hgetall(key) for key in client.keys("httpx-breaker:*:k:*")}


def test_an_open_reaches_every_replica_with_the_same_period(fleet: Fleet) -> None:
    """One replica opens; the others enter OPEN with the fleet's remaining period."""
    first, second, third = fleet.replica(), fleet.replica(), fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN and third.state is OPEN, what="the open")
    for other in (second, third):
        [(state, left, cause)] = other.applied
        assert state is OPEN and cause == "fleet"
        assert left is not None and 29.0 < left <= 30.0
    assert first.applied == []  # its own trip comes back as the same period: no change


def test_a_second_trip_does_not_restart_the_period(fleet: Fleet, server: Server) -> None:
    """Two replicas that open on their own share one open period (no double trip)."""
    # The second computes a longer period of its own: the fleet's must win.
    first, second = fleet.replica(), fleet.replica(CONFIG.replace(reset_timeout=60.0))
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    [before] = shared_keys(server).values()
    second.state = CLOSED  # as if it had not heard yet, and then opened on its own
    # Its own period would be 60 s; read from the config, not from the member, whose
    # period the store's answer may already have replaced (a race the test must not run).
    assert second.config.open_period(second.failed_rounds) == 60.0
    second.trip()
    wait_until(lambda: len(second.applied) == 2, what="the answer to the second trip")
    [after] = shared_keys(server).values()
    assert after["e"] == before["e"] and after["u"] == before["u"]
    state, left, _ = second.applied[-1]
    assert state is OPEN and left is not None and 29 < left <= 30


def test_a_trip_queued_while_a_late_breaker_reads_the_fleet_keeps_its_period(
    fleet: Fleet, server: Server
) -> None:
    """A breaker made after its key opened elsewhere, which opens on its own before it
    has heard (its first request failed), does not restart the fleet's period: the
    reading of the key that its attach triggers must not push its trip as newer than the
    fleet's open. Its trip goes through the trip script, which keeps an open period."""
    first = fleet.replica()
    fleet.connected()
    first.trip()
    with server.client() as client:  # let the fleet's open age on the server's clock
        wait_until(lambda: len(client.keys("httpx-breaker:*:k:*")) == 1, what="the open")
        [key] = client.keys("httpx-breaker:*:k:*")
        opened_ms = int(client.hget(key, "t") or 0)

        def server_ms() -> int:
            seconds, micros = client.time()
            return seconds * 1000 + micros // 1000

        wait_until(lambda: server_ms() - opened_ms >= 20, what="the open to age")
        before = client.hgetall(key)
    store = RedisStore.from_url(server.url, namespace="checkout")
    fleet.stores.append(store)
    wait_until(lambda: store.connected, what="the late store")
    late = Member(CONFIG)
    peek = store._peek
    tripped: list[bool] = []

    def peek_then_trip(links):  # type: ignore[no-untyped-def]
        # The late breaker's own trip lands between the attach's reading and its answer,
        # as when its first request fails at that moment.
        if not tripped:
            tripped.append(True)
            late.trip()
        return peek(links)

    store._peek = peek_then_trip  # type: ignore[method-assign]
    late.link = store.attach(KEY, late, CONFIG)
    link = late.link
    wait_until(lambda: tripped and link.acked == link.token, what="the late trip's answer")
    with server.client() as client:
        after = client.hgetall(key)
    assert (after["e"], after["u"]) == (before["e"], before["u"])
    assert late.state is OPEN
    assert 0 < late.open_until - late.clock() <= 30.0


def test_a_breaker_made_after_the_open_learns_it_at_once(fleet: Fleet) -> None:
    """A key attached while the fleet holds it open is read right away."""
    first = fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: len(fleet.stores[0].health.__repr__()) > 0 and first.link is not None)
    late = fleet.replica()
    wait_until(lambda: late.state is OPEN, what="the late breaker to open")
    assert late.applied[0][0] is OPEN


def test_probe_budget_is_fleet_wide(fleet: Fleet, server: Server) -> None:
    """However many replicas ask, at most half_open_max_requests leases are out."""
    members = [fleet.replica() for _ in range(4)]
    fleet.connected()
    members[0].trip()
    wait_until(lambda: all(m.state is OPEN for m in members), what="the open")
    with server.client() as client:
        [key] = client.keys("httpx-breaker:*:k:*")
        client.hset(key, "u", 1)  # the period has ended on the server's clock
    for member in members:
        member.half_open()
    for member in members:  # no lease yet: refused, and one is fetched
        assert member.link is not None
        assert member.link.take_lease() is None
    wait_until(
        lambda: sum(len(m.link.leases) for m in members) >= 2,  # type: ignore[union-attr]
        what="two leases",
    )
    leases = [m.link.take_lease() for m in members]  # type: ignore[union-attr]
    granted = [lease for lease in leases if lease is not None]
    assert len(granted) == 2
    with server.client() as client:
        assert len([f for f in client.hkeys(key) if f.startswith("L")]) == 2


def test_successful_probes_close_every_replica(fleet: Fleet, server: Server) -> None:
    """The fleet's probes succeed; every replica closes, probing or not."""
    members = [fleet.replica() for _ in range(3)]
    fleet.connected()
    _open_then_close_by_probes(server, members)


def _open_then_close_by_probes(server: Server, members: list[Member]) -> None:
    """A fleet round: the first member trips, every member opens; the fleet's period
    ends; the first member's two leased probes succeed, and every member closes."""
    prober = members[0]
    prober.trip()
    wait_until(lambda: all(m.state is OPEN for m in members), what="the open")
    with server.client() as client:
        [key] = client.keys("httpx-breaker:*:k:*")
        client.hset(key, "u", 1)
    link = prober.link
    assert link is not None
    prober.half_open()
    leases = []
    for _ in range(2):
        link.take_lease()  # none yet: asks the fleet for one
        wait_until(lambda: bool(link.leases), what="a lease")
        lease = link.take_lease()
        assert lease is not None
        leases.append(lease)
    for lease in leases:
        link.probe_done(lease, ProbeOutcome.SUCCESS)
    wait_until(lambda: all(m.state is CLOSED for m in members), what="every replica closed")


def test_a_failed_probe_reopens_every_replica(fleet: Fleet, server: Server) -> None:
    """One failed probe anywhere reopens the fleet, with the backoff counted once."""
    config = CONFIG.replace(reset_timeout_multiplier=2.0)
    members = [fleet.replica(config) for _ in range(2)]
    fleet.connected()
    members[0].trip()
    wait_until(lambda: all(m.state is OPEN for m in members), what="the open")
    with server.client() as client:
        [key] = client.keys("httpx-breaker:*:k:*")
        client.hset(key, "u", 1)
    prober = members[0]
    assert prober.link is not None
    prober.half_open()
    prober.link.take_lease()
    wait_until(lambda: bool(prober.link.leases), what="a lease")  # type: ignore[union-attr]
    lease = prober.link.take_lease()
    assert lease is not None
    prober.link.probe_done(lease, ProbeOutcome.FAILURE)
    wait_until(lambda: members[1].applied[-1][1] is not None
               and members[1].applied[-1][1] > 31, what="the reopen")  # fmt: skip
    state, left, _ = members[1].applied[-1]
    assert state is OPEN and left is not None and 59 < left <= 60
    assert shared_keys(server)[key]["r"] == "1"


def test_a_lease_nobody_uses_goes_back(server: Server) -> None:
    """A fetched lease left unused is returned, so it does not hold the budget."""
    fleet = Fleet(server.url)
    try:
        config = CONFIG.replace(half_open_max_requests=1)
        member = fleet.replica(config)
        fleet.connected()
        member.trip()
        with server.client() as client:
            wait_until(lambda: bool(client.keys("httpx-breaker:*:k:*")), what="the key")
            [key] = client.keys("httpx-breaker:*:k:*")
            client.hset(key, "u", 1)
            member.half_open()
            assert member.link is not None
            member.link.take_lease()
            wait_until(lambda: bool(member.link.leases), what="a lease")  # type: ignore[union-attr]
            wait_until(
                lambda: not [f for f in client.hkeys(key) if f.startswith("L")],
                what="the unused lease to go back",
            )
        assert not member.link.leases
    finally:
        fleet.close()


def test_a_replica_that_dies_holding_a_lease_delays_the_round_by_the_lease(
    server: Server,
) -> None:
    """Its lease expires; another replica then gets the slot."""
    fleet = Fleet(server.url, lease_ttl=0.3)
    try:
        config = CONFIG.replace(half_open_max_requests=1)
        doomed, survivor = fleet.replica(config), fleet.replica(config)
        fleet.connected()
        doomed.trip()
        wait_until(lambda: survivor.state is OPEN, what="the open")
        with server.client() as client:
            [key] = client.keys("httpx-breaker:*:k:*")
            client.hset(key, "u", 1)
        doomed.half_open()
        survivor.half_open()
        assert doomed.link is not None and survivor.link is not None
        doomed.link.take_lease()
        wait_until(lambda: bool(doomed.link.leases), what="the doomed lease")  # type: ignore[union-attr]
        assert doomed.link.take_lease() is not None
        fleet.stores[0].close()  # dies holding it: no result ever comes
        survivor.link.take_lease()
        assert not survivor.link.leases  # the budget is taken

        def granted() -> bool:
            assert survivor.link is not None
            if not survivor.link.leases:
                survivor.link.take_lease()  # keep asking, as requests would
                return False
            return True

        wait_until(granted, what="the slot after the lease expired")
    finally:
        fleet.close()


def test_remote_transitions_are_applied_on_the_store_thread(fleet: Fleet) -> None:
    """The breaker side is called from the store's worker, never from a request."""
    first, second = fleet.replica(), fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    assert second.apply_threads == {"httpx-breaker-redis-checkout"}


def test_no_redis_command_runs_on_the_callers_thread(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every byte sent to Redis is sent by the store's own thread."""
    senders: list[str] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def spy(self: object, command: object, check_health: bool = True) -> None:
        if getattr(self, "client_name", None) == "httpx-breaker":  # the store's, not ours
            senders.append(threading.current_thread().name)
        original(self, command, check_health)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", spy)
    fleet = Fleet(server.url)
    try:
        first, second = fleet.replica(), fleet.replica()
        fleet.connected()
        first.trip()
        wait_until(lambda: second.state is OPEN, what="the open")
        with server.client() as client:
            [key] = client.keys("httpx-breaker:*:k:*")
            client.hset(key, "u", 1)
        first.half_open()
        assert first.link is not None
        first.link.take_lease()
        wait_until(lambda: bool(first.link.leases), what="a lease")  # type: ignore[union-attr]
        lease = first.link.take_lease()
        assert lease is not None
        first.link.probe_done(lease, ProbeOutcome.FAILURE)
        wait_until(lambda: len(second.applied) >= 2, what="the reopen")
    finally:
        fleet.close()
    assert senders
    assert set(senders) == {"httpx-breaker-redis-checkout"}


def test_a_missed_message_is_caught_by_the_reconcile(server: Server) -> None:
    """State written without a message (as if pub/sub dropped it) still arrives."""
    fleet = Fleet(server.url, reconcile_interval=0.2)
    try:
        first, second = fleet.replica(), fleet.replica()
        fleet.connected()
        first.trip()
        wait_until(lambda: second.state is OPEN, what="the open")
        with server.client() as client:
            [key] = client.keys("httpx-breaker:*:k:*")
            epoch = int(client.hget(key, "e") or 0)
            client.hset(key, mapping={"s": "c", "e": epoch + 1, "u": 0})
        wait_until(lambda: first.state is CLOSED and second.state is CLOSED, what="reconcile")
    finally:
        fleet.close()


def test_half_open_early_on_a_fast_clock_follows_the_fleets_period(fleet: Fleet) -> None:
    """A replica whose own period ends first is put back to OPEN for what is left."""
    first = fleet.replica()
    fleet.connected()
    first.trip()
    first.clock.advance(31)  # its clock says the period is over; the server's does not
    first.half_open()
    wait_until(lambda: first.state is OPEN, what="the correction")
    state, left, _ = first.applied[-1]
    assert state is OPEN and left is not None and 25 < left <= 30


def test_forced_breakers_ignore_the_fleet(fleet: Fleet) -> None:
    """force_open / force_closed hold until reset(): the fleet does not move them."""
    first, second = fleet.replica(), fleet.replica()
    second.forced = True
    fleet.connected()
    first.trip()
    third = fleet.replica()
    wait_until(lambda: third.state is OPEN, what="the open")
    assert second.state is CLOSED and second.applied == []


def test_script_flush_is_survived(fleet: Fleet, server: Server) -> None:
    """After SCRIPT FLUSH the store loads its scripts again (EVALSHA falls back)."""
    first, second = fleet.replica(), fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    with server.client() as client:
        client.script_flush()
        [key] = client.keys("httpx-breaker:*:k:*")
        client.hset(key, "u", 1)
    first.half_open()
    wait_until(lambda: shared_keys(server)[key]["s"] == "h", what="half-open after the flush")
    assert fleet.stores[0].connected


def test_a_restarted_server_gets_the_open_state_back(server: Server) -> None:
    """The server lost everything; a replica's own OPEN is pushed on reconnect."""
    fleet = Fleet(server.url, timeout=0.2)
    try:
        first, second = fleet.replica(), fleet.replica()
        fleet.connected()
        first.trip()
        wait_until(lambda: second.state is OPEN, what="the open")
        with server.client() as client:
            before = client.info("server")["run_id"]
        server.restart()  # no persistence: the new process starts empty
        with server.client() as client:
            assert client.info("server")["run_id"] != before
        fleet.connected()
        wait_until(lambda: len(shared_keys(server)) == 1, what="the pushed state")
        [state] = shared_keys(server).values()
        assert state["s"] == "o"
        with server.client() as client:
            seconds, micros = client.time()
        assert int(state["u"]) - (seconds * 1000 + micros // 1000) > 29_000  # still 30 s
        assert all(s.health.reconnects == 1 for s in fleet.stores)
        # Scripts were loaded again on the new server: the next transition works.
        with server.client() as client:
            [key] = client.keys("httpx-breaker:*:k:*")
            client.hset(key, "u", 1)
        first.half_open()
        wait_until(lambda: shared_keys(server)[key]["s"] == "h", what="half-open")
    finally:
        fleet.close()


def test_a_local_open_during_an_outage_is_pushed(server: Server) -> None:
    """Opened while Redis was down: the fleet learns it when Redis is back."""
    fleet = Fleet(server.url, timeout=0.2)
    try:
        first, second = fleet.replica(), fleet.replica()
        fleet.connected()
        server.stop()
        wait_until(lambda: not any(s.connected for s in fleet.stores), what="the loss")
        assert first.link is not None and not first.link.active
        first.trip()  # local only: nothing waits
        assert second.state is CLOSED
        server.start()
        wait_until(lambda: second.state is OPEN, what="the pushed open")
        # With the period the opener has left (its clock stands still), not an ended one.
        [(state, left, cause)] = second.applied
        assert state is OPEN and left is not None and 29.0 < left <= 30.0
        assert cause == "fleet"
    finally:
        fleet.close()


def test_an_unreachable_server_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """The store starts local-only and connects once the server is there."""
    kind = KINDS[0]
    with running(kind) as server:
        server.stop()
        caplog.set_level(logging.INFO, logger="httpx_breaker.redis")
        store = RedisStore.from_url(server.url, namespace="checkout", timeout=0.2)
        try:
            member = Member(CONFIG)
            link = store.attach(KEY, member, CONFIG)
            wait_until(lambda: store.health.state == "disconnected", what="the failure")
            assert not link.active
            assert "unreachable" in caplog.text
            server.start()
            wait_until(lambda: store.connected, what="the connection")
            assert link.active
            assert store.health.reconnects == 1
            assert "is back" in caplog.text
        finally:
            store.close()


def test_a_frozen_server_never_blocks_the_callers(server: Server) -> None:
    """With the worker stuck on a SIGSTOPped server, every seam call still returns."""
    fleet = Fleet(server.url, timeout=30.0)  # the worker will be stuck for good
    try:
        member = fleet.replica()
        fleet.connected()
        store = fleet.stores[0]
        link = member.link
        assert link is not None
        server.freeze()
        member.trip()  # the worker sends it and hangs on the frozen server
        wait_until(lambda: store.health.queued == 0, what="the worker to take the trip")
        for _ in range(200):
            link.published(LocalTransition(OPEN, HALF_OPEN, "reset_timeout"))
            assert link.take_lease() is None
            link.counted(True)
        # All of that returned while the worker still hangs: it is queued, not sent.
        assert store.health.queued > 0
        assert store.connected  # it has not even noticed yet
    finally:
        server.thaw()
        fleet.close()


def test_a_frozen_server_is_noticed_and_survived(server: Server) -> None:
    """Commands time out, the store goes local-only, and it comes back after SIGCONT."""
    fleet = Fleet(server.url, timeout=0.2)
    try:
        first, second = fleet.replica(), fleet.replica()
        fleet.connected()
        server.freeze()
        first.trip()
        wait_until(lambda: not fleet.stores[0].connected, what="the timeout")
        assert first.link is not None and not first.link.active
        assert "TimeoutError" in (fleet.stores[0].health.last_error or "")
        server.thaw()
        wait_until(lambda: fleet.stores[0].connected, what="the reconnection")
        wait_until(lambda: second.state is OPEN, what="the pushed open")
    finally:
        fleet.close()


def test_close_stops_the_worker_and_goes_local(fleet: Fleet) -> None:
    """After close() links are inactive, calls are no-ops, and close() is idempotent."""
    member = fleet.replica()
    fleet.connected()
    store = fleet.stores[0]
    store.close()
    assert not store._thread.is_alive()
    assert member.link is not None and not member.link.active
    member.trip()
    assert member.link.take_lease() is None
    store.close()
    assert store.health.state == "closed"
    assert "closed" in repr(store)


def test_two_breakers_for_one_key_in_one_process_both_follow(fleet: Fleet) -> None:
    """Two registries of a process may share one store: both breakers of a key follow."""
    first = fleet.replica()
    store = fleet.stores[0]
    twin = Member(CONFIG)
    twin.link = store.attach(KEY, twin, CONFIG)
    other = fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: twin.state is OPEN and other.state is OPEN, what="the open")
    assert first.applied == [] and twin.applied[0][0] is OPEN
    assert store.health.keys == 2
    twin.link.detach()
    wait_until(lambda: store.health.keys == 1, what="the detach")
    assert first.link is not None and first.link.active


def test_a_breaker_dropped_without_detach_is_forgotten(server: Server) -> None:
    """The store holds breakers weakly; the next reconcile drops a dead one's link."""
    store = RedisStore.from_url(server.url, namespace="checkout", reconcile_interval=0.05)
    try:
        member = Member(CONFIG)
        store.attach(KEY, member, CONFIG)
        wait_until(lambda: store.connected and store.health.keys == 1, what="the key")
        del member
        gc.collect()
        wait_until(lambda: store.health.keys == 0, what="the dead link to go")
    finally:
        store.close()


def test_detach_forgets_the_key(fleet: Fleet) -> None:
    """A detached key is no longer updated by the fleet."""
    first, second = fleet.replica(), fleet.replica()
    fleet.connected()
    assert second.link is not None
    second.link.detach()
    wait_until(lambda: fleet.stores[1].health.keys == 0, what="the detach")
    first.trip()
    third = fleet.replica()
    wait_until(lambda: third.state is OPEN, what="the open")
    assert second.state is CLOSED


def test_share_counts_open_the_fleet_on_its_failure_rate(server: Server) -> None:
    """No replica sees enough to open; their summed outcomes do."""
    config = CONFIG.replace(failure_threshold=100, window_size=10, failure_rate_threshold=0.5)
    fleet = Fleet(server.url, share_counts=True)
    try:
        members = [fleet.replica(config) for _ in range(3)]
        fleet.connected()
        for member in members:
            assert member.link is not None
            for failed in (True, True, False, True):
                member.link.counted(failed)
        wait_until(lambda: all(m.state is OPEN for m in members), what="the fleet open")
        assert all(m.applied[0][2] == "fleet" for m in members)
    finally:
        fleet.close()


def test_counts_made_while_disconnected_are_not_sent_later(server: Server) -> None:
    """Outcomes counted while the server was away are old news: after the reconnect only
    fresh ones reach the fleet's window (the stale failures here would open it)."""
    config = CONFIG.replace(failure_threshold=100, window_size=10, failure_rate_threshold=0.5)
    fleet = Fleet(server.url, share_counts=True)
    try:
        members = [fleet.replica(config) for _ in range(2)]
        fleet.connected()
        server.stop()
        wait_until(lambda: not any(s.connected for s in fleet.stores), what="the loss")
        for member in members:
            assert member.link is not None
            for _ in range(4):
                member.link.counted(True)
        server.start()
        fleet.connected()
        for member in members:
            assert member.link is not None
            member.link.counted(False)

        def outcomes_in_redis() -> int:
            return sum(
                int(value)
                for fields in shared_keys(server).values()
                for name, value in fields.items()
                if name.startswith("a")
            )

        wait_until(lambda: outcomes_in_redis() >= 2, what="the fresh counts")
        assert outcomes_in_redis() == 2
        assert all(m.state is CLOSED for m in members)
    finally:
        fleet.close()


def test_a_retry_after_floor_reaches_every_replica(fleet: Fleet) -> None:
    """An open breaker told to wait longer (Retry-After) makes the fleet wait longer."""
    first, second = fleet.replica(), fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    assert first.link is not None
    first.link.extended(90.0)
    wait_until(lambda: len(second.applied) == 2, what="the longer period")
    state, left, _ = second.applied[-1]
    assert state is OPEN and left is not None and 89 < left <= 90


def test_health_and_metrics_tell_the_sync(fleet: Fleet) -> None:
    """Messages heard, their lag, keys shared: plain numbers an exporter can read."""
    first, second = fleet.replica(), fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    health = fleet.stores[1].health
    assert health.connected and health.state == "connected"
    assert health.messages == 1 and health.keys == 1 and health.lag is not None
    assert 0.0 <= health.lag < 60.0
    metrics = fleet.stores[1].metrics()
    assert metrics["connected"] == 1.0 and metrics["messages"] == 1.0
    assert fleet.stores[0].health.messages == 0  # its own message is not counted


def test_a_store_made_before_fork_works_in_the_child(fleet: Fleet, server: Server) -> None:
    """gunicorn --preload: the child gets a fresh worker, not its parent's dead one."""
    inherited = RedisStore.from_url(server.url, namespace="checkout")
    watcher = fleet.replica()
    fleet.connected()
    wait_until(lambda: inherited.connected, what="the parent's connection")
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads: that is the case.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: share an open through the inherited store, then leave
        code = 1
        try:
            member = Member(CONFIG)
            member.link = inherited.attach(KEY, member, CONFIG)
            deadline = time.monotonic() + 10
            while not inherited.connected and time.monotonic() < deadline:
                time.sleep(0.005)
            member.trip()
            while inherited.health.queued and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.05)
            code = 0 if inherited.connected else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    wait_until(lambda: watcher.state is OPEN, what="the child's open")
    assert inherited.connected  # the parent's store is untouched
    inherited.close()


def test_the_stand_in_is_a_shared_breaker() -> None:
    """The stand-in implements the seam's breaker side (a check on the test itself)."""
    assert isinstance(Member(), SharedBreaker)


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("http://127.0.0.1:6379", "not a Redis URL"),
        ("redis://", "names no host"),
        ("redis://127.0.0.1:99999/0", "port"),
        ("redis://127.0.0.1:6379/zero", "database must be a number"),
        ("unix://", "socket path"),
        ("127.0.0.1:6379", "not a Redis URL"),
    ],
)
def test_a_malformed_url_is_a_value_error(url: str, field: str) -> None:
    """Bad input fails when the store is built, saying what is wrong."""
    with pytest.raises(ValueError, match=field):
        RedisStore.from_url(url, namespace="checkout")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"namespace": ""}, "namespace must not be empty"),
        ({"namespace": "has space"}, "namespace"),
        ({"namespace": "ok", "timeout": 0}, "timeout"),
        ({"namespace": "ok", "lease_ttl": -1}, "lease_ttl"),
        ({"namespace": "ok", "reconcile_interval": float("inf")}, "reconcile_interval"),
        ({"namespace": "ok", "ttl": float("nan")}, "ttl"),
    ],
)
def test_bad_options_are_value_errors(options: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RedisStore.from_url("redis://127.0.0.1:6379/0", **options)  # type: ignore[arg-type]


def test_valkey_urls_are_accepted(server: Server) -> None:
    """valkey:// is a spelling of redis:// (Valkey speaks the same protocol)."""
    store = RedisStore.from_url(server.url.replace("redis://", "valkey://"), namespace="v")
    try:
        store.attach(KEY, Member(), CONFIG)
        wait_until(lambda: store.connected, what="the connection")
    finally:
        store.close()


def test_readable_keys_are_asked_for(server: Server) -> None:
    """With readable_keys the key appears (percent-encoded); without, only a digest."""
    plain = RedisStore.from_url(server.url, namespace="a")
    readable = RedisStore.from_url(server.url, namespace="b", readable_keys=True)
    try:
        for store in (plain, readable):
            member = Member(CONFIG)
            member.link = store.attach("api.example.com:8443", member, CONFIG)
            wait_until(lambda s=store: s.connected, what="the connection")  # type: ignore[misc]
            member.trip()
        wait_until(lambda: len(shared_keys(server)) == 2, what="both keys")
        keys = sorted(shared_keys(server))
        assert keys[1] == "httpx-breaker:b:k:api.example.com%3A8443"
        assert "example" not in keys[0] and len(keys[0].rsplit(":", 1)[1]) == 32
    finally:
        plain.close()
        readable.close()


def test_import_without_redis_py_names_the_extra() -> None:
    """httpx_breaker imports without redis-py; httpx_breaker.redis says what to install."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["redis"] = None
        import httpx_breaker
        import httpx_breaker._store
        try:
            import httpx_breaker.redis
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without redis-py")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'httpx-breaker[redis]'" in done.stdout


def test_a_trip_a_frozen_server_runs_after_the_replica_gave_up_changes_nothing(
    server: Server,
) -> None:
    """A replica's trip times out on a frozen server; the replica recovers on its own
    before the server resumes, and the server then runs the trip still waiting in the
    dropped connection's socket. Too late: it must not reopen the fleet."""
    fleet = Fleet(server.url, timeout=0.2)
    try:
        members = [fleet.replica(), fleet.replica()]
        first = members[0]
        fleet.connected()
        _open_then_close_by_probes(server, members)  # a fleet round while connected

        server.freeze()
        try:
            first.trip()  # sent, and given up on after the store's timeout
            wait_until(lambda: not fleet.stores[0].connected, what="the timeout")
            first.half_open()
            first.close()  # recovered on its own while the server was frozen
            time.sleep(1.0)  # the trip is now later than its timeout and the clocks' margin
        finally:
            server.thaw()
        fleet.connected()
        wait_until(lambda: fleet.stores[0].health.reconnects >= 1, what="the reconnection")
        states = {fields.get("s") for fields in shared_keys(server).values()}
        assert "o" not in states, "the late trip opened the key"
        time.sleep(0.3)  # any message it published would have arrived by now
        assert [m.state for m in members] == [CLOSED, CLOSED]
    finally:
        fleet.close()
