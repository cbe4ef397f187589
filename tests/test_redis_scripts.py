"""The store's Lua scripts, each rule on a real Valkey and a real Redis server.

The scripts read the server's clock (TIME) and nothing else; to put a key's open period
or a lease in the past without sleeping, a test rewrites that field of the hash, as a
clock jump on the server would leave it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from httpx_breaker import _redis_scripts as scripts

from .redis_servers import KINDS, Server, running

CHANNEL = "httpx-breaker:test:events"
KEY = "httpx-breaker:test:k:ref1"
TTL_MS = 600_000


@pytest.fixture(params=KINDS, scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """One server per kind for this module; each test starts from an empty one."""
    with running(request.param) as started:
        yield started


class Scripts:
    """Runs the scripts on one key as a store with origin "me" would."""

    def __init__(self, server: Server) -> None:
        self.client = server.client()
        self.pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(CHANNEL)
        assert self.pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
        self.idle = self.closed = TTL_MS  # ms a key outlives its last write (open: its period)

    def run(
        self, source: str, *args: Any, key: str = KEY, too_late: int | None = None
    ) -> list[Any]:
        """As the store calls: the last argument a minute ahead of the server's clock."""
        if too_late is None:
            seconds, micros = self.client.time()
            too_late = seconds * 1000 + micros // 1000 + 60_000
        head = [CHANNEL, "ref1", "me", self.idle, self.closed]
        return list(self.client.eval(source, 1, key, *head, *args, too_late))

    def trip(self, *, base: int = 30_000, mult: float = 1.0, cap: int = -1,
             jitter: float = 0.0, floor: int = 0) -> list[Any]:  # fmt: skip
        return self.run(scripts.TRIP, "failure_threshold", base, repr(mult), cap,
                        repr(jitter), floor)  # fmt: skip

    def half_open(self) -> list[Any]:
        return self.run(scripts.HALF_OPEN)

    def lease(self, *, ttl: int = 10_000, budget: int = 2, rounds: int = 0) -> list[Any]:
        return self.run(scripts.LEASE, ttl, budget, rounds)

    def result(self, lease_id: int, epoch: int, outcome: str, *, budget: int = 2,
               slow_rate: float = -1.0, base: int = 30_000, mult: float = 1.0,
               jitter: float = 0.0) -> list[Any]:  # fmt: skip
        return self.run(scripts.RESULT, lease_id, epoch, outcome, budget, repr(slow_rate),
                        base, repr(mult), -1, repr(jitter), 0)  # fmt: skip

    def push(self, state: str, left: int, rounds: int, age: int, *, known: int = 0) -> list[Any]:
        return self.run(scripts.PUSH, known, state, left, rounds, age)

    def peek(self) -> list[Any]:
        return self.run(scripts.PEEK, too_late=0)  # reads only: the store sends no limit

    def field(self, name: str) -> str | None:
        value = self.client.hget(KEY, name)
        return None if value is None else str(value)

    def end_open_period(self) -> None:
        """As if the open period had ended on the server's clock."""
        self.client.hset(KEY, "u", 1)

    def expire_lease(self, lease_id: int) -> None:
        self.client.hset(KEY, f"L{lease_id}", 1)

    def messages(self) -> list[list[str]]:
        """Every message published so far (a channel keeps its order: read to a marker)."""
        self.client.publish(CHANNEL, "end")
        found = []
        while True:
            message = self.pubsub.get_message(timeout=5)
            assert message is not None, "the marker never came"
            if message["type"] != "message":
                continue
            if message["data"] == "end":
                return found
            found.append(str(message["data"]).split("|"))

    def half_opened(self) -> int:
        """Trip, end the period, take the key to half-open; its epoch."""
        self.trip()
        self.end_open_period()
        reply = self.half_open()
        assert reply[0] == "h"
        self.messages()
        return int(reply[1])


@pytest.fixture
def lua(server: Server) -> Iterator[Scripts]:
    with server.client() as client:
        client.flushall()
    harness = Scripts(server)
    yield harness
    harness.pubsub.close()
    harness.client.close()


