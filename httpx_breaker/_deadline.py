"""Deadlines on the current task, under asyncio or trio, that tell their own expiry apart.

`run_with_deadline` awaits a call under a deadline and raises `CircuitTimeoutError` when
the deadline, and nothing else, stopped the call. The transports use the parts directly,
because their deadline may be (re)started from inside the call (when httpcore reports
that the request got a connection, so the wait for the client's own pool is not counted).

Under asyncio (3.11+) a per-loop `Sweeper` keeps the armed deadlines in 5 ms buckets and
wakes once per bucket to cancel the overdue tasks. One deadline then costs a couple of
dict operations, where `asyncio.timeout` pushes a timer handle on the loop's heap (whose
comparisons run in Python) for every call. A deadline fires up to one bucket late, which
no circuit-breaker deadline notices. The sweeper holds no reference to its loop and no
timer handle (the loop holds the timers, never the reverse), so a finished loop is
collected with everything of ours it held. Under trio a `trio.CancelScope` does the work
(`cancel_scope`), and on asyncio before 3.11 anyio's `CancelScope`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import sys
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

import anyio

from ._errors import CircuitTimeoutError

__all__ = ["Sweeper", "cancel_scope", "run_with_deadline", "scope_now", "sweeper_for"]

T = TypeVar("T")

RESOLUTION = 0.005  # seconds per bucket: how late a deadline may fire, at most
_BUCKETS_PER_SECOND = 1 / RESOLUTION

_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task


class Sweeper:
    """The armed deadlines of one event loop, in buckets of `RESOLUTION` seconds.

    A deadline is armed with `arm`, which returns its place (bucket, key), and ended
    with `disarm`, which says whether it was still armed: False means the sweeper has
    fired it (cancelled its task). No object is made per deadline.

    Holds nothing of the loop: the loop is passed in, and the timers it schedules live
    only in the loop. `_wakes` are the buckets a timer is scheduled for; a timer that
    finds nothing due does nothing, so timers are never cancelled.
    """

    __slots__ = ("__weakref__", "_buckets", "_heap", "_keys", "_wakes")

    def __init__(self) -> None:
        self._buckets: dict[int, dict[int, asyncio.Task[Any]]] = {}
        self._heap: list[int] = []  # bucket numbers; those emptied early are skipped
        self._wakes: set[int] = set()
        self._keys = itertools.count()

    def arm(
        self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], seconds: float
    ) -> tuple[int, int]:
        """Cancel `task` `seconds` from now (up to one bucket later) unless disarmed."""
        bucket = int((loop.time() + seconds) * _BUCKETS_PER_SECOND) + 1
        key = next(self._keys)
        entries = self._buckets.get(bucket)
        if entries is None:
            entries = self._buckets[bucket] = {}
            heapq.heappush(self._heap, bucket)
            wakes = self._wakes
            if not wakes or bucket < min(wakes):
                wakes.add(bucket)
                loop.call_at(bucket * RESOLUTION, self._sweep, loop, bucket)
        entries[key] = task
        return bucket, key

    def disarm(self, bucket: int, key: int) -> bool:
        """End the deadline at (bucket, key); False if the sweeper already fired it."""
        entries = self._buckets.get(bucket)
        return entries is not None and entries.pop(key, None) is not None

    def _sweep(self, loop: asyncio.AbstractEventLoop, bucket: int) -> None:
        wakes = self._wakes
        wakes.discard(bucket)
        now = loop.time()
        heap, buckets = self._heap, self._buckets
        while heap and heap[0] * RESOLUTION <= now:
            entries = buckets.pop(heapq.heappop(heap), None)
            for task in (entries or {}).values():
                task.cancel()
        # Buckets emptied by calls that finished in time are dropped as the sweep meets
        # them, so a timer only wakes for a bucket that may still hold a deadline, and
        # none is left once no deadline is pending.
        while heap and not buckets.get(heap[0]):
            buckets.pop(heapq.heappop(heap), None)
        if heap and (not wakes or heap[0] < min(wakes)):
            wakes.add(heap[0])
            loop.call_at(heap[0] * RESOLUTION, self._sweep, loop, heap[0])


# One sweeper per loop, weakly keyed; the last one used is remembered (through a weak
# reference to its loop) because a process nearly always runs one loop at a time.
_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Sweeper] = (
    weakref.WeakKeyDictionary()
)
_last: tuple[weakref.ReferenceType[asyncio.AbstractEventLoop], Sweeper] | None = None


def sweeper_for(loop: asyncio.AbstractEventLoop) -> Sweeper:
    """The sweeper of `loop` (made on first use)."""
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    sweeper = _sweepers.get(loop)
    if sweeper is None:
        sweeper = _sweepers[loop] = Sweeper()
    _last = (weakref.ref(loop), sweeper)
    return sweeper


def cancel_scope(seconds: float | None) -> Any:
    """A cancel scope of the running library (trio's own under trio, else anyio's),
    ending `seconds` from now, or never (None) until its `deadline` is set."""
    if _running_loop() is None:
        # No asyncio loop in this thread: httpx runs on asyncio or trio, so trio (already
        # imported by whoever runs it). Its own scope costs less than anyio's wrapper.
        trio: Any = sys.modules["trio"]
        if seconds is None:
            return trio.CancelScope()
        return trio.CancelScope(deadline=trio.current_time() + seconds)
    if seconds is None:
        return anyio.CancelScope()
    return anyio.CancelScope(deadline=anyio.current_time() + seconds)


def scope_now(scope: Any) -> float:
    """The clock a scope from `cancel_scope` keeps its deadline on."""
    if isinstance(scope, anyio.CancelScope):
        return anyio.current_time()
    import trio

    return trio.current_time()


# The parameter is the deadline we enforce, not a caller's timeout to honour.
async def run_with_deadline(awaitable: Awaitable[T], timeout: float, name: str) -> T:  # noqa: ASYNC109
    """Await `awaitable`, cancelling it after `timeout` seconds.

    Raises:
        CircuitTimeoutError: the deadline passed first (and the awaitable was cancelled).
    """
    loop = _running_loop()
    task = _current_task(loop) if loop is not None else None
    # Task.cancelling() and uncancel() arrived in 3.11: they tell our cancellation
    # apart from anyone else's. Before that (and under trio), cancel scopes do it.
    if sys.version_info >= (3, 11) and task is not None:
        assert loop is not None
        sweeper = sweeper_for(loop)
        cancelling = task.cancelling()
        bucket, key = sweeper.arm(loop, task, timeout)
        try:
            result = await awaitable
        except asyncio.CancelledError:
            # Ours only if the sweeper fired and nobody else asked to cancel the task.
            if not sweeper.disarm(bucket, key) and task.uncancel() <= cancelling:
                raise CircuitTimeoutError(name, timeout) from None
            raise
        except BaseException:
            sweeper.disarm(bucket, key)
            raise
        if not sweeper.disarm(bucket, key):  # the awaitable swallowed our cancellation
            task.uncancel()
        return result
    with cancel_scope(timeout):
        return await awaitable
    raise CircuitTimeoutError(name, timeout)
