"""Retry libraries and SDKs on top of a breaker: wait for it instead of hammering it.

A request the breaker refused (`RequestRejected`: `CircuitOpenError` or
`BulkheadFullError`, from the httpx transports or their httpx2 twins) failed before any
I/O. A request an open breaker refused, retried at once, is refused again; retried after
the usual backoff (a second or so), it is refused again too, because the breaker said
how long to wait (`retry_after`) and nobody listened. The helpers here make a retry
library listen:

- `find_rejection` digs the refusal out of whatever an SDK raised instead (the openai
  SDK, 2.x and 3.x alike, raises ``APIConnectionError`` with the refusal only as its
  ``__cause__``).
- `backoff_hook` is an ``on=`` for stamina (any library whose retry predicate may
  return a delay).
- `wait_retry_after` and `retry_if_exception_or_rejection` are a ``wait=`` and a
  ``retry=`` for tenacity.

None of them imports stamina or tenacity: the stamina hook is a plain callable, and
the tenacity helpers are duck-typed (tenacity is imported only to combine them with
``&``, ``|`` or ``+``).

Every helper treats a refusal the same way:

- An open breaker (`CircuitOpenError`, state OPEN) whose `retry_after` is known and at
  most ``max_wait``: wait exactly `retry_after`, then retry. That attempt is the one
  the breaker lets through as a half-open probe (or, if other callers took every probe
  slot first, it is refused as HALF_OPEN, below).
- An open breaker whose `retry_after` is longer than ``max_wait``, or unknown (a
  breaker held by `force_open()`): give up now. The refusal (or the SDK error wrapping
  it) reaches the caller at once, who can fall back; waiting longer than the caller
  can afford, only to be refused again or to answer too late, helps nobody.
- A half-open breaker with every probe slot taken (`CircuitOpenError`, state
  HALF_OPEN): the probes in flight decide within one request, so retry after the
  library's own backoff.
- A full bulkhead (`BulkheadFullError`: `max_concurrent` requests already in flight):
  it has no `retry_after` and says nothing about the host; a slot frees up when one of
  those requests ends, so retry after the library's own backoff too.

Everything that is not a refusal is left to the library: ``on`` decides, the
fallback wait waits.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ._errors import CircuitOpenError, RequestRejected
from ._state import CircuitState

if TYPE_CHECKING:
    from tenacity import RetryCallState
    from tenacity.retry import retry_all, retry_any
    from tenacity.wait import wait_combine

__all__ = [
    "backoff_hook",
    "find_rejection",
    "retry_if_exception_or_rejection",
    "wait_retry_after",
]

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]
"""An exception class or a tuple of them, as ``except`` takes."""

Seconds = float | dt.timedelta

Decision = bool | float | dt.timedelta
"""What a stamina backoff hook returns: retry or not, or retry after this long."""


def find_rejection(exc: BaseException | None) -> RequestRejected | None:
    """The refusal behind `exc`, or None if no breaker refused the request.

    A refusal is a `RequestRejected`: a `CircuitOpenError` (it has `state` and
    `retry_after`) or a `BulkheadFullError` (it has `limit`), raised by the httpx
    transports or by their httpx2 twins (``httpx_breaker.httpx2``), which subclass
    ours. Check which with ``isinstance`` before reading `retry_after`.

    Looks at `exc` itself, then along the chain Python prints under a traceback: the
    ``__cause__`` (``raise ... from err``, as the openai SDK does) or else the
    ``__context__`` (an exception raised while handling another), unless the raiser
    suppressed it with ``raise ... from None``. Exception groups are not searched: a
    group may hold other errors beside a refusal; split it yourself
    (``group.split(RequestRejected)``).

    Args:
        exc: any exception (or None, which gives None).
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, RequestRejected):
            return exc
        seen.add(id(exc))
        if exc.__cause__ is not None:
            exc = exc.__cause__
        elif exc.__suppress_context__:
            return None
        else:
            exc = exc.__context__
    return None


def _decide(rejection: RequestRejected, max_wait: float) -> float | bool:
    """For a refusal: seconds to wait, True (the library's own backoff) or False (give up)."""
    if not isinstance(rejection, CircuitOpenError) or rejection.state is not CircuitState.OPEN:
        # A full bulkhead (a slot frees up when a request in flight ends), or half-open
        # with every probe slot taken (the probes answer within one request).
        return True
    retry_after = rejection.retry_after
    if retry_after is None or retry_after > max_wait:
        return False
    return max(0.0, retry_after)


