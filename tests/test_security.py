"""Security: no credentials or paths leak into keys, names, logs, errors, dashboards or
metric labels; a flood of distinct hosts cannot grow memory past the registry cap; an
upstream cannot hold a breaker open past `max_retry_after`."""

from __future__ import annotations

import gc
import json
import logging
import sys
import tracemalloc
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
    CircuitTimeoutError,
    get_all_circuit_breakers,
    monitoring,
)
from httpx_breaker._upstream import Upstream

from .conftest import FakeClock

USER, PASSWORD, PATH, QUERY = "alice", "s3cr3tPW", "PRIVATEPATH", "QUERYTOKEN"
SECRETS = (USER, PASSWORD, PATH, QUERY, "/v1/")
HOSTS = ("api.example.com", "api.example.com:8443", "[::1]:9000", "10.0.0.7")


def _url(host: str) -> str:
    return f"https://{USER}:{PASSWORD}@{host}/v1/{PATH}?token={QUERY}"


def _assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into {where}: {text!r}"


def _log_text(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[str, str]]:
    formatter = logging.Formatter()
    for record in caplog.records:
        yield formatter.format(record), f"log record {record.getMessage()!r}"
        yield repr(record.__dict__), "log record attributes"


def _raising_classifier(
    request: httpx.Request, response: httpx.Response | None, exc: BaseException | None
) -> bool | None:
    if response is not None and response.status_code == 418:
        raise RuntimeError("classifier bug")
    return exc is not None or (response is not None and response.status_code >= 500)


def test_credentials_and_paths_never_leak(
    caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """Keys, breaker names, every log record (DEBUG up, tracebacks included), open-circuit
    errors and dashboards hold neither userinfo nor path nor query."""
    statuses = {"api.example.com": 503, "api.example.com:8443": 418, "[::1]:9000": 200}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "10.0.0.7":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(statuses[request.url.netloc.decode().split("@")[-1]])

    transport = CircuitBreakerTransport(
        httpx.MockTransport(handler),
        registry=BreakerRegistry(
            default=CircuitBreakerConfig(failure_threshold=2, reset_timeout=5), clock=clock
        ),
        classifier=_raising_classifier,
    )
    errors: list[CircuitOpenError] = []
    with (
        caplog.at_level(logging.DEBUG, logger="httpx_breaker"),
        httpx.Client(transport=transport) as client,
    ):
        for _ in range(2):  # open, reject, half-open, probe, reopen, reject again
            for host in HOSTS:
                for _ in range(3):
                    try:
                        client.get(_url(host))
                    except CircuitOpenError as exc:  # noqa: PERF203 (each ending is what we check)
                        errors.append(exc)
                    except httpx.ConnectError:
                        pass
            clock.advance(5)

    assert errors and caplog.records
    for key in transport.registry:
        _assert_clean(key, "a registry key")
    for name, breaker in get_all_circuit_breakers().items():
        _assert_clean(name, "get_all_circuit_breakers()")
        _assert_clean(repr(breaker), "a breaker's repr")
    for exc in errors:
        for text, where in (
            (str(exc), "str(CircuitOpenError)"),
            (repr(exc), "repr(CircuitOpenError)"),
            (repr(exc.args), "CircuitOpenError.args"),
            (repr((exc.key, exc.state, exc.retry_after)), "CircuitOpenError attributes"),
        ):
            _assert_clean(text, where)
    for text, where in _log_text(caplog):
        _assert_clean(text, where)
    breakers = list(transport.registry.values())
    _assert_clean(json.dumps(monitoring.dashboard(breakers)), "the dashboard")
    _assert_clean(json.dumps(transport.registry.snapshot(), default=str), "registry.snapshot()")
    _assert_clean(
        json.dumps([a.to_dict() for a in monitoring.alerts(breakers)], default=str), "alerts"
    )
    _assert_clean(json.dumps([b.get_metrics().to_dict() for b in breakers], default=str), "metrics")


def test_prometheus_labels_hold_no_credentials_or_paths() -> None:
    """Every label value the Prometheus collector exports is clean."""
    pytest.importorskip("prometheus_client")
    prometheus = pytest.importorskip("httpx_breaker.prometheus")
    from prometheus_client import CollectorRegistry, generate_latest

    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(503)),
        default=CircuitBreakerConfig(failure_threshold=1),
    )
    with httpx.Client(transport=transport) as client:
        for host in HOSTS:
            client.get(_url(host))
            with pytest.raises(CircuitOpenError):
                client.get(_url(host))
    registry = CollectorRegistry()
    registry.register(prometheus.CircuitBreakerCollector(transport.registry))
    exposition = generate_latest(registry).decode()
    assert "api.example.com" in exposition  # the keys are there...
    _assert_clean(exposition, "Prometheus exposition")  # ...and nothing else of the URL


