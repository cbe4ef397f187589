"""How a suite on pytest-asyncio tests code behind breakers, with httpx_breaker.testing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import respx

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker.testing import FakeClock, breaker_testing, set_state

HOST = "payments.internal"
CONFIG = CircuitBreakerConfig(failure_threshold=2, reset_timeout=60.0, half_open_max_requests=1)


async def charge(client: httpx.AsyncClient) -> str:
    """The code under test: charge, or queue the charge while payments is down."""
    try:
        response = await client.post(f"https://{HOST}/charge")
    except CircuitOpenError:
        return "queued"
    return "charged" if response.is_success else "failed"


@pytest_asyncio.fixture
async def transport() -> AsyncIterator[AsyncCircuitBreakerTransport]:
    transport = AsyncCircuitBreakerTransport(default=CONFIG)
    yield transport
    await transport.aclose()


@pytest.mark.asyncio
async def test_queues_while_open_and_charges_after_recovery(
    transport: AsyncCircuitBreakerTransport,
) -> None:
    """While payments' breaker is open the charge is queued; after the period, it goes out."""
    with respx.mock() as mock, breaker_testing(transport) as clock:
        route = mock.post(f"https://{HOST}/charge").respond(200)
        async with httpx.AsyncClient(transport=transport) as client:
            set_state(transport, HOST, CircuitState.OPEN)
            assert await charge(client) == "queued"
            assert route.call_count == 0
            clock.advance(60)
            assert await charge(client) == "charged"
    assert transport.registry[HOST].state is CircuitState.CLOSED


@pytest.mark.asyncio
async def test_failures_open_the_breaker(breaker_clock: FakeClock) -> None:
    """Two 503s open the breaker; the fixture's clock decides when it probes again."""
    transport = AsyncCircuitBreakerTransport(default=CONFIG)
    with breaker_testing(transport, clock=breaker_clock), respx.mock() as mock:
        mock.post(f"https://{HOST}/charge").respond(503)
        async with httpx.AsyncClient(transport=transport) as client:
            assert await charge(client) == "failed"
            assert await charge(client) == "failed"
            assert await charge(client) == "queued"
            breaker_clock.advance(59.9)
            assert await charge(client) == "queued"
            breaker_clock.advance(0.1)
            assert await charge(client) == "failed"  # the probe went out, and failed


@pytest.mark.asyncio
async def test_half_open_lets_one_probe_through(transport: AsyncCircuitBreakerTransport) -> None:
    """In HALF_OPEN exactly one probe passes (half_open_max_requests=1) and closes it."""
    with respx.mock() as mock, breaker_testing(transport):
        mock.post(f"https://{HOST}/charge").respond(200)
        async with httpx.AsyncClient(transport=transport) as client:
            set_state(transport, HOST, CircuitState.HALF_OPEN)
            assert await charge(client) == "charged"
    assert transport.registry[HOST].state is CircuitState.CLOSED
