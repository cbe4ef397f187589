"""The deadline helper: fires on time, tells its own expiry from anyone else's cancel."""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest
import trio

from httpx_breaker import CircuitTimeoutError
from httpx_breaker._deadline import (
    Sweeper,
    cancel_scope,
    run_with_deadline,
    scope_now,
    sweeper_for,
)

from .conftest import FakeClock

pytestmark = pytest.mark.anyio


async def test_a_call_within_its_deadline_returns_its_result() -> None:
    """A call that finishes in time returns what it returned."""

    async def quick() -> str:
        await anyio.lowlevel.checkpoint()
        return "done"

    assert await run_with_deadline(quick(), 5.0, "svc") == "done"


async def test_an_overrun_raises_circuit_timeout_with_the_facts() -> None:
    """A call past its deadline is cancelled and reported with the key and the deadline."""
    with pytest.raises(CircuitTimeoutError) as info:
        await run_with_deadline(anyio.sleep(10), 0.02, "svc")
    assert info.value.key == "svc"
    assert info.value.timeout == 0.02


async def test_many_deadlines_fire_each_for_its_own_call() -> None:
    """Concurrent calls with different deadlines: only the ones that overrun time out."""
    outcomes: dict[int, str] = {}

    async def one(i: int, deadline: float, work: float) -> None:
        try:
            await run_with_deadline(anyio.sleep(work), deadline, f"svc{i}")
            outcomes[i] = "ok"
        except CircuitTimeoutError:
            outcomes[i] = "timeout"

    async with anyio.create_task_group() as tg:
        for i in range(40):
            # Even ones finish well within their deadline; odd ones never would.
            if i % 2:
                tg.start_soon(one, i, 0.01 + i * 0.001, 30.0)
            else:
                tg.start_soon(one, i, 5.0, 0.001)
    assert outcomes == {i: "timeout" if i % 2 else "ok" for i in range(40)}


async def test_an_outer_cancel_is_not_taken_for_a_timeout() -> None:
    """A cancel scope around the call cancels it as usual, with no CircuitTimeoutError."""
    with anyio.move_on_after(0.02) as scope:
        await run_with_deadline(anyio.sleep(10), 5.0, "svc")
    assert scope.cancelled_caught


async def test_the_task_stays_usable_after_a_timeout() -> None:
    """After our deadline fired, the task can await again without a stray cancellation."""
    with pytest.raises(CircuitTimeoutError):
        await run_with_deadline(anyio.sleep(10), 0.01, "svc")
    await anyio.sleep(0.01)  # would raise if the task still carried our cancel request
    assert await run_with_deadline(_value(), 1.0, "svc") == 7


async def _value() -> int:
    return 7


# -- the sweeper, on a loop whose clock and timers the test drives -----------------------


