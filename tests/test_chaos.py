"""Chaos: a real loopback upstream flaps between healthy and failing under concurrent load.

Every request must end in exactly one of a response, an httpx transport error or
`CircuitOpenError`; none hangs, none is lost, none is answered with something it did not
get; the upstream sees nothing the breaker did not admit, nothing admitted while OPEN,
at most `half_open_max_requests` probes per half-open round; the counters balance and
the breaker ends CLOSED once the upstream has recovered.

The breakers read the real monotonic clock here (a 0.2 s open period), because the
upstream's own log is stamped with it; exactness comes from ordering instead: the
event loop is single-threaded, so admission, the entry into the wrapped transport and
every state change are totally ordered by a sequence number taken in the same step.
"""

from __future__ import annotations

import itertools
import json
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    CircuitTimeoutError,
)
from httpx_breaker._state import BreakerEvent
from httpx_breaker._upstream import Upstream

pytestmark = pytest.mark.anyio

OPEN, HALF_OPEN, CLOSED = CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED

CONFIG = CircuitBreakerConfig(
    failure_threshold=3,
    failure_rate_threshold=0.5,
    window_size=10,
    timeout=0.25,
    reset_timeout=0.2,
    half_open_max_requests=2,
)
FAULT_MODES = ("failing", "reset", "cut", "slow", "flaky")


def _refused_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class KeyLog:
    """What one breaker did, in the loop's own order."""

    state: CircuitState = CLOSED
    # (seq, monotonic time, new state) for every state change
    changes: list[tuple[int, float, CircuitState]] = field(default_factory=list)
    attempts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


@dataclass
class Entry:
    """One request as the wrapped transport saw it."""

    seq: int
    key: str
    state: CircuitState
    round: int  # index of the state change that began the state it entered in


class Tracker:
    """Sequence numbers for admissions and state changes, shared by listener and inner."""

    def __init__(self) -> None:
        self.seq = itertools.count()
        self.keys: dict[str, KeyLog] = {}
        self.entries: dict[int, Entry] = {}

    def listener(self, key: str) -> Callable[[BreakerEvent], None]:
        log = self.keys.setdefault(key, KeyLog())

        def on_event(event: BreakerEvent) -> None:
            if event.kind == "state_change":
                assert event.old_state is log.state, "state changes arrive in order"
                assert event.new_state is not None
                log.state = event.new_state
                log.changes.append((next(self.seq), time.monotonic(), event.new_state))

        return on_event


class Recording(httpx.AsyncBaseTransport):
    """Notes each request entering the real transport, with the breaker state it met."""

    def __init__(self, inner: httpx.AsyncBaseTransport, tracker: Tracker) -> None:
        self.inner = inner
        self.tracker = tracker

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        rid = int(request.url.path.rsplit("/", 1)[1])
        key = f"127.0.0.1:{request.url.port}"
        log = self.tracker.keys[key]
        assert rid not in self.tracker.entries, "a request reached the transport twice"
        self.tracker.entries[rid] = Entry(next(self.tracker.seq), key, log.state, len(log.changes))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Figures:
    requests: int = 0
    responses: int = 0
    transport_errors: int = 0
    rejected: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    state_changes: int = 0
    half_open_rounds: int = 0
    max_probes_in_a_round: int = 0
    upstream_requests: int = 0
    in_flight_at_open: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["faults"] = dict(self.faults)
        data["faults_total"] = sum(self.faults.values())
        return data


def _phases(seconds: float) -> list[tuple[str, float]]:
    """healthy -> faults -> recovering -> faults -> recovering, scaled to `seconds`."""
    shape = [
        ("healthy", 0.10),
        ("faults", 0.30),
        ("healthy", 0.20),
        ("faults", 0.20),
        ("healthy", 0.20),
    ]
    return [(name, share * seconds) for name, share in shape]


