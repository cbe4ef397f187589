"""The event type that `CircuitBreaker.add_listener` callbacks receive."""

from ._state import BreakerEvent

__all__ = ["BreakerEvent"]
