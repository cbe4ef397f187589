"""The engine's side of a shared store, exactly: what a breaker tells its link and when.

The store here is `RecordingStore`, a stand-in for our own `_store.Store` seam (the Redis
side runs on real servers in tests/test_redis_*.py): each breaker's link records the
calls, and a test decides whether the link is in touch with the fleet and which probe
leases it holds. Time is a fake clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    BulkheadFullError,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
    get_all_circuit_breakers,
)
from httpx_breaker._breaker import FAILURE, IGNORED, SUCCESS
from httpx_breaker._state import BreakerEvent
from httpx_breaker._store import LocalView, ProbeOutcome
from httpx_breaker.testing import set_state

from .conftest import FakeClock
from .store_double import RecordingLink, RecordingStore

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
CONFIG = CircuitBreakerConfig(failure_threshold=2, reset_timeout=30.0, half_open_max_requests=2)
KEY = "api.example.com"


def make(
    clock: FakeClock, store: RecordingStore | None = None, config: CircuitBreakerConfig = CONFIG
) -> tuple[CircuitBreaker, RecordingLink, BreakerRegistry]:
    store = store if store is not None else RecordingStore()
    registry = BreakerRegistry(default=config, clock=clock, store=store)
    breaker = registry.breaker_for(KEY)
    return breaker, store.links[KEY], registry


def fail(
    breaker: CircuitBreaker, clock: FakeClock, times: int = 1, retry_after: float | None = None
) -> None:
    for _ in range(times):
        token = breaker.admit()
        breaker.record(token, FAILURE, clock(), clock(), retry_after)


def succeed(breaker: CircuitBreaker, clock: FakeClock) -> None:
    token = breaker.admit()
    breaker.record_success(token, clock(), clock())


def to_half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, clock, 2)
    clock.advance(30.0)
    assert breaker.state is HALF_OPEN


def test_the_registry_attaches_each_breaker_under_its_key_with_its_policy(clock: FakeClock) -> None:
    """Every breaker the registry makes is attached once, by name, with its own policy."""
    store = RecordingStore()
    strict = CONFIG.replace(failure_threshold=1)
    registry = BreakerRegistry(default=CONFIG, policies={"pay.internal": strict}, store=store)
    registry.breaker_for("a.example")
    registry.breaker_for("pay.internal")
    registry.breaker_for("pay.internal")
    assert registry.store is store
    assert set(store.links) == {"a.example", "pay.internal"}
    assert store.links["pay.internal"].config is strict
    assert store.links["a.example"].config is CONFIG


def test_an_evicted_breaker_is_detached(clock: FakeClock) -> None:
    """Eviction detaches the link; the dropped breaker goes on alone."""
    store = RecordingStore()
    registry = BreakerRegistry(default=CONFIG, max_size=1, store=store, clock=clock)
    first = registry.breaker_for("a.example")
    registry.breaker_for("b.example")
    link = store.links["a.example"]
    assert link.detached and link.of("detach") == [("detach",)]
    assert first._fleet is None
    fail(first, clock, 2)  # a request still in flight on it: no call reaches the link
    assert first.state is OPEN and link.of("published") == []


def test_own_transitions_are_published_in_order(clock: FakeClock) -> None:
    """Open, half-open, close: each of the breaker's own changes reaches its link."""
    breaker, link, _ = make(clock, RecordingStore(active=False))
    fail(breaker, clock, 2)
    clock.advance(30.0)
    succeed(breaker, clock)
    succeed(breaker, clock)
    assert breaker.state is CLOSED
    assert link.transitions() == [
        ("closed", "open", "failure_threshold", None),
        ("open", "half_open", "reset_timeout", None),
        ("half_open", "closed", "probes_succeeded", None),
    ]


def test_a_failed_probe_is_published_as_a_reopen(clock: FakeClock) -> None:
    breaker, link, _ = make(clock, RecordingStore(active=False))
    to_half_open(breaker, clock)
    fail(breaker, clock)
    assert link.transitions()[-1] == ("half_open", "open", "probe_failed", None)


def test_the_retry_after_that_opened_the_breaker_goes_with_the_open(clock: FakeClock) -> None:
    """A failure carrying Retry-After: the open it causes carries the capped floor."""
    config = CONFIG.replace(failure_threshold=1, max_retry_after=120.0)
    breaker, link, _ = make(clock, config=config)
    fail(breaker, clock, retry_after=500.0)
    assert link.transitions() == [("closed", "open", "failure_threshold", 120.0)]
    assert link.of("extended") == []


