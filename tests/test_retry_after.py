"""parse_retry_after: delta-seconds and every HTTP-date form, always read as GMT."""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterator

import pytest

from httpx_breaker._retry_after import parse_retry_after
from httpx_breaker.classifiers import parse_retry_after as exported

# 1994-11-06 08:49:37 GMT, the example date of RFC 9110, as a POSIX timestamp.
EXAMPLE = calendar.timegm((1994, 11, 6, 8, 49, 37))


@pytest.fixture(params=["UTC0", "XST+05:30", "YST-09"])
def local_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with the process in another time zone (POSIX TZ: no tzdata needed)."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = str(request.param)
    time.tzset()
    try:
        yield str(request.param)
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
        "Sun, 06 Nov 1994 08:49:37 -0000",  # "-0000": zone unknown, GMT for HTTP
        "Sun, 06 Nov 1994 08:49:37 +0000",
    ],
)
def test_every_http_date_form_is_gmt(value: str, local_zone: str) -> None:
    """Each HTTP-date form gives the same seconds whatever the machine's time zone."""
    if local_zone != "UTC0":
        assert time.timezone != 0  # the zone really changed
    assert parse_retry_after(value, now=EXAMPLE - 90.0) == 90.0
    assert parse_retry_after(value, now=EXAMPLE + 90.0) == 0.0  # in the past


def test_explicit_zone_is_honoured(local_zone: str) -> None:
    """A date with a numeric zone other than GMT is converted, not read as GMT."""
    assert parse_retry_after("Sun, 06 Nov 1994 09:49:37 +0100", now=EXAMPLE - 5.0) == 5.0


def test_delta_seconds_and_garbage() -> None:
    """Delta-seconds are taken as they are; anything else that is no date is None."""
    assert parse_retry_after(" 120 ") == 120.0
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None


def test_still_exported_from_classifiers() -> None:
    """`httpx_breaker.classifiers.parse_retry_after` is the same function."""
    assert exported is parse_retry_after
