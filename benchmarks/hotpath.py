"""The engine's hot path on its own: ns per CLOSED success, best of many repeats.

A quick check for changes to `_breaker.py` (the full suite is ``python -m benchmarks``):
run it before and after a change, on the same machine, and compare. Each figure is the
fastest of `--repeat` timings of `--number` calls, minus the same loop around a bare
call (or await), so it is the cost the breaker adds.

    python -m benchmarks.hotpath [--number 200000] [--repeat 15]

Measured:

- ``call``: `CircuitBreaker.call(fn)`, CLOSED, success, no timeout.
- ``call_async``: `await CircuitBreaker.call_async(fn)` under asyncio.
- ``transport``: what a transport does for one request whose outcome is a success:
  admit, read the clock at start, at the headers and at the close, record the success.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from httpx_breaker import CircuitBreaker


def _best(loop: Callable[[int], int], number: int, repeat: int) -> float:
    """The fastest of `repeat` runs of `loop(number)`, in ns per iteration."""
    return min(loop(number) for _ in range(repeat)) / number


def measure(number: int, repeat: int) -> dict[str, float]:
    breaker = CircuitBreaker("hotpath")

    def fn() -> int:
        return 1

    async def afn() -> int:
        return 1

    def bare_sync(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        return time.perf_counter_ns() - t0

    def call(n: int) -> int:
        call = breaker.call
        t0 = time.perf_counter_ns()
        for _ in range(n):
            call(fn)
        return time.perf_counter_ns() - t0

    admit = getattr(breaker, "admit", None) or breaker._acquire
    record_success = getattr(breaker, "record_success", None) or breaker._record_success

    def transport(n: int) -> int:
        clock = breaker.clock
        t0 = time.perf_counter_ns()
        for _ in range(n):
            token = admit()
            start = clock()
            end = clock()
            record_success(token, start, end, clock())
        return time.perf_counter_ns() - t0

    def bare_transport(n: int) -> int:
        clock = breaker.clock
        t0 = time.perf_counter_ns()
        for _ in range(n):
            start = clock()
            end = clock()
            _ = (start, end, clock())
        return time.perf_counter_ns() - t0

    async def bare_async(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await afn()
        return time.perf_counter_ns() - t0

    async def call_async(n: int) -> int:
        call = breaker.call_async
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await call(afn)
        return time.perf_counter_ns() - t0

    def run_async(coro_fn: Callable[[int], object]) -> Callable[[int], int]:
        def loop(n: int) -> int:
            return asyncio.run(coro_fn(n))  # type: ignore[arg-type]

        return loop

    sync_base = _best(bare_sync, number, repeat)
    async_base = _best(run_async(bare_async), number, repeat)
    transport_base = _best(bare_transport, number, repeat)
    return {
        "call": _best(call, number, repeat) - sync_base,
        "call_async": _best(run_async(call_async), number, repeat) - async_base,
        "transport": _best(transport, number, repeat) - transport_base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    for name, ns in measure(args.number, args.repeat).items():
        print(f"{name:>10}: {ns:7.1f} ns added per call")


if __name__ == "__main__":
    main()
