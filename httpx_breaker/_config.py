"""CircuitBreakerConfig: one breaker's policy, validated once when it is built."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Literal

__all__ = ["CircuitBreakerConfig", "ConfigTypeError"]


class ConfigTypeError(TypeError, ValueError):
    """A config field got a value of the wrong type.

    It is a `TypeError`, as Python would raise, and also a `ValueError`, so that
    `except ValueError` catches every invalid configuration.
    """


Duration = float | int | timedelta


def _duration(field: str, value: object, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        kind = "float seconds, a timedelta or None" if allow_none else "float seconds or a timedelta"
        raise ConfigTypeError(f"{field} must be {kind}, got {value!r}")
    if not math.isfinite(seconds):
        hint = " (use None for no limit)" if allow_none else ""
        raise ValueError(f"{field} must be a finite number of seconds{hint}, got {value!r}")
    return seconds


def _int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(f"{field} must be an int, got {value!r}")
    return value


def _rate(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{field} must be a float in (0, 1], got {value!r}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{field} must be in (0, 1], got {value!r}")
    return float(value)


def _bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigTypeError(f"{field} must be a bool, got {value!r}")
    return value


def _exceptions(field: str, value: object) -> tuple[type[BaseException], ...]:
    if isinstance(value, type):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigTypeError(
            f"{field} must be a tuple of exception classes, got {value!r}"
        )
    items = tuple(value)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigTypeError(
                f"{field} must hold only exception classes, got {item!r} in {value!r}"
            )
    return items


@dataclasses.dataclass(frozen=True, slots=True, init=False)
class CircuitBreakerConfig:
    """How one breaker decides to open, how long it stays open and how it probes.

    Every argument is keyword-only and checked here, once, so that a breaker never
    meets a value it cannot honour. A bad value raises `ValueError` naming the field,
    the allowed range and the value given; a value of the wrong type raises
    `ConfigTypeError`, which is both a `TypeError` and a `ValueError`.

    Durations accept float seconds or `datetime.timedelta` and are stored as float
    seconds. Each field is described below, with its default in the signature; the
    user guide's policies page says when to change each one.

    ```python
    default = CircuitBreakerConfig(failure_threshold=5, reset_timeout=30.0, jitter=0.1)
    payments = default.replace(failure_threshold=2)       # the rest as in `default`
    slow_host = CircuitBreakerConfig(timeout=2.0, max_concurrent=10, max_wait=0.5)
    ```

    Raises:
        ValueError: a value out of its range, naming the field, the range and the value.
        ConfigTypeError: a value of the wrong type (a `TypeError` and a `ValueError`).
    """

    failure_threshold: int
    """Consecutive failures that open the breaker (>= 1)."""
    failure_rate_threshold: float
    """Failure share of the window that opens the breaker, in (0, 1]; compared with >=."""
    timeout: float | None
    """Deadline on one call, in seconds; `None` (the default) for none. In `call_async`
    it bounds the whole call; in the transports, the time from getting a connection to
    the response headers (never the body). httpx's own timeouts apply either way."""
    reset_timeout: float
    """Seconds the breaker stays OPEN before it lets probes through (>= 0)."""
    half_open_max_requests: int
    """Probes let through in HALF_OPEN; that many successes close the breaker (>= 1)."""
    window_size: int
    """Outcomes the sliding window keeps (>= 1)."""
    window_duration: float
    """Outcomes older than this many seconds leave the window (> 0)."""
    exclude_exceptions: tuple[type[BaseException], ...]
    """Exceptions that count as neither success nor failure."""
    minimum_requests: int | None
    """Outcomes the window must hold before the rate rules apply; `None` means
    `window_size`."""
    slow_call_duration: float | None
    """A call at least this long (seconds) is slow; `None` turns the slow-call rule off."""
    slow_call_rate_threshold: float
    """Slow share of the window that opens the breaker, in (0, 1]."""
    reset_timeout_multiplier: float
    """Each failed probe round multiplies the next open period by this (>= 1)."""
    max_reset_timeout: float | None
    """Cap on the open period grown by the multiplier; `None` for no cap."""
    jitter: float
    """Up to this fraction of the open period is added at random, in [0, 1]."""
    respect_retry_after: bool
    """Let a failing response's `Retry-After` lengthen the open period."""
    max_retry_after: float
    """Longest open period a `Retry-After` header can ask for, in seconds (>= 0)."""
    dry_run: bool
    """Track states, metrics and events as usual but never reject a call."""
    outcome_at: Literal["close", "headers"]
    """When a transport records a response's outcome: ``"close"`` (when its body is
    closed, so an error while it streams counts) or ``"headers"`` (as soon as the
    headers arrive, so a long stream used as a half-open probe does not hold the probe
    slot for its whole life; a later body error is not counted)."""
    max_concurrent: int | None
    """Most requests in flight through the breaker at once (>= 1), from admission until
    the request ends (its body closed, an error, a cancellation, or the garbage
    collection of a response nobody read); `None` (the default) for no limit. A
    half-open probe needs a slot too. See `max_wait`."""
    max_wait: float
    """How long a request that finds `max_concurrent` requests in flight waits for a
    slot, in seconds (>= 0; 0 refuses at once), first come first served, before it
    raises `BulkheadFullError` without any I/O. Waiting is cancellable. Only read when
    `max_concurrent` is set."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        failure_rate_threshold: float = 0.5,
        timeout: Duration | None = None,
        reset_timeout: Duration = 60.0,
        half_open_max_requests: int = 3,
        window_size: int = 10,
        window_duration: Duration = 60.0,
        exclude_exceptions: Iterable[type[BaseException]] = (),
        minimum_requests: int | None = None,
        slow_call_duration: Duration | None = None,
        slow_call_rate_threshold: float = 1.0,
        reset_timeout_multiplier: float = 1.0,
        max_reset_timeout: Duration | None = None,
        jitter: float = 0.0,
        respect_retry_after: bool = True,
        max_retry_after: Duration = 300.0,
        dry_run: bool = False,
        outcome_at: Literal["close", "headers"] = "close",
        max_concurrent: int | None = None,
        max_wait: Duration = 0.0,
    ) -> None:
        values: dict[str, Any] = {}

        values["failure_threshold"] = _int("failure_threshold", failure_threshold)
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold!r}")

        values["failure_rate_threshold"] = _rate("failure_rate_threshold", failure_rate_threshold)

        t = _duration("timeout", timeout, allow_none=True)
        if t is not None and t <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        values["timeout"] = t

        rt = _duration("reset_timeout", reset_timeout)
        assert rt is not None
        if rt < 0:
            raise ValueError(f"reset_timeout must be >= 0 seconds, got {reset_timeout!r}")
        values["reset_timeout"] = rt

        values["half_open_max_requests"] = _int("half_open_max_requests", half_open_max_requests)
        if half_open_max_requests < 1:
            raise ValueError(
                f"half_open_max_requests must be >= 1, got {half_open_max_requests!r}"
            )

        values["window_size"] = _int("window_size", window_size)
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size!r}")

        wd = _duration("window_duration", window_duration)
        assert wd is not None
        if wd <= 0:
            raise ValueError(f"window_duration must be > 0 seconds, got {window_duration!r}")
        values["window_duration"] = wd

        values["exclude_exceptions"] = _exceptions("exclude_exceptions", exclude_exceptions)

        if minimum_requests is not None:
            _int("minimum_requests", minimum_requests)
            if not 1 <= minimum_requests <= window_size:
                raise ValueError(
                    f"minimum_requests must be between 1 and window_size ({window_size}) "
                    f"or None, got {minimum_requests!r}"
                )
        values["minimum_requests"] = minimum_requests

        scd = _duration("slow_call_duration", slow_call_duration, allow_none=True)
        if scd is not None and scd <= 0:
            raise ValueError(
                f"slow_call_duration must be > 0 seconds or None, got {slow_call_duration!r}"
            )
        values["slow_call_duration"] = scd

        values["slow_call_rate_threshold"] = _rate(
            "slow_call_rate_threshold", slow_call_rate_threshold
        )

        if isinstance(reset_timeout_multiplier, bool) or not isinstance(
            reset_timeout_multiplier, (int, float)
        ):
            raise ConfigTypeError(
                f"reset_timeout_multiplier must be a float >= 1, got {reset_timeout_multiplier!r}"
            )
        if not (math.isfinite(reset_timeout_multiplier) and reset_timeout_multiplier >= 1.0):
            raise ValueError(
                f"reset_timeout_multiplier must be a finite float >= 1, "
                f"got {reset_timeout_multiplier!r}"
            )
        values["reset_timeout_multiplier"] = float(reset_timeout_multiplier)

        mrt = _duration("max_reset_timeout", max_reset_timeout, allow_none=True)
        if mrt is not None and mrt < rt:
            raise ValueError(
                f"max_reset_timeout must be >= reset_timeout ({rt}) or None, "
                f"got {max_reset_timeout!r}"
            )
        values["max_reset_timeout"] = mrt

        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)):
            raise ConfigTypeError(f"jitter must be a float in [0, 1], got {jitter!r}")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {jitter!r}")
        values["jitter"] = float(jitter)

        values["respect_retry_after"] = _bool("respect_retry_after", respect_retry_after)

        mra = _duration("max_retry_after", max_retry_after)
        assert mra is not None
        if mra < 0:
            raise ValueError(f"max_retry_after must be >= 0 seconds, got {max_retry_after!r}")
        values["max_retry_after"] = mra

        values["dry_run"] = _bool("dry_run", dry_run)

        if not isinstance(outcome_at, str):
            raise ConfigTypeError(f'outcome_at must be "close" or "headers", got {outcome_at!r}')
        if outcome_at not in ("close", "headers"):
            raise ValueError(f'outcome_at must be "close" or "headers", got {outcome_at!r}')
        values["outcome_at"] = outcome_at

        if max_concurrent is not None:
            if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
                raise ConfigTypeError(
                    f"max_concurrent must be an int >= 1 or None, got {max_concurrent!r}"
                )
            if max_concurrent < 1:
                raise ValueError(
                    f"max_concurrent must be >= 1 or None (no limit), got {max_concurrent!r}"
                )
        values["max_concurrent"] = max_concurrent

        mw = _duration("max_wait", max_wait)
        assert mw is not None
        if mw < 0:
            raise ValueError(f"max_wait must be >= 0 seconds, got {max_wait!r}")
        if mw and max_concurrent is None:
            warnings.warn(
                f"max_wait={max_wait!r} has no effect without max_concurrent: requests only "
                "wait for a slot when max_concurrent limits them",
                stacklevel=2,
            )
        values["max_wait"] = mw

        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def effective_minimum_requests(self) -> int:
        """`minimum_requests`, with `None` resolved to `window_size`."""
        m = self.minimum_requests
        return self.window_size if m is None else m

    def open_period(self, failed_rounds: int) -> float:
        """The open period after `failed_rounds` failed probe rounds, before jitter."""
        period = self.reset_timeout
        if failed_rounds and self.reset_timeout_multiplier != 1.0:
            try:
                period *= self.reset_timeout_multiplier**failed_rounds
            except OverflowError:
                period = math.inf
        cap = self.max_reset_timeout
        if cap is not None and period > cap:
            period = cap
        return period

    def replace(self, **changes: Any) -> CircuitBreakerConfig:
        """A copy with `changes` applied and validated again."""
        return dataclasses.replace(self, **changes)