def test_trip_opens_once_and_publishes(lua: Scripts) -> None:
    """A second trip while open changes nothing and publishes nothing: no double trip."""
    first = lua.trip(base=30_000)
    assert first[0] == "o" and first[3] == "opened"
    assert 29_000 < first[2] <= 30_000
    second = lua.trip(base=5_000)
    assert second[:2] == first[:2] and second[3] == "unchanged"
    messages = lua.messages()
    assert len(messages) == 1
    version, ref, epoch, state, left, cause, origin = messages[0]
    assert (version, ref, state, cause, origin) == ("1", "ref1", "o", "failure_threshold", "me")
    assert int(epoch) == first[1] and 29_000 < int(left) <= 30_000


def test_a_call_run_after_its_time_changes_nothing(lua: Scripts) -> None:
    """A frozen server runs, when it resumes, the commands a replica sent before it gave
    up on them. Past the time the replica set (its timeout, on the server's clock) a
    call answers `late` and writes, expires and publishes nothing."""
    seconds, micros = lua.client.time()
    now_ms = seconds * 1000 + micros // 1000
    stale = lua.run(scripts.TRIP, "failure_threshold", 30_000, "1.0", -1, "0.0", 0,
                    too_late=now_ms - 1_000)  # fmt: skip
    assert stale == ["-", 0, 0, "late"]
    assert not lua.client.exists(KEY)
    assert lua.messages() == []
    fresh = lua.run(scripts.TRIP, "failure_threshold", 30_000, "1.0", -1, "0.0", 0,
                    too_late=now_ms + 60_000)  # fmt: skip
    assert fresh[3] == "opened"


def test_an_epoch_ahead_of_the_servers_clock_still_grows(lua: Scripts) -> None:
    """A key last written on a clock that ran ahead keeps the order of its states: the
    next transition's epoch is one more than the last, never the lower clock reading."""
    opened = lua.trip()
    ahead = opened[1] + 10**12  # microseconds: some eleven days ahead
    lua.client.hset(KEY, "e", ahead)
    lua.end_open_period()
    half = lua.half_open()
    assert half[0] == "h" and half[1] == ahead + 1
    assert lua.messages()[-1][2] == str(ahead + 1)


def test_trip_is_a_no_op_while_half_open(lua: Scripts) -> None:
    """A replica that opened on its own joins a probing fleet instead of reopening it."""
    epoch = lua.half_opened()
    reply = lua.trip()
    assert reply[:2] == ["h", epoch] and reply[3] == "unchanged"
    assert lua.messages() == []


def test_retry_after_floor_sets_and_extends_the_period(lua: Scripts) -> None:
    """A floor longer than the period is the period; on an open key it only extends."""
    opened = lua.trip(base=1_000, floor=20_000)
    assert 19_000 < opened[2] <= 20_000
    shorter = lua.trip(floor=5_000)
    assert shorter[3] == "unchanged" and shorter[1] == opened[1]
    longer = lua.trip(floor=40_000)
    assert longer[3] == "extended" and longer[1] > opened[1]
    assert 39_000 < longer[2] <= 40_000
    assert [m[3] for m in lua.messages()] == ["o", "o"]


def test_jitter_never_passes_the_cap(lua: Scripts) -> None:
    """The cap (max_reset_timeout) bounds the period with its jitter."""
    reply = lua.trip(base=10_000, cap=10_000, jitter=0.9)
    assert 9_000 < reply[2] <= 10_000


def test_half_open_only_after_the_period_on_the_servers_clock(lua: Scripts) -> None:
    """A replica whose clock ran ahead is told how long is left; the key stays open."""
    opened = lua.trip(base=60_000)
    early = lua.half_open()
    assert early[0] == "o" and early[3] == "wait" and early[1] == opened[1]
    assert 59_000 < early[2] <= 60_000
    assert lua.field("s") == "o"
    lua.end_open_period()
    late = lua.half_open()
    assert late[0] == "h" and late[3] == "half_open" and late[1] > opened[1]
    again = lua.half_open()
    assert again[3] == "unchanged" and again[1] == late[1]
    assert [m[3] for m in lua.messages()] == ["o", "h"]


