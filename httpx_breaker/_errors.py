"""The exceptions a breaker raises.

All sit in httpx's exception tree, so code that already handles httpx errors keeps
working::

    httpx.HTTPError
     └── httpx.RequestError
          └── httpx.TransportError
               ├── RequestRejected           (refused before any I/O; never the host's fault)
               │    ├── CircuitOpenError     (the breaker is open, or every probe slot is taken)
               │    └── BulkheadFullError    (`max_concurrent` requests already in flight)
               └── httpx.TimeoutException
                    └── CircuitTimeoutError  (the call outlived the breaker's `timeout`)

`except RequestRejected` catches both refusals: nothing was sent, so a request refused
this way is always safe to retry elsewhere or later, whatever its method.
"""

from __future__ import annotations

import httpx

from ._state import CircuitState

__all__ = ["BulkheadFullError", "CircuitOpenError", "CircuitTimeoutError", "RequestRejected"]


class RequestRejected(httpx.TransportError):
    """The request was refused before any I/O: nothing reached the network.

    The common base of `CircuitOpenError` and `BulkheadFullError`. A refusal is never
    counted as a failure of the host.

    Every error here can also be built the way httpx's own errors are,
    ``Error("message", request=request)`` (as respx does for an exception class given
    as a route's ``side_effect``): the other arguments have defaults.

    Attributes:
        key: the breaker's name (for a transport, the host key such as ``"api.example.com"``).
        retry_after: seconds until a request may pass, or None where nobody can tell
            (always None for a bulkhead refusal: a slot frees when a request ends).
        request: the refused `httpx.Request`, when a transport raised it.
    """

    key: str
    retry_after: float | None = None

    def __init__(self, key: str, *, request: httpx.Request | None = None) -> None:
        self.key = key
        # Refusals are raised on every request while they last and most callers just
        # catch them, so construction is kept cheap: the message is built in __str__,
        # only if read, and httpx's three-level __init__ chain is done in one step (it
        # sets `args` and `_request`, exactly as below). Subclasses do the same inline.
        Exception.__init__(self, key)
        self._request = request

    def __str__(self) -> str:
        return f"request through circuit breaker {self.key!r} was refused before any I/O"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.key,))


class CircuitOpenError(RequestRejected):
    """The breaker refused the call before any I/O.

    Attributes:
        key: the breaker's name (for a transport, the host key such as ``"api.example.com"``).
        state: the breaker's state when it refused (OPEN, or HALF_OPEN with every probe
            slot taken).
        retry_after: seconds until a probe may pass, or ``None`` where nobody can tell
            (forced open, or half-open with its probes still in flight).
        request: the refused `httpx.Request`, when a transport raised it.
    """

    def __init__(
        self,
        key: str,
        state: CircuitState = CircuitState.OPEN,
        retry_after: float | None = None,
        *,
        request: httpx.Request | None = None,
    ) -> None:
        self.key = key
        self.state = state
        self.retry_after = retry_after
        # Cheap on purpose: see RequestRejected.__init__ (no super() chain, no message).
        Exception.__init__(self, key)
        self._request = request

    def __str__(self) -> str:
        if self.retry_after is None:
            return f"circuit breaker {self.key!r} is {self.state.value}"
        return (
            f"circuit breaker {self.key!r} is {self.state.value}; "
            f"retry after {self.retry_after:.3f}s"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_open_error, (self.key, self.state, self.retry_after))


def _rebuild_open_error(key: str, state: CircuitState, retry_after: float | None) -> CircuitOpenError:
    return CircuitOpenError(key, state, retry_after)


class BulkheadFullError(RequestRejected):
    """`max_concurrent` requests were already in flight through the breaker, and no slot
    came free within `max_wait`; the request was refused before any I/O.

    It says the caller is sending more than the policy allows at once, not that the host
    failed: it never moves the breaker.

    Attributes:
        key: the breaker's name (for a transport, the host key such as ``"api.example.com"``).
        limit: the breaker's `max_concurrent` (also readable as `max_concurrent`).
        retry_after: None: nobody can tell when a slot frees.
        request: the refused `httpx.Request`, when a transport raised it.
    """

    def __init__(
        self, key: str, limit: int | None = None, *, request: httpx.Request | None = None
    ) -> None:
        self.key = key
        self.limit = limit
        # Cheap on purpose: see RequestRejected.__init__ (no super() chain, no message).
        Exception.__init__(self, key)
        self._request = request

    @property
    def max_concurrent(self) -> int | None:
        """The breaker's `max_concurrent`: the same as `limit`."""
        return self.limit

    def __str__(self) -> str:
        if self.limit is None:
            return f"{self.key!r} is at its limit of requests in flight (max_concurrent)"
        return f"{self.key!r} is at its limit of {self.limit} requests in flight (max_concurrent)"

    def __reduce__(self) -> tuple[object, ...]:
        return (BulkheadFullError, (self.key, self.limit))


class CircuitTimeoutError(httpx.TimeoutException):
    """The call outlived the breaker's `timeout` and was abandoned; it counts as a failure.

    Attributes:
        key: the breaker's name.
        timeout: the deadline that was exceeded, in seconds (None if not given).
        request: the `httpx.Request`, when a transport raised it.
    """

    def __init__(
        self, key: str, timeout: float | None = None, *, request: httpx.Request | None = None
    ) -> None:
        self.key = key
        self.timeout = timeout
        limit = "its timeout" if timeout is None else f"its {timeout:g}s timeout"
        super().__init__(
            f"call through circuit breaker {key!r} exceeded {limit}", request=request
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_timeout_error, (self.key, self.timeout))


def _rebuild_timeout_error(key: str, timeout: float | None) -> CircuitTimeoutError:
    return CircuitTimeoutError(key, timeout)
