"""The bulkhead primitive under real concurrency: asyncio, trio, threads, and all at once.

Nothing here waits on luck: order is forced with events and by waiting for conditions
(`waiting == n`), never by sleeping. The only real waits are `max_wait` timeouts, and
no test asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio

from httpx_breaker import BulkheadFullError, CircuitBreakerConfig
from httpx_breaker._bulkhead import Bulkhead, _in_trio_task

TASKS = 200
THREADS = 16
LONG = 60.0  # a max_wait no test reaches: the waits end by a release or a cancellation


# -- helpers ---------------------------------------------------------------------------


def until(condition: Callable[[], bool], what: str = "condition") -> None:
    """Wait (in a thread) until `condition()` holds; fail after 10 s."""
    deadline = time.monotonic() + 10.0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


async def until_async(condition: Callable[[], bool]) -> None:
    """Wait (in a task) until `condition()` holds; fail after 10 s."""
    with anyio.fail_after(10):
        # Polled: the condition may be changed by other threads, with no event to await.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.001)


async def enter(bulkhead: Bulkhead) -> None:
    """What a caller does: the cheap try, then the wait; a refusal raises."""
    if not bulkhead.try_acquire() and not await bulkhead.acquire_async():
        raise BulkheadFullError("test", bulkhead.limit)


def enter_sync(bulkhead: Bulkhead) -> None:
    if not bulkhead.try_acquire() and not bulkhead.acquire():
        raise BulkheadFullError("test", bulkhead.limit)


class Gauge:
    """How many are inside now, and the most ever inside at once (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inside = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.inside -= 1


class Threads:
    """Threads started by a test; their exceptions fail it."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, fn: Callable[[], object]) -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 (reported by join_all)
                self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    def join_all(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a thread is stuck"
        assert not self.errors, self.errors


@contextmanager
def threads() -> Iterator[Threads]:
    group = Threads()
    try:
        yield group
    finally:
        group.join_all()


def assert_idle(bulkhead: Bulkhead) -> None:
    """No slot held, nobody waiting, and every minted token back in the free queue."""
    assert bulkhead.in_use == 0
    assert bulkhead.waiting == 0
    assert bulkhead._free.qsize() == bulkhead._minted <= bulkhead.limit


class ReleasedWhileQueueing(Bulkhead):
    """A bulkhead whose holder gives its slot back just as a newcomer finds none free
    (between its look and its queueing), as another thread may."""

    __slots__ = ()

    def _take_locked(self, woken: list[Any]) -> bool:
        taken = super()._take_locked(woken)
        if not taken:
            self.release()
        return taken


# -- construction ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0,), ValueError),
        ((-1,), ValueError),
        ((1.5,), TypeError),
        ((True,), TypeError),
        ((1, -0.1), ValueError),
        ((1, float("inf")), ValueError),
        ((1, float("nan")), ValueError),
        ((1, "1"), TypeError),
    ],
)
def test_bad_limits_are_refused(args: tuple[Any, ...], error: type[Exception]) -> None:
    """A limit below 1 or a negative or endless wait is refused when the bulkhead is made."""
    with pytest.raises(error, match=r"limit|max_wait"):
        Bulkhead(*args)


def test_from_config_is_none_without_max_concurrent() -> None:
    """No `max_concurrent`, no bulkhead: the caller holds None and pays nothing."""
    assert Bulkhead.from_config(CircuitBreakerConfig()) is None
    bulkhead = Bulkhead.from_config(CircuitBreakerConfig(max_concurrent=7, max_wait=1.5))
    assert bulkhead is not None
    assert (bulkhead.limit, bulkhead.max_wait) == (7, 1.5)


def test_repr_shows_use_and_waiters() -> None:
    """The repr says how many slots are held, of how many, and who waits."""
    bulkhead = Bulkhead(3, 0.5)
    assert bulkhead.try_acquire()
    assert repr(bulkhead) == "<Bulkhead 1/3 in use, 0 waiting, max_wait=0.5s>"


def test_max_wait_defaults_to_refusing_at_once() -> None:
    """Without `max_wait` a full bulkhead refuses at once: the default wait is 0 seconds."""
    bulkhead = Bulkhead(1)
    assert bulkhead.max_wait == 0.0
    assert bulkhead.try_acquire()
    assert bulkhead.acquire() is False
    assert (bulkhead.waiting, bulkhead.rejected, bulkhead.in_use) == (0, 1, 1)


def test_trio_before_0_23_is_recognised_by_its_current_task() -> None:
    """trio before 0.23 has no `lowlevel.in_trio_task`: a trio task is told apart by
    `current_task()` answering, anything else by it raising RuntimeError."""

    def no_task() -> object:
        raise RuntimeError("must be called from async context")

    assert _in_trio_task(SimpleNamespace(lowlevel=SimpleNamespace(current_task=object))) is True
    assert _in_trio_task(SimpleNamespace(lowlevel=SimpleNamespace(current_task=no_task))) is False


# -- one thread --------------------------------------------------------------------------


def test_slots_up_to_the_limit_then_refused_at_once() -> None:
    """With max_wait=0 a full bulkhead refuses at once, counts it, and queues nobody."""
    bulkhead = Bulkhead(3)
    assert [bulkhead.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert bulkhead.in_use == 3
    assert bulkhead.acquire() is False
    assert bulkhead.waiting == 0
    assert bulkhead.rejected == 1
    bulkhead.release()
    assert bulkhead.in_use == 2
    assert bulkhead.acquire() is True
    for _ in range(3):
        bulkhead.release()
    assert_idle(bulkhead)
    assert bulkhead.rejected == 1


def test_a_huge_limit_costs_no_memory_up_front() -> None:
    """Tokens are made as concurrency grows, not for the whole limit at once."""
    bulkhead = Bulkhead(10**12)
    for _ in range(3):
        assert bulkhead.try_acquire()
    assert bulkhead._minted == 3
    for _ in range(3):
        bulkhead.release()
    assert bulkhead.try_acquire() and bulkhead._minted == 3  # reused, not made again
    bulkhead.release()
    assert_idle(bulkhead)


def test_count_rejection_counts_without_taking() -> None:
    """A would-be refusal (a dry run's) is counted and takes nothing."""
    bulkhead = Bulkhead(1)
    bulkhead.count_rejection()
    assert (bulkhead.rejected, bulkhead.in_use) == (1, 0)


def test_a_thread_waiter_gives_up_after_max_wait() -> None:
    """A thread that finds no slot within max_wait is refused and leaves the queue."""
    bulkhead = Bulkhead(1, max_wait=0.05)
    assert bulkhead.try_acquire()
    assert bulkhead.acquire() is False  # returns: that is all we ask of the clock
    assert (bulkhead.waiting, bulkhead.rejected, bulkhead.in_use) == (0, 1, 1)
    bulkhead.release()
    assert_idle(bulkhead)


def test_a_released_slot_goes_to_the_waiter_not_to_a_newcomer() -> None:
    """No barging: once a thread waits, a release hands it the slot, even if a newcomer
    asks before the waiter has run."""
    bulkhead = Bulkhead(1, max_wait=LONG)
    assert bulkhead.try_acquire()
    got = threading.Event()
    done = threading.Event()

    def waiter() -> None:
        assert bulkhead.acquire()
        got.set()
        done.wait()
        bulkhead.release()

    with threads() as group:
        group.start(waiter)
        until(lambda: bulkhead.waiting == 1, "the waiter to queue")
        bulkhead.release()
        assert bulkhead.try_acquire() is False  # the slot is the waiter's already
        assert got.wait(10)
        assert bulkhead.in_use == 1
        done.set()
    assert_idle(bulkhead)
    assert bulkhead.rejected == 0


def test_a_slot_freed_while_a_waiter_queues_is_not_missed() -> None:
    """A release that lands between a newcomer finding no slot and queueing (so the
    release sees nobody to hand to) still reaches the newcomer."""

    class Racing(Bulkhead):
        __slots__ = ()

        def _take_locked(self, woken: list[Any]) -> bool:
            taken = super()._take_locked(woken)
            if not taken:
                self.release()  # the holder finishes right now, in another thread
            return taken

    bulkhead = Racing(1, max_wait=LONG)
    assert bulkhead.try_acquire()
    with threads() as group:
        outcome: list[bool] = []
        group.start(lambda: outcome.append(bulkhead.acquire()))
    assert outcome == [True]
    assert bulkhead.in_use == 1 and bulkhead.waiting == 0


def test_a_short_max_wait_still_queues_a_thread() -> None:
    """Any max_wait above 0, even under a second, queues: a slot freed while the thread
    queues is handed to it rather than refused."""
    bulkhead = ReleasedWhileQueueing(1, max_wait=0.5)
    assert bulkhead.try_acquire()
    assert bulkhead.acquire() is True
    assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (1, 0, 0)


def test_a_release_that_finds_the_lock_taken_is_handed_over_by_its_holder() -> None:
    """A release while another caller holds the lock does not wait for it: the holder
    hands the slot to the waiter when it lets go."""

    class Busy(Bulkhead):
        __slots__ = ()

        def _count_locked(self, woken: list[Any]) -> None:
            super()._count_locked(woken)
            self.release()  # another thread (or a finaliser) releases right now

    bulkhead = Busy(1, max_wait=LONG)
    assert bulkhead.try_acquire()
    served = threading.Event()

    def waiter() -> None:
        assert bulkhead.acquire()
        served.set()
        bulkhead.release()

    with threads() as group:
        group.start(waiter)
        until(lambda: bulkhead.waiting == 1, "the waiter to queue")
        bulkhead.count_rejection()  # holds the lock while the release happens
        assert served.wait(10)
    assert_idle(bulkhead)


def test_release_in_a_finaliser_while_this_thread_holds_the_lock() -> None:
    """A finaliser that releases while its thread is inside the bulkhead's locked code
    neither blocks nor loses the slot: the next caller hands it to the waiter."""
    bulkhead = Bulkhead(1, max_wait=LONG)
    assert bulkhead.try_acquire()

    class Response:
        """Holds the slot; gives it back when collected, as an unread response does."""

        def __del__(self) -> None:
            bulkhead.release()

    served = threading.Event()

    def waiter() -> None:
        assert bulkhead.acquire()
        served.set()
        bulkhead.release()

    with threads() as group:
        group.start(waiter)
        until(lambda: bulkhead.waiting == 1, "the waiter to queue")

        def collect_under_the_lock() -> None:
            gc.disable()  # no collection but ours, under the lock
            try:
                response = Response()
                response.cycle = response  # type: ignore[attr-defined]  # only gc frees it
                del response
                with bulkhead._lock:  # as if a finaliser interrupted our locked code
                    gc.collect()
            finally:
                gc.enable()

        worker = threading.Thread(target=collect_under_the_lock, daemon=True)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "release() blocked in a finaliser"
        assert not served.is_set()  # handed over by the next caller, not lost
        assert bulkhead.try_acquire() is False  # ... which does not keep it
        assert served.wait(10)
    assert_idle(bulkhead)


def test_an_unread_response_collected_returns_its_slot() -> None:
    """A holder dropped without a release returns its slot from its finaliser."""
    bulkhead = Bulkhead(2)

    class Response:
        def __init__(self) -> None:
            assert bulkhead.try_acquire()

        def __del__(self) -> None:
            bulkhead.release()

    responses = [Response(), Response()]
    assert bulkhead.try_acquire() is False
    del responses
    gc.collect()
    assert_idle(bulkhead)


# -- threads ---------------------------------------------------------------------------


def test_sixteen_threads_never_exceed_the_limit() -> None:
    """16 threads hammering a limit of 4 never have more than 4 inside; all slots return."""
    bulkhead = Bulkhead(4, max_wait=LONG)
    gauge = Gauge()

    def worker() -> None:
        for _ in range(300):
            enter_sync(bulkhead)
            try:
                with gauge:
                    time.sleep(0)  # let the others in, if the limit lets them
            finally:
                bulkhead.release()

    with threads() as group:
        for _ in range(THREADS):
            group.start(worker)
    assert 1 <= gauge.peak <= 4
    assert_idle(bulkhead)
    assert bulkhead.rejected == 0


def test_thread_waiters_are_served_in_arrival_order() -> None:
    """Threads that queued one after another get the slot in that order."""
    bulkhead = Bulkhead(1, max_wait=LONG)
    assert bulkhead.try_acquire()
    order: list[int] = []

    def waiter(i: int) -> None:
        assert bulkhead.acquire()
        order.append(i)
        bulkhead.release()

    with threads() as group:
        for i in range(8):
            group.start(functools.partial(waiter, i))
            until(lambda n=i + 1: bulkhead.waiting == n, f"waiter {i} to queue")
        bulkhead.release()
    assert order == list(range(8))
    assert_idle(bulkhead)


# -- asyncio and trio ----------------------------------------------------------------------

@pytest.mark.anyio
async def test_never_more_than_the_limit_under_200_tasks() -> None:
    """200 tasks through a limit of 5: at most 5 inside, exactly 5 at the peak, all return."""
    bulkhead = Bulkhead(5, max_wait=LONG)
    gauge = Gauge()

    async def worker() -> None:
        await enter(bulkhead)
        try:
            with gauge:
                for _ in range(3):
                    await anyio.lowlevel.checkpoint()
        finally:
            bulkhead.release()

    async with anyio.create_task_group() as tg:
        for _ in range(TASKS):
            tg.start_soon(worker)
    assert gauge.peak == 5
    assert_idle(bulkhead)
    assert bulkhead.rejected == 0


@pytest.mark.anyio
async def test_task_waiters_are_served_first_come_first_served() -> None:
    """Tasks that queued one after another get the slot in that order."""
    bulkhead = Bulkhead(1, max_wait=LONG)
    assert bulkhead.try_acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await enter(bulkhead)
        order.append(i)
        await anyio.lowlevel.checkpoint()  # hold it across a checkpoint: the next one must wait
        bulkhead.release()

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(waiter, i)
            await until_async(lambda n=i + 1: bulkhead.waiting == n)
        bulkhead.release()
    assert order == list(range(10))
    assert_idle(bulkhead)


@pytest.mark.anyio
async def test_no_wait_refuses_a_task_at_once() -> None:
    """With max_wait=0 a task that finds the bulkhead full is refused without queueing."""
    bulkhead = Bulkhead(1)
    assert bulkhead.try_acquire()
    with pytest.raises(BulkheadFullError):
        await enter(bulkhead)
    assert (bulkhead.waiting, bulkhead.rejected, bulkhead.in_use) == (0, 1, 1)


@pytest.mark.anyio
async def test_a_task_gets_a_slot_freed_while_it_queues() -> None:
    """A slot given back just as a task queues (with a short max_wait) is handed to it
    at once, without waiting or being refused."""
    bulkhead = ReleasedWhileQueueing(1, max_wait=0.5)
    assert bulkhead.try_acquire()
    assert await bulkhead.acquire_async() is True
    assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (1, 0, 0)


@pytest.mark.anyio
async def test_no_wait_refuses_a_task_without_suspending_it() -> None:
    """With max_wait=0 the refusal comes without a turn of the event loop: a task whose
    cancellation is already pending still gets its answer, and nobody is queued."""
    bulkhead = Bulkhead(1)
    assert bulkhead.try_acquire()
    with anyio.CancelScope() as scope:
        scope.cancel()
        assert await bulkhead.acquire_async() is False
    assert not scope.cancelled_caught
    assert (bulkhead.waiting, bulkhead.rejected, bulkhead.in_use) == (0, 1, 1)


@pytest.mark.anyio
async def test_a_task_waiter_gives_up_after_max_wait() -> None:
    """A task that finds no slot within max_wait is refused and leaves the queue."""
    bulkhead = Bulkhead(1, max_wait=0.05)
    assert bulkhead.try_acquire()
    assert await bulkhead.acquire_async() is False
    assert (bulkhead.waiting, bulkhead.rejected, bulkhead.in_use) == (0, 1, 1)
    bulkhead.release()
    assert_idle(bulkhead)


@pytest.mark.anyio
async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    """Cancelling a waiting task removes it from the queue; it takes and leaks nothing."""
    bulkhead = Bulkhead(1, max_wait=LONG)
    assert bulkhead.try_acquire()
    entered = False

    async def waiter(scope_ready: Callable[[anyio.CancelScope], None]) -> None:
        nonlocal entered
        with anyio.CancelScope() as scope:
            scope_ready(scope)
            await enter(bulkhead)
            entered = True

    scopes: list[anyio.CancelScope] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, scopes.append)
        await until_async(lambda: bulkhead.waiting == 1)
        scopes[0].cancel()
    assert not entered
    assert (bulkhead.waiting, bulkhead.in_use, bulkhead.rejected) == (0, 1, 0)
    bulkhead.release()
    assert_idle(bulkhead)
    assert bulkhead.try_acquire()


@pytest.mark.anyio
async def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_goes_to_the_next() -> None:
    """Release, then cancel the first waiter before it runs: the second waiter gets the slot."""
    bulkhead = Bulkhead(1, max_wait=LONG)
    assert bulkhead.try_acquire()
    served: list[str] = []
    scopes: dict[str, anyio.CancelScope] = {}

    async def waiter(name: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[name] = scope
            await enter(bulkhead)
            served.append(name)
            bulkhead.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "first")
        await until_async(lambda: bulkhead.waiting == 1)
        tg.start_soon(waiter, "second")
        await until_async(lambda: bulkhead.waiting == 2)
        bulkhead.release()  # hands the slot to "first"...
        scopes["first"].cancel()  # ...which is cancelled before it can run
    assert served == ["second"]
    assert_idle(bulkhead)


@pytest.mark.anyio
async def test_a_cancelled_or_failing_holder_returns_its_slot() -> None:
    """A holder that is cancelled, or raises, gives its slot to the next waiter."""
    bulkhead = Bulkhead(1, max_wait=LONG)
    holding = anyio.Event()
    served: list[str] = []

    async def holder(scope: anyio.CancelScope) -> None:
        with scope:
            await enter(bulkhead)
            try:
                holding.set()
                await anyio.sleep_forever()
            finally:
                bulkhead.release()

    async def failing() -> None:
        await enter(bulkhead)
        try:
            served.append("failing")
            raise KeyError("boom")
        finally:
            bulkhead.release()

    async def waiter() -> None:
        await enter(bulkhead)
        served.append("waiter")
        bulkhead.release()

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(holder, scope)
        await holding.wait()
        tg.start_soon(waiter)
        await until_async(lambda: bulkhead.waiting == 1)
        scope.cancel()
    assert served == ["waiter"]
    with pytest.raises(KeyError):
        await failing()
    assert served == ["waiter", "failing"]
    assert_idle(bulkhead)


@pytest.mark.anyio
async def test_a_release_from_another_thread_wakes_a_task() -> None:
    """A slot given back in another thread reaches the waiting task in its event loop."""
    bulkhead = Bulkhead(1, max_wait=LONG)
    assert bulkhead.try_acquire()
    served = anyio.Event()

    async def waiter() -> None:
        await enter(bulkhead)
        served.set()
        bulkhead.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await until_async(lambda: bulkhead.waiting == 1)
        releaser = threading.Thread(target=bulkhead.release)
        releaser.start()
        with anyio.fail_after(10):
            await served.wait()
        releaser.join()
    assert_idle(bulkhead)


@pytest.mark.anyio
async def test_no_slot_is_lost_in_a_storm() -> None:
    """Waiters cancelled at random, waits running out, releases from other threads:
    afterwards every slot is back and every request is accounted for."""
    rng = random.Random(1234)
    bulkhead = Bulkhead(4, max_wait=0.02)
    gauge = Gauge()
    served = cancelled = refused = 0
    scopes: list[anyio.CancelScope] = []

    async def request(hold: int, release_elsewhere: bool) -> None:
        nonlocal served, cancelled, refused
        scope = anyio.CancelScope()
        scopes.append(scope)
        with scope:
            try:
                await enter(bulkhead)
            except BulkheadFullError:
                refused += 1
                return
            try:
                with gauge:
                    for _ in range(hold):
                        await anyio.lowlevel.checkpoint()
                served += 1
            finally:
                if release_elsewhere:
                    thread = threading.Thread(target=bulkhead.release)
                    thread.start()
                    thread.join()
                else:
                    bulkhead.release()
        if scope.cancelled_caught:
            cancelled += 1

    async with anyio.create_task_group() as tg:
        for _ in range(TASKS):
            tg.start_soon(request, rng.randrange(5), rng.random() < 0.2)
            if rng.random() < 0.3:
                await anyio.lowlevel.checkpoint()
            if scopes and rng.random() < 0.2:
                rng.choice(scopes).cancel()
    assert gauge.peak <= 4
    assert served + cancelled + refused == TASKS
    assert bulkhead.rejected == refused
    assert_idle(bulkhead)


# -- asyncio only: the two orders of "woken, then cancelled" ------------------------------


def test_asyncio_waiter_cancelled_before_its_wake_up_arrives() -> None:
    """asyncio: the release's wake-up is still on its way when the waiter is cancelled."""

    async def main() -> None:
        bulkhead = Bulkhead(1, max_wait=LONG)
        assert bulkhead.try_acquire()
        first = asyncio.ensure_future(bulkhead.acquire_async())
        second = asyncio.ensure_future(bulkhead.acquire_async())
        await asyncio.sleep(0)  # both tasks run their first step: both queue
        assert bulkhead.waiting == 2
        bulkhead.release()
        first.cancel()  # nothing ran in between: its future is not resolved yet
        assert await second is True
        with pytest.raises(asyncio.CancelledError):
            await first
        bulkhead.release()
        assert_idle(bulkhead)

    asyncio.run(main())


def test_asyncio_waiter_cancelled_after_its_wake_up_arrived() -> None:
    """asyncio: the waiter's future is resolved, then it is cancelled before it runs."""

    async def main() -> None:
        bulkhead = Bulkhead(1, max_wait=LONG)
        assert bulkhead.try_acquire()
        first = asyncio.ensure_future(bulkhead.acquire_async())
        second = asyncio.ensure_future(bulkhead.acquire_async())
        await asyncio.sleep(0)  # both tasks run their first step: both queue
        assert bulkhead.waiting == 2
        bulkhead.release()
        # One pass of the loop runs the wake-up (queued before us), not yet `first`.
        await asyncio.sleep(0)
        assert not first.done()
        first.cancel()
        assert await second is True
        with pytest.raises(asyncio.CancelledError):
            await first
        bulkhead.release()
        assert_idle(bulkhead)

    asyncio.run(main())


def test_a_waiter_whose_event_loop_closed_hands_its_slot_on() -> None:
    """A slot handed to a task whose loop was closed is not lost to it."""
    bulkhead = Bulkhead(1, max_wait=LONG)
    assert bulkhead.try_acquire()
    loop = asyncio.new_event_loop()
    task = loop.create_task(bulkhead.acquire_async())
    loop.run_until_complete(asyncio.sleep(0))
    assert bulkhead.waiting == 1
    loop.close()  # the task stays pending forever
    bulkhead.release()  # the wake-up cannot be delivered: the slot comes back
    assert_idle(bulkhead)
    del task, loop
    gc.collect()  # the abandoned coroutine is closed; it must not give the slot back again
    assert_idle(bulkhead)
    assert bulkhead.try_acquire()


# -- everything at once ------------------------------------------------------------------


def test_threads_event_loops_and_trio_share_one_limit() -> None:
    """Plain threads, two asyncio loops and a trio run, each in its own thread, share a
    limit of 3 and never exceed it; every slot comes back."""
    bulkhead = Bulkhead(3, max_wait=LONG)
    gauge = Gauge()
    rounds = 60

    async def async_worker(checkpoint: Callable[[], Awaitable[object]]) -> None:
        for _ in range(rounds):
            await enter(bulkhead)
            try:
                with gauge:
                    await checkpoint()
            finally:
                bulkhead.release()

    async def asyncio_main() -> None:
        await asyncio.gather(*(async_worker(lambda: asyncio.sleep(0)) for _ in range(8)))

    async def trio_main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(async_worker, trio.lowlevel.checkpoint)

    def thread_worker() -> None:
        for _ in range(rounds):
            enter_sync(bulkhead)
            try:
                with gauge:
                    time.sleep(0)
            finally:
                bulkhead.release()

    with threads() as group:
        group.start(lambda: asyncio.run(asyncio_main()))
        group.start(lambda: asyncio.run(asyncio_main()))
        group.start(lambda: trio.run(trio_main))
        for _ in range(4):
            group.start(thread_worker)
    assert 1 <= gauge.peak <= 3
    assert_idle(bulkhead)
    assert bulkhead.rejected == 0


def test_waiters_of_every_kind_are_served_in_arrival_order() -> None:
    """A thread, an asyncio task, a trio task and another thread, queued in that order,
    get the slot in that order."""
    bulkhead = Bulkhead(1, max_wait=LONG)
    assert bulkhead.try_acquire()
    order: list[str] = []

    def in_thread(name: str) -> None:
        enter_sync(bulkhead)
        order.append(name)
        bulkhead.release()

    async def in_task(name: str) -> None:
        await enter(bulkhead)
        order.append(name)
        bulkhead.release()

    starters: list[tuple[str, Callable[[], object]]] = [
        ("thread", lambda: in_thread("thread")),
        ("asyncio", lambda: asyncio.run(in_task("asyncio"))),
        ("trio", lambda: trio.run(in_task, "trio")),
        ("thread 2", lambda: in_thread("thread 2")),
    ]
    with threads() as group:
        for n, (name, start) in enumerate(starters, 1):
            group.start(start)
            until(lambda n=n: bulkhead.waiting == n, f"{name} to queue")
        bulkhead.release()
    assert order == [name for name, _ in starters]
    assert_idle(bulkhead)