def test_an_open_period_that_ended_has_no_time_left(lua: Scripts) -> None:
    """Past its end an open key is half-open in effect: 0 ms left in answers and in the
    messages (a half-open replica is not sent back to OPEN for a moment)."""
    opened = lua.trip(base=60_000)
    lua.end_open_period()
    assert lua.peek()[:3] == ["o", opened[1], 0]
    half = lua.half_open()
    assert half[0] == "h" and half[2] == 0
    assert [m[3:5] for m in lua.messages()] == [["o", "60000"], ["h", "0"]]


def test_lease_waits_for_the_period_on_the_servers_clock(lua: Scripts) -> None:
    """No probe slot while the fleet's period runs, whatever a replica's clock says."""
    lua.trip(base=60_000)
    reply = lua.lease()
    assert reply[0] == "o" and reply[3] == "wait" and reply[2] > 59_000
    lua.end_open_period()
    granted = lua.lease()
    assert granted[0] == "h" and granted[3] == "granted"


def test_leases_never_exceed_the_budget(lua: Scripts) -> None:
    """Active leases plus successes stay below half_open_max_requests."""
    epoch = lua.half_opened()
    first, second = lua.lease(budget=2), lua.lease(budget=2)
    assert [first[3], second[3]] == ["granted", "granted"]
    assert first[4] != second[4]
    full = lua.lease(budget=2)
    assert full[3] == "full" and 0 < full[4] <= 10_000
    # A success still counts against the budget; a released lease does not.
    assert lua.result(first[4], epoch, "s")[3] == "counted"
    assert lua.lease(budget=2)[3] == "full"
    assert lua.result(second[4], epoch, "i")[3] == "released"
    third = lua.lease(budget=2)
    assert third[3] == "granted"
    assert lua.lease(budget=2)[3] == "full"


def test_an_expired_lease_frees_its_slot(lua: Scripts) -> None:
    """A replica that died holding a lease delays the round by at most the lease."""
    lua.half_opened()
    held = lua.lease(budget=1)
    assert held[3] == "granted"
    assert lua.lease(budget=1)[3] == "full"
    lua.expire_lease(held[4])
    again = lua.lease(budget=1)
    assert again[3] == "granted" and again[4] != held[4]
    assert lua.field(f"L{held[4]}") is None  # dropped: dead replicas do not grow the key


def test_a_reopen_frees_the_slots_of_its_round(lua: Scripts) -> None:
    """The leases of a round that failed hold no slot in the next round: it gets the
    whole probe budget at once, not after those leases expire."""
    epoch = lua.half_opened()
    failed, other = lua.lease(budget=2), lua.lease(budget=2)
    assert lua.result(failed[4], epoch, "f")[3] == "reopened"
    assert lua.field(f"L{other[4]}") is None
    lua.end_open_period()
    assert [lua.lease(budget=2)[3], lua.lease(budget=2)[3]] == ["granted", "granted"]


def test_results_of_expired_unknown_or_old_leases_are_ignored(lua: Scripts) -> None:
    """Stale results move nothing: expired, unknown, or from an earlier round."""
    epoch = lua.half_opened()
    expired = lua.lease(budget=3)
    lua.expire_lease(expired[4])
    assert lua.result(expired[4], epoch, "f", budget=3)[3] == "stale"
    assert lua.result(999, epoch, "f", budget=3)[3] == "stale"
    assert lua.field("s") == "h"
    old = lua.lease(budget=3)
    failed = lua.lease(budget=3)
    reopened = lua.result(failed[4], epoch, "f", budget=3)
    assert reopened[0] == "o" and reopened[3] == "reopened"
    # The round is over: the other lease of it proves nothing now.
    assert lua.result(old[4], epoch, "s", budget=3)[3] == "stale"
    assert lua.field("s") == "o" and lua.field("ok") == "0"
    # A key the fleet forgot (expiry, restart) holds no lease at all.
    lua.client.delete(KEY)
    assert lua.result(old[4], epoch, "s", budget=3) == ["-", 0, 0, "stale"]


