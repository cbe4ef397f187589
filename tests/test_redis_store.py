"""RedisStore on real servers, driven through the `_store` seam by stand-in breakers.

Each "replica" is a `RedisStore` of its own (its own connections and worker thread)
with a `Member` stand-in for its breaker. Waits are bounded polls for an outcome
(`wait_until`), never measurements.
"""

from __future__ import annotations

import gc
import logging
import math
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
from httpx_breaker._store import Lease, LocalTransition, ProbeOutcome, SharedBreaker, StoreLink
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


@pytest.fixture
def patient_fleet(server: Server) -> Iterator[Fleet]:
    """A fleet whose commands may take 5 s: a test that holds a store's thread must not
    take a loaded machine's slow reply for an outage (which drops the queued work)."""
    made = Fleet(server.url, timeout=5.0)
    yield made
    made.close()


def _end_the_period(server: Server) -> str:
    """End the shared key's open period on the server's clock, once the key is there (a
    replica asking for a lease finds the fleet half-open in effect); the key."""
    with server.client() as client:
        wait_until(lambda: len(client.keys("httpx-breaker:*:k:*")) == 1, what="the open")
        [key] = client.keys("httpx-breaker:*:k:*")
        client.hset(key, "u", 1)
    return key


def _half_open(server: Server, member: Member) -> tuple[str, StoreLink]:
    """End the fleet's open period of the key `member` tripped (see `_end_the_period`)
    and half-open `member`: the key, and `member`'s link, ready to ask for a lease."""
    key = _end_the_period(server)
    member.half_open()
    assert member.link is not None
    return key, member.link


def _leased(link: StoreLink) -> Lease:
    """A lease for `link`: asked for, fetched by the store's thread, taken."""
    link.take_lease()  # none yet: the store asks the fleet for one
    wait_until(lambda: bool(link.leases), what="a lease")  # type: ignore[attr-defined]
    lease = link.take_lease()
    assert lease is not None
    return lease


def _second_key(store: RedisStore, member: Member) -> Member:
    """`member`, sharing a second key ("witness.example.com") through `store`: its work,
    queued after another key's, shows when the store's thread got past that."""
    member.link = store.attach("witness.example.com", member, member.config)
    return member


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
    key = _end_the_period(server)
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
    _end_the_period(server)
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
    key = _end_the_period(server)
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
        _end_the_period(server)
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
        _end_the_period(server)
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
        key = _end_the_period(server)
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


def test_a_child_starts_unconnected_with_none_of_the_parents_work(server: Server) -> None:
    """After fork() the child's store is connecting, not connected, until its own thread
    connects; the parent's queued work is not the child's, and a lease ask the parent had
    queued does not stop the child's refused requests from queueing their own."""
    fleet = Fleet(server.url, timeout=30.0)  # the parent's worker hangs on the frozen server
    try:
        member = fleet.replica()
        store = fleet.stores[0]
        link = member.link
        assert link is not None
        fleet.connected()
        server.freeze()
        member.trip()
        wait_until(lambda: store.health.queued == 0, what="the worker to take the trip")
        assert link.take_lease() is None  # the ask is queued behind the hung trip
        assert store.health.queued == 1
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() in a process with threads: that is the case.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: its thread cannot connect to the frozen server
            code = 1
            try:
                seen = (store.connected, store.health.state, store.health.queued)
                refused = link.take_lease() is None
                code = (
                    0
                    if (seen, refused, store.health.queued) == ((False, "connecting", 0), True, 1)
                    else 3
                )
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        server.thaw()
        fleet.close()


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


@pytest.mark.parametrize(
    ("url", "options", "field"),
    [
        (5, {"namespace": "ok"}, "url must be a str"),
        ("redis://127.0.0.1:6379/0", {"namespace": 5}, "namespace must be a str"),
        ("redis://127.0.0.1:6379/0", {"namespace": "ok", "timeout": "1"}, "timeout"),
        ("redis://127.0.0.1:6379/0", {"namespace": "ok", "share_counts": "yes"}, "share_counts"),
        ("redis://127.0.0.1:6379/0", {"namespace": "ok", "readable_keys": 1}, "readable_keys"),
    ],
)
def test_values_of_the_wrong_type_are_value_errors_too(
    url: object, options: dict[str, object], field: str
) -> None:
    """As for CircuitBreakerConfig, a value of the wrong type raises an error that is
    both a TypeError and a ValueError: `except ValueError` catches all bad input."""
    with pytest.raises(ValueError, match=field) as raised:
        RedisStore.from_url(url, **options)  # type: ignore[arg-type]
    assert isinstance(raised.value, TypeError)


@pytest.mark.parametrize(
    ("url", "given"),
    [
        ("unix:///tmp/r.sock?db=2", "unix:///tmp/r.sock?db=2"),
        ("valkey://h:6379/1", "redis://h:6379/1"),
        ("VALKEYS://h", "rediss://h"),
        (" redis://h:6379/0", "redis://h:6379/0"),  # urlsplit strips leading spaces
    ],
)
def test_redis_py_is_given_the_url_as_written_but_for_the_scheme(url: str, given: str) -> None:
    from httpx_breaker.redis import _check_url

    assert _check_url(url)[2] == given


def test_a_unix_socket_url_reaches_the_server(server: Server) -> None:
    """unix:///path?db=N (the form redis-py takes) connects, to that database; a
    password in its query is kept out of the store's repr like one in a netloc."""
    url = f"unix://{server.socket}?db=3&password=not-shown"
    store = RedisStore.from_url(url.replace("&password=not-shown", ""), namespace="u")
    try:
        assert f"unix://{server.socket}" in repr(store)
        member = Member(CONFIG)
        member.link = store.attach(KEY, member, CONFIG)
        wait_until(lambda: store.connected, what="the connection")
        member.trip()
        with redis.Redis(unix_socket_path=server.socket, db=3) as client:
            wait_until(lambda: len(client.keys("httpx-breaker:u:k:*")) == 1, what="the key")
        with server.client() as client:
            assert client.keys("httpx-breaker:u:k:*") == []  # not in database 0
    finally:
        store.close()
    secret = RedisStore.from_url(url, namespace="u")
    try:
        assert "not-shown" not in repr(secret)
        assert secret._redact(f"AuthenticationError: {url}") == (
            f"AuthenticationError: {url.replace('not-shown', '***')}"
        )
    finally:
        secret.close()


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


def test_a_reopen_without_a_lease_reaches_the_fleet(fleet: Fleet, server: Server) -> None:
    """A replica whose probe ran without a lease (admitted while its store was out of
    touch) reopens on its own: the fleet reopens with it; the replica is not pulled
    back to the fleet's half-open (a trip is a no-op on a half-open key: a reopen is
    offered as the newer state instead)."""
    first, second = fleet.replica(), fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    key = _end_the_period(server)
    first.half_open()
    wait_until(lambda: second.state is HALF_OPEN, what="the fleet's half-open")
    first.reopen()
    wait_until(lambda: second.state is OPEN, what="the reopen")
    assert shared_keys(server)[key]["s"] == "o"
    assert first.state is OPEN
    assert [state for state, _, _ in first.applied] == []
    state, left, _ = second.applied[-1]
    assert state is OPEN and left is not None and 29 < left <= 30