async def run_chaos(upstream: Upstream, *, seconds: float, tasks: int, seed: int) -> Figures:
    """Drive `tasks` workers through flapping faults for `seconds`; check every invariant."""
    rng = random.Random(seed)
    upstream.random.seed(seed)
    upstream.delay = 0.5  # twice the breaker's timeout: "slow" means past the deadline
    upstream.failure_rate = 0.5
    upstream.mode = "healthy"
    up_key = f"127.0.0.1:{upstream.port}"
    dead_port = _refused_port()
    dead_key = f"127.0.0.1:{dead_port}"

    tracker = Tracker()
    transport = AsyncCircuitBreakerTransport(
        Recording(httpx.AsyncHTTPTransport(), tracker), default=CONFIG
    )
    breakers = {k: transport.registry.breaker_for(k) for k in (up_key, dead_key)}
    for k, breaker in breakers.items():
        breaker.add_listener(tracker.listener(k))

    ids = itertools.count()
    results: dict[int, str] = {}
    figures = Figures()
    stop = anyio.Event()
    started = time.monotonic()

    async def worker(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            rid = next(ids)
            port, key = (dead_port, dead_key) if rng.random() < 0.15 else (upstream.port, up_key)
            log = tracker.keys[key]
            log.attempts += 1
            figures.requests += 1
            path = f"/r/{rid}"
            kind: str
            try:
                # Nothing may hang: a request outliving this is a test failure, not a result.
                with anyio.fail_after(10):
                    response = await client.get(f"http://127.0.0.1:{port}{path}")
            except CircuitOpenError as exc:
                kind = "rejected"
                assert exc.key == key
                assert exc.request is not None and exc.request.url.path == path
            except httpx.TransportError as exc:
                kind = "error"
                fault = {
                    CircuitTimeoutError: "timeout",
                    httpx.ConnectError: "refused",
                }.get(type(exc), "reset_or_cut")
                figures.faults[fault] += 1
            else:
                kind = f"status_{response.status_code}"
                # The response is the one for this request, and it says what it should.
                assert response.request.url.path == path
                assert response.extensions["circuit_breaker"]["key"] == key
                body = json.loads(response.content)
                if response.status_code == 200:
                    assert body in ({"ok": True}, {"ok": True, "slow": True})
                else:
                    assert response.status_code == 503, response
                    assert body in ({"status": 503}, {"ok": False})
                    figures.faults["status_503"] += 1
            assert rid not in results, "one request, one ending"
            results[rid] = kind
            log.outcomes[kind] += 1
            await anyio.sleep(rng.random() * 0.01)

    async def driver() -> None:
        for phase, duration in _phases(seconds):
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                upstream.mode = rng.choice(FAULT_MODES) if phase == "faults" else "healthy"
                await anyio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        upstream.mode = "healthy"
        stop.set()

    async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(driver)
            for _ in range(tasks):
                tg.start_soon(worker, client)

        # The upstream has recovered: the breaker must find its way back to CLOSED.
        up = breakers[up_key]
        for _ in range(100):
            if up.state is CLOSED:
                break
            try:
                rid = next(ids)
                tracker.keys[up_key].attempts += 1
                figures.requests += 1
                response = await client.get(f"{upstream.url}/r/{rid}")
                assert response.status_code == 200
                results[rid] = "status_200"
                tracker.keys[up_key].outcomes["status_200"] += 1
            except CircuitOpenError as exc:
                results[rid] = "rejected"
                tracker.keys[up_key].outcomes["rejected"] += 1
                await anyio.sleep(exc.retry_after or 0.01)
        assert up.state is CLOSED, "the breaker ends CLOSED once the upstream has recovered"

    figures.seconds = time.monotonic() - started

    # -- nothing lost, nothing doubled ---------------------------------------------
    assert len(results) == figures.requests == next(ids)
    kinds = Counter(results.values())
    figures.rejected = kinds["rejected"]
    figures.transport_errors = kinds["error"]
    figures.responses = figures.requests - figures.rejected - figures.transport_errors
    assert set(kinds) <= {"rejected", "error", "status_200", "status_503"}

    # -- what the upstream saw -----------------------------------------------------
    seen = upstream.requests
    figures.upstream_requests = len(seen)
    seen_ids = [int(path.rsplit("/", 1)[1]) for _, _, path in seen]
    assert len(seen_ids) == len(set(seen_ids)), "the upstream got a request twice"
    for rid in seen_ids:
        assert rid in tracker.entries, "the upstream got a request the breaker never admitted"
        assert results[rid] != "rejected"
    for rid, kind in results.items():
        if kind == "rejected":
            assert rid not in tracker.entries, "a rejected request reached the transport"
        if kind.startswith("status_"):
            assert rid in tracker.entries and tracker.entries[rid].key == up_key

    for key, log in tracker.keys.items():
        breaker = breakers[key]
        metrics = breaker.get_metrics()
        entries = [e for e in tracker.entries.values() if e.key == key]
        # Admitted only while not OPEN, and at most half_open_max_requests per round.
        assert all(e.state is not OPEN for e in entries), "admitted while OPEN"
        probes = Counter(e.round for e in entries if e.state is HALF_OPEN)
        assert all(n <= CONFIG.half_open_max_requests for n in probes.values()), probes
        figures.max_probes_in_a_round = max(
            figures.max_probes_in_a_round, max(probes.values(), default=0)
        )
        figures.half_open_rounds += sum(1 for _, _, s in log.changes if s is HALF_OPEN)
        figures.state_changes += len(log.changes)
        # Counters balance: everything attempted was let through or rejected, once.
        assert metrics.total_requests + metrics.rejected_requests == log.attempts
        assert metrics.total_requests == len(entries)
        assert metrics.rejected_requests == log.outcomes["rejected"]
        assert metrics.successful_requests == log.outcomes["status_200"]
        assert metrics.failed_requests == log.outcomes["status_503"] + log.outcomes["error"]
        assert metrics.ignored_requests == 0
        assert [s for _, _, s in metrics.state_changes] == [s for _, _, s in log.changes]

    # Upstream log against OPEN periods: whatever arrived while OPEN had entered the
    # transport before the breaker opened (it was already on its way).
    up_log = tracker.keys[up_key]
    assert any(s is OPEN for _, _, s in up_log.changes), "the faults opened the breaker"
    intervals = []
    for i, (seq, t, state) in enumerate(up_log.changes):
        if state is OPEN:
            t_end = up_log.changes[i + 1][1] if i + 1 < len(up_log.changes) else float("inf")
            intervals.append((seq, t, t_end))
    for t_seen, _, path in seen:
        entry = tracker.entries[int(path.rsplit("/", 1)[1])]
        for open_seq, t_open, t_end in intervals:
            if t_open <= t_seen < t_end:
                assert entry.seq < open_seq, "the upstream got a request admitted while OPEN"
                figures.in_flight_at_open += 1

    await transport.aclose()
    return figures


async def test_chaos_flapping_upstream(upstream: Upstream, anyio_backend: str) -> None:
    """Forty workers through two fault storms: every request ends once, the upstream sees
    nothing while OPEN, the counters balance and the breaker ends CLOSED."""
    figures = await run_chaos(upstream, seconds=2.5, tasks=40, seed=7)
    print(f"\nchaos[{anyio_backend}]:", json.dumps(figures.as_dict(), sort_keys=True))
    assert figures.rejected > 0 and figures.transport_errors > 0 and figures.responses > 0
    assert figures.half_open_rounds > 0


@pytest.mark.soak
@pytest.mark.timeout(300)
async def test_chaos_soak(upstream: Upstream, anyio_backend: str) -> None:
    """The chaos run for a minute with twice the workers (only with --soak)."""
    figures = await run_chaos(upstream, seconds=60.0, tasks=80, seed=11)
    print(f"\nchaos soak[{anyio_backend}]:", json.dumps(figures.as_dict(), sort_keys=True))
    assert figures.rejected > 0 and figures.half_open_rounds > 0