def test_a_lease_id_of_a_forgotten_round_is_stale_in_the_new_one(lua: Scripts) -> None:
    """After a restart lease ids start over: a result naming the id of a lease of the new
    round, but the old round's epoch, proves nothing about the new round."""
    old_epoch = lua.half_opened()
    old = lua.lease(budget=1)
    lua.client.flushall()  # the server restarted
    new = lua.lease(budget=1)
    assert new[3] == "granted" and new[4] == old[4] and new[1] != old_epoch
    assert lua.result(old[4], old_epoch, "s", budget=1)[3] == "stale"
    assert lua.field("s") == "h" and lua.field("ok") == "0"


def test_enough_successes_close_and_reset_the_backoff(lua: Scripts) -> None:
    """half_open_max_requests successes close the fleet; failed rounds start over."""
    epoch = lua.half_opened()
    lua.client.hset(KEY, "r", 3)
    leases = [lua.lease(budget=2)[4], lua.lease(budget=2)[4]]
    assert lua.result(leases[0], epoch, "s")[3] == "counted"
    closed = lua.result(leases[1], epoch, "s")
    assert closed[0] == "c" and closed[3] == "closed"
    assert lua.field("r") == "0"
    assert [m[3] for m in lua.messages()] == ["c"]
    assert 0 < lua.client.pttl(KEY) <= TTL_MS


def test_a_failed_probe_reopens_with_the_fleets_backoff(lua: Scripts) -> None:
    """Each failed round multiplies the next open period: the count is the fleet's."""
    lua.trip(base=1_000)
    periods = []
    for _ in range(3):
        lua.end_open_period()
        granted = lua.lease(budget=1)
        reply = lua.result(granted[4], granted[1], "f", budget=1, base=1_000, mult=2.0)
        assert reply[0] == "o" and reply[3] == "reopened"
        periods.append(reply[2])
    assert [round(p, -2) for p in periods] == [2_000, 4_000, 8_000]
    assert lua.field("r") == "3"


def test_a_round_of_slow_probes_reopens(lua: Scripts) -> None:
    """All probes answered, but too slowly: the round failed (slow_call_rate_threshold)."""
    epoch = lua.half_opened()
    leases = [lua.lease(budget=2)[4], lua.lease(budget=2)[4]]
    lua.result(leases[0], epoch, "w", slow_rate=1.0)
    reply = lua.result(leases[1], epoch, "w", slow_rate=1.0)
    assert reply[0] == "o" and reply[3] == "reopened"


def test_the_slow_rate_is_the_whole_rounds(lua: Scripts) -> None:
    """The rate is of the round's probes, whichever came last: one slow of two fails a
    round at 0.5 (a failed round: the backoff grows) and passes one at 1.0."""
    epoch = lua.half_opened()
    leases = [lua.lease(budget=2)[4], lua.lease(budget=2)[4]]
    assert lua.result(leases[0], epoch, "w", slow_rate=0.5)[3] == "counted"
    reply = lua.result(leases[1], epoch, "s", slow_rate=0.5, base=1_000, mult=2.0, jitter=0.5)
    assert reply[0] == "o" and reply[3] == "reopened" and reply[2] == 3_000  # 1 s * 2 * 1.5
    assert lua.field("r") == "1"
    lua.end_open_period()
    epoch = int(lua.half_open()[1])
    leases = [lua.lease(budget=2)[4], lua.lease(budget=2)[4]]
    assert lua.result(leases[0], epoch, "w", slow_rate=1.0)[3] == "counted"
    assert lua.result(leases[1], epoch, "s", slow_rate=1.0)[3] == "closed"


def test_a_lease_on_a_forgotten_key_restarts_the_round_quietly(lua: Scripts) -> None:
    """After a restart or expiry, a half-open replica may probe; nobody else is pulled in."""
    granted = lua.lease(budget=2, rounds=2)
    assert granted[0] == "h" and granted[3] == "granted"
    assert lua.field("r") == "2"
    assert lua.messages() == []


def test_a_lease_on_a_closed_key_says_closed(lua: Scripts) -> None:
    """A replica that missed the close learns it when it asks for a probe slot."""
    epoch = lua.half_opened()
    only = lua.lease(budget=1)
    lua.result(only[4], epoch, "s", budget=1)
    reply = lua.lease(budget=1)
    assert reply[0] == "c" and reply[3] == "closed"