class FakeLoop:
    """What a Sweeper asks of its event loop: the time (the test's clock) and timers,
    kept here for the test to run."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.timers: list[tuple[float, Callable[..., object], tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.clock()

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> None:
        self.timers.append((when, callback, args))

    def pending(self) -> list[float]:
        return sorted(when for when, _, _ in self.timers)

    def run_until(self, now: float) -> None:
        """Move the clock to `now` and run the timers due by then, earliest first (and
        those they set that are due too, but not endlessly)."""
        self.clock.now = now
        for _ in range(100):
            due = [timer for timer in self.timers if timer[0] <= now]
            if not due:
                return
            timer = min(due, key=lambda timer: timer[0])
            self.timers.remove(timer)
            timer[1](*timer[2])
        raise AssertionError("the sweeper keeps waking for deadlines it does not fire")

    def run_early(self, now: float) -> None:
        """Run every pending timer at `now`, before its time (a loop may, by up to its
        clock's resolution)."""
        self.clock.now = now
        timers, self.timers = self.timers, []
        for _, callback, args in timers:
            callback(*args)


class FakeTask:
    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> bool:
        self.cancels += 1
        return True


def arm(sweeper: Sweeper, loop: FakeLoop, seconds: float) -> tuple[FakeTask, tuple[int, int]]:
    """A task with a deadline `seconds` from now, and the deadline's place."""
    task = FakeTask()
    return task, sweeper.arm(cast(Any, loop), cast(Any, task), seconds)


@pytest.mark.parametrize("seconds", [0.001, 0.3, 1.0, 2.0017, 45.25])
def test_a_deadline_fires_at_most_5_ms_late_and_never_early(
    clock: FakeClock, seconds: float
) -> None:
    """The sweeper wakes between the deadline and 5 ms after it (one bucket), and cancels
    the task then; woken before the deadline, it cancels nothing and wakes again."""
    loop, sweeper = FakeLoop(clock), Sweeper()
    task, _ = arm(sweeper, loop, seconds)
    due = clock() + seconds
    [when] = loop.pending()
    assert due <= when <= due + 0.005 + 1e-9
    loop.run_early(due - 0.0001)
    assert task.cancels == 0
    assert loop.pending() == [when]
    loop.run_until(when)
    assert task.cancels == 1
    assert loop.pending() == []


def test_one_wake_up_fires_every_deadline_due_and_sets_the_next(clock: FakeClock) -> None:
    """A wake-up that comes late cancels every task whose deadline has passed, skips the
    deadlines ended in time, and sets one wake-up for the next deadline still armed."""
    loop, sweeper = FakeLoop(clock), Sweeper()
    start = clock()
    first, _ = arm(sweeper, loop, 0.1)
    _, ended = arm(sweeper, loop, 0.2)
    second, _ = arm(sweeper, loop, 0.3)
    _, ended_too = arm(sweeper, loop, 0.4)
    last, _ = arm(sweeper, loop, 0.5)
    assert len(loop.pending()) == 1  # only the earliest is asked for
    assert sweeper.disarm(*ended) and sweeper.disarm(*ended_too)
    loop.run_until(start + 0.35)  # one wake-up, late: 0.1 and 0.3 are both due
    assert (first.cancels, second.cancels, last.cancels) == (1, 1, 0)
    [when] = loop.pending()  # the next: the 0.5 deadline's, the 0.4 one is gone
    assert start + 0.5 <= when <= start + 0.505 + 1e-9
    loop.run_until(when)
    assert last.cancels == 1
    assert loop.pending() == []


def test_no_second_wake_up_is_set_for_a_moment_already_asked_for(clock: FakeClock) -> None:
    """One timer per moment: neither the next wake-up set after a sweep, nor a deadline
    armed for a moment whose timer is already set, adds a second one."""
    loop, sweeper = FakeLoop(clock), Sweeper()
    start = clock()
    late, _ = arm(sweeper, loop, 1.0)
    _, gone = arm(sweeper, loop, 0.5021)  # a wake-up of its own, before the first one's
    early, _ = arm(sweeper, loop, 0.1)  # and one more, earlier still
    assert len(loop.pending()) == 3
    assert sweeper.disarm(*gone)
    loop.run_until(start + 0.105)
    assert (early.cancels, late.cancels) == (1, 0)
    assert len(loop.pending()) == 2  # the 0.5021 and the 1.0 wake-ups, set when armed
    again, _ = arm(sweeper, loop, 0.5021 - 0.105)  # the moment of the one ended early
    assert len(loop.pending()) == 2
    loop.run_until(start + 0.6)
    assert (again.cancels, late.cancels) == (1, 0)
    assert len(loop.pending()) == 1
    loop.run_until(start + 1.1)
    assert late.cancels == 1
    assert loop.pending() == []


# -- asyncio (3.11+): the loop's sweeper, and the task's cancellation count ------------------


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the sweeper is used from 3.11")
def test_asyncio_deadlines_are_kept_by_the_loops_sweeper() -> None:
    """On asyncio 3.11+ the deadline is armed in the loop's Sweeper (no timer of its own)
    while the call runs, and taken out when it returns."""

    async def main() -> None:
        task = asyncio.current_task()
        sweeper = sweeper_for(asyncio.get_running_loop())

        def armed() -> bool:
            return any(task in entries.values() for entries in sweeper._buckets.values())

        async def look() -> bool:
            await asyncio.sleep(0)
            return armed()

        assert await run_with_deadline(look(), 60.0, "svc") is True
        assert not armed()

    asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is new in 3.11")
def test_asyncio_a_swallowed_deadline_leaves_no_cancellation_behind() -> None:
    """A call that catches our cancellation and returns: its result comes back, and the
    task no longer counts a cancellation request of ours."""

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None

        async def stubborn() -> str:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                return "kept"
            return "slept"

        assert await run_with_deadline(stubborn(), 0.01, "svc") == "kept"
        assert task.cancelling() == 0

    asyncio.run(main())


# -- cancel scopes ---------------------------------------------------------------------------


async def test_cancel_scope_is_the_running_librarys_own(anyio_backend: str) -> None:
    """Under trio a trio CancelScope, under asyncio anyio's; ending `seconds` from now on
    the clock `scope_now` reads, or never for None."""
    expected = trio.CancelScope if anyio_backend == "trio" else anyio.CancelScope
    before = anyio.current_time()
    scope = cancel_scope(2.5)
    after = anyio.current_time()
    assert isinstance(scope, expected)
    assert before + 2.5 <= scope.deadline <= after + 2.5
    assert before <= scope_now(scope) <= anyio.current_time()
    endless = cancel_scope(None)
    assert isinstance(endless, expected)
    assert endless.deadline == math.inf
