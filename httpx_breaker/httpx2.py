"""The transports for httpx2: `httpx2.AsyncClient` and `httpx2.Client` (Python 3.11+).

Install with ``pip install 'httpx-breaker[httpx2]'``. The transports take the same
arguments and behave as `httpx_breaker.AsyncCircuitBreakerTransport` and
`httpx_breaker.CircuitBreakerTransport` do for httpx; they share the engine, the
configs and the registries with them (one `BreakerRegistry` may serve httpx and httpx2
clients at once: a host has one breaker, whichever library the request came through).

What differs is only what must:

- they wrap an httpx2 transport (`httpx2.AsyncHTTPTransport()` by default);
- the errors they raise are httpx2's: `CircuitOpenError` here is an
  `httpx2.TransportError` and `CircuitTimeoutError` an `httpx2.TimeoutException`, and
  each is also the `httpx_breaker` error of the same name, so ``except
  httpx_breaker.CircuitOpenError`` catches refusals from both libraries;
- the default classifier (and `make_classifier`'s defaults) judge httpx2's exceptions.

The transports and the classifier are generated from their httpx source (see
``scripts/gen_httpx2.py``), so the two never drift apart.
"""

from __future__ import annotations

import sys

try:
    import httpx2  # noqa: F401  (fail here, with a message that says what to install)
except ImportError as exc:
    needs = "" if sys.version_info >= (3, 11) else " (httpx2 needs Python 3.11 or later)"
    raise ImportError(
        "httpx_breaker.httpx2 needs the httpx2 package: "
        f"pip install 'httpx-breaker[httpx2]'{needs}",
        name=__name__,
    ) from exc

from ._httpx2._classify import (
    DEFAULT_FAILURE_STATUSES,
    NOT_THE_HOSTS_FAULT,
    Classifier,
    default_classifier,
    from_cache,
    make_classifier,
)
from ._httpx2._errors import (
    BulkheadFullError,
    CircuitOpenError,
    CircuitTimeoutError,
    RequestRejected,
)
from ._httpx2._keys import default_key
from ._httpx2._transport import (
    AsyncCircuitBreakerTransport,
    CircuitBreakerTransport,
    parse_retry_after,
)

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "NOT_THE_HOSTS_FAULT",
    "AsyncCircuitBreakerTransport",
    "BulkheadFullError",
    "CircuitBreakerTransport",
    "CircuitOpenError",
    "CircuitTimeoutError",
    "Classifier",
    "RequestRejected",
    "default_classifier",
    "default_key",
    "from_cache",
    "make_classifier",
    "parse_retry_after",
]
