"""Machine instructions per request over each row's floor, counted by valgrind.

CPU time on a shared machine moves by about ±0.15 µs from run to run, which is as much
as many changes to the hot path save. An instruction count does not move: each row runs
in a child process under ``valgrind --tool=cachegrind --cache-sim=no`` (which counts
every instruction the process executes) twice, with `SMALL` and `LARGE` requests, so
that start-up cancels out, and the difference per request of the row is set against
its floor's, as in the timed rows. Use it to compare two versions of the code (run it
on each); the time rows remain the measure of record. Needs valgrind on the PATH
(``apt-get install valgrind``), is slow under it (about two minutes), and is in no test.

    .venv-bench/bin/python -m benchmarks.instructions [--only closed,call_async]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from typing import Any

SMALL, LARGE = 2_000, 12_000

# row: (what it measures, its floor, the code that runs `n` requests)
ROWS: dict[str, tuple[str, str | None]] = {
    "floor_async": ("pass-through async wrapper (the floor of the async rows)", None),
    "closed": ("async transport, CLOSED, default config", "floor_async"),
    "deadline": ("async transport, timeout=10", "floor_async"),
    "floor_tracing": ("pass-through over the tracing transport", None),
    "deadline_tracing": ("async transport, timeout=10, over the tracing transport", "floor_tracing"),
    "floor_sync": ("pass-through sync wrapper", None),
    "sync_closed": ("sync transport, CLOSED, default config", "floor_sync"),
    "floor_await": ("a bare await", None),
    "call_async": ("`call_async`, CLOSED", "floor_await"),
}


def _run(row: str, n: int) -> int:
    """Make `n` requests (or calls) of `row` in this process; return the successes our
    breaker counted (`n` for a floor), so a test can check the row does what it says."""
    import httpx

    from httpx_breaker import (
        AsyncCircuitBreakerTransport,
        CircuitBreaker,
        CircuitBreakerConfig,
        CircuitBreakerTransport,
    )

    from .transports import InnerAsync, InnerSync, PassAsync, PassSync, TracingInnerAsync

    request = httpx.Request("GET", "http://bench.test/")
    deadline = CircuitBreakerConfig(timeout=10.0)
    if row in ("floor_sync", "sync_closed"):
        sync: Any = PassSync(InnerSync()) if row == "floor_sync" else CircuitBreakerTransport(InnerSync())
        for _ in range(n):
            sync.handle_request(request).close()
        return _successes(sync, n)
    if row in ("floor_await", "call_async"):
        breaker = CircuitBreaker("instructions")

        async def fn() -> int:
            return 1

        async def calls() -> None:
            if row == "floor_await":
                for _ in range(n):
                    await fn()
            else:
                call = breaker.call_async
                for _ in range(n):
                    await call(fn)

        asyncio.run(calls())
        return n if row == "floor_await" else breaker.get_metrics().successful_requests
    inner: Any = TracingInnerAsync() if "tracing" in row else InnerAsync()
    transport: Any = {
        "floor_async": lambda: PassAsync(inner),
        "floor_tracing": lambda: PassAsync(inner),
        "closed": lambda: AsyncCircuitBreakerTransport(inner),
        "deadline": lambda: AsyncCircuitBreakerTransport(inner, default=deadline),
        "deadline_tracing": lambda: AsyncCircuitBreakerTransport(inner, default=deadline),
    }[row]()

    async def requests() -> None:
        handle = transport.handle_async_request
        for _ in range(n):
            response = await handle(request)
            await response.aclose()

    asyncio.run(requests())
    return _successes(transport, n)


def _successes(transport: Any, n: int) -> int:
    registry = getattr(transport, "registry", None)
    if registry is None:  # a floor
        return n
    return sum(b.get_metrics().successful_requests for b in registry.values())


def _count(row: str, n: int) -> int:
    """Instructions executed by a child process that makes `n` requests of `row`."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--child",
            row,
            str(n),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    match = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if match is None:
        raise SystemExit(f"no instruction count from valgrind for {row}:\n{done.stderr}")
    return int(match.group(1).replace(",", ""))


def per_request(row: str) -> float:
    return (_count(row, LARGE) - _count(row, SMALL)) / (LARGE - SMALL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", help="comma-separated rows (their floors are added)")
    parser.add_argument("--child", nargs=2, metavar=("ROW", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _run(args.child[0], int(args.child[1]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    wanted = list(ROWS) if args.only is None else args.only.split(",")
    for name in wanted:
        if name not in ROWS:
            raise SystemExit(f"unknown row {name!r}; rows: {', '.join(ROWS)}")
    rows = [r for r in ROWS if r in wanted or any(ROWS[w][1] == r for w in wanted)]
    counts: dict[str, float] = {}
    print(f"instructions per request (valgrind, {SMALL:,} and {LARGE:,} requests per row)")
    for row in rows:
        counts[row] = per_request(row)
        label, floor = ROWS[row]
        if floor is None:
            print(f"  {label:<60} floor {counts[row]:>8,.0f}")
        else:
            added = counts[row] - counts[floor]
            print(f"  {label:<60} +{added:>8,.0f}  ({added / counts[floor]:.0%} of the floor)")


if __name__ == "__main__":
    main()
