"""A circuit breaker for httpx, per host, delivered as a transport."""

from ._breaker import CircuitBreaker
from ._config import CircuitBreakerConfig
from ._decorator import circuit_breaker
from ._errors import BulkheadFullError, CircuitOpenError, CircuitTimeoutError, RequestRejected
from ._metrics import BreakerMetrics
from ._registry import BreakerRegistry, get_all_circuit_breakers
from ._state import CircuitState
from ._transport import AsyncCircuitBreakerTransport, CircuitBreakerTransport

__all__ = [
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
