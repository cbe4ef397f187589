"""A stand-in for the store side of the seam (`_store.Store`), for the engine's tests.

A test double of our own interface, not of Redis (the Redis tests run a real server):
it records every call a breaker makes on its link, and lets a test say whether the
link is in touch with the fleet and which leases it holds, so the engine's side can be
checked exactly, on a fake clock, with no thread and no timing.
"""

from __future__ import annotations

import itertools
from typing import Any

from httpx_breaker._config import CircuitBreakerConfig
from httpx_breaker._store import Lease, LocalTransition, ProbeOutcome, SharedBreaker

_ids = itertools.count(1)


class RecordingLink:
    def __init__(
        self, store: RecordingStore, key: str, breaker: SharedBreaker, config: CircuitBreakerConfig
    ) -> None:
        self.store = store
        self.key = key
        self.breaker = breaker
        self.config = config
        self.active = store.active
        self.counts = store.counts
        self.leases: list[Lease] = []
        self.calls: list[tuple[Any, ...]] = []
        self.detached = False

    def give_lease(self, epoch: int = 1) -> Lease:
        lease = Lease(id=next(_ids), epoch=epoch, usable_until=1e12)
        self.leases.append(lease)
        return lease

    def published(self, transition: LocalTransition) -> None:
        self.calls.append(("published", transition))

    def extended(self, retry_after: float) -> None:
        self.calls.append(("extended", retry_after))

    def take_lease(self) -> Lease | None:
        self.calls.append(("take_lease",))
        if self.store.raise_on_take:
            raise RuntimeError("a store bug")
        return self.leases.pop(0) if self.leases else None

    def probe_done(self, lease: Lease, outcome: ProbeOutcome) -> None:
        self.calls.append(("probe_done", lease, outcome))

    def counted(self, failed: bool) -> None:
        self.calls.append(("counted", failed))

    def detach(self) -> None:
        self.detached = True
        self.calls.append(("detach",))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[0] == kind]

    def transitions(self) -> list[tuple[str, str, str, float | None]]:
        """What was published, as (old, new, cause, retry_after)."""
        return [(t.old.value, t.new.value, t.cause, t.retry_after) for _, t in self.of("published")]


class RecordingStore:
    def __init__(self, *, active: bool = True, counts: bool = False) -> None:
        self.active = active
        self.counts = counts
        self.raise_on_take = False
        self.links: dict[str, RecordingLink] = {}
        self.closed = False

    def attach(
        self, key: str, breaker: SharedBreaker, config: CircuitBreakerConfig
    ) -> RecordingLink:
        link = RecordingLink(self, key, breaker, config)
        self.links[key] = link
        return link

    def close(self) -> None:
        self.closed = True
