"""`Retry-After`: delta-seconds or an HTTP-date, as seconds to wait."""

from __future__ import annotations

import datetime
import email.utils
import time

__all__ = ["parse_retry_after"]


def parse_retry_after(value: str, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks for, or None if it is not valid.

    Accepts delta-seconds (``"120"``) and an HTTP-date in each form HTTP allows
    (RFC 9110, 5.6.7): IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``), the obsolete
    RFC 850 form (``Sunday, 06-Nov-94 08:49:37 GMT``) and asctime
    (``Sun Nov  6 08:49:37 1994``). HTTP dates are GMT: a date without a zone (asctime)
    or with ``-0000`` (which email dates use for "zone unknown") is read as GMT, never
    as the machine's local time. A date in the past gives 0.0. `now` is the wall-clock
    time to measure a date from (`time.time()` by default).
    """
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        # Huge values are capped later by max_retry_after; avoid int->float overflow here.
        return float(value) if len(value) < 300 else float("inf")
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # parsedate_to_datetime returns a naive datetime for asctime and for "-0000";
        # `timestamp()` would read it as local time.
        when = when.replace(tzinfo=datetime.timezone.utc)
    try:
        stamp = when.timestamp()
    except (OverflowError, ValueError, OSError):
        return None
    if now is None:
        now = time.time()
    return max(0.0, stamp - now)
