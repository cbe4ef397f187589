"""Bulkhead: at most `limit` requests in flight, the rest wait their turn or are refused.

One object is shared by everything that sends through one breaker: asyncio tasks
(possibly in several event loops, in different threads), trio tasks and plain threads.
None of the usual primitives covers that mix: `asyncio.Semaphore` and anyio's
`CapacityLimiter` belong to one event loop, trio's `Semaphore` to one trio run, and
`threading.Semaphore` blocks an event loop and lets a newcomer overtake a waiter.

How it works:

- **Free slots are tokens** in a `queue.SimpleQueue`, minted on demand up to `limit`
  (memory follows the concurrency reached, not the limit). Taking one
  (`get_nowait`) and giving one back (`put`) are single C calls, atomic without a lock
  of ours: the uncontended path costs two of them and two attribute reads.
  `SimpleQueue.put` is documented as reentrant, safe from `__del__`: a release can run
  in a finaliser, even one that interrupts this very bulkhead's locked code.
- **Waiters queue under a `threading.Lock`**, oldest first, held only for a few
  updates and never across an `await`. Each waiter brings its own way to be woken:
  a thread a `threading.Lock` it blocks on (with `max_wait` as the timeout); an
  asyncio task a future of its own loop, resolved with `call_soon_threadsafe`; a trio
  task `wait_task_rescheduled`, rescheduled through its run's `TrioToken`.
- **First come first served, no barging.** A token that is free while someone waits
  is handed, under the lock, to the oldest waiter (`_rebalance_locked`). A newcomer
  that took a token and then sees a waiter gives it back and queues behind; a waiter
  that queues looks for a token right after, under the lock; a release that sees a
  waiter after its `put` hands the token over. Whichever comes last does the
  hand-over, so no token stays free while a waiter waits, and nobody overtakes a waiter
  that was already queued. (CPython gh-90155 shows what goes wrong otherwise.)
- **A waiter never keeps or loses a slot it did not use.** Its state moves under the
  lock from WAITING (queued) to GRANTED (handed a token, not yet running) to DONE. One
  that leaves while GRANTED (cancelled at the very moment a slot reached it, or its
  event loop closed before it could be woken) hands the token on to the next in line.
- **Nothing that may run in a finaliser blocks.** `release` only takes the lock with
  `acquire(blocking=False)`, to hand its token to a waiter; if the lock is taken, its
  holder does the hand-over after letting go (every holder looks), and the releaser
  leaves. The engine's `release` (ex `_release_abandoned`) solves the same problem for its permits.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from ._config import CircuitBreakerConfig

__all__ = ["Bulkhead"]

T = TypeVar("T")

# A waiter's state; it only changes under the bulkhead's lock.
_WAITING: Final = 0  # queued
_GRANTED: Final = 1  # handed a token; the waiter has not claimed it yet
_DONE: Final = 2  # claimed, handed on, or gone without a token

# What a request that asked under the lock came to.
_ACQUIRED: Final = 0
_QUEUED: Final = 1


class _Waiter:
    """One request waiting for a slot, and how to wake it (set before it is queued)."""

    __slots__ = ("state", "task", "wake")

    def __init__(self) -> None:
        self.state = _WAITING
        self.wake: Callable[[], object] = _nothing
        self.task: Any = None  # trio: the blocked task; None once woken or aborted


def _nothing() -> None:
    pass


class Bulkhead:
    """At most `limit` holders at once; others wait up to `max_wait` seconds, in order.

    Usage::

        if not bulkhead.try_acquire() and not await bulkhead.acquire_async():
            raise BulkheadFullError(...)       # bulkhead.acquire() in a thread
        try:
            ...                                # the request, until its body is closed
        finally:
            bulkhead.release()                 # exactly once per slot taken

    A holder may release from any thread or event loop, or from a finaliser.

    Args:
        limit: the most holders at once (>= 1).
        max_wait: how long a request that finds every slot taken waits for one, in
            seconds (>= 0; 0 refuses at once).
    """

    __slots__ = ("_free", "_limit", "_lock", "_max_wait", "_minted", "_rejected", "_waiters")

    def __init__(self, limit: int, max_wait: float = 0.0) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int >= 1, got {limit!r}")
        if limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        if isinstance(max_wait, bool) or not isinstance(max_wait, (int, float)):
            raise TypeError(f"max_wait must be a number of seconds >= 0, got {max_wait!r}")
        if not (math.isfinite(max_wait) and max_wait >= 0):
            raise ValueError(f"max_wait must be a finite number of seconds >= 0, got {max_wait!r}")
        self._limit = limit
        self._max_wait = float(max_wait)
        self._free: SimpleQueue[None] = SimpleQueue()  # one token per free slot minted
        self._minted = 0  # tokens made so far (<= limit); changed under the lock
        self._lock = threading.Lock()
        self._waiters: OrderedDict[_Waiter, None] = OrderedDict()  # oldest first
        self._rejected = 0

    @classmethod
    def from_config(cls, config: CircuitBreakerConfig) -> Bulkhead | None:
        """The bulkhead a breaker with `config` needs: None without `max_concurrent`."""
        if config.max_concurrent is None:
            return None
        return cls(config.max_concurrent, config.max_wait)

    # -- what it is -------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The most holders at once."""
        return self._limit

    @property
    def max_wait(self) -> float:
        """Seconds a request waits for a slot before it is refused."""
        return self._max_wait

    @property
    def in_use(self) -> int:
        """Slots held now: the requests in flight (a gauge; exact when nothing moves)."""
        return self._minted - self._free.qsize()

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now."""
        return len(self._waiters)

    @property
    def rejected(self) -> int:
        """Requests refused so far (no slot within `max_wait`)."""
        return self._rejected

    def __repr__(self) -> str:
        return (
            f"<Bulkhead {self.in_use}/{self._limit} in use, {self.waiting} waiting, "
            f"max_wait={self._max_wait:g}s>"
        )

    # -- the hot path -----------------------------------------------------------

    def try_acquire(self) -> bool:
        """Take a free slot if there is one and nobody waits for it; never waits.

        False means "not at once": then call `acquire_async()` or `acquire()`, which
        queue (or refuse, and count the refusal) according to `max_wait`.
        """
        try:
            self._free.get_nowait()
        except Empty:
            # No token to reuse: mint one if the limit allows (the first uses only).
            return self._locked(self._take_locked)
        if self._waiters:
            # Someone queued first: the slot is theirs (whoever queued before us).
            self._free.put(None)
            self._settle()
            return False
        return True

    def release(self) -> None:
        """Give a slot back, to the oldest waiter if there is one. Never blocks.

        Safe from any thread or event loop and from a finaliser. Call it exactly once
        per slot taken.
        """
        self._free.put(None)
        if self._waiters:
            self._settle()

    # -- waiting ----------------------------------------------------------------

    def acquire_now(self) -> bool:
        """Take a slot if one is free, without waiting whatever `max_wait` says; False
        (a refusal, counted) if none is. For callers that must never block."""
        return self._locked(self._take_or_refuse_locked)

    def acquire(self) -> bool:
        """Take a slot, waiting up to `max_wait` seconds in this thread; False if refused.

        Blocks the calling thread (never call it in an event loop's thread). An
        exception while it waits (`KeyboardInterrupt`) leaves no slot taken.
        """
        if self._max_wait <= 0:
            return self._locked(self._take_or_refuse_locked)
        waiter = _Waiter()
        signal = threading.Lock()
        signal.acquire()
        waiter.wake = signal.release  # never blocks: safe from a finaliser
        outcome = self._locked(partial(self._enqueue_locked, waiter))
        if outcome != _QUEUED:
            return outcome == _ACQUIRED
        try:
            signal.acquire(timeout=min(self._max_wait, threading.TIMEOUT_MAX))
        except BaseException:
            self._locked(partial(self._leave_locked, waiter))
            raise
        return self._locked(partial(self._claim_locked, waiter))

    async def acquire_async(self) -> bool:
        """Take a slot, waiting up to `max_wait` seconds; False if refused.

        Works under asyncio and trio, in any number of event loops and threads at once.
        Cancelling the wait leaves no slot taken, even if one reached the waiter at
        that moment: it goes to the next in line.
        """
        if self._max_wait <= 0:
            return self._locked(self._take_or_refuse_locked)
        trio = sys.modules.get("trio")
        if trio is not None and _in_trio_task(trio):
            return await self._acquire_trio()
        return await self._acquire_asyncio()

    async def _acquire_asyncio(self) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = _Waiter()
        waiter.wake = partial(loop.call_soon_threadsafe, _resolve, future)
        outcome = self._locked(partial(self._enqueue_locked, waiter))
        if outcome != _QUEUED:
            return outcome == _ACQUIRED
        timer = loop.call_later(self._max_wait, _resolve, future)
        try:
            await future
        except BaseException:
            self._locked(partial(self._leave_locked, waiter))
            raise
        finally:
            timer.cancel()
        # Woken by a hand-over or by the timer: the state says which (a slot handed
        # over just as the timer fired is kept).
        return self._locked(partial(self._claim_locked, waiter))

    async def _acquire_trio(self) -> bool:
        import trio

        waiter = _Waiter()
        waiter.task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()
        waiter.wake = partial(token.run_sync_soon, _reschedule_trio, waiter)
        outcome = self._locked(partial(self._enqueue_locked, waiter))
        if outcome != _QUEUED:
            return outcome == _ACQUIRED

        def abort(_: object) -> trio.lowlevel.Abort:
            # Runs in the trio thread, as _reschedule_trio does, so they cannot race:
            # a wake-up already on its way finds no task and does nothing.
            waiter.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        with trio.move_on_after(self._max_wait):
            try:
                await trio.lowlevel.wait_task_rescheduled(abort)
            except BaseException:
                # Cancelled from outside, or by our own deadline (caught just below,
                # then claimed as a refusal): a slot handed over meanwhile moves on.
                self._locked(partial(self._leave_locked, waiter))
                raise
        return self._locked(partial(self._claim_locked, waiter))

    def count_rejection(self) -> None:
        """Count a request refused without asking (a dry run's would-be refusal)."""
        self._locked(self._count_locked)

    # -- under the lock -----------------------------------------------------------

    def _locked(self, op: Callable[[list[_Waiter]], T]) -> T:
        """Run `op(woken)` under the lock; wake the waiters handed a slot after it."""
        woken: list[_Waiter] = []
        lock = self._lock
        lock.acquire()
        try:
            result = op(woken)
        finally:
            lock.release()
        if woken:
            self._wake(woken)
        if self._waiters and self._free.qsize():
            # A release found the lock taken while we held it: its hand-over is ours.
            self._settle()
        return result

    def _settle(self) -> None:
        """Hand free tokens to waiters if the lock is free; else its holder will."""
        lock = self._lock
        while self._waiters and self._free.qsize() and lock.acquire(False):
            woken: list[_Waiter] = []
            try:
                self._rebalance_locked(woken)
            finally:
                lock.release()
            if woken:
                self._wake(woken)

    def _rebalance_locked(self, woken: list[_Waiter]) -> None:
        """Give free tokens to the oldest waiters."""
        waiters = self._waiters
        free = self._free
        while waiters:
            try:
                free.get_nowait()
            except Empty:
                return
            waiter, _ = waiters.popitem(last=False)
            waiter.state = _GRANTED
            woken.append(waiter)

    def _take_locked(self, woken: list[_Waiter]) -> bool:
        """A slot for a newcomer, if one is free and nobody waits: reused or minted."""
        if self._waiters:
            return False
        try:
            self._free.get_nowait()
        except Empty:
            if self._minted >= self._limit:
                return False
            self._minted += 1
        return True

    def _take_or_refuse_locked(self, woken: list[_Waiter]) -> bool:
        if self._take_locked(woken):
            return True
        self._rejected += 1
        return False

    def _enqueue_locked(self, waiter: _Waiter, woken: list[_Waiter]) -> int:
        """Take a slot, or queue `waiter` (the caller waits only when `max_wait` > 0)."""
        if self._take_locked(woken):
            return _ACQUIRED
        self._waiters[waiter] = None
        # A token freed while we were getting here goes to the oldest waiter: maybe us.
        self._rebalance_locked(woken)
        if waiter.state == _GRANTED:
            waiter.state = _DONE
            woken.remove(waiter)
            return _ACQUIRED
        return _QUEUED

    def _claim_locked(self, waiter: _Waiter, woken: list[_Waiter]) -> bool:
        """The waiter woke up (a hand-over, or its time ran out): has it a slot?"""
        state = waiter.state
        waiter.state = _DONE
        if state == _GRANTED:
            return True
        if state == _WAITING:
            del self._waiters[waiter]
        self._rejected += 1
        return False

    def _leave_locked(self, waiter: _Waiter, woken: list[_Waiter]) -> None:
        """The waiter is gone without running (cancelled, or it cannot be woken)."""
        state = waiter.state
        waiter.state = _DONE
        if state == _GRANTED:
            self._free.put(None)  # the token it was handed goes to the next in line
            self._rebalance_locked(woken)
        elif state == _WAITING:
            del self._waiters[waiter]

    def _count_locked(self, woken: list[_Waiter]) -> None:
        self._rejected += 1

    def _wake(self, woken: list[_Waiter]) -> None:
        """Wake the waiters handed a token; one that cannot be woken hands it on."""
        for waiter in woken:
            try:
                waiter.wake()
            # Its event loop is closed (RuntimeError) or its trio run is over
            # (trio.RunFinishedError, a RuntimeError): it will never run.
            except RuntimeError:  # noqa: PERF203 (each waiter on its own)
                self._locked(partial(self._leave_locked, waiter))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _reschedule_trio(waiter: _Waiter) -> None:
    task = waiter.task
    if task is not None:  # still blocked in its wait: not aborted, not woken already
        waiter.task = None
        import trio

        trio.lowlevel.reschedule(task)


def _in_trio_task(trio: Any) -> bool:
    lowlevel = trio.lowlevel
    in_trio_task = getattr(lowlevel, "in_trio_task", None)
    if in_trio_task is not None:
        return bool(in_trio_task())
    try:  # trio before 0.23
        lowlevel.current_task()
    except RuntimeError:
        return False
    return True
