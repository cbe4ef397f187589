"""The deadline helper: fires on time, tells its own expiry from anyone else's cancel."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from httpx_breaker import CircuitTimeoutError
from httpx_breaker._deadline import run_with_deadline

pytestmark = pytest.mark.anyio


async def test_a_call_within_its_deadline_returns_its_result() -> None:
    """A call that finishes in time returns what it returned."""

    async def quick() -> str:
        await anyio.lowlevel.checkpoint()
        return "done"

    assert await run_with_deadline(quick(), 5.0, "svc") == "done"


async def test_an_overrun_raises_circuit_timeout_with_the_facts() -> None:
    """A call past its deadline is cancelled and reported with the key and the deadline."""
    with pytest.raises(CircuitTimeoutError) as info:
        await run_with_deadline(anyio.sleep(10), 0.02, "svc")
    assert info.value.key == "svc"
    assert info.value.timeout == 0.02


async def test_many_deadlines_fire_each_for_its_own_call() -> None:
    """Concurrent calls with different deadlines: only the ones that overrun time out."""
    outcomes: dict[int, str] = {}

    async def one(i: int, deadline: float, work: float) -> None:
        try:
            await run_with_deadline(anyio.sleep(work), deadline, f"svc{i}")
            outcomes[i] = "ok"
        except CircuitTimeoutError:
            outcomes[i] = "timeout"

    async with anyio.create_task_group() as tg:
        for i in range(40):
            # Even ones finish well within their deadline; odd ones never would.
            if i % 2:
                tg.start_soon(one, i, 0.01 + i * 0.001, 30.0)
            else:
                tg.start_soon(one, i, 5.0, 0.001)
    assert outcomes == {i: "timeout" if i % 2 else "ok" for i in range(40)}


async def test_an_outer_cancel_is_not_taken_for_a_timeout() -> None:
    """A cancel scope around the call cancels it as usual, with no CircuitTimeoutError."""
    with anyio.move_on_after(0.02) as scope:
        await run_with_deadline(anyio.sleep(10), 5.0, "svc")
    assert scope.cancelled_caught


async def test_the_task_stays_usable_after_a_timeout() -> None:
    """After our deadline fired, the task can await again without a stray cancellation."""
    with pytest.raises(CircuitTimeoutError):
        await run_with_deadline(anyio.sleep(10), 0.01, "svc")
    await anyio.sleep(0.01)  # would raise if the task still carried our cancel request
    assert await run_with_deadline(_value(), 1.0, "svc") == 7


async def _value() -> int:
    return 7