def test_push_keeps_the_newer_state(lua: Scripts) -> None:
    """After an outage the newer of the fleet's state and a replica's wins."""
    assert lua.push("o", 20_000, 1, 0)[3] == "pushed"  # the fleet had nothing
    assert lua.field("s") == "o" and lua.field("r") == "1"  # with the replica's backoff
    # A replica whose close is older than the fleet's open loses...
    assert lua.push("c", 0, 0, 60_000)[3] == "kept"
    assert lua.field("s") == "o"
    # ...one whose close came after it wins.
    lua.client.hset(KEY, "t", int(lua.field("t") or 0) - 120_000)
    assert lua.push("c", 0, 0, 60_000)[3] == "pushed"
    assert lua.field("s") == "c" and lua.field("r") == "0"
    assert [m[3] for m in lua.messages()] == ["o", "c"]


def test_a_push_from_a_replica_that_knew_the_fleets_state_wins(lua: Scripts) -> None:
    """A replica that saw the fleet's last transition moved after it, however long ago."""
    opened = lua.trip(base=60_000)
    pushed = lua.push("c", 0, 0, 3_600_000, known=opened[1])
    assert pushed[0] == "c" and pushed[3] == "pushed"


def test_a_pushed_half_open_never_cuts_the_fleets_period_short(lua: Scripts) -> None:
    """A replica whose own period ended during an outage does not end the fleet's."""
    opened = lua.trip(base=60_000)
    kept = lua.push("h", 0, 0, 0)
    assert kept[3] == "kept" and kept[1] == opened[1] and lua.field("s") == "o"
    lua.end_open_period()
    pushed = lua.push("h", 0, 0, 0)
    assert pushed[3] == "pushed" and pushed[0] == "o" and pushed[2] == 0  # half-open in effect


def test_peek_reads_without_writing(lua: Scripts) -> None:
    """Reconciling reads state, epoch and time left; a missing key reads as such."""
    assert lua.peek() == ["-", 0, 0, "peek", 0]  # a missing key: no state, epoch 0
    assert not lua.client.exists(KEY)
    opened = lua.trip(base=30_000)
    seen = lua.peek()
    assert seen[:2] == opened[:2] and seen[3] == "peek" and 0 <= seen[4] < 5_000


def test_every_key_expires(lua: Scripts) -> None:
    """Open keys live for their period plus the idle time; every other write too."""
    lua.trip(base=30_000)
    assert TTL_MS < lua.client.pttl(KEY) <= TTL_MS + 30_000
    lua.end_open_period()
    lua.lease()
    assert 0 < lua.client.pttl(KEY) <= TTL_MS + 10_000
    lua.run(scripts.COUNT, 1, 2, 60_000, 10, 100, "0.5", 30_000, "1.0", -1, "0.0", 0,
            key=KEY + "2")  # fmt: skip
    assert 0 < lua.client.pttl(KEY + "2") <= TTL_MS


def test_idle_and_closed_expiries_are_apart(lua: Scripts) -> None:
    """Open: the period plus `idle`; half-open: `idle` after the last lease; closed:
    `closed` (the store sends one value for both, the scripts keep them apart)."""
    lua.idle, lua.closed = 100_000, 500_000
    lua.trip(base=30_000)
    assert 100_000 < lua.client.pttl(KEY) <= 130_000
    lua.end_open_period()
    epoch = int(lua.half_open()[1])
    assert 0 < lua.client.pttl(KEY) <= 100_000
    only = lua.lease(budget=1)
    assert 100_000 < lua.client.pttl(KEY) <= 110_000
    assert lua.result(only[4], epoch, "s", budget=1)[3] == "closed"
    assert 130_000 < lua.client.pttl(KEY) <= 500_000


