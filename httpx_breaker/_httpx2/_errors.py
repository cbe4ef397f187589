"""The errors of the httpx2 transports: httpx2 errors that are also ours.

Each one subclasses the error of the same name in `httpx_breaker` *and* its place in
httpx2's exception tree, so both ``except httpx_breaker.CircuitOpenError`` and
``except httpx2.TransportError`` catch what an httpx2 transport raises::

    httpx_breaker.RequestRejected      httpx2.TransportError
                   └────────┬──────────────┘
                     RequestRejected              (refused before any I/O)
                      ├── CircuitOpenError        (also httpx_breaker.CircuitOpenError)
                      └── BulkheadFullError       (also httpx_breaker.BulkheadFullError)

    httpx_breaker.CircuitTimeoutError  httpx2.TimeoutException
                   └────────┬──────────────┘
                     CircuitTimeoutError          (the headers outlived `timeout`)

The code shared by both libraries (the engine, the async deadline) raises the
`httpx_breaker` errors; `adopt` turns such an error into its httpx2 twin in place as
it leaves an httpx2 transport.
"""

from __future__ import annotations

from typing import Any, cast

import httpx2

from .. import _errors
from .._state import CircuitState

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "CircuitTimeoutError",
    "RequestRejected",
    "adopt",
]


class _Twin(httpx2.HTTPError):
    """What the twins have in common: `request` is the `httpx2.Request`.

    httpx and httpx2 both keep it in ``_request``, behind a `request` property typed for
    their own `Request`; the twins inherit httpx's first (through our errors), so the
    property is declared again here for httpx2's type.
    """

    _request: httpx2.Request | None

    @property
    def request(self) -> httpx2.Request:
        """The request that was refused or timed out (RuntimeError if none is set)."""
        request = self._request
        if request is None:
            raise RuntimeError("The .request property has not been set.")
        return request

    @request.setter
    def request(self, request: httpx2.Request) -> None:
        self._request = request


# For mypy: `_Twin` redeclares `request` and `_request` for httpx2's Request, which httpx's
# `HTTPError` (through our error) declares for httpx's; `_Twin` comes first, so it wins.
class RequestRejected(_Twin, _errors.RequestRejected, httpx2.TransportError):  # type: ignore[misc]
    """Refused before any I/O; an `httpx2.TransportError` and an
    `httpx_breaker.RequestRejected`, with `key` and `request` (the `httpx2.Request`)."""

    def __init__(self, key: str, *, request: httpx2.Request | None = None) -> None:
        super().__init__(key)
        self._request = request

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.key,))


# No `_Twin` or httpx2 base here: `RequestRejected` brings both (see the MRO).
class CircuitOpenError(_errors.CircuitOpenError, RequestRejected):  # type: ignore[misc]
    """The breaker refused the call before any I/O; an `httpx2.TransportError`.

    Also an `httpx_breaker.CircuitOpenError`, with the same attributes: `key`, `state`,
    `retry_after` and `request` (the refused `httpx2.Request`).
    """

    def __init__(
        self,
        key: str,
        state: CircuitState = CircuitState.OPEN,
        retry_after: float | None = None,
        *,
        request: httpx2.Request | None = None,
    ) -> None:
        super().__init__(key, state, retry_after)
        self._request = request

    def __reduce__(self) -> tuple[object, ...]:
        return (CircuitOpenError, (self.key, self.state, self.retry_after))


class BulkheadFullError(_errors.BulkheadFullError, RequestRejected):  # type: ignore[misc]
    """`max_concurrent` requests were in flight and no slot came free within `max_wait`;
    an `httpx2.TransportError` and an `httpx_breaker.BulkheadFullError`, with `key`,
    `limit` and `request` (the `httpx2.Request`)."""

    def __init__(
        self, key: str, limit: int | None = None, *, request: httpx2.Request | None = None
    ) -> None:
        super().__init__(key, limit)
        self._request = request

    def __reduce__(self) -> tuple[object, ...]:
        return (BulkheadFullError, (self.key, self.limit))


class CircuitTimeoutError(_Twin, _errors.CircuitTimeoutError, httpx2.TimeoutException):  # type: ignore[misc]
    """The response headers did not arrive within the breaker's `timeout`; an
    `httpx2.TimeoutException` that counts as a failure.

    Also an `httpx_breaker.CircuitTimeoutError`, with the same attributes: `key`,
    `timeout` and `request` (the `httpx2.Request`).
    """

    def __init__(
        self, key: str, timeout: float | None = None, *, request: httpx2.Request | None = None
    ) -> None:
        super().__init__(key, timeout)
        self._request = request

    def __reduce__(self) -> tuple[object, ...]:
        return (CircuitTimeoutError, (self.key, self.timeout))


_TWINS: dict[type[BaseException], type[BaseException]] = {
    _errors.RequestRejected: RequestRejected,
    _errors.CircuitOpenError: CircuitOpenError,
    _errors.BulkheadFullError: BulkheadFullError,
    _errors.CircuitTimeoutError: CircuitTimeoutError,
}


def adopt(exc: BaseException, request: httpx2.Request) -> None:
    """Attach `request` to `exc`, one of ours, and make it the httpx2 twin if it is not.

    The engine and the async deadline are shared with the httpx transports and raise
    `httpx_breaker`'s own errors. Changing the class of the fresh error in place (the
    twin adds nothing to its layout) keeps its traceback and costs no second exception
    on the rejection path.
    """
    twin = _TWINS.get(type(exc))
    target = cast(Any, exc)
    if twin is not None:
        target.__class__ = twin
    target._request = request