@pytest.mark.anyio
async def test_timeout_error_holds_no_credentials_or_paths() -> None:
    """CircuitTimeoutError names the key and the deadline, not the URL."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(10)
        return httpx.Response(200)  # pragma: no cover

    transport = AsyncCircuitBreakerTransport(
        httpx.MockTransport(hang), default=CircuitBreakerConfig(timeout=0.01)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(CircuitTimeoutError) as info:
            await client.get(_url("api.example.com"))
    assert info.value.key == "api.example.com"
    _assert_clean(str(info.value), "str(CircuitTimeoutError)")
    _assert_clean(repr(info.value.args), "CircuitTimeoutError.args")


def test_key_function_error_holds_no_url() -> None:
    """A key function returning the URL (not a str) gets an error that does not echo it."""
    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)),
        key=lambda request: request.url,  # type: ignore[arg-type,return-value]
    )
    with httpx.Client(transport=transport) as client, pytest.raises(TypeError) as info:
        client.get(_url("api.example.com"))
    assert "URL" in str(info.value)  # the type is named...
    _assert_clean(str(info.value), "the key-function error")  # ...the value is not echoed


def test_bad_classifier_verdict_log_holds_no_url(caplog: pytest.LogCaptureFixture) -> None:
    """A classifier returning the request by mistake is logged without the request's URL."""
    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)),
        classifier=lambda request, response, exc: request,  # type: ignore[arg-type,return-value]
    )
    with (
        caplog.at_level(logging.ERROR, logger="httpx_breaker"),
        httpx.Client(transport=transport) as client,
    ):
        client.get(_url("api.example.com"))
    assert caplog.records
    for text, where in _log_text(caplog):
        _assert_clean(text, where)


# -- a flood of distinct hosts -------------------------------------------------------------


def _flood(transport: CircuitBreakerTransport, start: int, stop: int) -> None:
    for i in range(start, stop):
        response = transport.handle_request(httpx.Request("GET", f"http://h{i}.attacker.test/"))
        response.read()
        response.close()


def test_distinct_host_flood_memory_is_bounded_by_the_cap() -> None:
    """Measured with tracemalloc: memory after 5,000 distinct hosts through a 100-breaker
    registry is what it was after 500 (a registry with no cap would take ~10x)."""
    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)),
        registry=BreakerRegistry(max_size=100),
    )
    _flood(transport, 0, 200)  # warm up: caches, interned strings
    gc.collect()
    tracemalloc.start()
    try:
        _flood(transport, 200, 500)
        gc.collect()
        at_500 = tracemalloc.get_traced_memory()[0]
        _flood(transport, 500, 5_000)
        gc.collect()
        at_5k = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(transport.registry) == 100
    assert len(_flood_breakers()) <= 100
    # Ten times the hosts, the same memory: under 15 bytes per extra host (one breaker
    # kept per host would be over 1,000 bytes each).
    assert at_5k - at_500 < 64 * 1024, (at_500, at_5k)
    print(f"\nhost flood (traced): 5000 hosts, cap 100: {at_500} B after 500, {at_5k} B after 5000")


def _flood_breakers() -> list[str]:
    """The live breakers a flood made (other tests' breakers may still be alive, held by
    process-wide objects such as an OpenTelemetry meter provider)."""
    return [name for name in get_all_circuit_breakers() if name.endswith(".attacker.test")]