def test_shared_counts_open_the_fleet_on_its_failure_rate(lua: Scripts) -> None:
    """No replica alone has enough outcomes; together they reach the rate and open."""

    def count(failed: int, total: int) -> list[Any]:
        return lua.run(scripts.COUNT, failed, total, 60_000, 10, 10, "0.5", 30_000, "1.0",
                       -1, "0.0", 0)  # fmt: skip

    first = count(3, 4)
    assert first[3] == "counted" and first[4:] == [3, 4]
    second = count(2, 4)
    assert second[3] == "counted" and second[4:] == [5, 8]
    opened = count(1, 2)
    assert opened[0] == "o" and opened[3] == "opened"
    assert [m[5] for m in lua.messages()] == ["fleet_failure_rate"]
    # Open now: counts are not added while the fleet is not closed.
    assert count(5, 5)[3] == "unchanged"


def test_shared_counts_open_at_the_rate_once_the_minimum_is_in(lua: Scripts) -> None:
    """Below the failure rate the fleet stays closed, its counts kept, in a closed key;
    the rate reached (equal is enough) with the minimum of outcomes, it opens."""

    def count(failed: int, total: int) -> list[Any]:
        return lua.run(scripts.COUNT, failed, total, 60_000, 10, 3, "0.5", 30_000, "1.0",
                       -1, "0.0", 0)  # fmt: skip

    below = count(1, 3)
    assert below[:3] == ["c", 0, 0] and below[3] == "counted" and below[4:] == [1, 3]
    assert lua.field("s") == "c" and lua.field("r") == "0"
    at = count(1, 1)
    assert at[0] == "o" and at[3] == "opened"


def test_shared_counts_open_for_the_period_they_are_given(lua: Scripts) -> None:
    """A key the counts open (here at once: a minimum of one) opens for base, jitter on
    top, under the cap, with no failed round behind it."""
    key = KEY + "2"
    opened = lua.run(scripts.COUNT, 1, 1, 60_000, 10, 1, "0.5", 30_000, "2.0", 40_000,
                     "0.25", 0, key=key)  # fmt: skip
    assert opened[0] == "o" and opened[3] == "opened" and opened[2] == 37_500
    assert lua.client.hget(key, "r") == "0"


def test_shared_counts_are_those_of_the_window(lua: Scripts) -> None:
    """Counts live in buckets a tenth of the window wide: a bucket as old as the window is
    dropped from the key, a younger one still counts."""

    def count(failed: int, total: int) -> list[Any]:
        return lua.run(scripts.COUNT, failed, total, 60_000, 10, 100, "0.5", 30_000, "1.0",
                       -1, "0.0", 0)  # fmt: skip

    assert count(0, 1)[4:] == [0, 1]
    seconds, micros = lua.client.time()
    bucket = (seconds * 1000 + micros // 1000) // 6_000
    lua.client.hset(KEY, mapping={f"a{bucket - 5}": 3, f"f{bucket - 5}": 3,
                                  f"a{bucket - 10}": 50, f"f{bucket - 10}": 50})  # fmt: skip
    assert count(1, 1)[4:] == [4, 5]
    assert lua.field(f"a{bucket - 10}") is None and lua.field(f"f{bucket - 10}") is None


def test_a_fleet_that_closes_counts_afresh(lua: Scripts) -> None:
    """The outcomes that opened the fleet are not held against it once it has closed."""

    def count(failed: int, total: int) -> list[Any]:
        return lua.run(scripts.COUNT, failed, total, 60_000, 10, 4, "0.5", 30_000, "1.0",
                       -1, "0.0", 0)  # fmt: skip

    assert count(4, 4)[3] == "opened"
    lua.end_open_period()
    epoch = int(lua.half_open()[1])
    only = lua.lease(budget=1)
    assert lua.result(only[4], epoch, "s", budget=1)[3] == "closed"
    after = count(1, 1)
    assert after[3] == "counted" and after[4:] == [1, 1]


def test_scripts_touch_only_their_key(lua: Scripts) -> None:
    """Single-key scripts: nothing but KEYS[1] is written."""
    lua.half_opened()
    lua.lease()
    assert lua.client.keys("*") == [KEY]


def test_scripts_fail_clearly_on_a_wrong_type(lua: Scripts) -> None:
    """A key of another type under the namespace is an error reply, not a crash."""
    lua.client.set(KEY, "not a hash")
    with pytest.raises(redis.ResponseError):
        lua.trip()
