"""CircuitBreaker.call_async under asyncio and trio: outcomes, deadlines, cancellation."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from httpx_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    CircuitTimeoutError,
)

from .conftest import FakeClock

pytestmark = pytest.mark.anyio

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class Boom(Exception):
    """The failure our test functions raise."""


def make(clock: FakeClock, **config: Any) -> CircuitBreaker:
    return CircuitBreaker("async-svc", CircuitBreakerConfig(**config), clock=clock)


async def answer(value: object = "ok") -> object:
    await anyio.lowlevel.checkpoint()
    return value


async def explode() -> None:
    await anyio.lowlevel.checkpoint()
    raise Boom


async def open_it(breaker: CircuitBreaker) -> None:
    while breaker.state is not OPEN:
        with pytest.raises(Boom):
            await breaker.call_async(explode)


async def test_success_and_failure_are_counted(clock: FakeClock) -> None:
    """call_async returns the result or re-raises, counting each outcome."""
    breaker = make(clock, failure_threshold=2)
    assert await breaker.call_async(answer, "v") == "v"
    assert await breaker.call_async(answer, value=3) == 3
    with pytest.raises(Boom):
        await breaker.call_async(explode)
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests, m.total_requests) == (2, 1, 3)


async def test_open_breaker_rejects_before_calling(clock: FakeClock) -> None:
    """Once open, call_async raises CircuitOpenError and never calls the function."""
    breaker = make(clock, failure_threshold=2, reset_timeout=20.0)
    await open_it(breaker)
    clock.advance(5.0)
    called = False

    async def never() -> None:
        nonlocal called
        called = True

    with pytest.raises(CircuitOpenError) as info:
        await breaker.call_async(never)
    assert not called
    assert (info.value.key, info.value.state, info.value.retry_after) == ("async-svc", OPEN, 15.0)
    clock.advance(15.0)
    assert await breaker.call_async(answer) == "ok"


async def test_slow_async_calls_are_measured_on_the_injected_clock(clock: FakeClock) -> None:
    """A call whose duration on the fake clock reaches slow_call_duration is slow."""
    breaker = make(clock, slow_call_duration=1.0, window_size=2, slow_call_rate_threshold=1.0)

    async def slow() -> str:
        clock.advance(1.0)
        await anyio.lowlevel.checkpoint()
        return "slow"

    assert await breaker.call_async(slow) == "slow"
    assert await breaker.call_async(slow) == "slow"
    assert breaker.state is OPEN
    assert breaker.get_metrics().slow_requests == 2


async def test_deadline_raises_circuit_timeout_and_counts_a_failure(clock: FakeClock) -> None:
    """A call outliving `timeout` is cancelled and raises CircuitTimeoutError, a failure."""
    breaker = make(clock, timeout=0.05, failure_threshold=1)
    cleaned_up = False

    async def hang() -> None:
        nonlocal cleaned_up
        try:
            await anyio.sleep(10)
        finally:
            cleaned_up = True

    with pytest.raises(CircuitTimeoutError) as info:
        await breaker.call_async(hang)
    assert isinstance(info.value, httpx.TimeoutException)
    assert info.value.key == "async-svc"
    assert info.value.timeout == 0.05
    assert cleaned_up
    m = breaker.get_metrics()
    assert (m.failed_requests, m.ignored_requests) == (1, 0)
    assert breaker.state is OPEN


async def test_fast_call_under_a_deadline_succeeds(clock: FakeClock) -> None:
    """A call that finishes within `timeout` returns normally."""
    breaker = make(clock, timeout=5.0)
    assert await breaker.call_async(answer, 7) == 7
    assert breaker.get_metrics().successful_requests == 1


@pytest.mark.parametrize("deadline", [5.0, None])
async def test_functions_own_timeout_error_is_not_ours(
    clock: FakeClock, deadline: float | None
) -> None:
    """A TimeoutError raised by the function propagates as itself and counts as a failure."""
    breaker = make(clock, timeout=deadline)

    async def own_timeout() -> None:
        await anyio.lowlevel.checkpoint()
        raise TimeoutError("the function's own")

    with pytest.raises(TimeoutError) as info:
        await breaker.call_async(own_timeout)
    assert not isinstance(info.value, CircuitTimeoutError)
    assert str(info.value) == "the function's own"
    assert breaker.get_metrics().failed_requests == 1


async def test_outer_cancellation_is_not_our_timeout(clock: FakeClock) -> None:
    """A caller's cancel scope ending the call is ignored, not a timeout failure."""
    breaker = make(clock, timeout=5.0)
    with anyio.move_on_after(0.05) as scope:
        await breaker.call_async(anyio.sleep, 10)
    assert scope.cancelled_caught
    m = breaker.get_metrics()
    assert (m.failed_requests, m.ignored_requests) == (0, 1)


