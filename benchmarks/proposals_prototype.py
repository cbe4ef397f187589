"""Prototype of proposed hot paths for _breaker.py / _errors.py (not library code).

Measured against the current code by benchmarks in the final report of the benchmark
helper; `Fast` passed a differential check against `CircuitBreaker` (300 random
sequences of successes, failures, slow calls and clock jumps: same states, counters,
window and rejections). Not imported by the suite.
"""
from __future__ import annotations

import logging

from httpx_breaker import _breaker as B
from httpx_breaker._breaker import (
    _CLOSED,
    _OPEN,
    DRY_RUN,
    FAILURE,
    IGNORED,
    SUCCESS,
    CircuitBreaker,
)
from httpx_breaker._errors import CircuitOpenError


class LazyOpenError(CircuitOpenError):
    """Proposal: build the message only when it is printed."""
    def __init__(self, key, state, retry_after, *, request=None):
        self.key = key; self.state = state; self.retry_after = retry_after
        self._request = request
        self.args = (key,)
    def __str__(self):
        if self.retry_after is None:
            return f"circuit breaker {self.key!r} is {self.state.value}"
        return f"circuit breaker {self.key!r} is {self.state.value}; retry after {self.retry_after:.3f}s"

class Fast(CircuitBreaker):
    __slots__ = ()

    def call(self, fn, /, *args, **kwargs):
        # _acquire inlined
        token = self._epoch
        if self._state is not _CLOSED:
            token = self._acquire_slow()
        clock = self._clock
        start = clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            end = clock()
            outcome = self._classify(None, exc)
            if outcome != IGNORED and self._overran(start, end):
                outcome = FAILURE
            self._record(token, outcome, start, end)
            raise
        end = clock()
        if self._classifier is None:
            timeout = self._config.timeout
            if timeout is not None and end - start > timeout:
                self._record(token, FAILURE, start, end)
            else:
                self._record_success(token, start, end)
            return result
        outcome = self._classify(result, None)
        if self._overran(start, end):
            outcome = FAILURE
        self._record(token, outcome, start, end)
        return result

    async def call_async(self, fn, /, *args, **kwargs):
        token = self._epoch
        if self._state is not _CLOSED:
            token = self._acquire_slow()
        clock = self._clock
        start = clock()
        timeout = self._config.timeout
        try:
            if timeout is None:
                result = await fn(*args, **kwargs)
            else:
                result = await B.run_with_deadline(fn(*args, **kwargs), timeout, self._name)
        except BaseException as exc:
            self._record(token, self._classify(None, exc), start, clock())
            raise
        end = clock()
        if self._classifier is None:
            self._record_success(token, start, end)
        else:
            self._record(token, self._classify(result, None), start, end)
        return result

    def _record_success(self, token, start, end):
        """Proposal: the CLOSED success path, inlined; anything unusual goes the general way."""
        config = self._config
        duration = end - start
        slow_after = config.slow_call_duration
        if (slow_after is not None and duration >= slow_after) or self._listeners or token == DRY_RUN:
            self._record(token, SUCCESS, start, end)
            return
        events = None
        with self._lock:
            general = (
                self._deferred or token != self._epoch
                or self._state is not _CLOSED or self._forced is not None
            )
            if not general:
                counts = self._counts
                counts[0] += 1
                counts[5] += 1
                counts[6] += duration
                self._consecutive = 0
                w = self._window
                count = w.count
                if count and w._times[w._head] < end - w._duration:
                    w.expire(end)
                    count = w.count
                size = w._size
                if count == size:
                    w._drop_oldest()
                    count -= 1
                i = w._head + count
                if i >= size:
                    i -= size
                w._times[i] = end
                w._flags[i] = 0
                count += 1
                w.count = count
                failures = w.failures
                if (failures or w.slow) and count >= config.effective_minimum_requests:
                    cause = None
                    if failures >= config.failure_rate_threshold * count:
                        cause = "failure_rate"
                    elif slow_after is not None and w.slow >= config.slow_call_rate_threshold * count:
                        cause = "slow_call_rate"
                    if cause is not None:
                        events = []
                        self._transition(_OPEN, end, cause, events)
        if general:
            self._record(token, SUCCESS, start, end)
        elif events:
            self._emit(events)

    def _acquire_slow(self):
        # Proposal: the OPEN rejection without events, lists or extra frames.
        if self._listeners or self._config.dry_run:
            return super()._acquire_slow()
        lock = self._lock
        lock.acquire()
        if self._deferred or self._state is not _OPEN or self._forced is not None:
            lock.release()
            return super()._acquire_slow()
        now = self._clock()
        until = self._open_until
        if now >= until:
            lock.release()
            return super()._acquire_slow()
        self._counts[3] += 1
        lock.release()
        if B.logger.isEnabledFor(logging.DEBUG):
            B.logger.debug("circuit breaker %r rejected a call (%s)", self._name, "open")
        raise LazyOpenError(self._name, _OPEN, until - now)
