"""The registry's per-request lookup, piece by piece, in CPU nanoseconds per call.

    .venv/bin/python -m benchmarks.registry_lookup [--rounds 30]

Rows run interleaved, round after round, each round timing `--number` calls with
`time.process_time` (CPU time: other processes on a shared machine matter less than
with wall time); printed are the median and the minimum over the rounds, minus the
cost of calling an empty function measured the same way. The registry holds 1,000
breakers, as a busy client's would.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from collections.abc import Callable

import httpx

from httpx_breaker import BreakerRegistry
from httpx_breaker.classifiers import default_key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--number", type=int, default=50_000)
    args = parser.parse_args(argv)

    registry = BreakerRegistry()
    for i in range(1_000):
        registry.breaker_for(f"h{i}.example.com")
    request = httpx.Request("GET", "https://api.example.com/v1/charge")
    with_port = httpx.Request("GET", "https://api.example.com:8443/v1/charge")
    url = request.url
    key = default_key(request)
    registry.breaker_for(key)
    registry.breaker_for(default_key(with_port))

    rows: dict[str, Callable[[], object]] = {
        "empty call (subtracted)": lambda: None,
        "default_key(request)": lambda: default_key(request),
        "default_key(request with :8443)": lambda: default_key(with_port),
        "breaker_for(key), hit": lambda: registry.breaker_for(key),
        "breaker_for(default_key(request)), hit": lambda: registry.breaker_for(
            default_key(request)
        ),
    }
    by_url = getattr(registry, "_breaker_for_url", None)
    if by_url is not None:
        rows["_breaker_for_url(request.url), hit"] = lambda: by_url(request.url)
        rows["_breaker_for_url(url :8443), hit"] = lambda: by_url(with_port.url)
        assert by_url(url) is registry.breaker_for(key)

    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, fn in rows.items():
            seconds = timeit.timeit(fn, number=args.number, timer=time.process_time)
            samples[name].append(seconds / args.number * 1e9)
    floor = statistics.median(samples["empty call (subtracted)"])
    print(f"{'':44s} {'median':>8s} {'min':>8s}  (ns per call, empty call removed)")
    for name, values in samples.items():
        if name.startswith("empty"):
            print(f"{name:44s} {floor:8.1f}")
            continue
        print(
            f"{name:44s} {statistics.median(values) - floor:8.1f} {min(values) - floor:8.1f}"
        )


if __name__ == "__main__":
    main()
