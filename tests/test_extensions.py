"""breaker_info and BreakerInfo: the typed view of response.extensions["circuit_breaker"]."""

from __future__ import annotations

import httpx
import pytest

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerInfo,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitState,
    breaker_info,
)
from httpx_breaker.testing import set_state

from .conftest import FakeClock

pytestmark = pytest.mark.anyio

CONFIG = CircuitBreakerConfig(failure_threshold=1, reset_timeout=10.0, half_open_max_requests=1)


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


async def test_async_transport_fills_exactly_the_typed_fields(clock: FakeClock) -> None:
    """A response through the async transport has the key, the state at admission and
    the breaker, exactly the keys of BreakerInfo."""
    transport = AsyncCircuitBreakerTransport(
        httpx.MockTransport(_ok), registry=BreakerRegistry(default=CONFIG, clock=clock)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("https://api.example.com:8443/x")
        info = breaker_info(response)
        assert info is not None
        assert set(info) == set(BreakerInfo.__annotations__)
        assert info["key"] == "api.example.com:8443"
        assert info["state"] is CircuitState.CLOSED
        assert info["breaker"] is transport.registry["api.example.com:8443"]
        set_state(transport, "api.example.com:8443", CircuitState.HALF_OPEN)
        probe = breaker_info(await client.get("https://api.example.com:8443/x"))
        assert probe is not None and probe["state"] is CircuitState.HALF_OPEN


def test_sync_transport_and_responses_no_breaker_handled(clock: FakeClock) -> None:
    """The sync transport fills it too; a bypassed request or a plain response has none."""
    transport = CircuitBreakerTransport(
        httpx.MockTransport(_ok), registry=BreakerRegistry(default=CONFIG, clock=clock)
    )
    with httpx.Client(transport=transport) as client:
        info = breaker_info(client.get("https://svc/"))
        assert info is not None and info["key"] == "svc"
        bypassed = client.get("https://svc/", extensions={"circuit_breaker": {"bypass": True}})
        assert breaker_info(bypassed) is None
    assert breaker_info(httpx.Response(200)) is None
    assert breaker_info(httpx.Response(200, extensions={"circuit_breaker": "junk"})) is None
