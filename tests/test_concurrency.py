"""The half-open probe limit under many racing tasks and threads; permits never lost."""

from __future__ import annotations

import random
import threading
from typing import Any

import anyio
import pytest

from httpx_breaker import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError, CircuitState

from .conftest import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
TASKS = 200
THREADS = 32


class Boom(Exception):
    """The failure our test functions raise."""


def half_open_breaker(clock: FakeClock, probes: int, **config: Any) -> CircuitBreaker:
    """A breaker just past its open period, ready to admit `probes` probes."""
    breaker = CircuitBreaker(
        "race",
        CircuitBreakerConfig(
            failure_threshold=1, reset_timeout=10.0, half_open_max_requests=probes, **config
        ),
        clock=clock,
    )

    def boom() -> None:
        raise Boom

    with pytest.raises(Boom):
        breaker.call(boom)
    clock.advance(10.0)
    return breaker


@pytest.mark.anyio
@pytest.mark.parametrize(("probes", "outcome"), [(1, "succeed"), (3, "succeed"), (5, "fail"), (4, "cancel")])
async def test_racing_tasks_get_exactly_the_probe_limit(
    clock: FakeClock, probes: int, outcome: str
) -> None:
    """Of 200 tasks racing into HALF_OPEN, exactly half_open_max_requests pass."""
    breaker = half_open_breaker(clock, probes)
    gate = anyio.Event()
    admitted = 0
    rejected = 0
    settled = anyio.Event()

    def tally() -> None:
        if admitted + rejected == TASKS:
            settled.set()

    async def probe() -> None:
        nonlocal admitted
        admitted += 1
        tally()
        await gate.wait()
        if outcome == "fail":
            raise Boom

    async def racer() -> None:
        nonlocal rejected
        try:
            await breaker.call_async(probe)
        except CircuitOpenError:
            rejected += 1
            tally()
        except Boom:
            pass

    async with anyio.create_task_group() as tg:
        for _ in range(TASKS):
            tg.start_soon(racer)
        await settled.wait()  # every task is either in flight or refused
        assert (admitted, rejected) == (probes, TASKS - probes)
        if outcome == "cancel":
            tg.cancel_scope.cancel()
        else:
            gate.set()

    m = breaker.get_metrics()
    assert m.rejected_requests == TASKS - probes
    if outcome == "succeed":
        assert breaker.state is CLOSED
        assert m.successful_requests == probes
    elif outcome == "fail":
        assert breaker.state is OPEN
    else:
        assert breaker.state is HALF_OPEN
        assert m.ignored_requests == probes
        # Every permit came back: a full round of probes can run and close the breaker.
        for _ in range(probes):
            await breaker.call_async(anyio.lowlevel.checkpoint)
        assert breaker.state is CLOSED


@pytest.mark.parametrize(("probes", "fail"), [(1, False), (3, False), (5, True)])
def test_racing_threads_get_exactly_the_probe_limit(clock: FakeClock, probes: int, fail: bool) -> None:
    """Of 32 threads released together into HALF_OPEN, exactly half_open_max_requests pass."""
    breaker = half_open_breaker(clock, probes)
    barrier = threading.Barrier(THREADS)
    gate = threading.Event()
    lock = threading.Lock()
    settled = threading.Event()
    admitted = rejected = 0

    def tally() -> None:
        if admitted + rejected == THREADS:
            settled.set()

    def probe() -> None:
        nonlocal admitted
        with lock:
            admitted += 1
            tally()
        assert gate.wait(30)
        if fail:
            raise Boom

    def racer() -> None:
        nonlocal rejected
        barrier.wait()
        try:
            breaker.call(probe)
        except CircuitOpenError:
            with lock:
                rejected += 1
                tally()
        except Boom:
            pass

    threads = [threading.Thread(target=racer) for _ in range(THREADS)]
    for t in threads:
        t.start()
    try:
        assert settled.wait(30)
        assert (admitted, rejected) == (probes, THREADS - probes)
    finally:
        gate.set()
        for t in threads:
            t.join(30)
    assert breaker.state is (OPEN if fail else CLOSED)
    assert breaker.get_metrics().rejected_requests == THREADS - probes


def test_threads_with_random_outcomes_never_stick_half_open(clock: FakeClock) -> None:
    """After many threads mix successes, failures, ignored calls and clock jumps, a probe can pass."""
    breaker = CircuitBreaker(
        "mixed",
        CircuitBreakerConfig(
            failure_threshold=2, reset_timeout=1.0, half_open_max_requests=2,
            window_size=5, exclude_exceptions=(KeyError,),
        ),
        clock=clock,
    )
    clock_lock = threading.Lock()
    calls_made = [0] * 8

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            choice = rng.random()

            def fn(choice: float = choice) -> None:
                if choice < 0.3:
                    raise Boom
                if choice < 0.4:
                    raise KeyError
                if choice < 0.5:
                    with clock_lock:
                        clock.advance(0.5)

            try:
                breaker.call(fn)
                calls_made[seed] += 1
            except (Boom, KeyError):
                calls_made[seed] += 1
            except CircuitOpenError:
                with clock_lock:
                    clock.advance(0.5)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    m = breaker.get_metrics()
    assert m.total_requests == sum(calls_made)
    assert m.total_requests == m.successful_requests + m.failed_requests + m.ignored_requests
    assert m.total_requests + m.rejected_requests == 8 * 300
    clock.advance(100.0)
    for _ in range(2):
        breaker.call(lambda: None)  # admitted as probes (or in CLOSED)
    assert breaker.state is CLOSED