def test_a_retry_after_on_an_open_breaker_extends_the_fleets_period(clock: FakeClock) -> None:
    """A late failure with Retry-After on an OPEN breaker: `extended`, not a transition."""
    breaker, link, _ = make(clock)
    token = breaker.admit()  # admitted while CLOSED, answers after the breaker opened
    fail(breaker, clock, 2)
    breaker.record(token, FAILURE, clock(), clock(), 90.0)
    assert link.of("extended") == [("extended", 90.0)]
    assert len(link.of("published")) == 1


def test_no_store_hears_nothing_of_a_retry_after_without_respect(clock: FakeClock) -> None:
    config = CONFIG.replace(failure_threshold=1, respect_retry_after=False)
    breaker, link, _ = make(clock, config=config)
    fail(breaker, clock, retry_after=60.0)
    assert link.transitions() == [("closed", "open", "failure_threshold", None)]


def test_fleet_transitions_are_applied_as_normal_transitions(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """apply_shared: listeners, logs, metrics and the process-wide view all see cause "fleet";
    nothing goes back to the store."""
    breaker, link, _ = make(clock)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    with caplog.at_level(logging.INFO, logger="httpx_breaker"):
        link.breaker.apply_shared(OPEN, 12.5)
    assert breaker.state is OPEN and breaker.retry_after == 12.5
    assert get_all_circuit_breakers()[KEY] is breaker
    [change] = [e for e in events if e.kind == "state_change"]
    assert (change.old_state, change.new_state, change.cause) == (CLOSED, OPEN, "fleet")
    assert "closed -> open (fleet)" in caplog.text
    assert breaker.get_metrics().state_change_counts == ((CLOSED, OPEN, 1),)
    with pytest.raises(CircuitOpenError) as info:
        breaker.admit()
    assert info.value.retry_after == 12.5
    link.breaker.apply_shared(CLOSED, None)
    assert breaker.state is CLOSED
    assert link.of("published") == []


def test_a_fleet_open_over_an_ended_period_publishes_nothing(clock: FakeClock) -> None:
    """The breaker's own period ended unnoticed, then the fleet reopens it: the
    half-open its own timer made on the way is not news for the fleet."""
    breaker, link, _ = make(clock, RecordingStore(active=False))
    fail(breaker, clock, 2)
    before = len(link.of("published"))
    clock.advance(31.0)
    link.breaker.apply_shared(OPEN, 60.0)
    assert breaker.state is OPEN and breaker.retry_after == 60.0
    assert len(link.of("published")) == before


def test_manual_control_stays_local(clock: FakeClock) -> None:
    """force_open, force_closed, reset and testing.set_state are not published, and a
    forced breaker ignores the fleet."""
    breaker, link, _ = make(clock)
    breaker.force_open()
    link.breaker.apply_shared(CLOSED, None)
    assert breaker.state is OPEN
    assert link.breaker.shared_view() == LocalView(OPEN, None, 0, True)
    breaker.reset()
    breaker.force_closed()
    link.breaker.apply_shared(OPEN, 10.0)
    assert breaker.state is CLOSED
    breaker.reset()
    set_state(breaker, HALF_OPEN)
    set_state(breaker, OPEN)
    assert link.of("published") == []


def test_shared_view_tells_the_state_the_period_left_and_the_failed_rounds(
    clock: FakeClock,
) -> None:
    breaker, link, _ = make(clock, RecordingStore(active=False))
    view = link.breaker.shared_view
    assert view() == LocalView(CLOSED, None, 0, False)
    fail(breaker, clock, 2)
    clock.advance(10.0)
    assert view() == LocalView(OPEN, 20.0, 0, False)
    clock.advance(25.0)
    assert view() == LocalView(OPEN, 0.0, 0, False)  # ended, not yet noticed
    assert breaker.state is HALF_OPEN
    fail(breaker, clock)
    assert view().failed_rounds == 1


def test_half_open_admits_only_with_a_lease_while_the_fleet_is_there(clock: FakeClock) -> None:
    """No lease: refused like a taken slot (counted, CircuitOpenError HALF_OPEN), and
    demand flagged; with one: admitted."""
    breaker, link, _ = make(clock)
    to_half_open(breaker, clock)
    with pytest.raises(CircuitOpenError) as info:
        breaker.admit()
    assert info.value.state is HALF_OPEN and info.value.retry_after is None
    assert breaker.get_metrics().rejected_requests == 1
    assert link.of("take_lease") == [("take_lease",)]
    lease = link.give_lease()
    token = breaker.admit()
    assert token == breaker._epoch
    breaker.record_success(token, clock(), clock())
    assert link.of("probe_done") == [("probe_done", lease, ProbeOutcome.SUCCESS)]


def test_lease_holders_never_exceed_the_local_budget(clock: FakeClock) -> None:
    """A lease does not lift the local limit: slots first, then the lease."""
    breaker, link, _ = make(clock)
    to_half_open(breaker, clock)
    for _ in range(3):
        link.give_lease()
    breaker.admit()
    breaker.admit()
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    assert len(link.of("take_lease")) == 2 and len(link.leases) == 1


@pytest.mark.parametrize(
    ("settle", "expected"),
    [
        ("success", ProbeOutcome.SUCCESS),
        ("slow", ProbeOutcome.SLOW_SUCCESS),
        ("failure", ProbeOutcome.FAILURE),
        ("ignored", ProbeOutcome.IGNORED),
        ("release", ProbeOutcome.IGNORED),
    ],
)
def test_each_probe_outcome_goes_back_with_its_lease(
    clock: FakeClock, settle: str, expected: ProbeOutcome
) -> None:
    config = CONFIG.replace(slow_call_duration=1.0)
    breaker, link, _ = make(clock, config=config)
    to_half_open(breaker, clock)
    lease = link.give_lease()
    token = breaker.admit()
    start = clock()
    if settle == "release":
        breaker.release(token)
    else:
        if settle == "slow":
            clock.advance(2.0)
        outcome = {"success": SUCCESS, "slow": SUCCESS, "failure": FAILURE, "ignored": IGNORED}
        breaker.record(token, outcome[settle], start, clock())
    assert link.of("probe_done") == [("probe_done", lease, expected)]


def test_the_probe_result_reaches_the_link_before_the_transition_it_causes(
    clock: FakeClock,
) -> None:
    """The store must see the lease's result first, then the reopen it caused."""
    breaker, link, _ = make(clock)
    to_half_open(breaker, clock)
    link.give_lease()
    token = breaker.admit()
    breaker.record(token, FAILURE, clock(), clock())
    kinds = [call[0] for call in link.calls]
    assert kinds[-2:] == ["probe_done", "published"]


def test_an_outcome_from_an_earlier_round_reports_nothing(clock: FakeClock) -> None:
    """A probe admitted before the fleet moved the breaker on: its lease is stale."""
    breaker, link, _ = make(clock)
    to_half_open(breaker, clock)
    link.give_lease()
    token = breaker.admit()
    link.breaker.apply_shared(OPEN, 30.0)
    breaker.record(token, FAILURE, clock(), clock())
    assert link.of("probe_done") == []


def test_a_lease_left_from_an_earlier_round_carries_no_later_probes_outcome(
    clock: FakeClock,
) -> None:
    """A lease left over from an earlier round (its probe outlived the round) does not
    carry the outcome of a later probe admitted without one, while out of touch."""
    breaker, link, _ = make(clock)
    to_half_open(breaker, clock)
    link.give_lease()
    link.give_lease()
    failing = breaker.admit()
    breaker.admit()  # outlives its round, its lease still held
    breaker.record(failing, FAILURE, clock(), clock())
    assert breaker.state is OPEN
    [(_, _, outcome)] = link.of("probe_done")
    assert outcome is ProbeOutcome.FAILURE
    link.active = False  # the store lost the fleet
    clock.advance(30.0)
    probe = breaker.admit()  # no lease needed, none taken
    breaker.record_success(probe, clock(), clock())
    assert len(link.of("probe_done")) == 1
    assert len(link.of("take_lease")) == 2


def test_without_the_fleet_half_open_uses_its_own_slots(clock: FakeClock) -> None:
    """A link out of touch (Redis down): no lease asked for, local slots, nothing reported."""
    breaker, link, _ = make(clock, RecordingStore(active=False))
    to_half_open(breaker, clock)
    first, second = breaker.admit(), breaker.admit()
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    breaker.record_success(first, clock(), clock())
    breaker.record_success(second, clock(), clock())
    assert breaker.state is CLOSED
    assert link.of("take_lease") == [] and link.of("probe_done") == []


def test_dry_run_lets_a_request_without_a_lease_through_uncounted(clock: FakeClock) -> None:
    breaker, link, _ = make(clock, config=CONFIG.replace(dry_run=True))
    to_half_open(breaker, clock)
    token = breaker.admit()
    assert token == -1
    assert breaker.get_metrics().rejected_requests == 1
    assert link.of("take_lease") == [("take_lease",)]  # the demand is flagged all the same


def test_a_store_that_raises_never_fails_a_request(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a store's take_lease is logged; the breaker decides locally."""
    store = RecordingStore()
    breaker, _, _ = make(clock, store)
    to_half_open(breaker, clock)
    store.raise_on_take = True
    with caplog.at_level(logging.ERROR, logger="httpx_breaker"):
        token = breaker.admit()
    assert token == breaker._epoch
    assert "take_lease raised" in caplog.text


def test_a_raising_store_is_logged_under_the_breakers_name(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The error record names the breaker, in its message and in its `circuit_breaker`
    extra, and carries the store's exception."""
    store = RecordingStore()
    breaker, _, _ = make(clock, store)
    to_half_open(breaker, clock)
    store.raise_on_take = True
    with caplog.at_level(logging.ERROR, logger="httpx_breaker"):
        breaker.admit()
    [record] = [r for r in caplog.records if "take_lease raised" in r.getMessage()]
    assert record.circuit_breaker == KEY  # type: ignore[attr-defined]
    assert repr(KEY) in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


def test_a_store_keeps_the_closed_success_path_fast(clock: FakeClock) -> None:
    """Without share_counts the link is not told of CLOSED outcomes, and successes stay
    on the engine's fast path (the permit equals the fast epoch)."""
    breaker, link, _ = make(clock)
    assert breaker._fast_epoch == breaker._epoch
    succeed(breaker, clock)
    fail(breaker, clock)
    assert link.calls == []
    breaker.reset()
    assert breaker._fast_epoch == breaker._epoch


def test_share_counts_hears_every_closed_outcome(clock: FakeClock) -> None:
    """A counting link: every success and failure in CLOSED, nothing ignored, nothing
    from another state; the breaker leaves the fast path for it."""
    breaker, link, _ = make(clock, RecordingStore(active=False, counts=True))
    assert breaker._fast_epoch == -2
    succeed(breaker, clock)
    fail(breaker, clock)
    token = breaker.admit()
    breaker.record(token, IGNORED, clock(), clock())
    succeed(breaker, clock)
    fail(breaker, clock, 2)  # the second opens the breaker: counted, it was CLOSED
    assert link.of("counted") == [
        ("counted", False),
        ("counted", True),
        ("counted", False),
        ("counted", True),
        ("counted", True),
    ]
    clock.advance(30.0)
    succeed(breaker, clock)  # a probe: not a CLOSED outcome
    assert len(link.of("counted")) == 5


def test_store_must_be_a_store() -> None:
    with pytest.raises(TypeError, match="store must be a shared store"):
        BreakerRegistry(store="redis://127.0.0.1:6379/0")  # type: ignore[arg-type]


@pytest.mark.parametrize("make_transport", [AsyncCircuitBreakerTransport, CircuitBreakerTransport])
def test_a_transport_takes_a_store_or_a_registry_not_both(
    make_transport: Callable[..., object],
) -> None:
    """store= goes to the registry the transport makes; with registry= it is a ValueError
    naming both (the registry has its own store)."""
    store = RecordingStore()
    transport = make_transport(store=store)
    assert transport.registry.store is store  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="registry cannot be combined with store"):
        make_transport(registry=BreakerRegistry(), store=store)
    with pytest.raises(ValueError, match="with default or store"):
        make_transport(registry=BreakerRegistry(), default=CONFIG, store=store)


def test_the_sync_transport_settles_a_leased_probe(clock: FakeClock) -> None:
    """Through a transport: the probe's response closes the breaker and its lease goes back."""
    store = RecordingStore()
    registry = BreakerRegistry(default=CONFIG, clock=clock, store=store)
    statuses = iter([503, 503, 200, 200])
    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda request: httpx.Response(next(statuses))), registry=registry
    )
    with httpx.Client(transport=transport) as client:
        client.get(f"https://{KEY}/")
        client.get(f"https://{KEY}/")
        clock.advance(30.0)
        with pytest.raises(CircuitOpenError):
            client.get(f"https://{KEY}/")  # no lease yet: refused before any I/O
        link = store.links[KEY]
        first, second = link.give_lease(), link.give_lease()
        client.get(f"https://{KEY}/")
        client.get(f"https://{KEY}/")
    assert registry[KEY].state is CLOSED
    assert {call[1] for call in link.of("probe_done")} == {first, second}
    assert link.transitions()[-1][:3] == ("half_open", "closed", "probes_succeeded")


def test_a_probe_that_waits_for_the_bulkhead_hands_its_lease_back(clock: FakeClock) -> None:
    """A probe permit returned unused for the bulkhead's wait returns the fleet's lease
    too: the replica does not sit on a lease while it waits, nor hold two after."""
    breaker, link, _ = make(clock, config=CONFIG.replace(max_concurrent=1))
    to_half_open(breaker, clock)
    bulkhead = breaker.bulkhead
    assert bulkhead is not None and bulkhead.try_acquire()  # another call holds the slot
    lease = link.give_lease()
    token = breaker.admit()
    assert not bulkhead.try_acquire()
    with pytest.raises(BulkheadFullError):
        breaker.wait_for_slot(token)  # max_wait=0: refused at once
    assert link.of("probe_done") == [("probe_done", lease, ProbeOutcome.IGNORED)]