async def test_cancelled_probe_returns_its_permit(clock: FakeClock) -> None:
    """Cancelling a half-open probe frees its slot and counts as neither success nor failure."""
    breaker = make(clock, failure_threshold=1, reset_timeout=10.0, half_open_max_requests=1)
    await open_it(breaker)
    clock.advance(10.0)
    in_flight = anyio.Event()

    async def probe() -> None:
        in_flight.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call_async, probe)
        await in_flight.wait()
        with pytest.raises(CircuitOpenError) as info:  # the only slot is taken
            await breaker.call_async(answer)
        assert info.value.state is HALF_OPEN
        tg.cancel_scope.cancel()
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests, m.ignored_requests) == (0, 1, 1)
    assert breaker.state is HALF_OPEN
    assert await breaker.call_async(answer) == "ok"  # the slot came back
    assert breaker.state is CLOSED


async def test_failed_async_probe_reopens_with_backoff(clock: FakeClock) -> None:
    """A failing async probe reopens for the multiplied period."""
    breaker = make(
        clock, failure_threshold=1, reset_timeout=4.0, reset_timeout_multiplier=3.0,
        half_open_max_requests=2,
    )
    await open_it(breaker)
    clock.advance(4.0)
    assert await breaker.call_async(answer) == "ok"
    with pytest.raises(Boom):
        await breaker.call_async(explode)
    assert breaker.state is OPEN
    assert breaker.retry_after == 12.0


async def test_async_classifier_trips_on_returned_failures(clock: FakeClock) -> None:
    """With a result classifier, returned failure values open the breaker."""
    breaker = CircuitBreaker(
        "result-async",
        CircuitBreakerConfig(failure_threshold=2),
        classifier=lambda result, exc: exc is not None or result == "error",
        clock=clock,
    )
    assert await breaker.call_async(answer, "error") == "error"
    assert await breaker.call_async(answer, "error") == "error"
    assert breaker.state is OPEN


async def test_timeout_goes_to_the_classifier(clock: FakeClock) -> None:
    """The classifier sees the CircuitTimeoutError and may ignore it."""
    seen: list[BaseException | None] = []

    def classify(result: object, exc: BaseException | None) -> bool | None:
        seen.append(exc)
        return None

    breaker = CircuitBreaker(
        "timeout-cls", CircuitBreakerConfig(timeout=0.05), classifier=classify, clock=clock
    )
    with pytest.raises(CircuitTimeoutError):
        await breaker.call_async(anyio.sleep, 10)
    assert len(seen) == 1 and isinstance(seen[0], CircuitTimeoutError)
    assert breaker.get_metrics().ignored_requests == 1


async def test_dry_run_async_passes_would_be_rejections(clock: FakeClock) -> None:
    """In dry run, call_async on an open breaker runs the function and counts a rejection."""
    breaker = make(clock, failure_threshold=1, dry_run=True)
    await open_it(breaker)
    assert await breaker.call_async(answer, "through") == "through"
    m = breaker.get_metrics()
    assert (m.rejected_requests, m.successful_requests, m.failed_requests) == (1, 0, 1)
