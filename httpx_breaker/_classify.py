"""Classifiers: which HTTP outcomes are failures.

A classifier is `(request, response | None, exception | None) -> bool | None`:
True = failure, False = success, None = ignore (neither). It is asked once per
request, when the response body is closed, or when the request failed with no
response. An error while the body streams arrives as `(request, response, exception)`;
a caller that stops reading early is not an error, so that response arrives as
`(request, response, None)`. A classifier may read the body of a response read to the
end (`response.json()`; see `reads_body`); any other raises `httpx.ResponseNotRead`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping

import httpx

from ._config import ConfigTypeError
from ._errors import RequestRejected

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "NOT_THE_HOSTS_FAULT",
    "Classifier",
    "default_classifier",
    "from_cache",
    "make_classifier",
]

Classifier = Callable[[httpx.Request, "httpx.Response | None", "BaseException | None"], "bool | None"]
"""`(request, response | None, exception | None) -> bool | None`: True for a failure,
False for a success, None for an outcome that does not count."""

DEFAULT_FAILURE_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
"""Statuses the default classifier calls failures: overload and server-side faults."""

# Errors the caller made (a bad URL scheme, a malformed request): the host is not to blame.
CALLER_ERRORS: tuple[type[BaseException], ...] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)

# Errors that say nothing about the host: the caller's own, a nested breaker's or
# bulkhead's refusal, and waiting too long for a connection from the client's own pool
# (a saturated local pool must never open a healthy host's breaker).
NOT_THE_HOSTS_FAULT: tuple[type[BaseException], ...] = (
    RequestRejected,
    *CALLER_ERRORS,
    httpx.PoolTimeout,
)
"""Exceptions the default rules ignore, because they say nothing about the host: a
nested breaker's or bulkhead's refusal (`RequestRejected`), the caller's own mistakes
(`httpx.UnsupportedProtocol`, `httpx.LocalProtocolError`) and `httpx.PoolTimeout` (a
wait for the client's own pool). `make_classifier`'s `ignored_exceptions` default."""


CACHE_MARKERS: frozenset[str] = frozenset({"caching", "hishel_from_cache", "from_cache"})
"""The response extensions in which a cache marks what it served (see `from_cache`): a
response with none of them came from the network."""


def cache_marked(extensions: Mapping[str, object]) -> bool:
    """Whether `extensions` holds any of `CACHE_MARKERS` (whatever their values).

    Spelled out, not a set operation: a few dict lookups cost a third as much. (The
    transports' close path spells the same lookups out inline, for the call's cost.)
    """
    return "caching" in extensions or "hishel_from_cache" in extensions or "from_cache" in extensions


def from_cache(response: httpx.Response) -> bool:
    """Whether a caching layer below the breaker served `response` from its cache.

    Knows hishel's markers: ``extensions["caching"]["from_cache"]`` (hishel 2),
    ``extensions["hishel_from_cache"]`` (hishel 1) and ``extensions["from_cache"]``
    (hishel 0.x). A cache hit proves nothing about the host, so the default rules
    ignore it.
    """
    extensions = response.extensions
    if not cache_marked(extensions):
        return False
    caching = extensions.get("caching")
    if caching is not None:
        try:
            if caching.get("from_cache"):
                return True
        except AttributeError:
            pass
    return bool(extensions.get("hishel_from_cache") or extensions.get("from_cache"))


def default_classifier(
    request: httpx.Request,
    response: httpx.Response | None,
    exception: BaseException | None,
) -> bool | None:
    """The default rules.

    Transport errors and timeouts are failures, except those that say nothing about
    the host, which are ignored: caller-side errors (`UnsupportedProtocol`,
    `LocalProtocolError`), a nested breaker's refusal (`RequestRejected`: its
    `CircuitOpenError` or `BulkheadFullError`), and `PoolTimeout`
    (waiting for the client's own pool). Any other exception is ignored too (it is
    not the host's fault). A response a cache below the breaker served is ignored (see
    `from_cache`). Statuses 429, 500, 502, 503 and 504 are failures; every other
    status is a success.
    """
    if exception is not None:
        if isinstance(exception, NOT_THE_HOSTS_FAULT):
            return None
        if isinstance(exception, httpx.TransportError):
            return True
        return None
    if response is None or from_cache(response):
        return None
    return response.status_code in DEFAULT_FAILURE_STATUSES


_BODYLESS: weakref.WeakSet[Classifier] = weakref.WeakSet()
"""Classifiers known to judge without reading a body: the default rules and those
`make_classifier` builds. For any other, the transports keep a body's chunks while it
is read, so that the classifier can read it (see `reads_body`)."""


def reads_body(classifier: Classifier) -> bool:
    """Whether `classifier` may read a response's body (`response.json()`): any
    classifier but the default rules and those `make_classifier` builds."""
    try:
        return classifier not in _BODYLESS
    except TypeError:  # an unhashable callable, such as a dataclass with `__call__`
        return True


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
    ignored_exceptions: Iterable[type[BaseException]] = NOT_THE_HOSTS_FAULT,
    ignore_cache_hits: bool = True,
) -> Classifier:
    """Build a classifier from sets instead of writing a function.

    Args:
        failure_statuses: statuses that are failures (e.g. ``range(500, 600)``).
        ignored_statuses: statuses that count as neither success nor failure.
        failure_exceptions: exception types that are failures.
        ignored_exceptions: exception types that are ignored; checked before
            `failure_exceptions`, so a subclass can be carved out of a failing base.
            By default those of the default rules (`NOT_THE_HOSTS_FAULT`).
        ignore_cache_hits: ignore a response a cache below the breaker served (see
            `from_cache`), as the default rules do.

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
    if not isinstance(ignore_cache_hits, bool):
        raise ConfigTypeError(f"ignore_cache_hits must be a bool, got {ignore_cache_hits!r}")

    def classify(
        request: httpx.Request,
        response: httpx.Response | None,
        exception: BaseException | None,
    ) -> bool | None:
        if exception is not None:
            if isinstance(exception, ignore_exc):
                return None
            return True if isinstance(exception, fail_exc) else None
        if response is None or (ignore_cache_hits and from_cache(response)):
            return None
        status = response.status_code
        if status in failing:
            return True
        return None if status in ignoring else False

    _BODYLESS.add(classify)
    return classify


_BODYLESS.add(default_classifier)
