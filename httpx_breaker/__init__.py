"""A circuit breaker for httpx, per host, delivered as a transport."""

from ._breaker import CircuitBreaker
from ._config import CircuitBreakerConfig
from ._decorator import circuit_breaker
from ._errors import BulkheadFullError, CircuitOpenError, CircuitTimeoutError, RequestRejected
from ._extensions import BreakerInfo, breaker_info
from ._metrics import BreakerMetrics
from ._registry import BreakerRegistry, get_all_circuit_breakers
from ._state import CircuitState
from ._transport import AsyncCircuitBreakerTransport, CircuitBreakerTransport

__all__ = [
    "AsyncCircuitBreakerTransport",
    "BreakerInfo",
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
    "breaker_info",
    "circuit_breaker",
    "get_all_circuit_breakers",
]
