"""CircuitBreaker: the I/O-free state machine every other part stands on.

A call asks for a permit (`admit`), runs, and reports its outcome (`record`, or
`record_success`), or hands the permit back unjudged (`release`): that is the whole
protocol the transports and the decorator speak (`PermitProtocol`). The permit is a
token: the breaker's epoch when it was granted. Every state change bumps the epoch, so
an outcome from an earlier state still counts in the metrics but can no longer move the
state, and a half-open probe slot is returned exactly once.

Thread safety: one `threading.Lock` guards every change; the CLOSED admission reads
two attributes without it (a race only makes a call look as if it came a moment
earlier). No lock is held while user code, listeners or an `await` run.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from ._bulkhead import Bulkhead, _in_trio_task
from ._config import CircuitBreakerConfig
from ._deadline import run_with_deadline
from ._errors import BulkheadFullError, CircuitOpenError
from ._metrics import BreakerMetrics
from ._state import BreakerEvent, CircuitState
from ._window import FAILED, SLOW, SlidingWindow

if TYPE_CHECKING:
    from ._shared import BreakerSide

__all__ = [
    "DRY_RUN",
    "FAILURE",
    "IGNORED",
    "SUCCESS",
    "CircuitBreaker",
    "PermitProtocol",
    "ResultClassifier",
]

logger = logging.getLogger("httpx_breaker")
# A library does not decide where its records go; without this, WARNINGs would reach
# stderr through logging's last-resort handler in applications that set up no logging.
logger.addHandler(logging.NullHandler())

T = TypeVar("T")

ResultClassifier = Callable[[Any, BaseException | None], "bool | None"]
"""`(result, exception) -> True (failure) | False (success) | None (ignore)`."""

Listener = Callable[[BreakerEvent], object]
StateListener = Callable[[CircuitState, CircuitState], object]

# Outcomes of one call, as `record` takes them.
SUCCESS: Final = 0
FAILURE: Final = 1
IGNORED: Final = 2

# The permit of a call that dry-run let through although it would have been refused:
# its outcome is not recorded.
DRY_RUN: Final = -1

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN

STATE_CHANGES_KEPT: Final = 1000

# Throughput is counted per bucket of window_duration / THROUGHPUT_BUCKETS seconds;
# a breaker with traffic keeps the counts at the last THROUGHPUT_BUCKETS + 2 bucket
# boundaries (enough to reach back a whole window_duration), nothing per call.
THROUGHPUT_BUCKETS: Final = 6

# Where each state's seconds are kept in `_state_seconds` (the fourth slot holds the
# OPEN seconds at creation or the last reset(), for availability).
_SECONDS_INDEX: Final = {_CLOSED: 0, _OPEN: 1, _HALF_OPEN: 2}
_OPEN_AT_BIRTH: Final = 3

# Every live breaker, in order of creation; a breaker nobody holds drops out by itself.
# Keyed by a serial number rather than the name, so that when the newer of two
# breakers sharing a name is dropped, the older one (still alive) is listed again.
_live: weakref.WeakValueDictionary[int, CircuitBreaker] = weakref.WeakValueDictionary()
_live_serial = itertools.count()
_live_lock = threading.Lock()


def _live_breakers() -> dict[str, CircuitBreaker]:
    """Every live breaker by name; on a name clash the most recently created wins."""
    with _live_lock:
        breakers = list(_live.values())  # creation order: dicts keep insertion order
    return {breaker.name: breaker for breaker in breakers}


class PermitProtocol(Protocol):
    """What code that runs a call itself (the transports) needs from a breaker.

    `admit()` before the call, then exactly one of `record`, `record_success` or
    `release` with the permit it returned. With a `bulkhead` (`max_concurrent`), a
    slot too: ``bulkhead.try_acquire()`` after `admit()`, else `wait_for_slot` (or its
    async twin), which may replace the permit; ``bulkhead.release()`` when the call
    ends. `CircuitBreaker` is the implementation; see its methods for the details.
    """

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> CircuitBreakerConfig: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def bulkhead(self) -> Bulkhead | None: ...

    def admit(self) -> int: ...

    def wait_for_slot(self, token: int) -> tuple[int, Bulkhead | None]: ...

    async def wait_for_slot_async(self, token: int) -> tuple[int, Bulkhead | None]: ...

    def record(
        self,
        token: int,
        outcome: int,
        start: float,
        end: float,
        retry_after: float | None = None,
        now: float | None = None,
    ) -> None: ...

    def record_success(
        self, token: int, start: float, end: float, now: float | None = None
    ) -> None: ...

    def release(self, token: int) -> None: ...


class CircuitBreaker:
    """A circuit breaker: CLOSED, OPEN and HALF_OPEN, with exact metrics and listeners.

    Args:
        name: how the breaker is known in metrics, logs and `get_all_circuit_breakers()`.
        config: its policy; `CircuitBreakerConfig()` when omitted.
        classifier: `(result, exception) -> bool | None` deciding each call's outcome
            (True = failure, False = success, None = ignore), for functions that return
            their failures instead of raising. By default an exception is a failure
            (unless in `exclude_exceptions`) and a return is a success.
        clock: monotonic seconds; `time.monotonic` by default. Tests inject a fake one
            (or swap one in later with `set_clock`).

    Besides `call` / `call_async`, a breaker speaks a small protocol for code that
    runs the call itself, as the transports do (`PermitProtocol`): `admit()` before
    the call returns a permit (or raises `CircuitOpenError`); then exactly one of
    `record(permit, outcome, start, end)`, `record_success(permit, start, end)` or
    `release(permit)` settles it. `transition_to` and `set_clock` are the seams for
    test helpers and for state shared between processes.

    ```python
    primary_db = CircuitBreaker("primary_db", CircuitBreakerConfig(failure_threshold=5))
    rows = await primary_db.call_async(fetch_rows, "SELECT 1")   # or .call() for sync code
    primary_db.get_metrics().failure_rate
    ```

    Raises:
        TypeError: `name` is not a `str`, `config` not a `CircuitBreakerConfig`, or
            `classifier` or `clock` not callable.
    """

    __slots__ = (
        "__weakref__",
        "_born",
        "_bulkhead",
        "_classifier",
        "_clock",
        "_config",
        "_consecutive",
        "_deferred",
        "_entered",
        "_epoch",
        "_failed_rounds",
        "_fast_epoch",
        "_fleet",
        "_forced",
        "_held",
        "_listeners",
        "_lock",
        "_n_failure",
        "_n_ignored",
        "_n_rejected",
        "_n_slow",
        "_n_success",
        "_name",
        "_open_until",
        "_probes_in_flight",
        "_probes_slow",
        "_probes_succeeded",
        "_random",
        "_slow_after",
        "_state",
        "_state_changes",
        "_state_seconds",
        "_time_sum",
        "_tp_marks",
        "_tp_next",
        "_transition_counts",
        "_window",
        "on_state_change",
    )

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        *,
        classifier: ResultClassifier | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        if config is None:
            config = CircuitBreakerConfig()
        elif not isinstance(config, CircuitBreakerConfig):
            raise TypeError(f"config must be a CircuitBreakerConfig, got {config!r}")
        if classifier is not None and not callable(classifier):
            raise TypeError(f"classifier must be callable, got {classifier!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self._name = name
        self._config = config
        # The per-breaker concurrency limit (`max_concurrent`), or None. Fixed with the
        # config: reset() and forcing leave it alone, since requests in flight are real.
        self._bulkhead = Bulkhead.from_config(config)
        self._classifier = classifier
        self._clock: Callable[[], float] = clock or time.monotonic
        self._random: Callable[[], float] = random.random
        # Re-entrant only so that a finaliser can tell it runs inside one of this
        # thread's own locked steps (the collector may run at any allocation there):
        # `_held()` is True then, and the finaliser defers instead of waiting for itself.
        # No step of ours takes the lock twice.
        self._lock = threading.RLock()
        self._held: Callable[[], bool] = self._lock._is_owned  # type: ignore[attr-defined]
        self._state = _CLOSED
        self._epoch = 0
        # Equal to _epoch while a success needs no more than counting: CLOSED, not
        # forced, nobody listening. Otherwise -2, which no token ever is.
        self._fast_epoch = 0
        self._forced: CircuitState | None = None
        self._window = SlidingWindow(config.window_size, config.window_duration)
        # `slow_call_duration`, or infinity without one (the hot path compares once).
        slow = config.slow_call_duration
        self._slow_after = math.inf if slow is None else slow
        self._consecutive = 0
        self._open_until = 0.0
        self._failed_rounds = 0
        self._probes_in_flight = 0
        self._probes_succeeded = 0
        self._probes_slow = 0
        self._n_success = self._n_failure = self._n_ignored = 0
        self._n_rejected = self._n_slow = 0
        self._time_sum = 0.0  # summed durations of successful and failed calls
        # Made on the first state change, like _state_changes: an idle breaker stays small.
        self._transition_counts: dict[tuple[CircuitState, CircuitState], int] | None = None
        self._state_changes: deque[tuple[float, CircuitState, CircuitState]] | None = None
        self._listeners: tuple[Listener, ...] = ()
        self._deferred: list[int] = []
        # The breaker's side of a shared store (`_shared`), when a registry attached one.
        self._fleet: BreakerSide | None = None
        # Time, for availability and time per state: when the current state was entered,
        # when the breaker was made or last reset(), and (made on the first state change)
        # the seconds spent in each state before `_entered`.
        now = self._clock()
        self._entered = self._born = now
        self._state_seconds: list[float] | None = None
        # Throughput: the end of the current bucket, and (made on the first call) the
        # flat list [time, calls before it, time, calls before it, ...] of boundaries.
        self._tp_next = now
        self._tp_marks: list[float] | None = None
        self.on_state_change: StateListener | None = None
        """Called as `fn(old_state, new_state)` after every state change."""
        with _live_lock:
            _live[next(_live_serial)] = self

    # -- what it is -------------------------------------------------------------

    @property
    def name(self) -> str:
        """The breaker's name (for a transport's breaker, its key)."""
        return self._name

    @property
    def config(self) -> CircuitBreakerConfig:
        """The breaker's policy."""
        return self._config

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the breaker reads."""
        return self._clock

    @property
    def bulkhead(self) -> Bulkhead | None:
        """The breaker's concurrency limit (`max_concurrent`), or None without one.

        Code that runs calls itself (the transports) takes a slot after `admit()`
        (``bulkhead.try_acquire()``, then `wait_for_slot` / `wait_for_slot_async` if
        none is free at once) and gives it back with ``bulkhead.release()`` when the
        call ends, exactly once.
        """
        return self._bulkhead

    @property
    def state(self) -> CircuitState:
        """The current state; an OPEN breaker whose open period has ended reads HALF_OPEN."""
        if self._state is _OPEN and self._forced is None and self._clock() >= self._open_until:
            events: list[BreakerEvent] = []
            with self._lock:
                now = self._clock()
                if self._state is _OPEN and self._forced is None and now >= self._open_until:
                    self._transition(_HALF_OPEN, now, "reset_timeout", events)
            self._emit(events)
        return self._state

    def get_state(self) -> CircuitState:
        """The current state (the seed's spelling of `state`)."""
        return self.state

    def is_open(self) -> bool:
        """Whether the breaker is OPEN (refusing calls) now; see `state`."""
        return self.state is _OPEN

    def is_closed(self) -> bool:
        """Whether the breaker is CLOSED (letting calls through) now; see `state`."""
        return self.state is _CLOSED

    def is_half_open(self) -> bool:
        """Whether the breaker is HALF_OPEN (letting probes through) now; see `state`."""
        return self.state is _HALF_OPEN

    @property
    def retry_after(self) -> float | None:
        """Seconds until a call may pass: what `CircuitOpenError.retry_after` would say.

        0.0 when a call would pass now (CLOSED, or HALF_OPEN with a free probe slot);
        the rest of the open period when OPEN; None when nobody can tell (forced open,
        or HALF_OPEN with every probe slot taken: a slot frees when a probe ends).
        """
        state = self.state
        if state is _CLOSED:
            return 0.0
        if state is _OPEN:
            if self._forced is _OPEN:
                return None
            return max(0.0, self._open_until - self._clock())
        if self._deferred:  # a probe handed back while another thread held the lock
            with self._lock:
                self._drain_deferred()
        if self._probes_in_flight + self._probes_succeeded < self._config.half_open_max_requests:
            return 0.0
        return None

    def get_metrics(self) -> BreakerMetrics:
        """An immutable snapshot of the counters, rates and recent state changes."""
        state = self.state
        with self._lock:
            # Permits handed back while another thread held the lock (`release`) are
            # counted before the snapshot, not at the breaker's next call.
            if self._deferred:
                self._drain_deferred()
            now = self._clock()
            ok, failed, ignored = self._n_success, self._n_failure, self._n_ignored
            rejected, slow, total_time = self._n_rejected, self._n_slow, self._time_sum
            counts = self._transition_counts
            transitions = tuple((old, new, n) for (old, new), n in counts.items()) if counts else ()
            changes = tuple(self._state_changes) if self._state_changes else ()
            window = self._window
            # The window only expires when an outcome is recorded; show it as of now.
            window.expire(now)
            window_count, window_failures, window_slow = window.count, window.failures, window.slow
            consecutive = self._consecutive
            if now >= self._tp_next:
                self._roll_throughput(now)
            throughput = self._throughput(now)
            closed_s, open_s, half_open_s, open_at_birth = self._seconds_in_states(now)
            lifetime = now - self._born
        recorded = ok + failed
        bulkhead = self._bulkhead
        if bulkhead is None:
            bulkhead_rejected, in_flight, waiting, limit = 0, None, None, None
        else:  # plain reads of its own gauges: no lock of ours needed
            bulkhead_rejected, in_flight = bulkhead.rejected, bulkhead.in_use
            waiting, limit = bulkhead.waiting, bulkhead.limit
        if lifetime > 0.0:
            availability = min(1.0, max(0.0, 1.0 - (open_s - open_at_birth) / lifetime))
        else:
            availability = 1.0
        return BreakerMetrics(
            total_requests=ok + failed + ignored,
            successful_requests=ok,
            failed_requests=failed,
            rejected_requests=rejected,
            ignored_requests=ignored,
            slow_requests=slow,
            success_rate=ok / recorded if recorded else 1.0,
            failure_rate=failed / recorded if recorded else 0.0,
            average_response_time=total_time / recorded if recorded else 0.0,
            total_response_time=total_time,
            state_change_counts=transitions,
            state=state,
            consecutive_failures=consecutive,
            window_requests=window_count,
            window_failures=window_failures,
            window_slow_requests=window_slow,
            state_changes=changes,
            throughput=throughput,
            availability=availability,
            state_seconds=((_CLOSED, closed_s), (_OPEN, open_s), (_HALF_OPEN, half_open_s)),
            bulkhead_rejected_requests=bulkhead_rejected,
            bulkhead_in_flight_requests=in_flight,
            bulkhead_waiting_requests=waiting,
            bulkhead_limit=limit,
        )

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self._state.value}>"

    def __reduce__(self) -> tuple[Callable[..., CircuitBreaker], tuple[Any, ...]]:
        """Pickled and copied (`copy.copy` too) as its configuration: the copy is a new
        breaker, CLOSED with no history, of the same name, config, classifier, clock,
        listeners and `on_state_change`.

        A breaker's state belongs to its process, as a `BreakerRegistry`'s copy says: a
        copy would wait for the closes of permits in flight that never reach it, and a
        copy of the fields would share the lock and the failure window but not the
        state, so calls through either would move the other's window. The copy is
        listed by `get_all_circuit_breakers()` under the same name, in place of the
        original while both live (the newer wins). A breaker that shares its state
        through a store is not copied: each process makes its own store.

        Raises:
            TypeError: the breaker shares its state through a store.
        """
        if self._fleet is not None:
            raise TypeError(
                f"circuit breaker {self._name!r} shares its state through a store and "
                "cannot be pickled or copied: make the store, and the registry over it, "
                "in each process"
            )
        return _from_configuration, (
            type(self),
            self._name,
            self._config,
            self._classifier,
            self._clock,
            self._listeners,
            self.on_state_change,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> CircuitBreaker:
        # Built from the same objects, not copies of them: the config is frozen, and the
        # clock, classifier and listeners are the caller's (a test advances its clock).
        rebuild, args = self.__reduce__()
        return rebuild(*args)

    # -- listeners --------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(event)` for every `BreakerEvent`: state changes, rejections and
        each call's outcome. Listeners run outside the breaker's lock; an exception in
        one is logged and never reaches the call."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        with self._lock:
            self._listeners = (*self._listeners, listener)
            self._refresh_fast_epoch()

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling `listener`; a listener that was never added is ignored."""
        with self._lock:
            # Equality, not identity: `obj.method` is a new bound method at every access.
            self._listeners = tuple(x for x in self._listeners if x != listener)
            self._refresh_fast_epoch()

    # -- manual control ---------------------------------------------------------

    def force_open(self) -> None:
        """Refuse every call until `reset()` (a dry-run breaker still lets them through)."""
        self._force(_OPEN)

    def force_closed(self) -> None:
        """Let every call through and never open, until `reset()`."""
        self._force(_CLOSED)

    def _force(self, state: CircuitState) -> None:
        events: list[BreakerEvent] = []
        with self._lock:
            now = self._clock()
            self._settle_time(now)  # under the old rules: an ended open period is HALF_OPEN time
            self._forced = state
            if self._state is not state:
                self._transition(state, now, "forced", events)
            else:
                self._epoch += 1
            if state is _OPEN:
                self._open_until = math.inf
            self._refresh_fast_epoch()
        self._emit(events)

    def reset(self) -> None:
        """Return to CLOSED with an empty window, ending any forced state; counters stay.

        Availability starts over (it covers the time since creation or the last reset);
        the time spent in each state, like every other counter, does not.
        """
        events: list[BreakerEvent] = []
        with self._lock:
            now = self._clock()
            seconds = self._settle_time(now)
            seconds[_OPEN_AT_BIRTH] = seconds[_SECONDS_INDEX[_OPEN]]
            self._born = self._entered
            self._forced = None
            if self._state is not _CLOSED:
                self._transition(_CLOSED, now, "reset", events)
            else:
                self._epoch += 1
                self._window.clear()
                self._consecutive = 0
                self._failed_rounds = 0
            self._refresh_fast_epoch()
        self._emit(events)

    # -- seams for test helpers and shared state ----------------------------------

    def transition_to(
        self,
        state: CircuitState,
        *,
        cause: str,
        open_for: float | timedelta | None = None,
    ) -> bool:
        """Enter `state` now as the breaker's own transitions do; False if it is forced.

        For test helpers (`httpx_breaker.testing.set_state`) and for state received
        from elsewhere (another process's breaker for the same host opened: open this
        one for the time it has left). It is a normal transition: a new epoch, so
        outcomes of calls admitted before it still count in the metrics but no longer
        move the state (and probe slots of an earlier round are not returned to the new
        one); listeners and the log hear a state change with `cause`; the metrics and
        the exporters count it. No success or failure is counted.

        - OPEN: an open period of `open_for` seconds (float or `timedelta`; as given,
          with no jitter or cap), or the policy's own (backoff, jitter, cap) when None.
        - HALF_OPEN: a new probe round with every slot free. From CLOSED the breaker
          goes through OPEN for no time (two state changes: `cause`, then
          ``"reset_timeout"``), since CLOSED -> HALF_OPEN is no change it ever makes.
        - CLOSED: an empty window; backoff starts over.

        Entering the state the breaker is in starts it over (a new epoch; a new open
        period, probe round or empty window) without a state change. An open period
        that has ended counts as HALF_OPEN first, as `state` would read. A breaker held
        by `force_open()` / `force_closed()` is left as it is (until `reset()`).

        Returns:
            True if the breaker entered `state`; False if it is forced.

        Raises:
            TypeError: `state` is not a `CircuitState`, `cause` not a str, or
                `open_for` not seconds.
            ValueError: `cause` is empty, or `open_for` is negative, not finite, or
                given for a state other than OPEN.
        """
        if not isinstance(state, CircuitState):
            raise TypeError(f"state must be a CircuitState, got {state!r}")
        if not isinstance(cause, str):
            raise TypeError(f"cause must be a str, got {cause!r}")
        if not cause:
            raise ValueError("cause must not be empty")
        period = None if open_for is None else _open_for(state, open_for)
        events: list[BreakerEvent] = []
        with self._lock:
            if self._forced is not None:
                return False
            if self._deferred:
                self._drain_deferred()
            now = self._clock()
            if self._state is _OPEN and now >= self._open_until:
                self._transition(_HALF_OPEN, now, "reset_timeout", events)
            current = self._state
            if current is state:
                self._settle_time(now)
                self._enter(state, now, period)
            elif current is _CLOSED and state is _HALF_OPEN:
                self._transition(_OPEN, now, cause, events, 0.0)
                self._transition(_HALF_OPEN, now, "reset_timeout", events)
            else:
                self._transition(state, now, cause, events, period)
        self._emit(events)
        return True

    def set_clock(self, clock: Callable[[], float]) -> Callable[[], float]:
        """Read `clock` from now on; return the clock read until now.

        Every time the breaker keeps moves onto the new clock, so that what was x
        seconds ago on the old clock is x seconds ago on the new one: a running open
        period keeps the time it has left, the window's outcomes keep their ages (and
        still leave it `window_duration` after they were recorded), and so do the time
        in each state, availability, throughput and `state_changes`. A call in flight
        measures its duration on the clock it started with: swap between calls.

        Raises:
            TypeError: `clock` is not callable.
        """
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        with self._lock:
            old = self._clock
            delta = clock() - old()
            self._clock = clock
            if delta:
                self._shift_times(delta)
        return old

    def _attach_fleet(self, side: BreakerSide | None) -> None:
        """Share this breaker's state through a store (`_shared.attach`), or stop (None)."""
        with self._lock:
            self._fleet = side
            self._refresh_fast_epoch()

    def _shift_times(self, delta: float) -> None:
        """Move every time the breaker keeps by `delta` seconds (locked)."""
        if math.isfinite(self._open_until):
            self._open_until += delta
        self._entered += delta
        self._born += delta
        self._tp_next += delta
        marks = self._tp_marks
        if marks:
            for i in range(0, len(marks), 2):
                marks[i] += delta
        self._window.shift(delta)
        changes = self._state_changes
        if changes:
            self._state_changes = deque(
                ((t + delta, old, new) for t, old, new in changes), maxlen=STATE_CHANGES_KEPT
            )

    # -- calling through the breaker --------------------------------------------

    async def call_async(
        self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any
    ) -> T:
        """Await `fn(*args, **kwargs)` through the breaker.

        With `max_concurrent` set, the call holds a slot of the breaker's bulkhead
        while `fn` runs, and waits up to `max_wait` for one (cancellable).

        Raises:
            CircuitOpenError: the breaker refused the call; `fn` was not called.
            BulkheadFullError: `max_concurrent` calls were in flight and no slot came
                free within `max_wait`; `fn` was not called.
            CircuitTimeoutError: the call outlived `config.timeout` and was cancelled.
        """
        token = self._epoch  # admit(), inlined: this is the hot path
        if self._state is not _CLOSED:
            token = self._admit_slow()
        bulkhead = self._bulkhead
        if bulkhead is not None and not bulkhead.try_acquire():
            token, bulkhead = await self.wait_for_slot_async(token)
        clock = self._clock
        start = clock()
        timeout = self._config.timeout
        try:
            if timeout is None:
                # `fn(*args, **kwargs)` builds a copy of `kwargs` at every call: none here.
                result = await (fn(*args, **kwargs) if kwargs else fn(*args))
            else:
                result = await run_with_deadline(fn(*args, **kwargs), timeout, self._name)
        except BaseException as exc:
            if bulkhead is not None:
                bulkhead.release()
            self.record(token, self._classify(None, exc), start, clock())
            raise
        if bulkhead is not None:
            bulkhead.release()
        if self._classifier is None:
            self.record_success(token, start, clock())
        else:
            self.record(token, self._classify(result, None), start, clock())
        return result

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call `fn(*args, **kwargs)` through the breaker.

        A sync call cannot be abandoned: one that outlives `config.timeout` is recorded
        as a failure and its result is still returned. With `max_concurrent` set, the
        call holds a slot of the breaker's bulkhead while `fn` runs; the calling thread
        waits up to `max_wait` for one.

        Raises:
            CircuitOpenError: the breaker refused the call; `fn` was not called.
            BulkheadFullError: `max_concurrent` calls were in flight and no slot came
                free within `max_wait`; `fn` was not called.
        """
        token = self._epoch  # admit(), inlined: this is the hot path
        if self._state is not _CLOSED:
            token = self._admit_slow()
        bulkhead = self._bulkhead
        if bulkhead is not None and not bulkhead.try_acquire():
            token, bulkhead = self.wait_for_slot(token)
        clock = self._clock
        start = clock()
        try:
            # `fn(*args, **kwargs)` builds a copy of `kwargs` at every call: none here.
            result = fn(*args, **kwargs) if kwargs else fn(*args)
        except BaseException as exc:
            if bulkhead is not None:
                bulkhead.release()
            end = clock()
            outcome = self._classify(None, exc)
            if outcome != IGNORED and self._overran(start, end):
                outcome = FAILURE
            self.record(token, outcome, start, end)
            raise
        if bulkhead is not None:
            bulkhead.release()
        end = clock()
        timeout = self._config.timeout
        if timeout is not None and end - start > timeout:
            self.record(token, FAILURE, start, end)
        elif self._classifier is None:
            self.record_success(token, start, end)
        else:
            self.record(token, self._classify(result, None), start, end)
        return result

    def _call_or_defer(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        """`call`, except that an awaitable result is judged when it is awaited.

        For `@circuit_breaker` on a plain function that returns an awaitable: the
        permit is taken before `fn` runs (a refused call never runs it), and the outcome
        is that of the await, which the returned coroutine performs. A coroutine that is
        never awaited returns its permit when it is garbage-collected (ignored).

        A bulkhead slot is held likewise, until the await ends. The thread waits for one
        as in `call`, except in an event loop, which must not block (and where `fn`
        likely returns a coroutine): there a full bulkhead refuses at once.
        """
        token = self.admit()
        bulkhead = self._bulkhead
        if bulkhead is not None and not bulkhead.try_acquire():
            acquire = bulkhead.acquire_now if _in_event_loop() else bulkhead.acquire
            token, bulkhead = self._slot_after(token, bulkhead, acquire)
        clock = self._clock
        start = clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if bulkhead is not None:
                bulkhead.release()
            end = clock()
            outcome = self._classify(None, exc)
            if outcome != IGNORED and self._overran(start, end):
                outcome = FAILURE
            self.record(token, outcome, start, end)
            raise
        if isinstance(result, Awaitable):
            # The permit, and the slot if any, go with the coroutine.
            return self._await_deferred(_Permit(self, token, bulkhead), start, result)
        if bulkhead is not None:
            bulkhead.release()
        end = clock()
        if self._overran(start, end):
            self.record(token, FAILURE, start, end)
        elif self._classifier is None:
            self.record_success(token, start, end)
        else:
            self.record(token, self._classify(result, None), start, end)
        return result

    async def _await_deferred(self, permit: _Permit, start: float, awaitable: Awaitable[T]) -> T:
        """Await what `_call_or_defer` got back, and record its outcome on the permit."""
        token = permit.token
        clock = self._clock
        timeout = self._config.timeout
        try:
            if timeout is None:
                result = await awaitable
            else:
                result = await run_with_deadline(awaitable, timeout, self._name)
        except BaseException as exc:
            permit.settled = True
            permit.release_slot()
            self.record(token, self._classify(None, exc), start, clock())
            raise
        permit.settled = True
        permit.release_slot()
        if self._classifier is None:
            self.record_success(token, start, clock())
        else:
            self.record(token, self._classify(result, None), start, clock())
        return result

    def _overran(self, start: float, end: float) -> bool:
        timeout = self._config.timeout
        return timeout is not None and end - start > timeout

    def _classify(self, result: object, exc: BaseException | None) -> int:
        """The outcome of one call, from the configured rules and classifier."""
        if exc is not None:
            if not isinstance(exc, Exception):
                return IGNORED  # cancellation, KeyboardInterrupt: neither success nor failure
            if self._config.exclude_exceptions and isinstance(
                exc, self._config.exclude_exceptions
            ):
                return IGNORED
        classifier = self._classifier
        if classifier is None:
            return SUCCESS if exc is None else FAILURE
        try:
            verdict = classifier(result, exc)
        except Exception:
            logger.exception(
                "classifier of circuit breaker %r raised; the outcome is ignored",
                self._name,
                extra={"circuit_breaker": self._name},
            )
            return IGNORED
        return outcome_of(verdict, self._name)

    # -- the bulkhead ---------------------------------------------------------------

    def wait_for_slot(self, token: int) -> tuple[int, Bulkhead | None]:
        """For a call admitted with permit `token` that found no free slot at once
        (``bulkhead.try_acquire()`` was False): wait for one in this thread.

        A half-open probe permit is handed back for the wait (the round may go on
        without it), and once a slot is held the call is admitted again, since the
        state may have moved meanwhile. Waits up to `max_wait`, in arrival order.

        Returns:
            The permit to settle (maybe a new one) and the bulkhead whose slot the call
            now holds: release it when the call ends. None instead of the bulkhead when
            a dry-run breaker lets the call through without a slot (counted as a
            bulkhead rejection, never waited for).

        Raises:
            BulkheadFullError: no slot came free within `max_wait` (nothing is held;
                the breaker does not move).
            CircuitOpenError: the breaker refused the call after the wait (the slot is
                given back).
        """
        bulkhead = self._bulkhead
        if bulkhead is None:
            return token, None
        return self._slot_after(token, bulkhead, bulkhead.acquire)

    async def wait_for_slot_async(self, token: int) -> tuple[int, Bulkhead | None]:
        """`wait_for_slot` for a task (asyncio or trio): the wait is cancellable, and a
        cancelled wait holds nothing."""
        bulkhead = self._bulkhead
        if bulkhead is None:
            return token, None
        if self._config.dry_run:
            self._overflow(bulkhead)
            return token, None
        self._return_unused(token)
        if not await bulkhead.acquire_async():
            raise self._bulkhead_refused(bulkhead)
        return self._admit_holding(bulkhead), bulkhead

    def _slot_after(
        self, token: int, bulkhead: Bulkhead, acquire: Callable[[], bool]
    ) -> tuple[int, Bulkhead | None]:
        """`wait_for_slot` with `acquire` as the way to get the slot."""
        if self._config.dry_run:
            self._overflow(bulkhead)
            return token, None
        self._return_unused(token)
        if not acquire():
            raise self._bulkhead_refused(bulkhead)
        return self._admit_holding(bulkhead), bulkhead

    def _admit_holding(self, bulkhead: Bulkhead) -> int:
        """`admit()` for a call that holds a slot: a refusal gives the slot back."""
        try:
            return self.admit()
        except BaseException:
            bulkhead.release()
            raise

    def _return_unused(self, token: int) -> None:
        """Hand back a permit whose call never ran: a probe slot of the current round
        frees; nothing is counted (unlike `release`, which counts it as ignored)."""
        if token == DRY_RUN or self._state is not _HALF_OPEN:
            return  # a CLOSED permit holds nothing; a state change ended the round
        with self._lock:
            if self._deferred:
                self._drain_deferred()
            if token == self._epoch and self._state is _HALF_OPEN:
                self._probes_in_flight -= 1
                if self._fleet is not None:  # and the fleet's lease, for another replica
                    self._fleet.probe_done(token, IGNORED, False)

    def _overflow(self, bulkhead: Bulkhead) -> None:
        """A dry run over the limit: count it and report it, hold no slot, never wait."""
        bulkhead.count_rejection()
        self._report_bulkhead(bulkhead, "let through (dry run)")

    def _bulkhead_refused(self, bulkhead: Bulkhead) -> BulkheadFullError:
        """Report a refusal (the bulkhead counted it); the error to raise."""
        self._report_bulkhead(bulkhead, "request refused")
        return BulkheadFullError(self._name, bulkhead.limit)

    def _report_bulkhead(self, bulkhead: Bulkhead, what: str) -> None:
        if self._listeners:
            state = self._state
            event = BreakerEvent("bulkhead_rejected", self._name, state, self._clock())
            self._emit([event])
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "circuit breaker %r: bulkhead full (%d in flight, max_concurrent=%d); %s",
                self._name,
                bulkhead.in_use,
                bulkhead.limit,
                what,
                extra={
                    "circuit_breaker": self._name,
                    "reason": "bulkhead",
                    "limit": bulkhead.limit,
                },
            )

    # -- the permit protocol ------------------------------------------------------

    def admit(self) -> int:
        """Admit one call now and return its permit, or raise `CircuitOpenError`.

        Settle the permit exactly once, when the call ends: `record`, `record_success`
        or `release`. While CLOSED this is two attribute reads; otherwise it takes a
        half-open probe slot or refuses (a dry-run breaker admits what it would refuse,
        with the permit `DRY_RUN`, whose outcome is not recorded).
        """
        epoch = self._epoch
        if self._state is _CLOSED:
            return epoch
        return self._admit_slow()

    def _admit_slow(self) -> int:
        """`admit` for every state but CLOSED: a probe permit, or a rejection."""
        events: list[BreakerEvent] | None = None
        retry_after: float | None = None
        lock = self._lock
        lock.acquire()  # not `with`: the context-manager protocol costs twice as much
        try:
            if self._deferred:
                self._drain_deferred()
            state = self._state
            now = self._clock()
            if state is _OPEN and self._forced is None:
                if now >= self._open_until:
                    events = []
                    self._transition(_HALF_OPEN, now, "reset_timeout", events)
                    state = _HALF_OPEN
                else:
                    retry_after = self._open_until - now
            if state is _CLOSED:
                token = self._epoch
            elif (
                state is _HALF_OPEN
                and self._probes_in_flight + self._probes_succeeded
                < self._config.half_open_max_requests
                # With a fleet to share the round with: only with a lease (never waits).
                and (self._fleet is None or self._fleet.lease(self._epoch))
            ):
                self._probes_in_flight += 1
                token = self._epoch
            else:
                self._n_rejected += 1
                token = DRY_RUN
                if self._listeners:
                    event = BreakerEvent("rejected", self._name, state, now, retry_after=retry_after)
                    events = [*events, event] if events else [event]
        finally:
            lock.release()
        if events:
            self._emit(events)
        if token == DRY_RUN:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "circuit breaker %r rejected a call (%s)",
                    self._name,
                    state.value,
                    extra={"circuit_breaker": self._name, "state": state.value},
                )
            if not self._config.dry_run:
                raise CircuitOpenError(self._name, state, retry_after)
        return token

    def record(
        self,
        token: int,
        outcome: int,
        start: float,
        end: float,
        retry_after: float | None = None,
        now: float | None = None,
    ) -> None:
        """Settle a permit with the call's outcome; move the state if it was admitted in
        the current epoch (an outcome from before a state change only counts).

        Args:
            token: the permit `admit` returned.
            outcome: `SUCCESS`, `FAILURE` or `IGNORED` (constants of this module).
            start: when the call started, on the breaker's clock.
            end: when it ended (for a response: when its headers arrived); `end -
                start` is its duration, for the response time and the slow-call rule.
            retry_after: seconds a failing response asked to wait (``Retry-After``);
                with `respect_retry_after`, a running open period lasts at least that
                long (up to `max_retry_after`).
            now: when the outcome became known (default `end`); for a streamed
                response, when its body closed.
        """
        if token == DRY_RUN:
            return
        duration = end - start
        if now is None:
            now = end
        config = self._config
        slow_after = config.slow_call_duration
        slow = slow_after is not None and outcome != IGNORED and duration >= slow_after
        events: list[BreakerEvent] = []
        shared_floor: float | None = None  # a Retry-After floor for the fleet
        with self._lock:
            if self._deferred:
                self._drain_deferred()
            if now >= self._tp_next:
                self._roll_throughput(now)
            if outcome == SUCCESS:
                self._n_success += 1
            elif outcome == FAILURE:
                self._n_failure += 1
            else:
                self._n_ignored += 1
            if outcome != IGNORED:
                self._time_sum += duration
                if slow:
                    self._n_slow += 1
            state = self._state
            if token == self._epoch and self._forced is None:
                if state is _CLOSED:
                    if outcome != IGNORED:
                        self._record_closed(outcome, slow, now, events)
                        if self._fleet is not None and self._fleet.counts:
                            self._fleet.counted(outcome)
                elif state is _HALF_OPEN:
                    self._record_probe(outcome, slow, now, events)
            if (
                retry_after is not None
                and outcome == FAILURE
                and config.respect_retry_after
                and self._state is _OPEN
                and self._forced is None
                # An open period that has ended is over, noticed or not: extending it
                # would take a breaker that reads HALF_OPEN back to OPEN.
                and now < self._open_until
            ):
                floor = min(max(retry_after, 0.0), config.max_retry_after)
                self._open_until = max(self._open_until, now + floor)
                if self._fleet is not None:
                    shared_floor = floor
            if self._listeners:
                kind = ("success", "failure", "ignored")[outcome]
                events.insert(0, BreakerEvent(kind, self._name, state, now, duration=duration))
        if events or shared_floor is not None:
            self._emit(events, shared_floor)

    def record_success(
        self, token: int, start: float, end: float, now: float | None = None
    ) -> None:
        """`record(token, SUCCESS, start, end, now=now)`, made cheap for the hot path.

        While CLOSED, unforced, unwatched, a success that is not slow only bumps
        counters and, as long as the window holds no failed or slow outcome, no rule can
        fire: no expiry, no checks, no event. Every other case takes `record`.
        """
        if token != self._fast_epoch:  # watched, forced or not CLOSED: no lock twice
            self.record(token, SUCCESS, start, end, None, now)
            return
        if now is None:
            now = end
        lock = self._lock
        lock.acquire()  # not `with`: the context-manager protocol costs twice as much
        try:
            # The epoch again, under the lock (the state may have moved since); and
            # `_slow_after` is infinite without `slow_call_duration`: one comparison.
            duration = end - start
            if token == self._fast_epoch and duration < self._slow_after and not self._deferred:
                if now >= self._tp_next:  # once per throughput bucket, not per call
                    self._roll_throughput(now)
                self._n_success += 1
                self._time_sum += duration
                window = self._window
                if not (window.failures or window.slow):
                    self._consecutive = 0
                    # `window.push_success(now)`, inlined for a full window (the steady
                    # state): it only moves its head.
                    size = window._size
                    if window.count == size:
                        h = window._head
                        window._times[h] = now
                        h += 1
                        window._head = 0 if h == size else h
                    else:
                        window.push_success(now)
                    return  # the lock is released on the way out
                closed_events: list[BreakerEvent] = []
                self._record_closed(SUCCESS, False, now, closed_events)
                events: list[BreakerEvent] | None = closed_events
            else:  # not the fast case, or the state moved since admission
                events = None
        finally:
            lock.release()
        if events is None:
            self.record(token, SUCCESS, start, end, None, now)
        elif events:
            self._emit(events)

    def release(self, token: int) -> None:
        """Settle a permit whose outcome will never be known (counted as ignored).

        For a call that was abandoned (a response dropped unread, a coroutine never
        awaited). Safe to call from a finalizer, even one that runs while this very
        thread holds the breaker's lock: it never blocks. When the lock is taken, the
        permit is settled by the next step that takes it: an outcome recorded, an
        admission while not CLOSED, a `get_metrics` or `retry_after` read.
        """
        if token == DRY_RUN:
            return
        if not self._held() and self._lock.acquire(blocking=False):
            try:
                self._release_one(token)
            finally:
                self._lock.release()
        else:
            self._deferred.append(token)

    # 0.1's private names, deprecated in 0.2 (the transports use the names above); kept
    # for code outside the package that reached for them. Remove in 0.3.
    _acquire = admit
    _record = record
    _record_success = record_success
    _release_abandoned = release

    # -- the state machine ------------------------------------------------------

    def _refresh_fast_epoch(self) -> None:
        """Recompute `_fast_epoch` after the state, forcing or listeners changed (locked)."""
        fleet = self._fleet
        if (
            self._state is _CLOSED
            and self._forced is None
            and not self._listeners
            and (fleet is None or not fleet.counts)  # share_counts hears every outcome
        ):
            self._fast_epoch = self._epoch
        else:
            self._fast_epoch = -2

    def _record_closed(
        self, outcome: int, slow: bool, now: float, events: list[BreakerEvent]
    ) -> None:
        config = self._config
        window = self._window
        window.expire(now)
        if outcome == FAILURE:
            self._consecutive += 1
            window.record(now, FAILED | SLOW if slow else FAILED)
        else:
            self._consecutive = 0
            window.record(now, SLOW if slow else 0)
        cause = None
        if self._consecutive >= config.failure_threshold:
            cause = "failure_threshold"
        elif window.count >= config.effective_minimum_requests:
            # Divide rather than multiply the threshold: the share is then the float nearest
            # the true ratio, so 7 of 25 meets a threshold of 0.28 (0.28 * 25 > 7.0).
            if window.failures / window.count >= config.failure_rate_threshold:
                cause = "failure_rate"
            elif (
                config.slow_call_duration is not None
                and window.slow / window.count >= config.slow_call_rate_threshold
            ):
                cause = "slow_call_rate"
        if cause is not None:
            self._transition(_OPEN, now, cause, events)

    def _record_probe(
        self, outcome: int, slow: bool, now: float, events: list[BreakerEvent]
    ) -> None:
        self._probes_in_flight -= 1
        if self._fleet is not None:  # before any transition below: the fleet hears it first
            self._fleet.probe_done(self._epoch, outcome, slow)
        if outcome == FAILURE:
            self._failed_rounds += 1
            self._transition(_OPEN, now, "probe_failed", events)
        elif outcome == SUCCESS:
            self._probes_succeeded += 1
            if slow:
                self._probes_slow += 1
            config = self._config
            if self._probes_succeeded >= config.half_open_max_requests:
                # As in resilience4j: a round of probes that were all too slow means the
                # upstream has not recovered, even though each of them answered.
                if (
                    config.slow_call_duration is not None
                    and self._probes_slow / self._probes_succeeded
                    >= config.slow_call_rate_threshold
                ):
                    self._failed_rounds += 1
                    self._transition(_OPEN, now, "slow_call_rate", events)
                else:
                    self._transition(_CLOSED, now, "probes_succeeded", events)

    def _transition(
        self,
        new: CircuitState,
        now: float,
        cause: str,
        events: list[BreakerEvent],
        period: float | None = None,
    ) -> None:
        """Enter `new`; the caller holds the lock and emits `events` after releasing it.

        `period` is the open period to use instead of the policy's (`transition_to`).
        """
        old = self._state
        self._settle_time(now)
        retry_after = self._enter(new, now, period)
        changes = self._state_changes
        if changes is None:
            changes = self._state_changes = deque(maxlen=STATE_CHANGES_KEPT)
        changes.append((now, old, new))
        counts = self._transition_counts
        if counts is None:
            counts = self._transition_counts = {}
        counts[(old, new)] = counts.get((old, new), 0) + 1
        events.append(
            BreakerEvent(
                "state_change",
                self._name,
                new,
                now,
                old_state=old,
                new_state=new,
                cause=cause,
                retry_after=retry_after,
            )
        )

    def _enter(self, new: CircuitState, now: float, period: float | None) -> float | None:
        """The effects of entering `new` (also of entering it again); the open period."""
        self._state = new
        self._epoch += 1
        self._refresh_fast_epoch()
        self._consecutive = 0
        self._probes_in_flight = self._probes_succeeded = self._probes_slow = 0
        if new is _OPEN and self._forced is _OPEN:
            self._open_until = math.inf  # until reset(); nobody can tell when
            return None
        if new is _OPEN:
            if period is None:
                period = self._open_period()
            self._open_until = now + period
            return period
        if new is _CLOSED:
            self._window.clear()
            self._failed_rounds = 0
        return None

    def _open_period(self) -> float:
        """The next open period: the backoff's, plus jitter, never past the cap.

        Jitter draws the period from ``[base, base * (1 + jitter)]``. When that range
        would pass `max_reset_timeout`, it moves down to end at the cap (but starts no
        lower than `reset_timeout`), so breakers held at the cap still spread out
        instead of probing in lockstep, and none waits longer than the cap.
        """
        config = self._config
        period = config.open_period(self._failed_rounds)
        jitter = config.jitter
        if not jitter:
            return period
        spread = period * jitter
        cap = config.max_reset_timeout
        if cap is None:
            return period + spread * self._random()
        if period + spread > cap:
            period = max(cap - spread, config.reset_timeout)
            spread = cap - period
        return min(period + spread * self._random(), cap)

    # -- time: per state, availability, throughput ---------------------------------

    def _settle_time(self, now: float) -> list[float]:
        """Add the time since `_entered` to the state it was spent in (locked).

        An open period that ended before anyone noticed counts as OPEN up to its end
        and HALF_OPEN after it, as the breaker would have read then.
        """
        seconds = self._state_seconds
        if seconds is None:
            seconds = self._state_seconds = [0.0, 0.0, 0.0, 0.0]
        entered = self._entered
        if now > entered:
            state = self._state
            if state is _OPEN and self._forced is None and now > self._open_until:
                until = max(self._open_until, entered)
                seconds[1] += until - entered
                seconds[2] += now - until
            else:
                seconds[_SECONDS_INDEX[state]] += now - entered
            self._entered = now
        return seconds

    def _seconds_in_states(self, now: float) -> tuple[float, float, float, float]:
        """CLOSED, OPEN and HALF_OPEN seconds up to `now`, and OPEN seconds at birth."""
        closed, opened, half_open, at_birth = self._state_seconds or (0.0, 0.0, 0.0, 0.0)
        entered = self._entered
        if now > entered:
            state = self._state
            if state is _OPEN and self._forced is None and now > self._open_until:
                until = max(self._open_until, entered)
                opened += until - entered
                half_open += now - until
            elif state is _CLOSED:
                closed += now - entered
            elif state is _OPEN:
                opened += now - entered
            else:
                half_open += now - entered
        return closed, opened, half_open, at_birth

    def _roll_throughput(self, now: float) -> None:
        """Close the throughput bucket that ended at `_tp_next` (locked; `now` is past it).

        Notes the calls counted before that boundary. After a gap of a whole bucket or
        more with no call, the count held until `now` too, so that is noted as well.
        """
        width = self._config.window_duration / THROUGHPUT_BUCKETS
        calls = self._n_success + self._n_failure + self._n_ignored
        marks = self._tp_marks
        if marks is None:
            marks = self._tp_marks = []
        boundary = self._tp_next
        marks += (boundary, calls)
        if now >= boundary + width:
            marks += (now, calls)
            boundary = now
        self._tp_next = boundary + width
        excess = len(marks) - 2 * (THROUGHPUT_BUCKETS + 2)
        if excess > 0:
            del marks[:excess]

    def _throughput(self, now: float) -> float:
        """Calls let through per second over the last `window_duration` (locked, rolled)."""
        calls = self._n_success + self._n_failure + self._n_ignored
        marks = self._tp_marks
        if not marks or not calls:
            return 0.0
        duration = self._config.window_duration
        horizon = now - duration
        # The last boundary at or before the horizon; the count there is interpolated
        # between it and the next boundary (or now).
        i = len(marks) - 2
        while i >= 0 and marks[i] > horizon:
            i -= 2
        if i < 0:
            before = marks[1]  # the breaker is younger than the window: its first count
        else:
            t0, c0 = marks[i], marks[i + 1]
            t1, c1 = (marks[i + 2], marks[i + 3]) if i + 2 < len(marks) else (now, calls)
            before = c0 + (c1 - c0) * (horizon - t0) / (t1 - t0) if t1 > t0 else c1
        return max(0.0, (calls - before) / duration)

    # -- permits returned by the garbage collector ------------------------------

    def _drain_deferred(self) -> None:
        deferred = self._deferred
        while deferred:
            self._release_one(deferred.pop())

    def _release_one(self, token: int) -> None:
        self._n_ignored += 1
        if token == self._epoch and self._state is _HALF_OPEN:
            self._probes_in_flight -= 1
            if self._fleet is not None:
                self._fleet.probe_done(token, IGNORED, False)

    # -- events -----------------------------------------------------------------

    def _emit(self, events: list[BreakerEvent], shared_floor: float | None = None) -> None:
        """Deliver events to the fleet, listeners and the log; never raises.

        `shared_floor`: a capped Retry-After that set the open period, for the fleet.
        """
        fleet = self._fleet
        if fleet is not None:
            fleet.published(events, shared_floor)
        listeners = self._listeners
        for event in events:
            if event.kind == "state_change":
                _log_state_change(event)
                callback = self.on_state_change
                if callback is not None:
                    try:
                        callback(event.old_state, event.new_state)  # type: ignore[arg-type]
                    except Exception:
                        logger.exception(
                            "on_state_change of circuit breaker %r raised",
                            self._name,
                            extra={"circuit_breaker": self._name},
                        )
            for listener in listeners:
                _call_listener(listener, event)


def _from_configuration(
    cls: type[CircuitBreaker],
    name: str,
    config: CircuitBreakerConfig,
    classifier: ResultClassifier | None,
    clock: Callable[[], float],
    listeners: tuple[Listener, ...],
    on_state_change: StateListener | None,
) -> CircuitBreaker:
    """A new breaker configured as a copied one was (`CircuitBreaker.__reduce__`)."""
    breaker = cls(name, config, classifier=classifier, clock=clock)
    for listener in listeners:
        breaker.add_listener(listener)
    breaker.on_state_change = on_state_change
    return breaker


class _Permit:
    """A permit held by a coroutine that may never run: returned when it is collected.

    A coroutine that is never started runs no `finally`; but dropping it drops its
    arguments, so this object's `__del__` hands the permit back then (as ignored), and
    the bulkhead slot the call holds, if any.
    """

    __slots__ = ("breaker", "bulkhead", "settled", "token")

    def __init__(self, breaker: CircuitBreaker, token: int, bulkhead: Bulkhead | None) -> None:
        self.breaker = breaker
        self.token = token
        self.settled = False
        self.bulkhead = bulkhead

    def release_slot(self) -> None:
        bulkhead = self.bulkhead
        if bulkhead is not None:
            self.bulkhead = None
            bulkhead.release()

    def __del__(self) -> None:
        if not self.settled:
            self.settled = True
            self.breaker.release(self.token)
        self.release_slot()


def _in_event_loop() -> bool:
    """Whether this thread is running an asyncio event loop or a trio task."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        trio = sys.modules.get("trio")
        return trio is not None and _in_trio_task(trio)
    return True


