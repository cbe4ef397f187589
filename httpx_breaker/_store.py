"""The seam a shared store plugs into: no Redis here, nothing that does I/O.

A *store* lets breakers with the same key in several processes (the replicas of one
service) share their state. Decisions stay local: a request only ever reads its own
breaker. What travels is each breaker's **transitions**, in the background.

Two sides meet here:

- The **breaker side**, `SharedBreaker`: what a store reads from a breaker and how it
  hands a transition made elsewhere back to it. `_shared.BreakerSide` implements it
  over the engine's "enter a state now" seam (`CircuitBreaker.transition_to`); tests
  of the store implement it with a stand-in.
- The **store side**, `Store` and the per-key `StoreLink` it returns from `attach()`:
  what the breaker (through its `BreakerSide`) calls. Every `StoreLink` method is safe to
  call on a request's thread or event loop: none waits, none does I/O, none takes a
  lock that the store's own thread holds across I/O. They queue work for the store.

The life of a key, with a store:

1. The registry creates a breaker and attaches it (`_shared.attach`):
   ``link = store.attach(key, side, config)``.
2. After every **local** transition of the breaker (one its own outcomes or its own
   open period caused), the breaker calls ``link.published(LocalTransition(...))``,
   outside its lock. Transitions the store applied (cause `FLEET`), forced states,
   `reset()` and the testing helpers are not published: manual control is local.
3. A transition made by another replica reaches this one as
   ``breaker.apply_shared(state, open_for)``, called on the store's thread: the breaker
   enters `state` **now, as a normal transition** (new epoch, so outcomes of calls
   admitted before it no longer move the state; listeners see a state change whose
   cause is `FLEET`). A breaker held by `force_open()` / `force_closed()` ignores it.
4. While ``link.active`` is true, a HALF_OPEN breaker admits a probe only with a lease
   from ``link.take_lease()`` (which never waits: `None` means "refuse this request as
   when the probe slots are taken"; the store then fetches a lease in the background
   for a later request). The probe's outcome goes back with
   ``link.probe_done(lease, outcome)``; a probe that ends without an outcome
   (cancelled, abandoned) reports `IGNORED`, which frees the fleet's slot.
   While ``link.active`` is false (no store connection), the breaker works exactly as
   without a store: its own probe slots, no lease.
5. When the registry drops the breaker (eviction), it calls ``link.detach()``.

Times cross the seam as **durations** (seconds left of an open period), never as
instants: each side adds them to its own clock, so a breaker's injected clock and
the store's clock never need to agree.
"""

from __future__ import annotations

import dataclasses
import enum
import weakref
from typing import Any, Final, Protocol, runtime_checkable

from ._config import CircuitBreakerConfig
from ._state import CircuitState

__all__ = [
    "FLEET",
    "Lease",
    "LocalTransition",
    "LocalView",
    "MonitoredStore",
    "ProbeOutcome",
    "SharedBreaker",
    "Store",
    "StoreHealth",
    "StoreLink",
    "live_stores",
    "register_live_store",
]

FLEET: Final = "fleet"
"""The cause of a transition a store applied: another replica made it."""


class ProbeOutcome(str, enum.Enum):
    """What became of one half-open probe that held a lease."""

    SUCCESS = "success"
    SLOW_SUCCESS = "slow_success"  # answered, but no faster than `slow_call_duration`
    FAILURE = "failure"
    IGNORED = "ignored"  # cancelled, abandoned, excluded: frees the slot, proves nothing


@dataclasses.dataclass(frozen=True, slots=True)
class LocalView:
    """A breaker's state as a store reads it.

    `open_for` is the number of seconds left of the open period while OPEN (0.0 once it
    has ended), None in any other state. `failed_rounds` counts failed probe rounds
    since the breaker last closed (it sets the backoff when a fleet has lost its own
    count). `forced` is true while `force_open()` or `force_closed()` holds.
    """

    state: CircuitState
    open_for: float | None = None
    failed_rounds: int = 0
    forced: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class LocalTransition:
    """One transition a breaker made on its own, as published to its store.

    `retry_after` is a floor on the open period in seconds (a `Retry-After` the
    failure that opened the breaker carried, already capped by `max_retry_after`);
    None when there was none.
    """

    old: CircuitState
    new: CircuitState
    cause: str
    retry_after: float | None = None