def _max_wait(value: Seconds) -> float:
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"max_wait must be seconds (a float) or a timedelta, got {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"max_wait must be >= 0 seconds, got {value!r}")
    return float(value)


def _exception_types(on: object) -> tuple[type[BaseException], ...] | None:
    """`on` as a tuple of exception classes, or None if it is not one."""
    if isinstance(on, type) and issubclass(on, BaseException):
        return (on,)
    if (
        isinstance(on, tuple)
        and on
        and all(isinstance(t, type) and issubclass(t, BaseException) for t in on)
    ):
        return on
    return None


def _describe_on(on: object) -> str:
    if isinstance(on, type):
        return f"{on.__module__}.{on.__qualname__}"
    if isinstance(on, tuple):
        return f"({', '.join(_describe_on(t) for t in on)})"
    return getattr(on, "__qualname__", None) or repr(on)


class _BackoffHook:
    __slots__ = ("_hook", "_max_wait", "_on", "_types")

    def __init__(
        self,
        on: ExceptionTypes | Callable[[Exception], Decision],
        max_wait: float,
    ) -> None:
        self._on = on
        self._types = _exception_types(on)
        self._hook = (
            None if self._types is not None else cast(Callable[[Exception], Decision], on)
        )
        self._max_wait = max_wait

    def __call__(self, exc: Exception) -> Decision:
        rejection = find_rejection(exc)
        if rejection is not None:
            return _decide(rejection, self._max_wait)
        if self._types is not None:
            return isinstance(exc, self._types)
        assert self._hook is not None
        return self._hook(exc)

    def __repr__(self) -> str:
        return f"backoff_hook(on={_describe_on(self._on)}, max_wait={self._max_wait:g})"


def backoff_hook(
    *,
    on: ExceptionTypes | Callable[[Exception], Decision],
    max_wait: Seconds,
) -> _BackoffHook:
    """An ``on=`` for stamina that waits out an open breaker instead of hammering it.


    ```python
    @stamina.retry(on=backoff_hook(on=httpx.TransportError, max_wait=30.0), attempts=5)
    async def get_rates() -> httpx.Response: ...
    ```

    stamina calls a callable ``on`` with each exception: a bool says whether to retry
    with its exponential backoff, a float (seconds) or a `timedelta` says to retry
    after exactly that long. The hook returns, for a request an open breaker refused
    (found with `find_rejection`, so also inside an SDK's own error), `retry_after` if
    it is at most `max_wait`, and False (give up now) if it is longer or unknown; True
    (stamina's backoff) while a half-open breaker's probes are in flight, and for a
    full bulkhead (`BulkheadFullError`, which has no `retry_after`); for any other
    exception, what `on` says. A refusal is retried this way whatever `on` names.

    `max_wait` bounds one wait, not the whole retry loop: stamina's ``timeout=`` is
    checked after each attempt, so keep `max_wait` within the time your caller has.
    In stamina's testing mode (``stamina.set_testing(True)``) the waits are zero, as
    every other backoff is; the hook's decisions stay the same.

    Args:
        on: the exceptions to retry besides refusals: an exception class, a tuple of
            them, or a callable taking the exception and returning what a stamina hook
            returns (bool, float or timedelta).
        max_wait: the longest `retry_after` worth waiting for, in seconds or as a
            `timedelta`; 0 never waits for an open breaker.

    Raises:
        TypeError: `on` is none of those, or `max_wait` is not a number.
        ValueError: `max_wait` is negative or NaN.
    """
    if _exception_types(on) is None and not callable(on):
        raise TypeError(
            "on must be an exception class, a tuple of them, or a callable that takes "
            f"the exception, got {on!r}"
        )
    return _BackoffHook(on, _max_wait(max_wait))