def _open_for(state: CircuitState, open_for: object) -> float:
    """`transition_to`'s `open_for` as seconds, checked."""
    if state is not _OPEN:
        raise ValueError(
            f"open_for is the length of an open period: only for CircuitState.OPEN, "
            f"not {state.name}"
        )
    if isinstance(open_for, timedelta):
        seconds = open_for.total_seconds()
    elif isinstance(open_for, (int, float)) and not isinstance(open_for, bool):
        seconds = float(open_for)
    else:
        raise TypeError(f"open_for must be float seconds or a timedelta, got {open_for!r}")
    if not (math.isfinite(seconds) and seconds >= 0.0):
        raise ValueError(f"open_for must be a finite number of seconds >= 0, got {open_for!r}")
    return seconds


def _call_listener(listener: Listener, event: BreakerEvent) -> None:
    try:
        listener(event)
    except Exception:
        logger.exception(
            "listener of circuit breaker %r raised",
            event.name,
            extra={"circuit_breaker": event.name},
        )


def _log_state_change(event: BreakerEvent) -> None:
    assert event.old_state is not None and event.new_state is not None
    level = logging.WARNING if event.new_state is _OPEN else logging.INFO
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "circuit breaker %r: %s -> %s (%s)",
            event.name,
            event.old_state.value,
            event.new_state.value,
            event.cause,
            extra={
                "circuit_breaker": event.name,
                "from_state": event.old_state.value,
                "to_state": event.new_state.value,
                "cause": event.cause,
                "retry_after": event.retry_after,
            },
        )


def outcome_of(verdict: object, name: str) -> int:
    """Map a classifier's verdict (True / False / None) to an outcome."""
    if verdict is True:
        return FAILURE
    if verdict is False:
        return SUCCESS
    if verdict is None:
        return IGNORED
    logger.error(
        "classifier of circuit breaker %r returned a %s, not True, False or None; "
        "the outcome is ignored",
        name,
        type(verdict).__name__,  # never the value: it may be a request with credentials
        extra={"circuit_breaker": name},
    )
    return IGNORED

