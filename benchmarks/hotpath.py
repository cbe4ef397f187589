"""The engine's hot path on its own: ns added per CLOSED success, best of many rounds.

A quick check for changes to the engine (the full suite is ``python -m benchmarks``).
With ``--against DIR`` (another copy of the ``httpx_breaker`` package, for instance
from ``git archive main httpx_breaker | tar -x -C /tmp/main``), both copies are loaded
side by side and measured in alternating rounds in one process, so a busy machine
disturbs both alike; compare the ``min`` columns (the least disturbed rounds).

    python -m benchmarks.hotpath [--against /tmp/main/httpx_breaker] [--number 20000]
                                 [--rounds 60]

Each figure is ns per call over the same loop around a bare call (or await):

- ``call``: `CircuitBreaker.call(fn)`, CLOSED, success, no timeout.
- ``call_async``: `await CircuitBreaker.call_async(fn)` under asyncio.
- ``transport``: what a transport does for one request that succeeds: admit, read the
  clock at the start, at the headers and at the close, record the success.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx_breaker

Loop = Callable[[int], int]


def _load(name: str, path: Path) -> ModuleType:
    """Import the package at `path` under another name, next to the installed one."""
    spec = importlib.util.spec_from_file_location(
        name, path / "__init__.py", submodule_search_locations=[str(path)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path} is not a package")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fn() -> int:
    return 1


async def afn() -> int:
    return 1


def _loops(package: Any) -> dict[str, Loop]:
    breaker = package.CircuitBreaker("hotpath")
    # The protocol's names, or the private ones of versions before it had them.
    admit = getattr(breaker, "admit", None) or breaker._acquire
    record_success = getattr(breaker, "record_success", None) or breaker._record_success
    clock = breaker.clock

    def call(n: int) -> int:
        call = breaker.call
        t0 = time.perf_counter_ns()
        for _ in range(n):
            call(fn)
        return time.perf_counter_ns() - t0

    async def call_async(n: int) -> int:
        call = breaker.call_async
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await call(afn)
        return time.perf_counter_ns() - t0

    def transport(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            token = admit()
            start = clock()
            end = clock()
            record_success(token, start, end, clock())
        return time.perf_counter_ns() - t0

    return {
        "call": call,
        "call_async": lambda n: asyncio.run(call_async(n)),
        "transport": transport,
    }


def _baselines() -> dict[str, Loop]:
    def call(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        return time.perf_counter_ns() - t0

    async def call_async(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await afn()
        return time.perf_counter_ns() - t0

    def transport(n: int) -> int:
        clock = time.monotonic
        t0 = time.perf_counter_ns()
        for _ in range(n):
            start = clock()
            end = clock()
            _ = (start, end, clock())
        return time.perf_counter_ns() - t0

    return {
        "call": call,
        "call_async": lambda n: asyncio.run(call_async(n)),
        "transport": transport,
    }


def measure(variants: dict[str, Any], number: int, rounds: int) -> list[tuple[str, str, float, float]]:
    """`(path, variant, min added ns, median added ns)` for every path and variant."""
    loops = {name: _loops(package) for name, package in variants.items()}
    baselines = _baselines()
    base: dict[str, list[float]] = {path: [] for path in baselines}
    samples: dict[tuple[str, str], list[float]] = {
        (path, name): [] for path in baselines for name in variants
    }
    names = list(variants)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for path, baseline in baselines.items():
            base[path].append(baseline(number) / number)
            for name in order:
                samples[(path, name)].append(loops[name][path](number) / number)
    return [
        (
            path,
            name,
            min(samples[(path, name)]) - min(base[path]),
            statistics.median(samples[(path, name)]) - statistics.median(base[path]),
        )
        for path in baselines
        for name in names
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--against", type=Path, help="another httpx_breaker package directory")
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing")
    parser.add_argument("--rounds", type=int, default=60, help="alternating rounds")
    args = parser.parse_args()
    variants: dict[str, Any] = {"this": httpx_breaker}
    if args.against is not None:
        variants = {"against": _load("httpx_breaker_against", args.against.resolve()), **variants}
    print(f"{'path':>10} {'variant':>8} {'min':>8} {'median':>8}  (ns added per call)")
    for path, name, best, median in measure(variants, args.number, args.rounds):
        print(f"{path:>10} {name:>8} {best:8.1f} {median:8.1f}")


if __name__ == "__main__":
    main()
