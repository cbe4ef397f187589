"""Section 5: whole `httpx.AsyncClient` against a real server on 127.0.0.1.

The server (`benchmarks/server.py`) runs in its own process so that it does not
share the client's GIL; it answers every GET with the same small 200, so the client
is the bottleneck. A bare client and one with our transport (default config) are
measured in alternating order, round after round.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from httpx_breaker import AsyncCircuitBreakerTransport

SERVER = Path(__file__).with_name("server.py")


class Server:
    def __enter__(self) -> str:
        self._proc = subprocess.Popen(
            [sys.executable, str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        port = int(self._proc.stdout.readline())
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()  # the server's signal to stop
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()


async def _burst(client: httpx.AsyncClient, requests: int, concurrency: int) -> float:
    """Requests per second for `requests` GETs spread over `concurrency` tasks."""
    per_task = requests // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            response = await client.get("/")
            if response.status_code != 200:
                raise RuntimeError(f"unexpected status {response.status_code}")

    t = time.perf_counter()
    if concurrency == 1:
        await worker()
    else:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per_task * concurrency / (time.perf_counter() - t)


async def _measure(base_url: str, reps: int, plan: list[tuple[int, int]]) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    # Both clients get an explicit transport, so neither reads proxies from the environment.
    bare = httpx.AsyncClient(base_url=base_url, transport=httpx.AsyncHTTPTransport(limits=limits))
    ours = httpx.AsyncClient(
        base_url=base_url,
        transport=AsyncCircuitBreakerTransport(httpx.AsyncHTTPTransport(limits=limits)),
    )
    clients = [("bare httpx.AsyncClient", bare), ("with AsyncCircuitBreakerTransport", ours)]
    rows = []
    try:
        top = max(concurrency for concurrency, _ in plan)
        for _, client in clients:  # open the connections before measuring
            await _burst(client, 2 * top, top)
        for concurrency, requests in plan:
            samples: dict[str, list[float]] = {name: [] for name, _ in clients}
            for r in range(reps):
                order = clients if r % 2 == 0 else clients[::-1]
                for name, client in order:
                    # Warm this client's pool first: switching between two clients that
                    # each hold 100 connections to one server makes whichever runs
                    # second in a row look twice as fast (seen here), which is about the
                    # server and the pool, not about the transport being measured.
                    await _burst(client, max(concurrency, requests // 4), concurrency)
                    samples[name].append(await _burst(client, requests, concurrency))
            bare_s, ours_s = samples[clients[0][0]], samples[clients[1][0]]
            ratios = [o / b for o, b in zip(ours_s, bare_s, strict=True)]
            for name, s in samples.items():
                rows.append(
                    {
                        "name": name,
                        "concurrency": concurrency,
                        "requests": requests,
                        "median": statistics.median(s),
                        "min": min(s),
                        "max": max(s),
                        "us_per_request": 1e6 / statistics.median(s),
                    }
                )
            rows[-1]["ratio"] = statistics.median(ratios)
            rows[-1]["ratio_min"] = min(ratios)
            rows[-1]["ratio_max"] = max(ratios)
            rows[-1]["added_us"] = 1e6 / statistics.median(ours_s) - 1e6 / statistics.median(bare_s)
    finally:
        await bare.aclose()
        await ours.aclose()
    return rows


def client_rows(reps: int, plan: list[tuple[int, int]]) -> list[dict[str, Any]]:
    with Server() as base_url:
        return asyncio.run(_measure(base_url, reps, plan))
