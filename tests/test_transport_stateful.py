"""A hypothesis state machine over the sync transport, a fake upstream and a fake clock.

A small model of the contract predicts, before every request, whether the breaker
admits it; the fake upstream records every call. Random schedules of successes,
failures (statuses and exceptions), ignored outcomes, responses held unread, closed
late or dropped for the garbage collector, and clock jumps must keep: the upstream
called exactly when the model admits, never in OPEN; at most `half_open_max_requests`
probes in flight; the same state as the model; counters that balance.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from httpx_breaker import (
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
)

from .conftest import FakeClock

OPEN, HALF_OPEN, CLOSED = CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED

THRESHOLD = 3
RESET = 10.0
PROBES = 2
# The rate rule needs every outcome of a full window to fail, which the consecutive rule
# always sees first: the model only has to follow consecutive failures.
CONFIG = CircuitBreakerConfig(
    failure_threshold=THRESHOLD,
    failure_rate_threshold=1.0,
    window_size=10,
    reset_timeout=RESET,
    half_open_max_requests=PROBES,
    timeout=None,
)

# What the upstream does with a request, chosen per path.
KINDS = {
    "/ok": "success",  # 200
    "/missing": "success",  # 404: the default classifier calls it a success
    "/fail": "failure",  # 503
    "/refused": "failure",  # ConnectError
    "/bug": "ignored",  # a non-transport exception: ignored by the default classifier
}


class Upstream(httpx.BaseTransport):
    def __init__(self) -> None:
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        path = request.url.path
        if path == "/refused":
            raise httpx.ConnectError("refused", request=request)
        if path == "/bug":
            raise ValueError("a bug in a custom transport")
        status = {"/ok": 200, "/missing": 404, "/fail": 503}[path]
        return httpx.Response(status, stream=httpx.ByteStream(b"body"))


@dataclass
class Held:
    """A response whose outcome is pending, with the model epoch it was admitted in."""

    response: httpx.Response
    kind: str
    epoch: int
    probe: bool


class TransportMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.upstream = Upstream()
        self.transport = CircuitBreakerTransport(
            self.upstream, registry=BreakerRegistry(default=CONFIG, clock=self.clock)
        )
        self.client = httpx.Client(transport=self.transport)
        self.breaker = self.transport.registry.breaker_for("svc")
        self.held: list[Held] = []
        # the model
        self.state = CLOSED
        self.epoch = 0
        self.open_until = 0.0
        self.consecutive = 0
        self.in_flight = 0
        self.succeeded = 0
        self.attempts = 0
        self.admitted = 0
        self.rejected = 0
        self.counts = {"success": 0, "failure": 0, "ignored": 0}

    # -- the model -------------------------------------------------------------

    def _enter(self, state: CircuitState) -> None:
        self.state = state
        self.epoch += 1
        self.consecutive = self.in_flight = self.succeeded = 0
        if state is OPEN:
            self.open_until = self.clock.now + RESET

    def _tick(self) -> None:
        if self.state is OPEN and self.clock.now >= self.open_until:
            self._enter(HALF_OPEN)

    def _admits(self) -> bool:
        self._tick()
        if self.state is CLOSED:
            return True
        return self.state is HALF_OPEN and self.in_flight + self.succeeded < PROBES

    def _settle(self, kind: str, epoch: int, probe: bool) -> None:
        self.counts[kind] += 1
        if epoch != self.epoch:
            return  # admitted before a state change: counted, moves nothing
        if self.state is CLOSED:
            if kind == "failure":
                self.consecutive += 1
                if self.consecutive >= THRESHOLD:
                    self._enter(OPEN)
            elif kind == "success":
                self.consecutive = 0
        elif self.state is HALF_OPEN and probe:
            self.in_flight -= 1
            if kind == "failure":
                self._enter(OPEN)
            elif kind == "success":
                self.succeeded += 1
                if self.succeeded >= PROBES:
                    self._enter(CLOSED)

    # -- rules -----------------------------------------------------------------

    @rule(path=st.sampled_from(sorted(KINDS)), hold=st.booleans())
    def request(self, path: str, hold: bool) -> None:
        """Send one request; hold its response unread, or read it at once."""
        admits = self._admits()
        calls = self.upstream.calls
        self.attempts += 1
        probe = self.state is HALF_OPEN
        epoch = self.epoch
        if admits and probe:
            self.in_flight += 1
        request = self.client.build_request("GET", f"http://svc{path}")
        try:
            response = self.client.send(request, stream=hold)
        except CircuitOpenError:
            assert not admits, "rejected a request the model admits"
            assert self.upstream.calls == calls, "the upstream was called for a rejection"
            self.rejected += 1
            return
        except (httpx.ConnectError, ValueError):
            assert admits, "let through a request the model rejects"
            assert self.upstream.calls == calls + 1
            self.admitted += 1
            self._settle(KINDS[path], epoch, probe)
            return
        assert admits, "let through a request the model rejects"
        assert self.upstream.calls == calls + 1
        self.admitted += 1
        if hold:
            self.held.append(Held(response, KINDS[path], epoch, probe))
        else:
            assert response.content == b"body"
            self._settle(KINDS[path], epoch, probe)

    @precondition(lambda self: bool(self.held))
    @rule(index=st.integers(min_value=0), read=st.booleans())
    def close_held(self, index: int, read: bool) -> None:
        """Finish a held response: read it to the end, or close it unread."""
        held = self.held.pop(index % len(self.held))
        if read:
            assert held.response.read() == b"body"
        held.response.close()
        self._settle(held.kind, held.epoch, held.probe)

    @precondition(lambda self: bool(self.held))
    @rule(index=st.integers(min_value=0))
    def drop_held(self, index: int) -> None:
        """Drop a held response unclosed: the garbage collector hands its permit back."""
        held = self.held.pop(index % len(self.held))
        del held.response
        gc.collect()
        self._settle("ignored", held.epoch, held.probe)

    @rule(seconds=st.sampled_from([0.0, 1.0, RESET - 0.001, RESET, 3 * RESET]))
    def advance(self, seconds: float) -> None:
        """Move the clock on (a jump of zero, a bit, just short of, exactly, well past)."""
        self.clock.advance(seconds)

    # -- invariants ------------------------------------------------------------

    @invariant()
    def same_state_as_the_model(self) -> None:
        self._tick()
        assert self.breaker.state is self.state

    @invariant()
    def probes_in_flight_are_bounded(self) -> None:
        assert 0 <= self.in_flight <= PROBES
        # A permit that a finaliser handed back while a locked step ran is parked, and the
        # next step that takes the lock settles it (`release`): take one (a metrics read)
        # so that the raw count read below is the settled one, as every public read sees.
        self.breaker.get_metrics()
        assert self.breaker._probes_in_flight == self.in_flight  # white-box cross-check

    @invariant()
    def counters_balance(self) -> None:
        metrics = self.breaker.get_metrics()
        # A held response was let through but its outcome is still pending: it is in
        # no counter until it is closed or collected.
        pending = len(self.held)
        assert metrics.total_requests + pending + metrics.rejected_requests == self.attempts
        assert metrics.total_requests + pending == self.admitted == self.upstream.calls
        assert metrics.rejected_requests == self.rejected
        assert metrics.successful_requests == self.counts["success"]
        assert metrics.failed_requests == self.counts["failure"]
        assert metrics.ignored_requests == self.counts["ignored"]

    def teardown(self) -> None:
        for held in self.held:
            held.response.close()
        self.client.close()


TransportMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTransportStateMachine = TransportMachine.TestCase
