"""The demo behind ``python -m httpx_breaker demo``.

Two loopback servers stand in for two hosts an application talks to: "orders" goes
healthy -> failing -> recovering, "catalog" stays healthy. A few tasks per host send
requests through one `AsyncCircuitBreakerTransport`, and the screen shows each host's
breaker as it works.

The headline number, requests that reached a server while its breaker was OPEN, is
not assumed: it is computed from the servers' own request logs (arrival times on
`time.monotonic`) against the moments each breaker entered and left OPEN, taken by a
listener on the same clock. A listener runs synchronously right after the transition
it reports, on the event loop that sends every request, so no request can be sent
between a transition and its timestamp. A request the breaker let through before it
opened, still on its way when the breaker opened, is counted apart ("in flight"): the
breaker could not have stopped it. The moment the breaker passed each request on is
taken by a recording transport between the breaker and the network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

import httpx

from ._breaker import CircuitBreaker
from ._config import CircuitBreakerConfig
from ._errors import CircuitOpenError
from ._state import BreakerEvent, CircuitState
from ._transport import AsyncCircuitBreakerTransport
from ._upstream import Upstream

__all__ = ["run_demo"]

WORKERS_PER_HOST = 3
CATALOG_FAILURE_RATE = 0.02  # a little noise: a rare error does not open a breaker
ALL_TRANSITIONS = (
    (CircuitState.CLOSED, CircuitState.OPEN),
    (CircuitState.OPEN, CircuitState.HALF_OPEN),
    (CircuitState.HALF_OPEN, CircuitState.OPEN),
    (CircuitState.HALF_OPEN, CircuitState.CLOSED),
)

_CAUSES = {
    "failure_threshold": "{threshold} failures in a row",
    "failure_rate": "failure rate reached {rate:.0%} of the window",
    "slow_call_rate": "too many slow calls",
    "probe_failed": "a probe failed: open again, for {period:.2f} s",
    "probes_succeeded": "{probes} probes succeeded: back to normal",
    "reset_timeout": "open period over: letting {probes} probes through",
    "forced": "forced",
    "reset": "reset",
}


def _arrow(old: CircuitState, new: CircuitState) -> str:
    return f"{old.name} -> {new.name}"


@dataclasses.dataclass
class _Transition:
    at: float  # seconds since the demo started
    host: str
    old: CircuitState
    new: CircuitState
    why: str


@dataclasses.dataclass
class _Host:
    """One upstream host, its breaker, and what the demo counted about it."""

    label: str
    role: str
    upstream: Upstream
    key: str = ""
    breaker: CircuitBreaker | None = None
    sent: int = 0
    ok: int = 0
    failed: int = 0  # an error status, or no response at all
    rejected: int = 0
    # [start, end) on time.monotonic, end None while the breaker is still open.
    open_intervals: list[list[float | None]] = dataclasses.field(default_factory=list)
    dispatched: dict[str, float] = dataclasses.field(default_factory=dict)
    audited: int = 0
    reached_while_open: int = 0
    in_flight_at_open: int = 0
    changes: list[CircuitState] = dataclasses.field(default_factory=list)

    def audit(self) -> None:
        """Check the server's new log entries against this host's open intervals."""
        log = self.upstream.requests
        for arrived, _method, path in log[self.audited :]:
            for start, end in self.open_intervals:
                assert start is not None
                if arrived >= start and (end is None or arrived < end):
                    passed_on = self.dispatched.get(path)
                    if passed_on is not None and passed_on < start:
                        self.in_flight_at_open += 1
                    else:
                        self.reached_while_open += 1
                    break
        self.audited = len(log)


class _Tap(httpx.AsyncBaseTransport):
    """Records when the breaker passed each request on to the network."""

    def __init__(self, inner: httpx.AsyncBaseTransport, hosts: dict[int, _Host]) -> None:
        self._inner = inner
        self._hosts = hosts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = self._hosts.get(request.url.port or 0)
        if host is not None:
            host.dispatched[request.url.path] = time.monotonic()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Screen:
    """Plain lines, or a live block rewritten in place on a terminal."""

    def __init__(self, out: TextIO, live: bool) -> None:
        self.out = out
        self.live = live
        self.color = live and "NO_COLOR" not in os.environ
        self._drawn = 0

    def paint(self, state: CircuitState, text: str) -> str:
        if not self.color:
            return text
        code = {CircuitState.CLOSED: "32", CircuitState.OPEN: "31", CircuitState.HALF_OPEN: "33"}
        return f"\x1b[{code[state]}m{text}\x1b[0m"

    def line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def draw(self, lines: list[tuple[str, Callable[[str], str] | None]]) -> None:
        """Replace the live block with `lines` (text, and how to colour it once cut)."""
        size = shutil.get_terminal_size((100, 24))
        width = max(20, size.columns - 1)
        lines = lines[: max(3, size.lines - 1)]
        buf = []
        if self._drawn:
            buf.append(f"\x1b[{self._drawn}F")  # back to the first line of the block
        for text, colour in lines:
            cut = text[:width]
            buf.append("\x1b[2K" + (colour(cut) if colour else cut) + "\n")
        if self._drawn > len(lines):
            buf.extend("\x1b[2K\n" for _ in range(self._drawn - len(lines)))
            buf.append(f"\x1b[{self._drawn - len(lines)}F")
        self._drawn = len(lines)
        self.out.write("".join(buf))
        self.out.flush()

    def hide_cursor(self) -> None:
        if self.live:
            self.out.write("\x1b[?25l")

    def show_cursor(self) -> None:
        if self.live:
            self.out.write("\x1b[?25h")
            self.out.flush()


class _Demo:
    def __init__(
        self, *, duration: float, failure_rate: float, seed: int, screen: _Screen
    ) -> None:
        self.duration = duration
        self.failure_rate = failure_rate
        self.seed = seed
        self.screen = screen
        # The open period scales with the run so that a short run still shows a failed
        # probe round (OPEN -> HALF_OPEN -> OPEN) and a recovery.
        reset = min(2.0, max(0.25, duration / 15.0))
        self.config = CircuitBreakerConfig(
            failure_threshold=5,
            failure_rate_threshold=0.5,
            window_size=20,
            minimum_requests=10,
            timeout=2.0,
            reset_timeout=reset,
            reset_timeout_multiplier=1.5,
            max_reset_timeout=2 * reset,
            half_open_max_requests=2,
        )
        self.hosts = [
            _Host("orders", "fails, then recovers", Upstream("healthy", seed=seed)),
            _Host(
                "catalog",
                f"healthy ({CATALOG_FAILURE_RATE:.0%} random errors)",
                Upstream("flaky", failure_rate=CATALOG_FAILURE_RATE, seed=seed + 1),
            ),
        ]
        self.phase = ""
        self.transitions: list[_Transition] = []
        self.printed = 0
        self.started = 0.0
        self.pace = random.Random(seed + 2)

    # -- the run ----------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def listen(self, host: _Host) -> Callable[[BreakerEvent], None]:
        def on_event(event: BreakerEvent) -> None:
            if event.kind != "state_change":
                return
            now = time.monotonic()  # the upstream's log uses this clock too
            old, new = event.old_state, event.new_state
            assert old is not None and new is not None
            if new is CircuitState.OPEN:
                host.open_intervals.append([now, None])
            elif old is CircuitState.OPEN and host.open_intervals:
                host.open_intervals[-1][1] = now
            if not host.changes:
                host.changes.append(old)
            host.changes.append(new)
            why = _CAUSES.get(event.cause or "", event.cause or "").format(
                threshold=self.config.failure_threshold,
                rate=self.config.failure_rate_threshold,
                period=event.retry_after or 0.0,
                probes=self.config.half_open_max_requests,
            )
            self.transitions.append(_Transition(now - self.started, host.label, old, new, why))

        return on_event

    async def run(self) -> int:
        for host in self.hosts:
            host.upstream.start()
        try:
            return await self._run()
        finally:
            for host in self.hosts:
                host.upstream.stop()

    async def _run(self) -> int:
        by_port = {host.upstream.port: host for host in self.hosts}
        transport = AsyncCircuitBreakerTransport(
            _Tap(httpx.AsyncHTTPTransport(), by_port), default=self.config
        )
        for host in self.hosts:
            host.key = f"127.0.0.1:{host.upstream.port}"
            # Made before any request so the listener hears every transition.
            host.breaker = transport.registry.breaker_for(host.key)
            host.breaker.add_listener(self.listen(host))
        self.intro()
        stop = asyncio.Event()
        counter = itertools.count(1)
        async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
            self.started = time.monotonic()
            tasks = [
                asyncio.ensure_future(self.worker(client, host, counter, stop))
                for host in self.hosts
                for _ in range(WORKERS_PER_HOST)
            ]
            phases = asyncio.ensure_future(self.phases())
            self.screen.hide_cursor()
            try:
                next_status = 2.0
                while self.elapsed() < self.duration:
                    await asyncio.sleep(0.1)
                    for host in self.hosts:
                        host.audit()
                    if self.screen.live:
                        self.screen.draw(self.frame())
                    else:
                        self.flush_transitions()
                        if self.elapsed() >= next_status:
                            self.status_line()
                            next_status += 2.0
                stop.set()
                # Let every request finish, so the counts below add up.
                await asyncio.gather(*tasks)
                await phases
                await self.settle()
                if self.screen.live:
                    self.screen.draw(self.frame())
                else:
                    self.flush_transitions()
            finally:
                for task in (*tasks, phases):
                    task.cancel()
                self.screen.show_cursor()
        return self.summary()

    async def settle(self) -> None:
        """Wait (briefly) until each server has logged every request passed on to it."""
        # The servers log on threads of their own: poll them (no event to wait on).
        for _ in range(100):
            if all(host.upstream.request_count >= len(host.dispatched) for host in self.hosts):
                break
            await asyncio.sleep(0.02)
        for host in self.hosts:
            host.audit()

    async def phases(self) -> None:
        orders = self.hosts[0].upstream
        steps = [
            (0.0, "healthy", "1/3 healthy: both hosts answer"),
            (
                0.25,
                "failing",
                f"2/3 failing: orders answers 503 to {self.failure_rate:.0%} of requests",
            ),
            (0.65, "recovering", "3/3 recovering: orders is healthy again"),
        ]
        for fraction, mode, text in steps:
            delay = fraction * self.duration - self.elapsed()
            if delay > 0:
                await asyncio.sleep(delay)
            if mode == "failing":
                orders.failure_rate = self.failure_rate
                orders.mode = "flaky"
            else:
                orders.mode = "healthy"
            self.phase = text
            if not self.screen.live:
                self.flush_transitions()
                self.screen.line(f"[{self.elapsed():6.2f} s] phase {text}")

    async def worker(
        self, client: httpx.AsyncClient, host: _Host, counter: itertools.count[int], stop: asyncio.Event
    ) -> None:
        base = host.upstream.url
        while not stop.is_set():
            host.sent += 1
            try:
                response = await client.get(f"{base}/{host.label}/{next(counter)}")
            except CircuitOpenError:
                host.rejected += 1
            except httpx.HTTPError:
                host.failed += 1
            else:
                if response.is_success:
                    host.ok += 1
                else:
                    host.failed += 1
            await asyncio.sleep(self.pace.uniform(0.03, 0.07))

    # -- what is shown ----------------------------------------------------------

    def intro(self) -> None:
        screen = self.screen
        screen.line(
            f"httpx-breaker demo: {self.duration:g} s, seed {self.seed} "
            f"(repeat the servers' random failures with --seed {self.seed})"
        )
        for host in self.hosts:
            screen.line(f"  {host.label:<8} http://{host.key}  {host.role}")
        c = self.config
        screen.line(
            f"  one breaker per host: opens after {c.failure_threshold} failures in a row "
            f"or {c.failure_rate_threshold:.0%} of the last {c.window_size}; "
            f"stays open {c.reset_timeout:.2f} s (x{c.reset_timeout_multiplier:g} after each "
            f"failed probe round, at most {c.max_reset_timeout or 0:.2f} s); "
            f"{c.half_open_max_requests} probes to close"
        )
        screen.line("")

    def state_text(self, host: _Host) -> tuple[CircuitState, str]:
        breaker = host.breaker
        assert breaker is not None
        state = breaker.state
        if state is CircuitState.OPEN:
            wait = breaker.retry_after
            return state, f"OPEN probe in {wait:.1f}s" if wait is not None else "OPEN"
        return state, state.name

    def frame(self) -> list[tuple[str, Callable[[str], str] | None]]:
        screen = self.screen
        lines: list[tuple[str, Callable[[str], str] | None]] = [
            (f"{min(self.elapsed(), self.duration):5.1f} s of {self.duration:g} s | phase {self.phase}", None),
            ("", None),
            (
                (
                    f"{'host':<8} {'state':<19}{'sent':>6}{'ok':>7}{'failed':>8}"
                    f"{'rejected':>10}{'upstream':>10}{'hit while open':>16}"
                ),
                None,
            ),
        ]
        for host in self.hosts:
            state, text = self.state_text(host)
            row = (
                f"{host.label:<8} {text:<19}{host.sent:>6}{host.ok:>7}{host.failed:>8}"
                f"{host.rejected:>10}{host.upstream.request_count:>10}"
                f"{host.reached_while_open:>16}"
            )
            lines.append((row, _painter(screen, state, text)))
        lines.append(("rejected: refused by the breaker, no I/O.  upstream: requests the server logged.", None))
        lines.append(
            ("hit while open: requests the server logged while the host's breaker was OPEN (must be 0).", None)
        )
        lines.append(("", None))
        lines.append(("state changes (seconds since start):", None))
        lines.extend((self.transition_text(t), None) for t in self.transitions[-8:])
        return lines

    def transition_text(self, t: _Transition) -> str:
        return f"  {t.at:6.2f} s  {t.host:<8} {_arrow(t.old, t.new):<19} {t.why}"

    def flush_transitions(self) -> None:
        for t in self.transitions[self.printed :]:
            self.screen.line(f"[{t.at:6.2f} s] {t.host}: {_arrow(t.old, t.new)} ({t.why})")
        self.printed = len(self.transitions)

    def status_line(self) -> None:
        parts = []
        for host in self.hosts:
            _, text = self.state_text(host)
            parts.append(
                f"{host.label} {text}: sent {host.sent}, ok {host.ok}, failed {host.failed}, "
                f"rejected {host.rejected}, upstream {host.upstream.request_count}, "
                f"hit while open {host.reached_while_open}"
            )
        self.screen.line(f"[{self.elapsed():6.2f} s] " + " | ".join(parts))

    def summary(self) -> int:
        line = self.screen.line
        line("")
        line(f"Summary after {self.duration:g} s (seed {self.seed})")
        seen: set[tuple[CircuitState, CircuitState]] = set()
        for t in self.transitions:
            seen.add((t.old, t.new))
        broken = 0
        for host in self.hosts:
            broken += host.reached_while_open
            line(f"  {host.label} (http://{host.key}, {host.role})")
            line(
                f"    sent {host.sent}: {host.ok} ok, {host.failed} failed, "
                f"{host.rejected} rejected by the breaker without any I/O"
            )
            path = " -> ".join(s.name for s in host.changes) or "CLOSED (no state change)"
            line(f"    breaker: {path}")
            if host.breaker is not None:
                metrics = host.breaker.get_metrics()
                window = host.breaker.config.window_duration
                longer = ", longer than this run" if window > self.duration else ""
                line(
                    f"    availability {metrics.availability:.1%} (share of its life not OPEN); "
                    f"throughput {metrics.throughput:.1f} calls/s "
                    f"(averaged over the last {window:g} s{longer})"
                )
            line(
                f"    the server logged {host.upstream.request_count} requests; "
                f"the breaker passed {len(host.dispatched)} on"
            )
            extra = (
                f" ({host.in_flight_at_open} more were already on their way when it opened)"
                if host.in_flight_at_open
                else ""
            )
            line(f"    reached the server while its breaker was open: {host.reached_while_open}{extra}")
        line("")
        missing = [pair for pair in ALL_TRANSITIONS if pair not in seen]
        shown = ", ".join(_arrow(*pair) for pair in ALL_TRANSITIONS if pair in seen)
        line(f"Transitions seen: {shown or 'none'}")
        if missing:
            line(
                "Not seen this run: "
                + ", ".join(_arrow(*pair) for pair in missing)
                + " (try a longer --duration or a higher --failure-rate)"
            )
        line(
            f"Requests that reached an upstream while its breaker was open: {broken} "
            "(checked against the servers' own request logs)"
        )
        if broken:
            line("FAILED: a breaker let requests through while open; please report this.")
            return 1
        return 0


def _painter(screen: _Screen, state: CircuitState, word: str) -> Callable[[str], str]:
    def paint(cut: str) -> str:
        # Colour the state word only if the cut line still holds all of it.
        head = cut[:9]
        rest = cut[9:]
        if rest.startswith(word):
            return head + screen.paint(state, word) + rest[len(word) :]
        return cut

    return paint


def run_demo(
    *,
    duration: float = 15.0,
    failure_rate: float = 0.8,
    seed: int | None = None,
    plain: bool = False,
    out: TextIO | None = None,
) -> int:
    """Run the demo; return the exit status (0, or 1 if a breaker leaked a request)."""
    stream = out if out is not None else sys.stdout
    live = not plain and stream.isatty() and os.environ.get("TERM") != "dumb"
    if seed is None:
        seed = random.SystemRandom().randrange(10_000)
    screen = _Screen(stream, live)
    demo = _Demo(duration=duration, failure_rate=failure_rate, seed=seed, screen=screen)
    try:
        return asyncio.run(demo.run())
    except KeyboardInterrupt:
        screen.show_cursor()
        screen.line("\ninterrupted")
        return 130
