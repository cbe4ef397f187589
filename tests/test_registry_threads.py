"""A registry read by some threads while others create (and so evict) breakers."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from httpx_breaker import BreakerRegistry, CircuitBreaker, CircuitBreakerConfig

CAP = 8
WRITERS = 3
KEYS_PER_WRITER = 3_000


@pytest.fixture(autouse=True)
def _switch_often() -> Iterator[None]:
    """Make the interpreter switch threads as often as it can, so reads and evictions
    interleave at every bytecode rather than every 5 ms."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def _check_values(registry: BreakerRegistry) -> None:
    for breaker in registry.values():
        assert isinstance(breaker, CircuitBreaker)


def _check_items(registry: BreakerRegistry) -> None:
    for key, breaker in registry.items():
        assert breaker.name == key


def _check_iteration(registry: BreakerRegistry) -> None:
    for key in registry:
        assert isinstance(key, str)
        registry.get(key)  # None if evicted meanwhile; never an exception
        _ = key in registry


def _check_len(registry: BreakerRegistry) -> None:
    assert 0 <= len(registry) <= CAP


def _check_keys_view(registry: BreakerRegistry) -> None:
    keys = list(registry.keys())
    assert len(keys) <= CAP
    assert len(dict(registry.items())) <= CAP  # dict(registry) reads key by key: may race


def _check_snapshot(registry: BreakerRegistry) -> None:
    snapshot = registry.snapshot()
    assert snapshot["summary"]["total_breakers"] == len(snapshot["breakers"]) <= CAP


def _check_equality(registry: BreakerRegistry) -> None:
    _ = registry == {}  # Mapping.__eq__ reads items()


READERS: dict[str, Callable[[BreakerRegistry], None]] = {
    "values": _check_values,
    "items": _check_items,
    "iteration, get, in": _check_iteration,
    "len": _check_len,
    "keys": _check_keys_view,
    "snapshot": _check_snapshot,
    "equality": _check_equality,
}


@pytest.mark.parametrize("reader", list(READERS.values()), ids=list(READERS))
def test_reading_while_threads_create_past_max_size_never_raises(
    reader: Callable[[BreakerRegistry], None],
) -> None:
    """Readers iterate the registry while writer threads create breakers far past
    `max_size`, so that evictions happen all the time: no read ever raises."""
    registry = BreakerRegistry(
        default=CircuitBreakerConfig(failure_threshold=1), max_size=CAP
    )
    done = threading.Event()

    def write(n: int) -> None:
        for i in range(KEYS_PER_WRITER):
            registry.breaker_for(f"w{n}-{i}.example")
            # Reuse a few keys too, so lookups that hit race with evictions.
            registry.breaker_for(f"w{n}-{i // 2}.example")

    def read() -> int:
        reads = 0
        while not done.is_set():
            reader(registry)
            reads += 1
        return reads

    with ThreadPoolExecutor(max_workers=WRITERS + 2) as pool:
        readers = [pool.submit(read) for _ in range(2)]
        writers = [pool.submit(write, n) for n in range(WRITERS)]
        try:
            for future in writers:
                future.result()
        finally:
            done.set()
        reads = [future.result() for future in readers]  # re-raises a reader's error
    assert all(n > 0 for n in reads)
    assert len(registry) == CAP


def test_transport_lookups_race_evictions_without_error() -> None:
    """Threads sending requests to many hosts through one capped sync transport, while
    another thread reads the registry: every request is answered, no read raises."""
    from httpx_breaker import CircuitBreakerTransport

    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)),
        registry=BreakerRegistry(max_size=CAP),
    )
    done = threading.Event()

    def send(n: int) -> list[int]:
        with httpx.Client(transport=transport) as client:
            return [client.get(f"http://h{n}-{i % 40}.example/").status_code for i in range(300)]

    def read() -> None:
        while not done.is_set():
            rows: Any = transport.registry.snapshot()["breakers"]
            assert len(rows) <= CAP
            assert all(b.name == k for k, b in transport.registry.items())

    with ThreadPoolExecutor(max_workers=4) as pool:
        reader = pool.submit(read)
        senders = [pool.submit(send, n) for n in range(3)]
        try:
            statuses = [status for future in senders for status in future.result()]
        finally:
            done.set()
        reader.result()
    assert statuses == [200] * 900
