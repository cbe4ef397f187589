"""httpx-breaker's benchmark suite: `python -m benchmarks --help`."""
