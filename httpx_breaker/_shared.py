"""The breaker's side of a shared store: what a `CircuitBreaker` attached to one does.

A registry made with ``store=`` attaches each breaker it makes (`attach`). The breaker
then holds a `BreakerSide` in its ``_fleet`` slot, and calls it from three places
only, none of them the CLOSED success path:

- half-open admission (`lease`): while the store is in touch with the fleet, a probe
  needs a lease; without one the request is refused as when the probe slots are taken
  (and the store fetches one in the background);
- a probe's end (`probe_done`): its outcome goes back with the lease it held;
- after a state change (`published`, from the breaker's `_emit`, outside its lock):
  the breaker's own transitions go to the fleet.

With ``share_counts``, CLOSED outcomes are also counted for the fleet (`counted`);
that takes the breaker off the engine's fast path for successes, as a listener does.

Transitions the fleet made (cause ``"fleet"``), manual control (``"forced"``,
``"reset"``) and test helpers (``"testing"``) are not published: a replica's manual
control stays with that replica. The store calls back `shared_view` and
`apply_shared` (`_store.SharedBreaker`) on its own thread; `apply_shared` is the
engine's `transition_to` with cause ``"fleet"``.

Every method here that a request reaches returns at once: the link it calls only
queues work for the store's thread.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from ._breaker import FAILURE, SUCCESS
from ._state import BreakerEvent, CircuitState
from ._store import FLEET, Lease, LocalTransition, LocalView, ProbeOutcome, Store, StoreLink

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = ["LOCAL_CAUSES", "BreakerSide", "attach"]

LOCAL_CAUSES: Final = frozenset({FLEET, "forced", "reset", "testing"})
"""Causes of state changes that are never published to the fleet."""

_OPEN = CircuitState.OPEN

logger = logging.getLogger("httpx_breaker")


class BreakerSide:
    """One breaker's connection to its store (`_store.SharedBreaker` for the store)."""

    __slots__ = ("__weakref__", "_breaker", "counts", "epoch", "leases", "link")

    def __init__(self, breaker: CircuitBreaker) -> None:
        # Weak: the breaker holds this object, and the store holds this object weakly.
        self._breaker = weakref.ref(breaker)
        self.link: StoreLink | None = None
        self.counts = False  # the store wants CLOSED outcomes (share_counts)
        self.leases: list[Lease] = []  # the leases of the probes in flight of round `epoch`
        self.epoch = -1

    # -- called by the breaker, its lock held -----------------------------------

    def lease(self, epoch: int) -> bool:
        """Whether a half-open probe of round `epoch` may go: yes without a fleet to ask
        (no connection), else only with a lease the store has fetched already."""
        link = self.link
        try:
            if link is None or not link.active:
                return True
            lease = link.take_lease()
        except Exception:  # noqa: BLE001 - logged; a store's bug must not fail the request
            _store_raised(self, "take_lease")
            return True
        if lease is None:
            return False
        if epoch != self.epoch:
            self.leases.clear()
            self.epoch = epoch
        self.leases.append(lease)
        return True

    def probe_done(self, epoch: int, outcome: int, slow: bool) -> None:
        """A probe of round `epoch` ended (`outcome` as the engine counts it)."""
        leases = self.leases
        if epoch != self.epoch or not leases or self.link is None:
            return  # admitted without a lease (no connection then): nothing to report
        if outcome == SUCCESS:
            result = ProbeOutcome.SLOW_SUCCESS if slow else ProbeOutcome.SUCCESS
        elif outcome == FAILURE:
            result = ProbeOutcome.FAILURE
        else:
            result = ProbeOutcome.IGNORED
        # Leases of one round are interchangeable: any of them carries any probe's outcome.
        try:
            self.link.probe_done(leases.pop(), result)
        except Exception:  # noqa: BLE001 - logged by _store_raised
            _store_raised(self, "probe_done")

    def counted(self, outcome: int) -> None:
        """One outcome (success or failure) in CLOSED, for fleet-wide failure rates."""
        link = self.link
        if link is not None:
            try:
                link.counted(outcome == FAILURE)
            except Exception:  # noqa: BLE001 - logged by _store_raised
                _store_raised(self, "counted")

    # -- called by the breaker after its lock is released -------------------------

    def published(self, events: Iterable[BreakerEvent], floor: float | None) -> None:
        """Send the breaker's own state changes among `events` to the fleet.

        `floor` is a capped `Retry-After` (seconds) a failure recorded with these events
        carried: it goes with the change to OPEN it caused, or extends an open period.
        """
        link = self.link
        if link is None:
            return
        changes = [event for event in events if event.kind == "state_change"]
        for event in changes:
            if event.cause in LOCAL_CAUSES:
                # The fleet's own change, manual control or a test helper (and any change
                # the same operation made around it): not this replica's news to share.
                return
        opened = False
        try:
            for event in changes:
                assert event.old_state is not None and event.new_state is not None
                to_open = event.new_state is _OPEN
                opened = opened or to_open
                link.published(
                    LocalTransition(
                        event.old_state,
                        event.new_state,
                        event.cause or "",
                        floor if to_open else None,
                    )
                )
            if floor is not None and not opened:
                link.extended(floor)
        except Exception:  # noqa: BLE001 - logged by _store_raised
            _store_raised(self, "published")

    # -- the store's side (`_store.SharedBreaker`), on its thread ---------------------

    def shared_view(self) -> LocalView:
        breaker = self._breaker()
        if breaker is None:  # the store notices the dead weak reference on its own
            return LocalView(CircuitState.CLOSED)
        with breaker._lock:
            state = breaker._state
            forced = breaker._forced is not None
            failed_rounds = breaker._failed_rounds
            open_for = None
            if state is _OPEN and not forced:
                open_for = max(0.0, breaker._open_until - breaker._clock())
        return LocalView(state, open_for, failed_rounds, forced)

    def apply_shared(self, state: CircuitState, open_for: float | None) -> None:
        breaker = self._breaker()
        if breaker is not None:
            breaker.transition_to(state, cause=FLEET, open_for=open_for)

    # -- the registry's ---------------------------------------------------------------

    def detach(self) -> None:
        link, self.link = self.link, None
        self.leases.clear()
        if link is not None:
            link.detach()

    def __repr__(self) -> str:
        return f"<BreakerSide {self.link!r}>"


def _store_raised(side: BreakerSide, what: str) -> None:
    breaker = side._breaker()
    name = breaker.name if breaker is not None else "?"
    logger.exception(
        "the shared store's %s raised for circuit breaker %r; it decides locally",
        what,
        name,
        extra={"circuit_breaker": name},
    )


def attach(breaker: CircuitBreaker, store: Store) -> BreakerSide:
    """Share `breaker`'s state through `store`, under its name; return its side."""
    side = BreakerSide(breaker)
    link = store.attach(breaker.name, side, breaker.config)
    side.link = link
    side.counts = link.counts
    breaker._attach_fleet(side)
    return side
