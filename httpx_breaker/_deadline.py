"""A deadline on one awaitable, under asyncio or trio, that tells its own expiry apart.

Under asyncio a per-loop `_Sweeper` keeps the tasks that have a deadline in 5 ms
buckets and wakes once per bucket to cancel the overdue ones. One deadline then costs a
couple of dict operations, where `asyncio.timeout` costs a timer handle pushed on the
loop's heap (whose comparisons run in Python) for every call: about 4 us here, most of
the price of a request through the breaker. The deadline fires up to one bucket late,
which no circuit-breaker deadline notices. Elsewhere (trio) anyio's `move_on_after`
does the work.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
import weakref
from collections.abc import Awaitable
from typing import TypeVar

import anyio

from ._errors import CircuitTimeoutError

__all__ = ["run_with_deadline"]

T = TypeVar("T")

RESOLUTION = 0.005  # seconds per bucket: how late a deadline may fire, at most

_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task


class _Entry:
    """One awaited deadline: the task to cancel, and whether the sweeper did."""

    __slots__ = ("bucket", "fired", "task")

    def __init__(self, task: asyncio.Task[object], bucket: int) -> None:
        self.task = task
        self.bucket = bucket
        self.fired = False


class _Sweeper:
    """The deadlines of one event loop, in buckets of `RESOLUTION` seconds."""

    __slots__ = ("__weakref__", "_buckets", "_heap", "_loop", "_timer", "_timer_bucket")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, dict[_Entry, None]] = {}
        self._heap: list[int] = []  # bucket numbers; those emptied early are skipped
        self._timer: asyncio.TimerHandle | None = None
        self._timer_bucket = 0

    def add(self, task: asyncio.Task[object], timeout: float) -> _Entry:
        bucket = int((self._loop.time() + timeout) / RESOLUTION) + 1
        entry = _Entry(task, bucket)
        entries = self._buckets.get(bucket)
        if entries is None:
            entries = self._buckets[bucket] = {}
            heapq.heappush(self._heap, bucket)
            if self._timer is None or bucket < self._timer_bucket:
                self._schedule(bucket)
        entries[entry] = None
        return entry

    def remove(self, entry: _Entry) -> None:
        entries = self._buckets.get(entry.bucket)
        if entries is not None:
            entries.pop(entry, None)

    def _schedule(self, bucket: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_bucket = bucket
        self._timer = self._loop.call_at(bucket * RESOLUTION, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self._loop.time()
        heap, buckets = self._heap, self._buckets
        while heap and heap[0] * RESOLUTION <= now:
            entries = buckets.pop(heapq.heappop(heap), None)
            for entry in entries or ():
                entry.fired = True
                entry.task.cancel()
        # Buckets emptied by calls that finished in time are dropped as the sweep meets
        # them, so the timer only wakes for buckets that may still hold a deadline.
        while heap and not buckets.get(heap[0]):
            buckets.pop(heapq.heappop(heap), None)
        if heap:
            self._schedule(heap[0])


_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
    weakref.WeakKeyDictionary()
)


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    sweeper = _sweepers.get(loop)
    if sweeper is None:
        sweeper = _sweepers[loop] = _Sweeper(loop)
    return sweeper


# The parameter is the deadline we enforce, not a caller's timeout to honour.
async def run_with_deadline(awaitable: Awaitable[T], timeout: float, name: str) -> T:  # noqa: ASYNC109
    """Await `awaitable`, cancelling it after `timeout` seconds.

    Raises:
        CircuitTimeoutError: the deadline passed first (and the awaitable was cancelled).
    """
    loop = _running_loop()
    task = _current_task(loop) if loop is not None else None
    # Task.cancelling() and uncancel() arrived in 3.11: they tell our cancellation
    # apart from anyone else's.
    if sys.version_info >= (3, 11) and loop is not None and task is not None:
        sweeper = _sweeper(loop)
        cancelling = task.cancelling()
        entry = sweeper.add(task, timeout)
        try:
            result = await awaitable
        except asyncio.CancelledError:
            # Ours only if the sweeper fired and nobody else asked to cancel the task.
            if entry.fired and task.uncancel() <= cancelling:
                raise CircuitTimeoutError(name, timeout) from None
            raise
        finally:
            if not entry.fired:
                sweeper.remove(entry)
        if entry.fired:  # the awaitable swallowed our cancellation: take it back
            task.uncancel()
        return result
    with anyio.move_on_after(timeout) as scope:
        return await awaitable
    if scope.cancelled_caught:
        raise CircuitTimeoutError(name, timeout)
    raise AssertionError("unreachable: a deadline scope exited without a result")  # pragma: no cover