STORE_STATES = ("connecting", "connected", "disconnected", "closed")
"""Every `StoreHealth.state` a store reports; the exporters give each its series."""


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """A fleet-wide probe slot: the right to send one half-open probe.

    Opaque to the breaker: it takes one with `StoreLink.take_lease()` and hands it back
    with `StoreLink.probe_done()`. A lease expires; a probe whose outcome comes after
    that no longer counts for the fleet.
    """

    id: int
    epoch: int
    usable_until: float  # the store's monotonic clock: take it before this, or it is dropped


@runtime_checkable
class SharedBreaker(Protocol):
    """The breaker side of the seam, called on the store's own thread."""

    def shared_view(self) -> LocalView:
        """The breaker's state now."""
        ...

    def apply_shared(self, state: CircuitState, open_for: float | None) -> None:
        """Enter `state` now as a normal transition with cause `FLEET`.

        For OPEN, `open_for` is the seconds left of the fleet's open period (the
        breaker's open period becomes exactly that, even when it was OPEN already); it is
        None for the other states. A forced breaker ignores the call. A breaker in
        `state` already (other than OPEN) may ignore it.
        """
        ...


class StoreLink(Protocol):
    """One key's connection to a store; every method returns at once."""

    @property
    def active(self) -> bool:
        """True while the store is in touch with the fleet: probes need a lease."""
        ...

    @property
    def counts(self) -> bool:
        """True if the store wants every CLOSED outcome through `counted()`."""
        ...

    def published(self, transition: LocalTransition) -> None:
        """The breaker made `transition` on its own (call it after the lock is released)."""
        ...

    def extended(self, retry_after: float) -> None:
        """A `Retry-After` floor (seconds, capped) moved an OPEN breaker's period out."""
        ...

    def take_lease(self) -> Lease | None:
        """A probe slot for the request at hand, or None: refuse it; one is being fetched."""
        ...

    def probe_done(self, lease: Lease, outcome: ProbeOutcome) -> None:
        """The outcome of the probe that held `lease`."""
        ...

    def counted(self, failed: bool) -> None:
        """One call's outcome in CLOSED, for fleet-wide failure rates (`share_counts`)."""
        ...

    def detach(self) -> None:
        """The breaker is gone from its registry; forget the key (its shared state stays)."""
        ...


@runtime_checkable
class Store(Protocol):
    """A place where replicas share breaker state (`httpx_breaker.redis.RedisStore`)."""

    def attach(self, key: str, breaker: SharedBreaker, config: CircuitBreakerConfig) -> StoreLink:
        """Share `key`'s state with the fleet through `breaker` (held weakly)."""
        ...

    def close(self) -> None:
        """Stop the store's background work; links fall back to local-only."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class StoreHealth:
    """How a `RedisStore` is doing, for health checks and exporters.

    Attributes:
        connected: in touch with the server: transitions are shared.
        state: ``"connecting"`` (not yet connected), ``"connected"``,
            ``"disconnected"`` (lost; breakers are local-only until it is back) or
            ``"closed"``.
        since: seconds (monotonic) since `state` last changed.
        last_error: the last connection error (type and message, credentials removed).
        reconnects: how many times the connection came back after a loss.
        lag: seconds between the server applying the last transition heard from
            another replica and this replica applying it (None before the first).
        keys: keys this store shares.
        queued: work waiting for the store's thread.
        dropped: transitions not sent because the server was unreachable (the next
            reconcile settles them).
        messages: transitions heard from other replicas.
    """

    connected: bool
    state: str
    since: float
    last_error: str | None
    reconnects: int
    lag: float | None
    keys: int
    queued: int
    dropped: int
    messages: int


@runtime_checkable
class MonitoredStore(Protocol):
    """A store that tells its health: what the exporters and the dashboard read.

    Reading any of these never does I/O.
    """

    @property
    def namespace(self) -> str:
        """The fleet's name on its server."""
        ...

    @property
    def server(self) -> str:
        """Where it connects, without credentials."""
        ...

    @property
    def health(self) -> StoreHealth:
        """A snapshot of the connection and the sync."""
        ...


# Every store made in the process, for exporters that export "everything".
_live: weakref.WeakSet[Any] = weakref.WeakSet()


def register_live_store(store: MonitoredStore) -> None:
    """Make `store` one of `live_stores()` for as long as it lives."""
    _live.add(store)


def live_stores() -> list[MonitoredStore]:
    """Every live store of the process that is not closed, by namespace and server."""
    stores = [s for s in list(_live) if s.health.state != "closed"]
    return sorted(stores, key=lambda s: (s.namespace, s.server))
