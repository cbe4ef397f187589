"""Shared fixtures: both async backends, a fake clock, a loopback upstream, real servers."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from httpx_breaker import CircuitBreaker
from httpx_breaker._upstream import Upstream

from .libraries import NAMES, Library

# Real uvicorn (HTTP/1.1) and hypercorn (HTTP/2) servers, session-scoped, for any module.
from .servers import http1_server, http2_server  # noqa: F401


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the long soak tests too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs under asyncio and under trio."""
    return str(request.param)


@pytest.fixture(params=NAMES)
def lib(request: pytest.FixtureRequest) -> Library:
    """httpx, then httpx2 with `httpx_breaker.httpx2` (see tests/libraries.py)."""
    return Library(str(request.param))


class FakeClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """A healthy loopback HTTP server; tests change its `mode` as they need."""
    with Upstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Breakers are held weakly: collect between tests so none leaks into the next."""
    yield
    gc.collect()


def _until(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + 10  # a bound, never a measurement
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


@contextmanager
def one_holding_one_waiting(breaker: CircuitBreaker) -> Iterator[None]:
    """While inside: a thread's call holds the only slot of `breaker`'s bulkhead
    (`max_concurrent=1` and a `max_wait` long enough) and another thread's call waits
    for it. On the way out both calls finish."""
    go = threading.Event()
    holder = threading.Thread(target=breaker.call, args=(go.wait,))
    waiter = threading.Thread(target=breaker.call, args=(lambda: None,))
    holder.start()
    _until(lambda: breaker.get_metrics().bulkhead_in_flight_requests == 1, "the holder")
    waiter.start()
    _until(lambda: breaker.get_metrics().bulkhead_waiting_requests == 1, "the waiter")
    try:
        yield
    finally:
        go.set()
        holder.join()
        waiter.join()
