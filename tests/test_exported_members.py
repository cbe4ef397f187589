"""The public surface: exactly the names of DESIGN.md, in a sorted __all__."""

from __future__ import annotations

import pickle

import httpx
import pytest

import httpx_breaker

PUBLIC_NAMES = [
    "AsyncCircuitBreakerTransport",
    "BreakerMetrics",
    "BreakerRegistry",
    "BulkheadFullError",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerTransport",
    "CircuitOpenError",
    "CircuitState",
    "CircuitTimeoutError",
    "RequestRejected",
    "circuit_breaker",
    "get_all_circuit_breakers",
]


def test_all_is_exactly_the_design_names_sorted() -> None:
    """`__all__` lists the public names of DESIGN.md once each, sorted."""
    assert httpx_breaker.__all__ == PUBLIC_NAMES
    assert sorted(httpx_breaker.__all__) == httpx_breaker.__all__


def test_every_public_name_is_importable() -> None:
    """Each name in `__all__` is an attribute of the package."""
    for name in PUBLIC_NAMES:
        assert getattr(httpx_breaker, name) is not None, name
    from httpx_breaker import (  # noqa: F401  (the import itself is the test)
        AsyncCircuitBreakerTransport,
        BreakerMetrics,
        BreakerRegistry,
        BulkheadFullError,
        CircuitBreaker,
        CircuitBreakerConfig,
        CircuitBreakerTransport,
        CircuitOpenError,
        CircuitState,
        CircuitTimeoutError,
        RequestRejected,
        circuit_breaker,
        get_all_circuit_breakers,
    )


def test_errors_sit_in_the_httpx_exception_tree() -> None:
    """Both refusals are RequestRejected, an httpx.TransportError; CircuitTimeoutError is an
    httpx.TimeoutException and no refusal."""
    assert issubclass(httpx_breaker.RequestRejected, httpx.TransportError)
    assert not issubclass(httpx_breaker.RequestRejected, httpx.TimeoutException)
    for refusal in (httpx_breaker.CircuitOpenError, httpx_breaker.BulkheadFullError):
        assert issubclass(refusal, httpx_breaker.RequestRejected)
        assert issubclass(refusal, httpx.TransportError)
        assert not issubclass(refusal, httpx.TimeoutException)
    assert not issubclass(httpx_breaker.CircuitOpenError, httpx_breaker.BulkheadFullError)
    assert not issubclass(httpx_breaker.BulkheadFullError, httpx_breaker.CircuitOpenError)
    assert not issubclass(httpx_breaker.CircuitTimeoutError, httpx_breaker.RequestRejected)
    assert issubclass(httpx_breaker.CircuitTimeoutError, httpx.TimeoutException)
    assert issubclass(httpx_breaker.CircuitTimeoutError, httpx.TransportError)


def test_circuit_state_values() -> None:
    """CircuitState has exactly the three documented values."""
    assert {s.name: s.value for s in httpx_breaker.CircuitState} == {
        "CLOSED": "closed",
        "OPEN": "open",
        "HALF_OPEN": "half_open",
    }


def test_errors_carry_their_facts_and_pickle() -> None:
    """The errors keep key, state, retry_after and timeout, also across pickling."""
    err = httpx_breaker.CircuitOpenError("h", httpx_breaker.CircuitState.OPEN, 1.5)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.key, copy.state, copy.retry_after) == ("h", httpx_breaker.CircuitState.OPEN, 1.5)
    timeout = pickle.loads(pickle.dumps(httpx_breaker.CircuitTimeoutError("h", 0.5)))
    assert (timeout.key, timeout.timeout) == ("h", 0.5)
    full = pickle.loads(pickle.dumps(httpx_breaker.BulkheadFullError("h", 4)))
    assert type(full) is httpx_breaker.BulkheadFullError
    assert (full.key, full.limit) == ("h", 4)
    assert str(full) == str(httpx_breaker.BulkheadFullError("h", 4))
    rejected = pickle.loads(pickle.dumps(httpx_breaker.RequestRejected("h")))
    assert type(rejected) is httpx_breaker.RequestRejected and rejected.key == "h"


def test_refusals_carry_their_request() -> None:
    """A refusal raised by a transport carries the request; one raised elsewhere says it has none."""
    request = httpx.Request("GET", "https://api.example.com/x")
    full = httpx_breaker.BulkheadFullError("api.example.com", 3, request=request)
    assert full.request is request
    assert (full.key, full.limit) == ("api.example.com", 3)
    assert "'api.example.com'" in str(full) and "3" in str(full)
    assert repr(full).startswith("BulkheadFullError(")
    opened = httpx_breaker.CircuitOpenError(
        "api.example.com", httpx_breaker.CircuitState.OPEN, 2.0, request=request
    )
    assert opened.request is request
    for bare in (
        httpx_breaker.BulkheadFullError("h", 1),
        httpx_breaker.CircuitOpenError("h", httpx_breaker.CircuitState.OPEN, None),
        httpx_breaker.RequestRejected("h"),
    ):
        with pytest.raises(RuntimeError):
            _ = bare.request


def test_circuit_open_message_is_unchanged() -> None:
    """CircuitOpenError still says which breaker, its state and when to retry."""
    err = httpx_breaker.CircuitOpenError("h", httpx_breaker.CircuitState.OPEN, 1.5)
    assert str(err) == "circuit breaker 'h' is open; retry after 1.500s"
    assert repr(err) == "CircuitOpenError(\"circuit breaker 'h' is open; retry after 1.500s\")"
    forced = httpx_breaker.CircuitOpenError("h", httpx_breaker.CircuitState.OPEN, None)
    assert str(forced) == "circuit breaker 'h' is open"