class _RetryIfExceptionOrRejection:
    __slots__ = ("_max_wait", "_on", "_predicate", "_types")

    def __init__(
        self, on: ExceptionTypes | Callable[[BaseException], bool], max_wait: float
    ) -> None:
        self._on = on
        self._types = _exception_types(on)
        self._predicate = (
            None if self._types is not None else cast(Callable[[BaseException], bool], on)
        )
        self._max_wait = max_wait

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        exc = outcome.exception()
        rejection = find_rejection(exc)
        if rejection is not None:
            return _decide(rejection, self._max_wait) is not False
        if self._types is not None:
            return isinstance(exc, self._types)
        assert self._predicate is not None and exc is not None
        return bool(self._predicate(exc))

    def __and__(self, other: Callable[[RetryCallState], bool]) -> retry_all:
        from tenacity import retry_all

        return retry_all(self, other)

    def __or__(self, other: Callable[[RetryCallState], bool]) -> retry_any:
        from tenacity import retry_any

        return retry_any(self, other)

    def __repr__(self) -> str:
        return (
            f"retry_if_exception_or_rejection(on={_describe_on(self._on)}, "
            f"max_wait={self._max_wait:g})"
        )


def retry_if_exception_or_rejection(
    *, on: ExceptionTypes | Callable[[BaseException], bool], max_wait: Seconds
) -> _RetryIfExceptionOrRejection:
    """A tenacity ``retry=``: retry what `on` names, and a refusal worth waiting for.


    ```python
    @tenacity.retry(
        retry=retry_if_exception_or_rejection(on=httpx.TransportError, max_wait=30.0),
        wait=wait_retry_after(fallback=tenacity.wait_exponential_jitter()),
        stop=tenacity.stop_after_attempt(5),
    )
    ```

    A refused request (found with `find_rejection`) is retried when its breaker lets a
    request through within `max_wait` seconds, or is half-open with its probes in
    flight, or when a full bulkhead refused it (`BulkheadFullError`); it is not retried
    when `retry_after` is longer or unknown (forced open).
    Any other exception is retried if `on` says so; a result is never retried (combine
    with ``|`` and tenacity's ``retry_if_result`` for that). Pair it with
    `wait_retry_after`, which waits `retry_after`.

    Args:
        on: an exception class, a tuple of them, or a callable taking the exception
            and returning True to retry.
        max_wait: the longest `retry_after` worth waiting for, in seconds or as a
            `timedelta`.

    Raises:
        TypeError: `on` is none of those, or `max_wait` is not a number.
        ValueError: `max_wait` is negative or NaN.
    """
    if _exception_types(on) is None and not callable(on):
        raise TypeError(
            "on must be an exception class, a tuple of them, or a callable that takes "
            f"the exception, got {on!r}"
        )
    return _RetryIfExceptionOrRejection(on, _max_wait(max_wait))


class _WaitRetryAfter:
    __slots__ = ("_fallback",)

    def __init__(self, fallback: Callable[[RetryCallState], float]) -> None:
        self._fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            rejection = find_rejection(outcome.exception())
            if rejection is not None:
                # No max_wait here: the retry predicate or tenacity's stop_before_delay
                # decides whether the wait is worth it; capping it would only retry
                # into a breaker that is still open.
                wait = _decide(rejection, math.inf)
                if not isinstance(wait, bool):
                    return wait
        return self._fallback(retry_state)

    def __add__(self, other: Callable[[RetryCallState], float]) -> wait_combine:
        from tenacity.wait import wait_combine

        return wait_combine(self, other)

    def __radd__(self, other: int) -> _WaitRetryAfter:
        # `sum()` of waits starts from 0.
        if other == 0:
            return self
        return NotImplemented

    def __repr__(self) -> str:
        return f"wait_retry_after(fallback={self._fallback!r})"


def wait_retry_after(*, fallback: Callable[[RetryCallState], float]) -> _WaitRetryAfter:
    """A tenacity ``wait=`` that waits an open breaker's `retry_after`.

    After a refused request (found with `find_rejection`) whose breaker is OPEN with a
    known `retry_after`, the wait is exactly that; after anything else (a failure of
    the host, a result, a half-open breaker's full probe slots, a forced-open breaker,
    a full bulkhead), it is what `fallback` says.

    It never caps the wait: to give up instead of waiting too long, use
    `retry_if_exception_or_rejection` (``max_wait``) or tenacity's
    ``stop_before_delay(budget)``, which stops when the next wait would take the
    whole retry loop past its budget.

    Args:
        fallback: any tenacity wait, e.g. ``tenacity.wait_exponential_jitter()``.

    Raises:
        TypeError: `fallback` is not callable.
    """
    if not callable(fallback):
        raise TypeError(f"fallback must be a tenacity wait (a callable), got {fallback!r}")
    return _WaitRetryAfter(fallback)
