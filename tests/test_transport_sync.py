"""The sync transport: the core behaviours, and many threads sharing one httpx.Client.

Each test that takes `lib` runs with httpx and with httpx2 (tests/libraries.py).
"""

from __future__ import annotations

import gc
import itertools
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from httpx_breaker import (
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
    CircuitTimeoutError,
)
from httpx_breaker._upstream import Upstream

from .conftest import FakeClock
from .libraries import SYNC_BASES, Library


def make(
    lib: Library, clock: object = None, inner: httpx.BaseTransport | None = None, **config: object
) -> CircuitBreakerTransport:
    settings: dict[str, object] = {"failure_threshold": 1, "reset_timeout": 5.0}
    settings.update(config)
    registry = BreakerRegistry(default=CircuitBreakerConfig(**settings), clock=clock)  # type: ignore[arg-type]
    return lib.CircuitBreakerTransport(inner, registry=registry)  # type: ignore[no-any-return]


def key_of(upstream: Upstream) -> str:
    return f"127.0.0.1:{upstream.port}"



def test_a_classifier_of_ones_own_judges_the_closed_body(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """With a classifier of one's own, the sync transport asks it when the body is
    closed (here a 404 is a failure), never the default rules' shortcut to a success;
    and a 200 is still a success by it."""
    transport = lib.CircuitBreakerTransport(
        registry=BreakerRegistry(default=CircuitBreakerConfig(failure_threshold=2), clock=clock),
        classifier=lib.make_classifier(failure_statuses={404}),
    )
    with lib.Client(transport=transport) as client:
        assert client.get(f"{upstream.url}/ok").status_code == 200
        breaker = transport.registry[key_of(upstream)]
        assert breaker.get_metrics().successful_requests == 1
        with client.stream("GET", f"{upstream.url}/status/404") as response:
            response.read()
        assert breaker.get_metrics().failed_requests == 1
        client.get(f"{upstream.url}/status/404")
    assert breaker.state is CircuitState.OPEN

def test_open_breaker_sends_the_upstream_nothing(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """While open, the sync transport raises CircuitOpenError and the upstream sees nothing."""
    with lib.Client(transport=make(lib, clock)) as client:
        assert client.get(f"{upstream.url}/status/503").status_code == 503
        for _ in range(20):
            with pytest.raises(lib.CircuitOpenError) as info:
                client.get(f"{upstream.url}/ok")
        clock.advance(5.0)
        r = client.get(f"{upstream.url}/ok")
    assert upstream.request_count == 2
    assert info.value.key == key_of(upstream)
    assert info.value.retry_after == 5.0
    assert info.value.request.url.path == "/ok"
    assert isinstance(info.value, lib.TransportError)
    assert isinstance(info.value, CircuitOpenError)
    assert r.extensions["circuit_breaker"]["state"] is CircuitState.HALF_OPEN


def test_connection_refused_and_reset_are_failures(lib: Library, upstream: Upstream) -> None:
    """A refused connection and a reset connection each count as a failure."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = make(lib, failure_threshold=10)
    with lib.Client(transport=transport) as client:
        with pytest.raises(lib.ConnectError):
            client.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(lib.TransportError):
            client.get(f"{upstream.url}/reset")
    assert transport.registry[f"127.0.0.1:{port}"].get_metrics().failed_requests == 1
    assert transport.registry[key_of(upstream)].get_metrics().failed_requests == 1


def test_cut_body_fails_at_close_and_stream_records_on_close(
    lib: Library, upstream: Upstream
) -> None:
    """A body cut mid-stream is a failure, recorded only when the body is closed."""
    transport = make(lib)
    with lib.Client(transport=transport) as client:
        with client.stream("GET", f"{upstream.url}/cut") as response:
            breaker = response.extensions["circuit_breaker"]["breaker"]
            assert breaker.state is CircuitState.CLOSED
            with pytest.raises(lib.RemoteProtocolError):
                response.read()
        assert breaker.state is CircuitState.OPEN
    assert breaker.get_metrics().failed_requests == 1


def test_unclosed_probe_returns_its_permit_when_collected(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """A probe response dropped unclosed hands its slot back when collected."""
    transport = make(lib, clock, half_open_max_requests=1)
    with lib.Client(transport=transport) as client:
        client.get(f"{upstream.url}/status/503")
        clock.advance(5.0)
        response = client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        with pytest.raises(CircuitOpenError):
            client.get(f"{upstream.url}/ok")
        del response
        gc.collect()
        assert client.get(f"{upstream.url}/ok").status_code == 200
    assert transport.registry[key_of(upstream)].state is CircuitState.CLOSED


def test_timeout_caps_the_wrapped_timeouts_and_fails(lib: Library, upstream: Upstream) -> None:
    """The policy's timeout caps httpx's read timeout; the timeout counts as a failure."""
    transport = make(lib, timeout=0.2)
    with lib.Client(transport=transport, timeout=30.0) as client:
        with pytest.raises(lib.CircuitTimeoutError) as info:
            client.get(f"{upstream.url}/delay/2")
        with pytest.raises(CircuitOpenError):
            client.get(f"{upstream.url}/ok")
    assert transport.registry[key_of(upstream)].get_metrics().failed_requests == 1
    assert isinstance(info.value, lib.TimeoutException)
    assert isinstance(info.value, CircuitTimeoutError)


def test_headers_later_than_timeout_are_a_failure(lib: Library, upstream: Upstream) -> None:
    """Headers that came after `timeout` (on the breaker's clock) raise CircuitTimeoutError
    once they are in, as the async twin does, and count as a failure."""
    ticks = itertools.count()
    transport = make(lib, lambda: float(next(ticks)), timeout=0.5)  # every clock read is 1 s later
    client = lib.Client(transport=transport)
    with client, pytest.raises(lib.CircuitTimeoutError) as info:
        client.get(f"{upstream.url}/ok")
    assert info.value.request.url == f"{upstream.url}/ok"
    assert transport.registry[key_of(upstream)].get_metrics().failed_requests == 1


def test_the_wait_for_the_clients_own_pool_is_outside_the_deadline(
    lib: Library, upstream: Upstream
) -> None:
    """A thread that waits for the client's only connection longer than `timeout` is not
    cut: its deadline starts when it gets the connection."""
    transport = lib.CircuitBreakerTransport.from_http_options(
        default=CircuitBreakerConfig(timeout=0.3), limits=lib.Limits(max_connections=1)
    )
    responses = []
    with lib.Client(transport=transport, timeout=10.0) as client:
        holder = client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        waiting = threading.Event()

        def waiter() -> None:
            waiting.set()
            responses.append(client.get(f"{upstream.url}/ok"))

        thread = threading.Thread(target=waiter)
        thread.start()
        waiting.wait()
        time.sleep(0.6)  # twice the deadline, in the pool
        assert responses == []
        holder.close()
        thread.join()
    assert [r.status_code for r in responses] == [200]
    metrics = transport.registry[key_of(upstream)].get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (2, 0)


def test_per_request_options(lib: Library, upstream: Upstream, clock: FakeClock) -> None:
    """bypass reaches the upstream while open; an unknown option raises before I/O."""
    with lib.Client(transport=make(lib, clock)) as client:
        client.get(f"{upstream.url}/status/503")
        r = client.get(f"{upstream.url}/ok", extensions={"circuit_breaker": {"bypass": True}})
        assert r.status_code == 200
        with pytest.raises(ValueError, match="unknown options"):
            client.get(f"{upstream.url}/ok", extensions={"circuit_breaker": {"nope": 1}})
    assert upstream.request_count == 2


class Recording(*SYNC_BASES):  # type: ignore[misc]
    closed = False

    def __init__(self, lib: Library) -> None:
        self.lib = lib

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.lib.Response(200)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.closed = True


def test_close_and_from_http_options(lib: Library, upstream: Upstream) -> None:
    """Closing the wrapper closes the wrapped transport; from_http_options builds HTTPTransport."""
    inner = Recording(lib)
    with lib.Client(transport=lib.CircuitBreakerTransport(inner)) as client:
        client.get("http://127.0.0.1:1/")
    assert inner.closed
    transport = lib.CircuitBreakerTransport.from_http_options(retries=1)
    assert isinstance(transport.transport, lib.HTTPTransport)
    assert transport.transport._pool._retries == 1
    with lib.Client(transport=transport) as client:
        assert client.get(f"{upstream.url}/ok").status_code == 200


# -- many threads ------------------------------------------------------------------


def test_many_threads_share_one_client_and_the_counters_balance(lib: Library) -> None:
    """16 threads x 50 requests on one client: every request is counted once, admitted or rejected."""
    threads, per_thread = 16, 50
    ticks = itertools.count()
    transport = make(
        lib,
        lambda: next(ticks) * 0.001,  # each clock read is 1 ms later: states cycle quickly
        failure_threshold=3,
        reset_timeout=0.05,
        half_open_max_requests=2,
        timeout=None,
    )
    rejected = [0] * threads
    with Upstream(mode="flaky", failure_rate=0.5, seed=7) as upstream:
        with lib.Client(transport=transport, limits=lib.Limits(max_connections=threads)) as client:

            def one(index: int) -> None:
                try:
                    client.get(f"{upstream.url}/any")
                except CircuitOpenError:
                    rejected[index] += 1

            def worker(index: int) -> None:
                for _ in range(per_thread):
                    one(index)

            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(worker, range(threads)))
        reached = upstream.request_count
        key = key_of(upstream)
    metrics = transport.registry[key].get_metrics()
    assert metrics.total_requests + metrics.rejected_requests == threads * per_thread
    assert metrics.rejected_requests == sum(rejected)
    assert metrics.total_requests == reached
    assert metrics.successful_requests + metrics.failed_requests == metrics.total_requests
    assert metrics.failed_requests > 0 and metrics.rejected_requests > 0
    assert len(metrics.state_changes) > 2  # the breaker really did cycle


class ThreadGate(*SYNC_BASES):  # type: ignore[misc]
    """Holds admitted requests until every thread has been admitted or rejected."""

    def __init__(self, lib: Library, threads: int) -> None:
        self.inner = lib.HTTPTransport()
        self.threads = threads
        self.admitted = 0
        self.rejected = 0
        self.armed = False
        self.cond = threading.Condition()

    def decided(self, *, admitted: bool) -> None:
        with self.cond:
            if admitted:
                self.admitted += 1
            else:
                self.rejected += 1
            self.cond.notify_all()
            assert self.cond.wait_for(
                lambda: self.admitted + self.rejected == self.threads, timeout=30
            ) or not admitted

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.armed:
            self.decided(admitted=True)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_half_open_limit_holds_across_threads(
    lib: Library, upstream: Upstream, clock: FakeClock
) -> None:
    """With 16 threads racing in HALF_OPEN, exactly half_open_max_requests reach the upstream."""
    threads = 16
    gate = ThreadGate(lib, threads)
    transport = make(lib, clock, inner=gate, half_open_max_requests=3)
    with lib.Client(transport=transport, limits=lib.Limits(max_connections=threads)) as client:
        client.get(f"{upstream.url}/status/503")
        clock.advance(5.0)
        before = upstream.request_count
        gate.armed = True
        start = threading.Barrier(threads)

        def worker() -> int | None:
            start.wait()
            try:
                return client.get(f"{upstream.url}/ok").status_code
            except CircuitOpenError:
                gate.decided(admitted=False)
                return None

        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(lambda _: worker(), range(threads)))
    assert upstream.request_count - before == 3
    assert sorted(r for r in results if r is not None) == [200, 200, 200]
    assert results.count(None) == threads - 3
    assert transport.registry[key_of(upstream)].state is CircuitState.CLOSED
