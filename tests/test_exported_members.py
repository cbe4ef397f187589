"""The public surface: exactly the names of DESIGN.md, in a sorted __all__."""

from __future__ import annotations

import pickle

import httpx

import httpx_breaker

PUBLIC_NAMES = [
    "AsyncCircuitBreakerTransport",
    "BreakerInfo",
    "BreakerMetrics",
    "BreakerRegistry",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerTransport",
    "CircuitOpenError",
    "CircuitState",
    "CircuitTimeoutError",
    "breaker_info",
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
        BreakerInfo,
        BreakerMetrics,
        BreakerRegistry,
        CircuitBreaker,
        CircuitBreakerConfig,
        CircuitBreakerTransport,
        CircuitOpenError,
        CircuitState,
        CircuitTimeoutError,
        breaker_info,
        circuit_breaker,
        get_all_circuit_breakers,
    )


def test_errors_sit_in_the_httpx_exception_tree() -> None:
    """CircuitOpenError is an httpx.TransportError; CircuitTimeoutError an httpx.TimeoutException."""
    assert issubclass(httpx_breaker.CircuitOpenError, httpx.TransportError)
    assert not issubclass(httpx_breaker.CircuitOpenError, httpx.TimeoutException)
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
