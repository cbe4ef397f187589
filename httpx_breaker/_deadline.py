"""Deadlines on the current task, under asyncio or trio, that tell their own expiry apart.

`Deadline` is one deadline on the task that created it. It can be armed when it is made
or later, from inside the awaited call (the transports arm it when httpcore reports that
a connection has been assigned, so the wait for the client's own pool is not counted),
and re-armed. `run` awaits a call under it and raises `CircuitTimeoutError` when the
deadline, and nothing else, stopped the call.

Under asyncio (3.11+) a per-loop `_Sweeper` keeps the armed deadlines in 5 ms buckets and
wakes once per bucket to cancel the overdue tasks. One deadline then costs a couple of
dict operations, where `asyncio.timeout` pushes a timer handle on the loop's heap (whose
comparisons run in Python) for every call. A deadline fires up to one bucket late, which
no circuit-breaker deadline notices. The sweeper holds no reference to its loop and no
timer handle (the loop holds the timers, never the reverse), so a finished loop is
collected with everything of ours it held. Under trio a `trio.CancelScope` does the work,
and elsewhere (asyncio before 3.11) anyio's `CancelScope`.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import sys
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

import anyio

from ._errors import CircuitTimeoutError

__all__ = ["Deadline", "run_with_deadline"]

T = TypeVar("T")

RESOLUTION = 0.005  # seconds per bucket: how late a deadline may fire, at most

_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task


class _Entry:
    """One armed deadline in a sweeper: the task to cancel, and whether it was."""

    __slots__ = ("bucket", "fired", "task")

    def __init__(self, task: asyncio.Task[Any], bucket: int) -> None:
        self.task = task
        self.bucket = bucket
        self.fired = False


class _Sweeper:
    """The armed deadlines of one event loop, in buckets of `RESOLUTION` seconds.

    Holds nothing of the loop: the loop is passed in, and the timers it schedules live
    only in the loop. `_wakes` are the buckets a timer is scheduled for; a timer that
    finds nothing due does nothing, so timers are never cancelled.
    """

    __slots__ = ("__weakref__", "_buckets", "_heap", "_wakes")

    def __init__(self) -> None:
        self._buckets: dict[int, dict[_Entry, None]] = {}
        self._heap: list[int] = []  # bucket numbers; those emptied early are skipped
        self._wakes: set[int] = set()

    def add(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], timeout: float) -> _Entry:
        bucket = int((loop.time() + timeout) / RESOLUTION) + 1
        entry = _Entry(task, bucket)
        entries = self._buckets.get(bucket)
        if entries is None:
            entries = self._buckets[bucket] = {}
            heapq.heappush(self._heap, bucket)
            wakes = self._wakes
            if not wakes or bucket < min(wakes):
                wakes.add(bucket)
                loop.call_at(bucket * RESOLUTION, self._sweep, loop, bucket)
        entries[entry] = None
        return entry

    def remove(self, entry: _Entry) -> None:
        entries = self._buckets.get(entry.bucket)
        if entries is not None:
            entries.pop(entry, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop, bucket: int) -> None:
        wakes = self._wakes
        wakes.discard(bucket)
        now = loop.time()
        heap, buckets = self._heap, self._buckets
        while heap and heap[0] * RESOLUTION <= now:
            entries = buckets.pop(heapq.heappop(heap), None)
            for entry in entries or ():
                entry.fired = True
                entry.task.cancel()
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
_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
    weakref.WeakKeyDictionary()
)
_last: tuple[weakref.ReferenceType[asyncio.AbstractEventLoop], _Sweeper] | None = None


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    sweeper = _sweepers.get(loop)
    if sweeper is None:
        sweeper = _sweepers[loop] = _Sweeper()
    _last = (weakref.ref(loop), sweeper)
    return sweeper


class Deadline:
    """A deadline on the current task, armed now (`timeout`) or later (`arm`).

    Make it in the task that will await the call, then ``await deadline.run(call)``.

    Args:
        timeout: the deadline's length in seconds, reported in `CircuitTimeoutError`.
        name: the breaker's name, for the error.
        armed: arm it now for `timeout` seconds (or for `armed` seconds when a float
            is given); `False` leaves it unarmed until `arm` is called.
    """

    __slots__ = ("_cancelling", "_entry", "_loop", "_scope", "_sweeper", "_task", "name", "timeout")

    # Set only where the sweeper keeps the deadline (asyncio 3.11+).
    _loop: asyncio.AbstractEventLoop
    _task: asyncio.Task[Any]
    _sweeper: _Sweeper
    _cancelling: int

    def __init__(self, timeout: float, name: str, *, armed: bool | float = True) -> None:
        self.timeout = timeout
        self.name = name
        self._entry: _Entry | None = None
        self._scope: Any = None
        loop = _running_loop()
        task = _current_task(loop) if loop is not None else None
        # Task.cancelling() and uncancel() arrived in 3.11: they tell our cancellation
        # apart from anyone else's. Before that, anyio's cancel scopes do it.
        if sys.version_info >= (3, 11) and task is not None:
            assert loop is not None
            self._loop = loop
            self._task = task
            self._sweeper = _sweeper(loop)
            self._cancelling = task.cancelling()
        else:
            self._scope = _cancel_scope()
        if armed is not False:
            self.arm(timeout if armed is True else armed)

    def arm(self, seconds: float) -> None:
        """(Re)start the deadline: it now ends `seconds` from now; `inf` disarms it."""
        scope = self._scope
        if scope is not None:
            scope.deadline = _scope_now(scope) + seconds
            return
        entry = self._entry
        if entry is not None:
            if entry.fired:
                return  # too late: the cancellation is already on its way
            self._sweeper.remove(entry)
            self._entry = None
        if not math.isinf(seconds):
            self._entry = self._sweeper.add(self._loop, self._task, seconds)

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` under the deadline.

        Raises:
            CircuitTimeoutError: the deadline passed first (the awaitable was cancelled).
        """
        scope = self._scope
        if scope is not None:
            with scope:
                return await awaitable
            raise CircuitTimeoutError(self.name, self.timeout)
        try:
            result = await awaitable
        except asyncio.CancelledError:
            entry = self._entry
            # Ours only if the sweeper fired and nobody else asked to cancel the task.
            # (The sweeper only runs on 3.11+, which has Task.uncancel.)
            uncancel = self._task.uncancel  # type: ignore[attr-defined,unused-ignore]
            if entry is not None and entry.fired and uncancel() <= self._cancelling:
                raise CircuitTimeoutError(self.name, self.timeout) from None
            raise
        finally:
            entry = self._entry
            if entry is not None and not entry.fired:
                self._sweeper.remove(entry)
        entry = self._entry
        if entry is not None and entry.fired:  # the awaitable swallowed our cancellation
            self._task.uncancel()  # type: ignore[attr-defined,unused-ignore]
        return result


def _cancel_scope() -> Any:
    """An unarmed cancel scope of the running library: trio's own, else anyio's."""
    if "trio" in sys.modules:
        import trio

        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return trio.CancelScope()
    return anyio.CancelScope()


def _scope_now(scope: Any) -> float:
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
    return await Deadline(timeout, name).run(awaitable)