def test_fifty_thousand_hosts_keep_the_registry_at_its_cap() -> None:
    """50,000 distinct hosts through a 1,000-breaker registry: the registry and the live
    breakers stay at the cap, and the interpreter holds as many blocks after 50,000 hosts
    as after 5,000 (tracemalloc would make this flood take many seconds)."""
    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)),
        registry=BreakerRegistry(max_size=1_000),
    )
    _flood(transport, 0, 5_000)
    gc.collect()
    blocks_5k = sys.getallocatedblocks()
    _flood(transport, 5_000, 50_000)
    gc.collect()
    blocks_50k = sys.getallocatedblocks()
    assert len(transport.registry) == 1_000
    assert len(_flood_breakers()) <= 1_000
    assert min(transport.registry) == "h49000.attacker.test"
    assert blocks_50k <= blocks_5k * 1.05, (blocks_5k, blocks_50k)
    print(
        f"\nhost flood: 50000 hosts, cap 1000: {blocks_5k} blocks after 5000, "
        f"{blocks_50k} after 50000"
    )


class _CountingDict(OrderedDict[str, Any]):
    """An OrderedDict that counts the entries eviction looks at."""

    moves = 0

    def move_to_end(self, key: str, last: bool = True) -> None:
        type(self).moves += 1
        super().move_to_end(key, last)


def test_flood_of_failing_hosts_evicts_in_bounded_work() -> None:
    """With every breaker open, admitting a new host looks at a bounded number of breakers."""
    registry = BreakerRegistry(default=CircuitBreakerConfig(failure_threshold=1), max_size=500)
    registry._queue = _CountingDict()  # white-box: count eviction's work
    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(503)), registry=registry
    )
    _flood(transport, 0, 500)
    assert all(b.state is CircuitState.OPEN for b in registry.values())
    _CountingDict.moves = 0
    _flood(transport, 500, 1_500)
    assert len(registry) == 500
    # 1,000 evictions: a bounded scan looks at some dozens each, not all 500.
    assert 0 < _CountingDict.moves <= 1_000 * 64, _CountingDict.moves


# -- an upstream that asks for forever ------------------------------------------------------


@pytest.mark.parametrize("value", ["999999", "Fri, 31 Dec 9999 23:59:59 GMT", "9" * 400])
def test_retry_after_cannot_hold_a_breaker_open(value: str, clock: FakeClock) -> None:
    """Round after round of Retry-After: forever, each open period is max_retry_after."""
    config = CircuitBreakerConfig(failure_threshold=1, reset_timeout=5, max_retry_after=60)
    inner = httpx.MockTransport(lambda r: httpx.Response(503, headers={"Retry-After": value}))
    transport = CircuitBreakerTransport(
        inner, registry=BreakerRegistry(default=config, clock=clock)
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("http://svc/").status_code == 503
        for _ in range(5):
            with pytest.raises(CircuitOpenError) as info:
                client.get("http://svc/")
            assert info.value.retry_after == pytest.approx(60)
            clock.advance(59.9)
            with pytest.raises(CircuitOpenError):
                client.get("http://svc/")
            clock.advance(0.1)
            assert client.get("http://svc/").status_code == 503  # a probe passes, fails


@pytest.mark.anyio
async def test_real_upstream_retry_after_is_capped(upstream: Upstream, clock: FakeClock) -> None:
    """A real upstream answering 503 with Retry-After: 999999 opens for max_retry_after."""
    config = CircuitBreakerConfig(failure_threshold=1, reset_timeout=5, max_retry_after=60)
    transport = AsyncCircuitBreakerTransport(registry=BreakerRegistry(default=config, clock=clock))
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(f"{upstream.url}/retry-after/999999")).status_code == 503
        with pytest.raises(CircuitOpenError) as info:
            await client.get(f"{upstream.url}/ok")
        assert info.value.retry_after == pytest.approx(60)
        clock.advance(60)
        assert (await client.get(f"{upstream.url}/ok")).status_code == 200
    assert upstream.request_count == 2
