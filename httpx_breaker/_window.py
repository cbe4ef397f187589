"""The sliding window: the last `size` outcomes younger than `duration` seconds.

A ring buffer with running counts: recording and reading are O(1) (expiry is
amortised O(1), each outcome leaves once), and memory is fixed: the times at
construction, the flags with the first failed or slow outcome (a breaker that has only
ever seen successes, as most idle ones have, keeps no flags).
"""

from __future__ import annotations

__all__ = ["SlidingWindow"]

FAILED = 1
SLOW = 2


class SlidingWindow:
    """Counts of recorded outcomes, failed outcomes and slow outcomes in the window."""

    __slots__ = ("_duration", "_flags", "_head", "_size", "_times", "count", "failures", "slow")

    def __init__(self, size: int, duration: float) -> None:
        self._size = size
        self._duration = duration
        self._times = [0.0] * size
        self._flags: list[int] | None = None  # made with the first non-zero flag
        self._head = 0  # index of the oldest outcome
        self.count = 0
        self.failures = 0
        self.slow = 0

    def record(self, now: float, flags: int) -> None:
        """Add one outcome (`flags` is FAILED | SLOW bits), evicting the oldest when full."""
        size = self._size
        if self.count == size:
            self._drop_oldest()
        i = self._head + self.count
        if i >= size:
            i -= size
        self._times[i] = now
        stored = self._flags
        if stored is not None:
            stored[i] = flags
        elif flags:
            stored = self._flags = [0] * size
            stored[i] = flags
        self.count += 1
        if flags & FAILED:
            self.failures += 1
        if flags & SLOW:
            self.slow += 1

    def push_success(self, now: float) -> None:
        """`record(now, 0)` for a window that holds no failed or slow outcome.

        Every live flag is then 0, so a full window only moves its head: the breaker's
        hot path (a success while all is well) costs a couple of stores.
        """
        h = self._head
        n = self.count
        size = self._size
        if n == size:
            self._times[h] = now
            h += 1
            self._head = 0 if h == size else h
        else:
            i = h + n
            if i >= size:
                i -= size
            self._times[i] = now
            flags = self._flags
            if flags is not None:
                flags[i] = 0  # the slot may hold a flag from before a clear()
            self.count = n + 1

    def expire(self, now: float) -> None:
        """Drop outcomes recorded more than `duration` seconds before `now`."""
        horizon = now - self._duration
        times = self._times
        while self.count and times[self._head] < horizon:
            self._drop_oldest()

    def shift(self, delta: float) -> None:
        """Move every outcome's time by `delta` seconds (the breaker's clock changed)."""
        times = self._times
        for i in range(self._size):
            times[i] += delta

    def clear(self) -> None:
        self._head = 0
        self.count = self.failures = self.slow = 0

    def _drop_oldest(self) -> None:
        h = self._head
        stored = self._flags
        flags = 0 if stored is None else stored[h]
        if flags & FAILED:
            self.failures -= 1
        if flags & SLOW:
            self.slow -= 1
        self.count -= 1
        h += 1
        self._head = 0 if h == self._size else h