def test_a_message_for_a_breaker_dropped_without_detach_is_skipped(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A breaker gone before the reconcile forgets its link: a message for its key
    passes it by and reaches the live breaker of that key, with no error and no
    reconnection."""
    caplog.set_level(logging.INFO, logger="httpx_breaker.redis")
    fleet = Fleet(server.url)
    try:
        store = RedisStore.from_url(server.url, namespace="checkout")
        fleet.stores.append(store)
        dropped, live = Member(CONFIG), Member(CONFIG)
        store.attach(KEY, dropped, CONFIG)  # first: the message reaches its link first
        live.link = store.attach(KEY, live, CONFIG)
        opener = fleet.replica()
        fleet.connected()
        del dropped
        gc.collect()
        opener.trip()
        wait_until(lambda: live.state is OPEN, what="the open")
        assert store.health.keys == 2  # not forgotten yet: only the reconcile does it
        assert store.health.reconnects == 0 and store.health.last_error is None
        assert "unexpected error" not in caplog.text
    finally:
        fleet.close()


def _reconciled(server: Server, witness: Member) -> None:
    """Wait for two full reconciles of the witness's store: its key, written in Redis
    without a message, changes twice and the witness follows both times. A pass reads
    every key after the one before it ended; keys attached earlier settle first."""
    assert witness.link is not None
    redis_key = witness.link.redis_key  # type: ignore[attr-defined]
    with server.client() as client:
        seconds, micros = client.time()
        now_ms = seconds * 1000 + micros // 1000
        client.hset(redis_key, mapping={"s": "o", "e": 1, "t": now_ms, "u": now_ms + 60_000})
        wait_until(lambda: witness.state is OPEN, what="the first reconcile")
        client.hset(redis_key, mapping={"s": "c", "e": 2, "u": 0})
        wait_until(lambda: witness.state is CLOSED, what="the second reconcile")


def test_a_transition_queued_before_a_force_is_not_offered_to_the_fleet(
    fleet: Fleet, server: Server
) -> None:
    """Manual control stays with its replica: a reopen still queued when the operator
    forces the breaker closed is not offered to the fleet as that forced state (the
    fleet's half-open round goes on; nobody is closed by one replica's force)."""
    first, second = fleet.replica(), fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    key = _end_the_period(server)
    first.half_open()
    wait_until(lambda: second.state is HALF_OPEN, what="the fleet's half-open")
    link = first.link
    assert link is not None
    first.forced, first.state = True, CLOSED  # force_closed() right after the reopen
    link.published(LocalTransition(HALF_OPEN, OPEN, "probe_failed"))
    wait_until(lambda: link.acked == link.token, what="the reopen's turn")  # type: ignore[attr-defined]
    assert shared_keys(server)[key]["s"] == "h"
    assert second.state is HALF_OPEN


def test_a_recovery_during_an_outage_is_newer_than_the_fleets_open(server: Server) -> None:
    """A replica that closed on its own while its store was cut off holds a newer state
    than the fleet's older open: on reconnect it is offered, and the fleet closes."""
    fleet = Fleet(server.url, timeout=0.2, reconcile_interval=60.0)  # one, at the reconnect
    try:
        first, second = fleet.replica(), fleet.replica()
        fleet.connected()
        first.trip()
        wait_until(lambda: second.state is OPEN, what="the open")
        link = first.link
        assert link is not None
        wait_until(lambda: link.acked == link.token, what="the trip's answer")  # type: ignore[attr-defined]
        server.freeze()
        try:
            first.half_open()  # sent, and given up on after the store's timeout
            wait_until(lambda: not fleet.stores[0].connected, what="the timeout")
            first.close()  # recovered on its own while cut off
        finally:
            server.thaw()
        wait_until(lambda: second.state is CLOSED, what="the pushed close")
        wait_until(lambda: link.acked == link.token, what="the push's answer")  # type: ignore[attr-defined]
        assert first.state is CLOSED
        assert [fields["s"] for fields in shared_keys(server).values()] == ["c"]
        assert fleet.stores[0].health.dropped == 1  # the close, queued while cut off
    finally:
        fleet.close()


def test_a_probe_result_for_a_key_the_fleet_forgot_changes_nothing(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """The key expired or the server lost it while a leased probe ran: its result is
    stale, the replica stays where it is, and the store goes on without an error."""
    caplog.set_level(logging.INFO, logger="httpx_breaker.redis")
    fleet = Fleet(server.url)
    try:
        prober = fleet.replica()
        store = fleet.stores[0]
        # A second key of the same store, to see its turn pass.
        witness = _second_key(store, Member(CONFIG))
        fleet.connected()
        prober.trip()
        key, link = _half_open(server, prober)
        lease = _leased(link)
        with server.client() as client:
            client.delete(key)
        link.probe_done(lease, ProbeOutcome.SUCCESS)
        witness.trip()  # queued after the result: its key shows the result's turn passed
        wait_until(lambda: len(shared_keys(server)) == 1, what="the witness's open")
        assert key not in shared_keys(server)
        assert prober.state is HALF_OPEN and prober.applied == []
        assert "unexpected error" not in caplog.text
        assert store.health.reconnects == 0 and store.health.last_error is None
    finally:
        fleet.close()


def test_a_finished_probe_fetches_no_lease_nobody_asked_for(server: Server) -> None:
    """A request waited for a lease and got it; its probe succeeds: the replica takes no
    second slot of the fleet's budget on its own (only a released lease is passed on to
    a request still waiting)."""
    fleet = Fleet(server.url)
    try:
        prober = fleet.replica()
        store = fleet.stores[0]
        # A second key of the same store, to see its turn pass.
        witness = _second_key(store, Member(CONFIG))
        fleet.connected()
        prober.trip()
        key, link = _half_open(server, prober)
        assert link.take_lease() is None  # refused: the store fetches one for it
        wait_until(lambda: bool(link.leases), what="a lease")  # type: ignore[attr-defined]
        lease = link.take_lease()
        assert lease is not None
        link.probe_done(lease, ProbeOutcome.SUCCESS)
        witness.trip()  # queued after the result: its key shows the result's turn passed
        wait_until(lambda: len(shared_keys(server)) == 2, what="the witness's open")
        fields = shared_keys(server)[key]
        assert fields["ok"] == "1"
        assert not [name for name in fields if name.startswith("L")]
        assert not link.leases  # type: ignore[attr-defined]
    finally:
        fleet.close()


def test_a_reset_replica_is_not_pulled_back_by_the_reconcile(server: Server) -> None:
    """Manual control stays with its replica: a breaker reset() while the fleet is open
    stays closed through reconciles that read the same open (only a newer fleet state
    moves it)."""
    fleet = Fleet(server.url, reconcile_interval=0.05)
    try:
        first, second = fleet.replica(), fleet.replica()
        # A key attached after KEY: settled after it in a pass.
        witness = _second_key(fleet.stores[1], Member(CONFIG))
        fleet.connected()
        first.trip()
        wait_until(lambda: second.state is OPEN, what="the open")
        second.state = CLOSED  # reset(): a local cause, never published
        _reconciled(server, witness)
        assert second.state is CLOSED
        assert [state for state, _, _ in second.applied] == [OPEN]
    finally:
        fleet.close()


def test_a_breaker_dropped_while_waiting_for_a_lease_is_passed_over(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A half-open breaker waits for a slot of a full budget and is dropped (without
    detach) before the store asks again: the next ask passes it over, with no error."""
    caplog.set_level(logging.INFO, logger="httpx_breaker.redis")
    config = CONFIG.replace(half_open_max_requests=1)
    fleet = Fleet(server.url)
    try:
        holder, waiter = fleet.replica(config), fleet.replica(config)
        store = fleet.stores[1]
        witness = _second_key(store, Member(CONFIG))  # a second key of the waiter's store
        fleet.connected()
        holder.trip()
        assert waiter.changed.wait(10)  # the open has reached it
        _end_the_period(server)
        holder.half_open()
        waiter.half_open()
        assert holder.link is not None and waiter.link is not None
        holder.link.take_lease()
        wait_until(lambda: bool(holder.link.leases), what="the holder's lease")  # type: ignore[attr-defined]
        assert holder.link.take_lease() is not None  # the budget is taken
        assert waiter.link.take_lease() is None
        wait_until(lambda: bool(store._retrying), what="the waiter to ask again later")
        waiter.link = None
        del waiter
        gc.collect()
        wait_until(lambda: not store._retrying, what="the next ask")
        witness.trip()  # its key shows the store went on
        wait_until(lambda: len(shared_keys(server)) == 2, what="the witness's open")
        assert "unexpected error" not in caplog.text
        assert store.health.reconnects == 0 and store.health.last_error is None
    finally:
        fleet.close()


def test_a_half_open_offered_after_the_fleets_period_ended_stays_half_open(
    server: Server,
) -> None:
    """A replica whose own period ended while its store was cut off offers its half-open
    on reconnect; the fleet's period has ended too (an open with nothing left): the
    replica stays half-open, and the others' periods end with the fleet's."""
    fleet = Fleet(server.url, timeout=0.2)
    try:
        first, second = fleet.replica(), fleet.replica()
        store = fleet.stores[1]
        witness = _second_key(store, Member(CONFIG))  # a key attached after KEY: settled after it
        fleet.connected()
        first.trip()
        wait_until(lambda: second.state is OPEN, what="the open")
        _end_the_period(server)
        server.freeze()
        try:
            witness.trip()  # sent, and given up on after the store's timeout
            wait_until(lambda: not store.connected, what="the timeout")
            second.clock.advance(31)
            second.half_open()  # on its own clock, while cut off
        finally:
            server.thaw()
        links = (second.link, witness.link)
        wait_until(
            lambda: all(x.acked == x.token for x in links),  # type: ignore[union-attr]
            what="the reconcile after the reconnect",
        )
        assert second.state is HALF_OPEN
        assert [state for state, _, _ in second.applied] == [OPEN]
        wait_until(lambda: len(first.applied) == 1, what="the fleet's end of the period")
        assert first.applied == [(OPEN, 0.0, "fleet")]
    finally:
        fleet.close()


def test_a_lease_shorter_than_the_hold_is_kept_no_longer_than_it_lasts(
    server: Server,
) -> None:
    """A lease of 0.3 s is usable for at most 0.3 s from when it was asked for, not for
    the store's usual hold of a second."""
    fleet = Fleet(server.url, lease_ttl=0.3)
    try:
        member = fleet.replica()
        store = fleet.stores[0]
        fleet.connected()
        member.trip()
        _, link = _half_open(server, member)
        asked = store._clock()
        link.take_lease()
        wait_until(lambda: bool(link.leases), what="a lease")  # type: ignore[attr-defined]
        leases = list(link.leases)  # type: ignore[attr-defined]
        assert leases and all(asked < x.usable_until <= store._clock() + 0.3 for x in leases)
    finally:
        fleet.close()


def test_a_half_open_replica_that_missed_the_close_learns_it_from_its_lease_request(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """The fleet closed and the message was lost: the half-open replica's next lease
    request answers "closed", and the replica closes, with no error."""
    caplog.set_level(logging.INFO, logger="httpx_breaker.redis")
    fleet = Fleet(server.url, reconcile_interval=60.0)  # no reconcile tells it
    try:
        first, second = fleet.replica(), fleet.replica()
        fleet.connected()
        first.trip()
        wait_until(lambda: second.state is OPEN, what="the open")
        key = _end_the_period(server)
        first.half_open()
        wait_until(lambda: second.state is HALF_OPEN, what="the fleet's half-open")
        with server.client() as client:  # closed without a message
            epoch = int(client.hget(key, "e") or 0)
            client.hset(key, mapping={"s": "c", "e": epoch + 1, "u": 0})
        assert second.link is not None
        assert second.link.take_lease() is None
        wait_until(lambda: second.state is CLOSED, what="the close")
        assert second.applied[-1] == (CLOSED, None, "fleet")
        assert "unexpected error" not in caplog.text
        assert fleet.stores[1].health.reconnects == 0
    finally:
        fleet.close()


def test_a_round_of_slow_probes_reopens_every_replica(fleet: Fleet, server: Server) -> None:
    """With a slow-call rate threshold, a fleet round whose probes all succeed slowly
    reopens the fleet instead of closing it."""
    config = CONFIG.replace(slow_call_duration=1.0, slow_call_rate_threshold=0.5)
    prober, other = fleet.replica(config), fleet.replica(config)
    fleet.connected()
    prober.trip()
    wait_until(lambda: other.state is OPEN, what="the open")
    key, link = _half_open(server, prober)
    leases = []
    for _ in range(2):
        lease = _leased(link)
        leases.append(lease)
    for lease in leases:
        link.probe_done(lease, ProbeOutcome.SLOW_SUCCESS)
    wait_until(lambda: shared_keys(server)[key]["r"] == "1", what="the reopen")
    assert shared_keys(server)[key]["s"] == "o"
    wait_until(lambda: prober.state is OPEN and other.state is OPEN, what="every replica open")
    for member in (prober, other):  # the prober from the result's answer, the other by message
        state, left, _ = member.applied[-1]
        assert state is OPEN and left is not None and 29 < left <= 30


def test_a_replica_that_missed_the_open_learns_it_from_its_counts(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """share_counts: the fleet opened and the message was lost; the answer to the
    replica's next batch of counts tells it, before any reconcile, with no error."""
    caplog.set_level(logging.INFO, logger="httpx_breaker.redis")
    config = CONFIG.replace(failure_threshold=100, window_size=10, failure_rate_threshold=0.5)
    fleet = Fleet(server.url, share_counts=True, reconcile_interval=60.0)
    try:
        member = fleet.replica(config)
        fleet.connected()
        assert member.link is not None
        redis_key = member.link.redis_key  # type: ignore[attr-defined]
        with server.client() as client:  # opened elsewhere, without a message
            seconds, micros = client.time()
            now_ms = seconds * 1000 + micros // 1000
            client.hset(redis_key, mapping={"s": "o", "e": 1, "t": now_ms, "u": now_ms + 30_000})
        member.link.counted(False)
        wait_until(lambda: member.state is OPEN, what="the open from the counts' answer")
        [(state, left, _)] = member.applied
        assert state is OPEN and left is not None and 29 < left <= 30
        assert "unexpected error" not in caplog.text
        assert fleet.stores[0].health.reconnects == 0
    finally:
        fleet.close()


def test_a_replica_that_only_followed_the_fleet_does_not_restore_a_lost_key(
    server: Server,
) -> None:
    """Only a replica whose own decision a state was offers it again when the fleet's
    key is gone: one that merely followed the fleet's open leaves the key missing."""
    fleet = Fleet(server.url, reconcile_interval=0.05)
    try:
        opener, follower = fleet.replica(), fleet.replica()
        # A key attached after KEY: settled after it in a pass.
        witness = _second_key(fleet.stores[1], Member(CONFIG))
        fleet.connected()
        opener.trip()
        wait_until(lambda: follower.state is OPEN, what="the open")
        fleet.stores[0].close()  # the opener is gone
        with server.client() as client:
            [key] = client.keys("httpx-breaker:*:k:*")
            client.delete(key)
        _reconciled(server, witness)
        assert key not in shared_keys(server)
        assert follower.state is OPEN
    finally:
        fleet.close()


def test_an_early_half_open_goes_back_to_open_for_a_short_remainder_too(
    fleet: Fleet, server: Server
) -> None:
    """A replica half-open while the fleet's period has under a second left is put back
    to OPEN for that remainder (only an ended period leaves it half-open)."""
    first = fleet.replica()
    fleet.connected()
    first.trip()
    with server.client() as client:
        wait_until(lambda: len(client.keys("httpx-breaker:*:k:*")) == 1, what="the open")
        [key] = client.keys("httpx-breaker:*:k:*")
        seconds, micros = client.time()
        client.hset(key, "u", seconds * 1000 + micros // 1000 + 900)
    first.clock.advance(31)
    first.half_open()
    wait_until(lambda: first.state is OPEN, what="the correction")
    state, left, _ = first.applied[-1]
    assert state is OPEN and left is not None and 0 < left <= 0.9


def test_counts_made_after_a_detach_are_not_sent(server: Server) -> None:
    """share_counts: an outcome a request counts after its breaker was detached (it was
    in flight) does not reach the fleet's window."""
    config = CONFIG.replace(failure_threshold=100, window_size=10, failure_rate_threshold=0.5)
    fleet = Fleet(server.url, share_counts=True)
    try:
        member = fleet.replica(config)
        store = fleet.stores[0]
        # A second key of the same store: its counts go through.
        witness = _second_key(store, Member(config))
        fleet.connected()
        link = member.link
        assert link is not None
        link.detach()
        wait_until(lambda: store.health.keys == 1, what="the detach")

        def outcomes_in_redis() -> int:
            return sum(
                int(value)
                for fields in shared_keys(server).values()
                for name, value in fields.items()
                if name.startswith("a")
            )

        link.counted(True)  # in flight when the breaker was detached
        witness.link.counted(False)
        wait_until(lambda: outcomes_in_redis() >= 1, what="a batch of counts")
        witness.link.counted(False)  # a later batch: the one before it has been sent
        wait_until(lambda: outcomes_in_redis() >= 2, what="the next batch")
        assert len(shared_keys(server)) == 1  # the witness's key only
    finally:
        fleet.close()


class _Stalling(Member):
    """A breaker whose `shared_view` holds the store's thread until released."""

    def __init__(self, config: CircuitBreakerConfig) -> None:
        super().__init__(config)
        self.stalling = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def shared_view(self):  # type: ignore[no-untyped-def]
        if self.stalling:
            self.entered.set()
            self.release.wait(10)
        return super().shared_view()


def _wait_for_the_stall(staller: _Stalling, store: RedisStore) -> None:
    """Until the store's thread is held in `staller`'s view; if it never gets there, the
    failure says how the store was doing (a 3.10 run once timed out here, unexplained)."""
    assert staller.entered.wait(10), f"the store's thread never read the view: {store.health}"


def test_a_local_close_that_reaches_the_fleet_after_a_newer_reopen_loses(
    patient_fleet: Fleet, server: Server
) -> None:
    """A replica's close waits in its store's queue while the fleet reopens elsewhere:
    when it is offered, the fleet's newer state wins and the replica follows it."""
    first, second = patient_fleet.replica(), patient_fleet.replica()
    store = patient_fleet.stores[0]
    # A second key of the first store, to hold its thread.
    staller = _second_key(store, _Stalling(CONFIG))
    patient_fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    with server.client() as client:
        [key] = client.keys("httpx-breaker:*:k:*")
        client.hset(key, "u", 1)
        first.half_open()
        wait_until(lambda: second.state is HALF_OPEN, what="the fleet's half-open")
        staller.stalling = True
        staller.trip()  # its answer reads its view: the store's thread waits there
        _wait_for_the_stall(staller, store)
        first.close()  # queued behind the stalled work

        def server_ms() -> int:
            seconds, micros = client.time()
            return int(seconds) * 1000 + int(micros) // 1000

        closed_at = server_ms()
        wait_until(lambda: server_ms() - closed_at >= 20, what="the close to age")
        now_ms = server_ms()  # the fleet reopens elsewhere, after the close (no message)
        epoch = int(client.hget(key, "e") or 0)
        client.hset(key, mapping={"s": "o", "e": epoch + 1, "t": now_ms, "u": now_ms + 30_000})
        staller.release.set()
        link = first.link
        assert link is not None
        wait_until(lambda: link.acked == link.token, what="the close's answer")  # type: ignore[attr-defined]
        assert client.hget(key, "s") == "o"
    assert first.state is OPEN
    state, left, _ = first.applied[-1]
    assert state is OPEN and left is not None and 29 < left <= 30


def test_a_replica_asks_for_a_lease_no_longer_than_a_request_waits(server: Server) -> None:
    """While the fleet's probe budget is taken, a refused request's store asks again for
    a while, then stops: when the slot comes free after that, it fetches no lease that
    nobody waits for."""
    config = CONFIG.replace(half_open_max_requests=1)
    # The holder's lease outlasts the test; frequent reconciles keep the store busy.
    fleet = Fleet(server.url, lease_ttl=60.0, reconcile_interval=0.05)
    try:
        holder, waiter = fleet.replica(config), fleet.replica(config)
        store = fleet.stores[1]
        # A key attached after KEY: settled after it in a pass.
        witness = _second_key(store, Member(CONFIG))
        fleet.connected()
        holder.trip()
        wait_until(lambda: waiter.state is OPEN, what="the open")
        key = _end_the_period(server)
        holder.half_open()
        waiter.half_open()
        assert holder.link is not None and waiter.link is not None
        holder.link.take_lease()
        wait_until(lambda: bool(holder.link.leases), what="the holder's lease")  # type: ignore[attr-defined]
        lease = holder.link.take_lease()
        assert lease is not None  # the budget is taken
        assert waiter.link.take_lease() is None
        wait_until(lambda: bool(store._retrying), what="the waiter to ask again later")
        wait_until(lambda: not store._retrying, what="the asking to stop")
        holder.link.probe_done(lease, ProbeOutcome.IGNORED)  # the slot comes free
        with server.client() as client:
            wait_until(
                lambda: not [f for f in client.hkeys(key) if f.startswith("L")],
                what="the slot to come free",
            )
        _reconciled(server, witness)
        assert not waiter.link.leases  # type: ignore[attr-defined]
    finally:
        fleet.close()


def test_a_replica_keeps_asking_for_a_lease_while_a_request_waits(server: Server) -> None:
    """While the fleet's probe budget is taken, a refused request's store asks again every
    0.1 s for the second a request waits, not once: each ask that finds the budget full
    again sets the time of the next."""
    config = CONFIG.replace(half_open_max_requests=1)
    # The holder's lease outlasts the test; no reconcile runs scripts meanwhile.
    fleet = Fleet(server.url, lease_ttl=60.0, reconcile_interval=60.0)
    try:
        holder, waiter = fleet.replica(config), fleet.replica(config)
        fleet.connected()
        holder.trip()
        wait_until(lambda: waiter.state is OPEN, what="the open")
        with server.client() as client:
            [key] = client.keys("httpx-breaker:*:k:*")
            client.hset(key, "u", 1)  # the open period has ended on the server's clock
            holder.half_open()
            waiter.half_open()
            assert holder.link is not None and waiter.link is not None
            holder.link.take_lease()
            wait_until(lambda: bool(holder.link.leases), what="the holder's lease")  # type: ignore[attr-defined]
            assert holder.link.take_lease() is not None  # the budget is taken

            def scripts_run() -> int:
                stats = client.info("commandstats").get("cmdstat_evalsha", {})
                return int(stats.get("calls", 0))

            before = scripts_run()
            assert waiter.link.take_lease() is None  # one refusal, then no more requests
            # The refusal's own ask and at least three more (one retry only, before).
            wait_until(lambda: scripts_run() - before >= 4, what="the asks to go on")
    finally:
        fleet.close()


def test_share_counts_add_up_over_the_whole_window(server: Server) -> None:
    """share_counts: outcomes a replica sent earlier in `window_duration` still count
    when another replica's later outcomes bring the fleet to its minimum."""
    config = CONFIG.replace(failure_threshold=100, window_size=8, failure_rate_threshold=0.5)
    fleet = Fleet(server.url, share_counts=True)
    try:
        early, late = fleet.replica(config), fleet.replica(config)
        fleet.connected()
        assert early.link is not None and late.link is not None
        for _ in range(4):
            early.link.counted(True)
        with server.client() as client:
            key = early.link.redis_key  # type: ignore[attr-defined]

            def server_ms() -> int:
                seconds, micros = client.time()
                return int(seconds) * 1000 + int(micros) // 1000

            wait_until(lambda: client.hget(key, "s") == "c", what="the early counts")
            sent_at = server_ms()
            wait_until(lambda: server_ms() - sent_at >= 100, what="time to pass")
        assert early.state is CLOSED  # 4 outcomes: under the minimum of 8
        for _ in range(4):
            late.link.counted(True)
        wait_until(lambda: early.state is OPEN and late.state is OPEN, what="the fleet open")
    finally:
        fleet.close()


def test_a_probers_own_reopen_after_its_failed_result_writes_nothing_more(
    fleet: Fleet, server: Server
) -> None:
    """The failed probe's result reopened the fleet; the prober's own reopen that
    follows it finds the fleet there already and is not offered again (no second
    write, no second message restarting the period)."""
    prober, other = fleet.replica(), fleet.replica()
    fleet.connected()
    prober.trip()
    wait_until(lambda: other.state is OPEN, what="the open")
    _, link = _half_open(server, prober)
    lease = _leased(link)
    channel = fleet.stores[0]._channel
    with server.client() as client, client.pubsub() as pubsub:
        pubsub.subscribe(channel)
        link.probe_done(lease, ProbeOutcome.FAILURE)
        prober.reopen()  # as the breaker publishes its reopen after the probe's end
        wait_until(lambda: link.acked == link.token, what="the reopen's turn")  # type: ignore[attr-defined]
        client.publish(channel, "end")  # every message before it arrives before it
        causes = []
        while True:
            message = pubsub.get_message(timeout=5)
            assert message is not None
            if message["type"] != "message":
                continue
            if message["data"] == "end":
                break
            causes.append(message["data"].split("|")[5])
    assert causes == ["probe_failed"]


def test_a_local_open_older_than_the_fleets_open_takes_the_fleets_period(
    server: Server,
) -> None:
    """A replica opened on its own while its store was cut off; meanwhile the fleet
    opened too, later: on reconnect the replica takes the fleet's remaining period
    instead of offering its own older open."""
    fleet = Fleet(server.url, timeout=0.2)
    try:
        first = fleet.replica()
        store = fleet.stores[0]
        witness = _second_key(store, Member(CONFIG))  # a second key of the store, to cut it off
        fleet.connected()
        assert first.link is not None
        redis_key = first.link.redis_key  # type: ignore[attr-defined]
        peek = store._peek

        def fleet_opens_then_peek(links):  # type: ignore[no-untyped-def]
            # The fleet's own open, later than the replica's, lands before the reading.
            with server.client() as client:
                seconds, micros = client.time()
                now_ms = seconds * 1000 + micros // 1000
                client.hset(
                    redis_key,
                    mapping={"s": "o", "e": now_ms * 1000, "t": now_ms, "u": now_ms + 45_000},
                )
            store._peek = peek  # type: ignore[method-assign]
            return peek(links)

        server.freeze()
        try:
            witness.trip()  # sent, and given up on after the store's timeout
            wait_until(lambda: not store.connected, what="the timeout")
            first.trip()  # on its own, while cut off
            store._peek = fleet_opens_then_peek  # type: ignore[method-assign]
        finally:
            server.thaw()
        wait_until(lambda: bool(first.applied), what="the fleet's period")
        state, left, _ = first.applied[-1]
        assert state is OPEN and left is not None and 44 < left <= 45
    finally:
        fleet.close()


def test_a_reset_replica_is_not_pulled_back_by_the_answer_to_its_counts(
    server: Server,
) -> None:
    """share_counts: a breaker reset() while the fleet is open counts outcomes again;
    the answer to them (the same open it has followed) does not reopen it."""
    config = CONFIG.replace(failure_threshold=100, window_size=10, failure_rate_threshold=0.5)
    fleet = Fleet(server.url, share_counts=True)
    try:
        first, second = fleet.replica(config), fleet.replica(config)
        # A second key of the second store: its counts go through.
        witness = _second_key(fleet.stores[1], Member(config))
        fleet.connected()
        first.trip()
        wait_until(lambda: second.state is OPEN, what="the open")
        second.state = CLOSED  # reset(): a local cause, never published
        assert second.link is not None and witness.link is not None

        def outcomes_in_redis() -> int:
            return sum(
                int(value)
                for fields in shared_keys(server).values()
                for name, value in fields.items()
                if name.startswith("a")
            )

        second.link.counted(False)
        witness.link.counted(False)
        wait_until(lambda: outcomes_in_redis() >= 1, what="a batch of counts")
        witness.link.counted(False)  # a later batch: the one before it has been answered
        wait_until(lambda: outcomes_in_redis() >= 2, what="the next batch")
        assert second.state is CLOSED
        assert [state for state, _, _ in second.applied] == [OPEN]
    finally:
        fleet.close()


def test_a_local_close_newer_than_a_fleet_change_it_missed_wins(
    fleet: Fleet, server: Server
) -> None:
    """The fleet reopened elsewhere and the message was lost; a moment later this
    replica's probes close it: its close is the newer state, and the fleet closes."""
    first, second = fleet.replica(), fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    with server.client() as client:
        [key] = client.keys("httpx-breaker:*:k:*")
        client.hset(key, "u", 1)
        first.half_open()
        wait_until(lambda: second.state is HALF_OPEN, what="the fleet's half-open")

        def server_ms() -> int:
            seconds, micros = client.time()
            return int(seconds) * 1000 + int(micros) // 1000

        now_ms = server_ms()  # reopened elsewhere, without a message
        epoch = int(client.hget(key, "e") or 0)
        client.hset(key, mapping={"s": "o", "e": epoch + 1, "t": now_ms, "u": now_ms + 30_000})
        wait_until(lambda: server_ms() - now_ms >= 50, what="the reopen to age")
        first.close()
        wait_until(lambda: second.state is CLOSED, what="the close")
        assert client.hget(key, "s") == "c"
    assert first.state is CLOSED and first.applied == []


def test_a_half_open_replica_that_missed_a_reopen_learns_it_from_its_lease_request(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """The fleet reopened and the message was lost: the half-open replica's next lease
    request is told to wait, and the replica goes back to OPEN for the fleet's period."""
    caplog.set_level(logging.INFO, logger="httpx_breaker.redis")
    fleet = Fleet(server.url, reconcile_interval=60.0)  # no reconcile tells it
    try:
        first, second = fleet.replica(), fleet.replica()
        fleet.connected()
        first.trip()
        wait_until(lambda: second.state is OPEN, what="the open")
        with server.client() as client:
            [key] = client.keys("httpx-breaker:*:k:*")
            client.hset(key, "u", 1)
            first.half_open()
            wait_until(lambda: second.state is HALF_OPEN, what="the fleet's half-open")
            seconds, micros = client.time()  # reopened, without a message
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            epoch = int(client.hget(key, "e") or 0)
            client.hset(key, mapping={"s": "o", "e": epoch + 1, "t": now_ms, "u": now_ms + 30_000})
        assert second.link is not None
        assert second.link.take_lease() is None
        wait_until(lambda: second.state is OPEN, what="the reopen")
        state, left, _ = second.applied[-1]
        assert state is OPEN and left is not None and 29 < left <= 30
        assert "unexpected error" not in caplog.text
        assert fleet.stores[1].health.reconnects == 0
    finally:
        fleet.close()


def test_an_unreachable_server_is_logged_once_not_at_every_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store keeps trying to connect; the warning that breakers work locally comes
    once, when the server is first found missing, not at every attempt."""
    with running(KINDS[0]) as server:
        server.stop()
        caplog.set_level(logging.INFO, logger="httpx_breaker.redis")
        store = RedisStore.from_url(server.url, namespace="checkout", timeout=0.2)
        try:
            attempts: list[None] = []
            connect = store._connect

            def counted_connect() -> None:
                attempts.append(None)
                connect()

            store._connect = counted_connect  # type: ignore[method-assign]
            wait_until(lambda: len(attempts) >= 3, what="three more attempts")
            warnings_logged = [
                record
                for record in caplog.records
                if record.name == "httpx_breaker.redis" and record.levelno == logging.WARNING
            ]
            assert len(warnings_logged) == 1
            assert "unreachable" in warnings_logged[0].getMessage()
        finally:
            store.close()


def test_messages_of_another_format_are_ignored(
    fleet: Fleet, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Only version-1 messages of seven fields are read: a later format (another first
    field) or a short message on the channel changes nothing and breaks nothing."""
    caplog.set_level(logging.INFO, logger="httpx_breaker.redis")
    first, second = fleet.replica(), fleet.replica()
    fleet.connected()
    assert second.link is not None
    ref = second.link.ref  # type: ignore[attr-defined]
    channel = fleet.stores[1]._channel
    with server.client() as client:
        client.publish(channel, f"2|{ref}|{10**18}|o|90000|failure_threshold|elsewhere")
        client.publish(channel, "1|short")
    first.trip()  # a real message after them: they have been read when it arrives
    wait_until(lambda: second.state is OPEN, what="the open")
    [(state, left, _)] = second.applied
    assert state is OPEN and left is not None and 29 < left <= 30
    assert fleet.stores[1].health.messages == 1
    assert "unexpected error" not in caplog.text


def test_a_message_older_than_the_state_a_replica_follows_is_ignored(
    fleet: Fleet, server: Server
) -> None:
    """Messages can arrive late: one whose epoch is older than the fleet state a replica
    already follows does not move it back."""
    first, second = fleet.replica(), fleet.replica()
    witness = _second_key(fleet.stores[1], Member(CONFIG))  # a second key of the second store
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    assert second.link is not None
    with server.client() as client:
        [key] = client.keys("httpx-breaker:*:k:*")
        epoch = int(client.hget(key, "e") or 0)
        channel = fleet.stores[1]._channel
        ref = second.link.ref  # type: ignore[attr-defined]
        client.publish(channel, f"1|{ref}|{epoch - 1}|c|0|probes_succeeded|elsewhere")
        witness_ref = witness.link.ref  # type: ignore[attr-defined]
        client.publish(channel, f"1|{witness_ref}|{epoch}|o|30000|failure_threshold|elsewhere")
    wait_until(lambda: witness.state is OPEN, what="the message after the old one")
    assert second.state is OPEN
    assert [state for state, _, _ in second.applied] == [OPEN]


def test_a_breaker_made_after_the_open_learns_it_before_any_reconcile(server: Server) -> None:
    """The key a breaker attaches is read with its attach, not at the next reconcile;
    two attached at once are both read."""
    fleet = Fleet(server.url, reconcile_interval=60.0)
    try:
        first = fleet.replica()
        fleet.connected()
        first.trip()
        wait_until(lambda: len(shared_keys(server)) == 1, what="the open")
        store = RedisStore.from_url(server.url, namespace="checkout", reconcile_interval=60.0)
        fleet.stores.append(store)
        wait_until(lambda: store.connected, what="the late store")
        late, twin = Member(CONFIG), Member(CONFIG)
        late.link = store.attach(KEY, late, CONFIG)
        twin.link = store.attach(KEY, twin, CONFIG)
        wait_until(lambda: late.state is OPEN and twin.state is OPEN, what="the late open")
        for member in (late, twin):
            [(state, left, _)] = member.applied
            assert state is OPEN and left is not None and 29 < left <= 30
    finally:
        fleet.close()


def test_the_jitter_of_a_fleet_period_is_at_most_the_configured_fraction(
    fleet: Fleet,
) -> None:
    """With jitter=0.1 the fleet's open period is the base period plus at most a tenth."""
    config = CONFIG.replace(jitter=0.1)
    first, second = fleet.replica(config), fleet.replica(config)
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    [(state, left, _)] = second.applied
    assert state is OPEN and left is not None and 29 < left <= 33


def test_a_key_detached_while_the_server_is_unreachable_is_forgotten(server: Server) -> None:
    """A breaker dropped from its registry during an outage is forgotten all the same."""
    fleet = Fleet(server.url, timeout=0.2)
    try:
        member = fleet.replica()
        store = fleet.stores[0]
        fleet.connected()
        server.stop()
        wait_until(lambda: not store.connected, what="the loss")
        assert member.link is not None
        member.link.detach()
        wait_until(lambda: store.health.keys == 0, what="the detach")
    finally:
        fleet.close()


def test_the_lag_is_the_age_of_a_message_and_never_negative(fleet: Fleet, server: Server) -> None:
    """The lag of a message is how long ago the server stamped it; clocks disagree a
    little: one stamped later than this replica's reading of the server's clock counts
    as no lag at all, never a negative one."""
    member = fleet.replica()
    fleet.connected()
    assert member.link is not None
    store = fleet.stores[0]
    ref = member.link.ref  # type: ignore[attr-defined]
    with server.client() as client:
        seconds, micros = client.time()
        now_us = int(seconds) * 1_000_000 + int(micros)
        behind_us, ahead_us = now_us - 3600 * 1_000_000, now_us + 3600 * 1_000_000
        client.publish(store._channel, f"1|{ref}|{behind_us}|o|30000|failure_threshold|elsewhere")
        wait_until(lambda: store.health.messages == 1, what="the late message")
        lag = store.health.lag
        # An hour late, as stamped, give or take the error of the measured clock offset.
        assert lag is not None and 3590 < lag < 3660
        client.publish(store._channel, f"1|{ref}|{ahead_us}|o|30000|failure_threshold|elsewhere")
        wait_until(lambda: store.health.messages == 2, what="the early message")
    assert store.health.lag == 0.0


def test_a_replicas_own_message_does_not_undo_what_it_did_since(
    patient_fleet: Fleet, server: Server
) -> None:
    """A replica's trip comes back on the channel after the server's answer: by then the
    breaker may have moved on (a reset right after), and its own message does not
    reopen it."""
    first, second = patient_fleet.replica(), patient_fleet.replica()
    store = patient_fleet.stores[0]
    # A second key of the first store, to hold its thread.
    staller = _second_key(store, _Stalling(CONFIG))
    patient_fleet.connected()
    staller.stalling = True
    first.trip()
    staller.trip()  # after the first's answer, its view holds the store's thread
    _wait_for_the_stall(staller, store)
    wait_until(lambda: second.state is OPEN, what="the trip's message")
    first.state = CLOSED  # reset() right after: a local cause, never published
    staller.stalling = False
    staller.release.set()
    with server.client() as client:  # another's message, after its own on the channel
        client.publish(store._channel, "1|nobody|1|c|0|probes_succeeded|elsewhere")
    wait_until(lambda: store.health.messages == 1, what="the first store to read on")
    assert first.state is CLOSED and first.applied == []


def test_a_cap_on_the_period_caps_the_fleets_period(fleet: Fleet) -> None:
    """max_reset_timeout bounds the fleet's open period; a period under it is kept."""
    config = CONFIG.replace(max_reset_timeout=45.0)
    first, second = fleet.replica(config), fleet.replica(config)
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    [(state, left, _)] = second.applied
    assert state is OPEN and left is not None and 29 < left <= 30


def test_a_lease_asked_for_as_the_server_went_away_is_asked_for_again(
    server: Server,
) -> None:
    """A half-open request's ask for a lease was still queued when the store lost the
    server (dropped with the rest): after the reconnect, the next request asks again
    and gets one."""
    fleet = Fleet(server.url, timeout=0.2)
    try:
        first = fleet.replica()
        store = fleet.stores[0]
        witness = _second_key(store, Member(CONFIG))  # a second key of the store, to cut it off
        fleet.connected()
        first.trip()
        _, link = _half_open(server, first)
        wait_until(lambda: link.acked == link.token, what="the half-open's answer")  # type: ignore[attr-defined]
        server.freeze()
        try:
            witness.trip()  # sent: the store's thread waits for its timeout
            assert link.take_lease() is None  # queued behind it
            wait_until(lambda: not store.connected, what="the timeout")
        finally:
            server.thaw()
        fleet.connected()
        assert link.take_lease() is None  # no lease yet: this one asks the fleet
        wait_until(lambda: bool(link.leases), what="a lease")  # type: ignore[attr-defined]
    finally:
        fleet.close()


def test_reconnection_attempts_back_off(server: Server) -> None:
    """While the server is unreachable the store waits longer after each failed attempt
    (a random pause up to a doubling bound), not ever shorter."""
    server.stop()
    store = RedisStore.from_url(server.url, namespace="checkout", timeout=0.2)
    try:
        pauses: list[float] = []
        pause = store._pause

        def recorded_pause(seconds: float) -> None:
            pauses.append(seconds)
            pause(seconds)

        store._pause = recorded_pause  # type: ignore[method-assign]
        wait_until(lambda: len(pauses) >= 4, what="four failed attempts")
        # Each pause is drawn from [bound / 2, bound], the bound doubling after every
        # attempt: the fourth's least is four times the first's most.
        first, fourth = pauses[0], pauses[3]
        assert fourth >= 2 * first
    finally:
        store.close()


def test_a_period_under_a_second_is_kept_without_a_retry_after(fleet: Fleet) -> None:
    """Without Retry-After there is no floor: a 0.5 s open period stays 0.5 s."""
    config = CONFIG.replace(reset_timeout=0.5)
    first, second = fleet.replica(config), fleet.replica(config)
    fleet.connected()
    first.trip()
    wait_until(lambda: bool(second.applied), what="the open")
    [(state, left, _)] = second.applied
    assert state is OPEN and left is not None and 0 <= left <= 0.5


def test_share_counts_send_exactly_the_outcomes_counted(server: Server) -> None:
    """share_counts: the fleet's window holds what the replica counted, no more."""
    config = CONFIG.replace(failure_threshold=100, window_size=10, failure_rate_threshold=0.9)
    fleet = Fleet(server.url, share_counts=True)
    try:
        member = fleet.replica(config)
        fleet.connected()
        assert member.link is not None
        for failed in (True, False, True):
            member.link.counted(failed)

        def summed(prefix: str) -> int:
            return sum(
                int(value)
                for fields in shared_keys(server).values()
                for name, value in fields.items()
                if name.startswith(prefix)
            )

        wait_until(lambda: summed("a") >= 3, what="the counts")
        assert (summed("f"), summed("a")) == (2, 3)
        member.link.counted(False)  # a later batch starts from nothing
        wait_until(lambda: summed("a") >= 4, what="the next batch")
        assert (summed("f"), summed("a")) == (2, 4)
    finally:
        fleet.close()


def test_a_detached_link_is_inactive_at_once(fleet: Fleet) -> None:
    """detach() takes effect on the caller's thread: the link stops being active before
    the store's thread has forgotten it."""
    member = fleet.replica()
    fleet.connected()
    link = member.link
    assert link is not None and link.active
    link.detach()
    assert not link.active


def test_refused_requests_queue_one_lease_ask_at_a_time(
    patient_fleet: Fleet, server: Server
) -> None:
    """However many half-open requests are refused before the store's thread gets to
    them, one ask for a lease is queued."""
    first = patient_fleet.replica()
    store = patient_fleet.stores[0]
    # A second key of the store, to hold its thread.
    staller = _second_key(store, _Stalling(CONFIG))
    patient_fleet.connected()
    first.trip()
    _, link = _half_open(server, first)
    wait_until(lambda: link.acked == link.token, what="the half-open's answer")  # type: ignore[attr-defined]
    staller.stalling = True
    staller.trip()
    _wait_for_the_stall(staller, store)
    try:
        for _ in range(50):
            assert link.take_lease() is None
        assert store.health.queued == 1
    finally:
        staller.stalling = False
        staller.release.set()
    wait_until(lambda: bool(link.leases), what="a lease")  # type: ignore[attr-defined]


def test_the_defaults_keep_keys_ten_minutes_and_leases_ten_seconds(
    fleet: Fleet, server: Server
) -> None:
    """By default a key outlives its last change (past its open period) by 600 s, a
    probe lease lasts 10 s, and outcomes in CLOSED are not shared."""
    member = fleet.replica()
    fleet.connected()
    link = member.link
    assert link is not None and not link.counts
    member.trip()
    with server.client() as client:
        wait_until(lambda: len(client.keys("httpx-breaker:*:k:*")) == 1, what="the open")
        [key] = client.keys("httpx-breaker:*:k:*")
        assert 600_000 < client.pttl(key) <= 630_000  # the open period, then 600 s
        client.hset(key, "u", 1)
        member.half_open()
        link.take_lease()
        wait_until(lambda: bool(link.leases), what="a lease")  # type: ignore[attr-defined]
        [lease_field] = [f for f in client.hkeys(key) if f.startswith("L")]
        seconds, micros = client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        assert 9_000 < int(client.hget(key, lease_field) or 0) - now_ms <= 10_000


def test_health_since_is_the_time_in_the_current_state(server: Server) -> None:
    """`health.since` counts the seconds since the store entered its state: never more
    than the store's own age."""
    made = time.monotonic()
    store = RedisStore.from_url(server.url, namespace="checkout")
    try:
        wait_until(lambda: store.connected, what="the connection")
        health = store.health
        assert health.state == "connected"
        assert 0.0 <= health.since <= time.monotonic() - made
    finally:
        store.close()


def test_a_store_never_closed_does_not_keep_the_process_alive() -> None:
    """The store's thread is a daemon: a process that forgets close() still exits."""
    code = textwrap.dedent(
        """
        from httpx_breaker.redis import RedisStore
        store = RedisStore.from_url("redis://127.0.0.1:1/0", namespace="forgotten")
        print("made", store.namespace)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "made forgotten" in done.stdout


def test_metrics_read_disconnected_and_no_lag_before_any_message() -> None:
    """An unreachable store's numbers: connected 0, and a lag that is not a number until
    a message has been heard (an exporter leaves it out)."""
    with running(KINDS[0]) as server:
        server.stop()
        store = RedisStore.from_url(server.url, namespace="checkout", timeout=0.2)
        try:
            wait_until(lambda: store.health.state == "disconnected", what="the failure")
            metrics = store.metrics()
            assert metrics["connected"] == 0.0
            assert math.isnan(metrics["lag_seconds"])
        finally:
            store.close()


def test_metrics_lag_is_the_health_lag_once_a_message_is_heard(fleet: Fleet) -> None:
    """After a message the exported lag is the one `health` reports."""
    first, second = fleet.replica(), fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    store = fleet.stores[1]
    assert store.metrics()["lag_seconds"] == store.health.lag


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://cache.internal/2", "redis://cache.internal/2"),
        ("redis://:secret@[::1]:6380/0", "redis://***@[::1]:6380/0"),
    ],
)
def test_the_server_is_named_without_credentials_and_with_its_port(url: str, server: str) -> None:
    """`server` (as logs, health and exporters name the store) keeps host and port."""
    store = RedisStore.from_url(url, namespace="checkout", timeout=0.2)
    try:
        assert store.server == server
    finally:
        store.close()


def test_a_port_out_of_range_is_named_as_such() -> None:
    """The error says what is wrong with the port, not only that the URL is bad."""
    with pytest.raises(ValueError, match="has a port that is not a number from 1 to 65535"):
        RedisStore.from_url("redis://127.0.0.1:99999/0", namespace="checkout")


def test_a_period_longer_by_half_a_second_reaches_a_replica(fleet: Fleet) -> None:
    """Two open periods are taken for the same one only within transit time: a
    Retry-After that makes the fleet's period half a second longer is applied."""
    first, second = fleet.replica(), fleet.replica()
    fleet.connected()
    first.trip()
    wait_until(lambda: second.state is OPEN, what="the open")
    assert first.link is not None
    first.link.extended(30.5)
    wait_until(lambda: len(second.applied) == 2, what="the longer period")
    state, left, _ = second.applied[-1]
    assert state is OPEN and left is not None and 30 < left <= 30.5


@pytest.mark.parametrize("value", [True, "1", None])
def test_seconds_must_be_numbers(value: object) -> None:
    """A duration given as a bool, a string or None is a type error, not a duration."""
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        RedisStore.from_url("redis://127.0.0.1:6379/0", namespace="ok", timeout=value)  # type: ignore[arg-type]


def test_a_namespace_may_be_200_characters_and_no_more() -> None:
    """The namespace's length limit is 200 characters, inclusive."""
    store = RedisStore.from_url("redis://127.0.0.1:1/0", namespace="n" * 200, timeout=0.2)
    store.close()
    assert store.namespace == "n" * 200
    with pytest.raises(ValueError, match="at most 200"):
        RedisStore.from_url("redis://127.0.0.1:1/0", namespace="n" * 201)
