"""Classifiers: which HTTP outcomes are failures.

A classifier is `(request, response | None, exception | None) -> bool | None`:
True = failure, False = success, None = ignore (neither). It is asked once per
request, when the response body is closed, or when the request failed with no
response. An error while the body streams arrives as `(request, response, exception)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import httpx

from ._config import ConfigTypeError
from ._errors import CircuitOpenError

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "Classifier",
    "default_classifier",
    "make_classifier",
]

Classifier = Callable[[httpx.Request, "httpx.Response | None", "BaseException | None"], "bool | None"]

DEFAULT_FAILURE_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
"""Statuses the default classifier calls failures: overload and server-side faults."""

# Errors the caller made (a bad URL scheme, a malformed request): the host is not to blame.
CALLER_ERRORS: tuple[type[BaseException], ...] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)


def default_classifier(
    request: httpx.Request,
    response: httpx.Response | None,
    exception: BaseException | None,
) -> bool | None:
    """The default rules.

    Transport errors and timeouts are failures, except caller-side ones
    (`UnsupportedProtocol`, `LocalProtocolError`) and a nested breaker's
    `CircuitOpenError`, which are ignored; any other exception is ignored too (it is
    not the host's fault). Statuses 429, 500, 502, 503 and 504 are failures; every
    other status is a success.
    """
    if exception is not None:
        if isinstance(exception, (CircuitOpenError, *CALLER_ERRORS)):
            return None
        if isinstance(exception, httpx.TransportError):
            return True
        return None
    if response is None:
        return None
    return response.status_code in DEFAULT_FAILURE_STATUSES


def _exception_types(field: str, value: Iterable[type[BaseException]]) -> tuple[type[BaseException], ...]:
    items = tuple(value)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigTypeError(f"{field} must hold only exception classes, got {item!r}")
    return items


def _statuses(field: str, value: Iterable[int]) -> frozenset[int]:
    items = frozenset(value)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 100 <= item <= 599:
            raise ValueError(f"{field} must hold HTTP status codes (100 to 599), got {item!r}")
    return items


def make_classifier(
    *,
    failure_statuses: Iterable[int] = DEFAULT_FAILURE_STATUSES,
    ignored_statuses: Iterable[int] = (),
    failure_exceptions: Iterable[type[BaseException]] = (httpx.TransportError,),
    ignored_exceptions: Iterable[type[BaseException]] = (CircuitOpenError, *CALLER_ERRORS),
) -> Classifier:
    """Build a classifier from sets instead of writing a function.

    Args:
        failure_statuses: statuses that are failures (e.g. ``range(500, 600)``).
        ignored_statuses: statuses that count as neither success nor failure.
        failure_exceptions: exception types that are failures.
        ignored_exceptions: exception types that are ignored; checked before
            `failure_exceptions`, so a subclass can be carved out of a failing base.

    Every other status is a success; every other exception is ignored.
    """
    failing = _statuses("failure_statuses", failure_statuses)
    ignoring = _statuses("ignored_statuses", ignored_statuses)
    if failing & ignoring:
        raise ValueError(
            f"failure_statuses and ignored_statuses overlap: {sorted(failing & ignoring)}"
        )
    fail_exc = _exception_types("failure_exceptions", failure_exceptions)
    ignore_exc = _exception_types("ignored_exceptions", ignored_exceptions)

    def classify(
        request: httpx.Request,
        response: httpx.Response | None,
        exception: BaseException | None,
    ) -> bool | None:
        if exception is not None:
            if isinstance(exception, ignore_exc):
                return None
            return True if isinstance(exception, fail_exc) else None
        if response is None:
            return None
        status = response.status_code
        if status in failing:
            return True
        return None if status in ignoring else False

    return classify
