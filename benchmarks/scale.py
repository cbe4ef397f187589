"""Section 6: memory per breaker, the registry with many hosts, and a HALF_OPEN stampede."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from httpx_breaker import (
    BreakerRegistry,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
)

from .variants import FAR, installed


def bytes_per_object(make: Callable[[int], Any], count: int) -> float:
    """Bytes retained per object made by `make(i)`, measured with tracemalloc.

    The list holding the objects is allocated before measuring; names and other
    inputs must be built before `make` is called (they are not the object's cost).
    """
    held: list[Any] = [None] * count
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            held[i] = make(i)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del held
    gc.collect()
    return (after - before) / count


def memory_rows(count: int) -> list[dict[str, Any]]:
    """Bytes per idle breaker, ours (window 10 and 100) and the peers'."""
    rows: list[dict[str, Any]] = []
    for window in (10, 100):
        config = CircuitBreakerConfig(window_size=window)
        names = [f"mem-{window}-{i}.example" for i in range(count)]
        rows.append(
            {
                "name": f"httpx-breaker CircuitBreaker (window {window})",
                "group": "ours",
                "window": window,
                "bytes": bytes_per_object(lambda i, c=config, n=names: CircuitBreaker(n[i], c), count),
            }
        )
        registry = BreakerRegistry(default=config, max_size=count + 1)
        rows.append(
            {
                "name": f"httpx-breaker per host in BreakerRegistry (window {window})",
                "group": "ours",
                "window": window,
                "bytes": bytes_per_object(lambda i, r=registry, n=names: r.breaker_for(n[i]), count),
            }
        )
        del registry
        if installed("interlock"):
            import interlock

            iconfig = interlock.Config(window_size=window, minimum_number_of_calls=min(10, window))
            iregistry = interlock.Registry(config=iconfig)
            rows.append(
                {
                    "name": f"interlock-cb per name in Registry (window {window})",
                    "group": "peer",
                    "window": window,
                    "bytes": bytes_per_object(lambda i, r=iregistry, n=names: r.get(n[i]), count),
                }
            )
            del iregistry
    names = [f"mem-peer-{i}" for i in range(count)]
    if installed("circuitbreaker"):
        import circuitbreaker

        rows.append(
            {
                "name": "circuitbreaker CircuitBreaker",
                "group": "peer",
                "window": None,
                "bytes": bytes_per_object(
                    lambda i: circuitbreaker.CircuitBreaker(name=names[i]), count
                ),
            }
        )
    if installed("pybreaker"):
        import pybreaker

        rows.append(
            {
                "name": "pybreaker CircuitBreaker",
                "group": "peer",
                "window": None,
                "bytes": bytes_per_object(lambda i: pybreaker.CircuitBreaker(name=names[i]), count),
            }
        )
    if installed("aiobreaker"):
        import aiobreaker

        rows.append(
            {
                "name": "aiobreaker CircuitBreaker",
                "group": "peer",
                "window": None,
                "bytes": bytes_per_object(
                    lambda i: aiobreaker.CircuitBreaker(
                        name=names[i], timeout_duration=timedelta(seconds=60)
                    ),
                    count,
                ),
            }
        )
    return rows


def registry_rows(hosts: int, reps: int) -> list[dict[str, Any]]:
    """`breaker_for` over `hosts` distinct keys with a cap of 10,000 and with room for all."""
    keys = [f"h{i}.example.com" for i in range(hosts)]
    rows = []
    for max_size in (10_000, 2 * hosts if hosts > 10_000 else 200_000):
        fill: list[float] = []
        hit: list[float] = []
        for _ in range(reps):
            registry = BreakerRegistry(max_size=max_size)
            breaker_for = registry.breaker_for
            gc.collect()
            t = time.perf_counter_ns()
            for key in keys:
                breaker_for(key)
            fill.append((time.perf_counter_ns() - t) / hosts)
            kept = len(registry)
            present = keys[-kept:]
            t = time.perf_counter_ns()
            for key in present:
                breaker_for(key)
            hit.append((time.perf_counter_ns() - t) / kept)
            del registry, breaker_for
            gc.collect()
        # Memory in a separate pass: tracemalloc slows every allocation.
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            registry = BreakerRegistry(max_size=max_size)
            for key in keys:
                registry.breaker_for(key)
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        rows.append(
            {
                "max_size": max_size,
                "hosts": hosts,
                "kept": len(registry),
                "insert_ns": (statistics.median(fill), min(fill), max(fill)),
                "hit_ns": (statistics.median(hit), min(hit), max(hit)),
                "retained_bytes": retained,
            }
        )
        del registry
        gc.collect()
    return rows


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _race_once(tasks: int, probes: int) -> dict[str, Any]:
    clock = _Clock()
    config = CircuitBreakerConfig(
        failure_threshold=1, reset_timeout=30.0, half_open_max_requests=probes, timeout=None
    )
    breaker = CircuitBreaker("bench-race", config, clock=clock)

    async def boom() -> None:
        raise ValueError("boom")

    with contextlib.suppress(ValueError):
        await breaker.call_async(boom)
    assert breaker.state is CircuitState.OPEN
    clock.now += 31.0  # the open period is over: the next calls race into HALF_OPEN
    release = asyncio.Event()
    passed = rejected = 0

    async def probe() -> None:
        await release.wait()

    async def one() -> None:
        nonlocal passed, rejected
        try:
            await breaker.call_async(probe)
        except CircuitOpenError:
            rejected += 1
        else:
            passed += 1

    t = time.perf_counter_ns()
    running = [asyncio.create_task(one()) for _ in range(tasks)]
    for _ in range(100_000):  # until every task has reached the breaker (bounded)
        if rejected + passed >= tasks - probes:
            break
        await asyncio.sleep(0)
    admitted_ns = time.perf_counter_ns() - t
    release.set()
    await asyncio.gather(*running)
    total_ns = time.perf_counter_ns() - t
    return {
        "tasks": tasks,
        "probes": probes,
        "passed": passed,
        "rejected": rejected,
        "final_state": breaker.state.value,
        "admitted_ns": admitted_ns,
        "total_ns": total_ns,
    }


def race_rows(tasks: int, reps: int) -> dict[str, Any]:
    """`tasks` tasks rush one breaker the moment it may probe; exactly `probes` pass."""
    results = [asyncio.run(_race_once(tasks, 3)) for _ in range(reps)]
    totals = [r["total_ns"] for r in results]
    admitted = [r["admitted_ns"] for r in results]
    first = results[0]
    return {
        **{k: first[k] for k in ("tasks", "probes", "final_state")},
        "passed": [r["passed"] for r in results],
        "rejected": [r["rejected"] for r in results],
        "exact": all(r["passed"] == r["probes"] for r in results),
        "total_ms": tuple(x / 1e6 for x in (statistics.median(totals), min(totals), max(totals))),
        "admitted_ms": tuple(
            x / 1e6 for x in (statistics.median(admitted), min(admitted), max(admitted))
        ),
        "per_task_ns": statistics.median(totals) / tasks,
    }


__all__ = ["FAR", "bytes_per_object", "memory_rows", "race_rows", "registry_rows"]
