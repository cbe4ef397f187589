"""A typed view of ``response.extensions["circuit_breaker"]``: `BreakerInfo`, `breaker_info`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypedDict, cast

from ._breaker import CircuitBreaker
from ._state import CircuitState

__all__ = ["EXTENSION", "BreakerInfo", "breaker_info"]

EXTENSION = "circuit_breaker"
"""The key of the breaker's entry in `request.extensions` and `response.extensions`."""


class BreakerInfo(TypedDict):
    """What ``response.extensions["circuit_breaker"]`` holds when a breaker handled the
    request: annotate with it, or read it through `breaker_info`."""

    key: str
    """The breaker's key: ``host[:port]``, or what the transport's `key` function gave."""
    state: CircuitState
    """The breaker's state when it admitted the request: CLOSED, HALF_OPEN (the request
    was a probe) or OPEN (refused, but let through by ``dry_run``)."""
    breaker: CircuitBreaker
    """The breaker itself, for its metrics or state now."""


class _HasExtensions(Protocol):
    # A property, so that any response whose `extensions` is a mapping matches
    # (httpx's is a MutableMapping).
    @property
    def extensions(self) -> Mapping[str, Any]: ...


def breaker_info(response: _HasExtensions) -> BreakerInfo | None:
    """The breaker information of `response`, or None when no breaker handled it.

    None for a response that did not come through a circuit breaker transport, or
    whose request bypassed the breaker (``{"bypass": True}``):

    ```python
    info = breaker_info(response)
    if info is not None and info["state"] is CircuitState.HALF_OPEN:
        ...  # this response was a probe
    ```

    Args:
        response: an `httpx.Response` (or any response with an `extensions` mapping).
    """
    info = response.extensions.get(EXTENSION)
    if not isinstance(info, Mapping):
        return None
    return cast(BreakerInfo, info)
