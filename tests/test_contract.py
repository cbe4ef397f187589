"""DESIGN.md, sentence by sentence, tested as an outsider would test it.

Every test here uses only the public modules (`httpx_breaker`, `httpx_breaker.testing`,
`httpx_breaker.classifiers`, `httpx_breaker.monitoring`, `httpx_breaker.prometheus`,
`httpx_breaker.opentelemetry`, `httpx_breaker.redis`, `httpx_breaker.httpx2`), respx for
routing, the library's own loopback `Upstream` for real connections, and a `FakeClock`
instead of sleeps. The tests are written the way someone who has read only DESIGN.md
would write them (errors built by hand with keyword arguments, metrics read by field
name, a slow respx route that sleeps), because those are the tests that catch a
contract the code only nearly keeps. Each docstring quotes or paraphrases the sentence
of DESIGN.md it checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import email.utils
import gc
import inspect
import json
import logging
import pickle
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
import respx

import httpx_breaker
from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerMetrics,
    BreakerRegistry,
    BulkheadFullError,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
    CircuitTimeoutError,
    RequestRejected,
    circuit_breaker,
    get_all_circuit_breakers,
)
from httpx_breaker.classifiers import default_classifier
from httpx_breaker.testing import FakeClock, Upstream

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/charge"


# -- helpers an outsider would write ------------------------------------------------


def cfg(**changes: Any) -> CircuitBreakerConfig:
    """A small policy: opens on the first failure, 30 s open."""
    values: dict[str, Any] = {"failure_threshold": 1, "reset_timeout": 30.0}
    values.update(changes)
    return CircuitBreakerConfig(**values)


def async_transport(
    clock: FakeClock, *, inner: httpx.AsyncBaseTransport | None = None, **config: Any
) -> AsyncCircuitBreakerTransport:
    registry = BreakerRegistry(default=cfg(**config), clock=clock)
    return AsyncCircuitBreakerTransport(inner, registry=registry)


def sync_transport(
    clock: FakeClock, *, inner: httpx.BaseTransport | None = None, **config: Any
) -> CircuitBreakerTransport:
    registry = BreakerRegistry(default=cfg(**config), clock=clock)
    return CircuitBreakerTransport(inner, registry=registry)


async def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait until `condition()` holds (other threads change it), failing after `seconds`:
    a bound, never a measurement."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 (a server thread changes it)
            await anyio.sleep(0.01)


async def boom() -> None:
    raise RuntimeError("down")


async def fine() -> str:
    return "ok"


_SSL_CONTEXT: list[Any] = []


@pytest.fixture(autouse=True)
def _one_ssl_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every default httpx transport loads the CA bundle anew (some 30 ms); these tests
    build hundreds and speak plain HTTP, so they share one context. Nothing else changes."""
    import httpx._transports.default as default_transports

    made = default_transports.create_ssl_context

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is True and cert is None:
            if not _SSL_CONTEXT:
                _SSL_CONTEXT.append(made(verify=True, cert=None, trust_env=True))
            return _SSL_CONTEXT[0]
        return made(verify=verify, cert=cert, trust_env=trust_env)

    monkeypatch.setattr(default_transports, "create_ssl_context", create_ssl_context)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture(scope="module")
def _shared_upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture
def upstream(_shared_upstream: Upstream) -> Iterator[Upstream]:
    """A loopback upstream, healthy at the start of every test (one server per module:
    starting and stopping one per test would double the module's time)."""
    _shared_upstream.mode = "healthy"
    _shared_upstream.hold()
    yield _shared_upstream
    _shared_upstream.release()  # nothing a test left held waits for HOLD_LIMIT


# == What it is: the README example ===================================================


async def test_readme_example_open_error_has_key_and_retry_after(
    mock: respx.MockRouter,
) -> None:
    """The first example: a failing payments host opens after two failures, then the
    client gets CircuitOpenError before any I/O, with e.key and e.retry_after."""
    route = mock.get("https://payments.internal/charge").respond(503)
    transport = AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(failure_threshold=5, reset_timeout=30.0),
        policies={"payments.internal": CircuitBreakerConfig(failure_threshold=2)},
    )
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(2):
            assert (await client.get("https://payments.internal/charge")).status_code == 503
        with pytest.raises(CircuitOpenError) as info:
            await client.get("https://payments.internal/charge")
    assert route.call_count == 2  # raised before any network I/O
    e = info.value
    assert e.key == "payments.internal"
    # The policy is a whole config: its reset_timeout is the class default (60 s), not
    # the default policy's 30 s. Real clock: a few milliseconds have passed since the open.
    assert e.retry_after is not None and 59.0 < e.retry_after <= 60.0
    assert isinstance(e, httpx.TransportError)
    assert e.request.url == "https://payments.internal/charge"


def test_default_wrapped_transport_is_the_real_one() -> None:
    """"The transport wraps a real transport (default httpx.AsyncHTTPTransport())"."""
    assert isinstance(AsyncCircuitBreakerTransport().transport, httpx.AsyncHTTPTransport)
    assert isinstance(CircuitBreakerTransport().transport, httpx.HTTPTransport)


# == Public names =====================================================================


def test_public_names_importable_from_the_package() -> None:
    """Every name of the table is importable from `httpx_breaker` and in __all__."""
    for name in (
        "CircuitBreakerConfig",
        "CircuitState",
        "CircuitBreaker",
        "BreakerMetrics",
        "CircuitOpenError",
        "CircuitTimeoutError",
        "BreakerRegistry",
        "AsyncCircuitBreakerTransport",
        "CircuitBreakerTransport",
        "circuit_breaker",
        "get_all_circuit_breakers",
        "BulkheadFullError",
        "RequestRejected",
    ):
        assert name in httpx_breaker.__all__, name
        assert getattr(httpx_breaker, name) is not None


def test_circuit_state_values() -> None:
    """CircuitState: CLOSED = "closed", OPEN = "open", HALF_OPEN = "half_open"."""
    assert CircuitState.CLOSED.value == "closed"
    assert CircuitState.OPEN.value == "open"
    assert CircuitState.HALF_OPEN.value == "half_open"
    assert CircuitState("half_open") is CircuitState.HALF_OPEN
    assert [s.name for s in CircuitState] == ["CLOSED", "OPEN", "HALF_OPEN"]


def test_circuit_breaker_signature() -> None:
    """CircuitBreaker(name, config=None, *, classifier=None, clock=None)."""
    params = inspect.signature(CircuitBreaker).parameters
    assert list(params)[:4] == ["name", "config", "classifier", "clock"]
    assert params["config"].default is None
    assert params["classifier"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["clock"].kind is inspect.Parameter.KEYWORD_ONLY
    b = CircuitBreaker("db")
    assert b.name == "db" and b.config == CircuitBreakerConfig()
    b2 = CircuitBreaker("db2", CircuitBreakerConfig(failure_threshold=2))
    assert b2.config.failure_threshold == 2
    b3 = CircuitBreaker(name="db3", config=None, classifier=None, clock=None)
    assert b3.state is CircuitState.CLOSED


def test_circuit_breaker_surface(clock: FakeClock) -> None:
    """name, config, state / get_state(), is_open(), is_closed(), is_half_open(),
    get_metrics(), call_async, call, reset(), force_open(), force_closed(), listeners."""
    b = CircuitBreaker("svc", cfg(), clock=clock)
    assert b.state is CircuitState.CLOSED and b.get_state() is CircuitState.CLOSED
    assert b.is_closed() and not b.is_open() and not b.is_half_open()
    assert isinstance(b.get_metrics(), BreakerMetrics)
    b.force_open()
    assert b.is_open() and b.get_state() is CircuitState.OPEN
    b.force_closed()
    assert b.is_closed()
    b.reset()
    assert b.state is CircuitState.CLOSED
    assert callable(b.call) and callable(b.call_async) and callable(b.add_listener)
    b.on_state_change = None  # the seed's attribute exists and is assignable


def test_transport_signature() -> None:
    """(transport=None, *, default=None, policies=None, classifier=None, key=None,
    registry=None) for both transports; `.registry`."""
    for cls in (AsyncCircuitBreakerTransport, CircuitBreakerTransport):
        params = inspect.signature(cls).parameters
        assert list(params)[:6] == [
            "transport",
            "default",
            "policies",
            "classifier",
            "key",
            "registry",
        ]
        assert params["transport"].default is None
        for name in ("default", "policies", "classifier", "key", "registry"):
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
            assert params[name].default is None
        assert isinstance(cls().registry, BreakerRegistry)
    assert issubclass(AsyncCircuitBreakerTransport, httpx.AsyncBaseTransport)
    assert issubclass(CircuitBreakerTransport, httpx.BaseTransport)


def test_registry_signature() -> None:
    """BreakerRegistry(*, default=None, policies=None, max_size=10_000, clock=None)."""
    params = inspect.signature(BreakerRegistry).parameters
    for name, default in (
        ("default", None),
        ("policies", None),
        ("max_size", 10_000),
        ("clock", None),
    ):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].default == default, name
    assert BreakerRegistry().max_size == 10_000
    with pytest.raises(TypeError):
        BreakerRegistry(CircuitBreakerConfig())  # type: ignore[misc]


# == CircuitBreakerConfig =============================================================


def test_config_defaults() -> None:
    """Every default of the field list."""
    c = CircuitBreakerConfig()
    assert c.failure_threshold == 5
    assert c.failure_rate_threshold == 0.5
    assert c.timeout is None
    assert c.reset_timeout == 60.0
    assert c.half_open_max_requests == 3
    assert c.window_size == 10
    assert c.window_duration == 60.0
    assert tuple(c.exclude_exceptions) == ()
    assert c.minimum_requests is None
    assert c.slow_call_duration is None
    assert c.slow_call_rate_threshold == 1.0
    assert c.reset_timeout_multiplier == 1.0
    assert c.max_reset_timeout is None
    assert c.jitter == 0.0
    assert c.respect_retry_after is True
    assert c.max_retry_after == 300.0
    assert c.dry_run is False
    assert c.outcome_at == "close"
    assert c.max_concurrent is None
    assert c.max_wait == 0.0


def test_config_is_frozen_and_keyword_only() -> None:
    """"frozen, keyword-only policy"."""
    c = CircuitBreakerConfig(failure_threshold=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.failure_threshold = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        CircuitBreakerConfig(3)  # type: ignore[misc]
    assert c == CircuitBreakerConfig(failure_threshold=3)
    assert hash(c) == hash(CircuitBreakerConfig(failure_threshold=3))
    assert dataclasses.replace(c, window_size=20).window_size == 20


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 0),
        ("failure_threshold", -1),
        ("failure_rate_threshold", 0.0),
        ("failure_rate_threshold", 1.5),
        ("timeout", 0),
        ("timeout", -1.0),
        ("reset_timeout", -1.0),
        ("half_open_max_requests", 0),
        ("window_size", 0),
        ("window_duration", 0),
        ("minimum_requests", 0),
        ("slow_call_duration", 0),
        ("slow_call_rate_threshold", 0.0),
        ("slow_call_rate_threshold", 2.0),
        ("reset_timeout_multiplier", 0.5),
        ("max_reset_timeout", -1.0),
        ("jitter", -0.1),
        ("jitter", 1.5),
        ("max_retry_after", -1.0),
        ("outcome_at", "body"),
        ("max_concurrent", 0),
        ("max_wait", -1.0),
    ],
)
def test_config_bad_values_raise_value_error_naming_field(field: str, value: object) -> None:
    """"validated on construction (bad value -> ValueError naming the field and the
    allowed range)"."""
    with pytest.raises(ValueError, match=field) as info:
        CircuitBreakerConfig(**{field: value})  # type: ignore[arg-type]
    message = str(info.value)
    # The allowed range: a comparison or an interval, or the allowed words.
    assert any(s in message for s in (">", "<", "(", "[", "between", '"close"')), message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", "5"),
        ("failure_threshold", 2.5),
        ("timeout", "10"),
        ("dry_run", "yes"),
        ("respect_retry_after", 1),
        ("window_size", None),
    ],
)
def test_config_wrong_types_are_value_errors_too(field: str, value: object) -> None:
    """A value of the wrong type is bad input as well: `except ValueError` catches it."""
    with pytest.raises(ValueError, match=field):
        CircuitBreakerConfig(**{field: value})  # type: ignore[arg-type]


def test_config_durations_accept_timedelta() -> None:
    """"Durations accept float seconds or datetime.timedelta"."""
    td = datetime.timedelta
    c = CircuitBreakerConfig(
        timeout=td(seconds=10),
        reset_timeout=td(seconds=30),
        window_duration=td(minutes=2),
        slow_call_duration=td(milliseconds=500),
        max_reset_timeout=td(minutes=5),
        max_retry_after=td(minutes=1),
        max_concurrent=2,
        max_wait=td(milliseconds=250),
    )
    assert c.timeout == 10.0
    assert c.reset_timeout == 30.0
    assert c.window_duration == 120.0
    assert c.slow_call_duration == 0.5
    assert c.max_reset_timeout == 300.0
    assert c.max_retry_after == 60.0
    assert c.max_wait == 0.25
    assert isinstance(c.reset_timeout, float)


def test_config_exclude_exceptions_accepts_a_list() -> None:
    """exclude_exceptions: a sequence of exception classes."""
    c = CircuitBreakerConfig(exclude_exceptions=[KeyError, ValueError])
    assert set(c.exclude_exceptions) == {KeyError, ValueError}
    hash(c)  # still hashable: stored as a tuple


# == BreakerMetrics ===================================================================


async def test_metrics_fields_by_name(clock: FakeClock) -> None:
    """total_requests = successful + failed + ignored; rejected not in the total; rates
    over successful + failed; average_response_time in seconds."""
    b = CircuitBreaker(
        "m", cfg(failure_threshold=2, exclude_exceptions=(KeyError,)), clock=clock
    )

    async def slow_ok() -> str:
        clock.advance(0.2)
        return "ok"

    async def slow_fail() -> None:
        clock.advance(0.4)
        raise RuntimeError

    async def excluded() -> None:
        raise KeyError

    assert await b.call_async(slow_ok) == "ok"
    with pytest.raises(RuntimeError):
        await b.call_async(slow_fail)
    with pytest.raises(KeyError):
        await b.call_async(excluded)
    with pytest.raises(RuntimeError):
        await b.call_async(slow_fail)  # second consecutive failure: opens
    with pytest.raises(CircuitOpenError):
        await b.call_async(fine)
    m = b.get_metrics()
    assert m.successful_requests == 1
    assert m.failed_requests == 2
    assert m.ignored_requests == 1
    assert m.total_requests == 4
    assert m.rejected_requests == 1
    assert m.success_rate == pytest.approx(1 / 3)
    assert m.failure_rate == pytest.approx(2 / 3)
    assert m.average_response_time == pytest.approx((0.2 + 0.4 + 0.4) / 3)
    assert m.state_changes[-1][1:] == (CircuitState.CLOSED, CircuitState.OPEN)
    timestamp, _, _ = m.state_changes[-1]
    assert timestamp == pytest.approx(clock.now)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.total_requests = 0  # type: ignore[misc]


def test_rates_with_no_calls() -> None:
    """"Rates with no calls: success_rate == 1.0, failure_rate == 0.0"."""
    m = CircuitBreaker("idle").get_metrics()
    assert m.success_rate == 1.0
    assert m.failure_rate == 0.0
    assert m.total_requests == 0
    assert m.average_response_time == 0.0
    assert m.state_changes == ()


def test_rates_with_only_ignored_calls(clock: FakeClock) -> None:
    """Ignored calls are not in the rates' denominator: still 1.0 / 0.0."""
    b = CircuitBreaker("ign", cfg(exclude_exceptions=(KeyError,)), clock=clock)

    def excluded() -> None:
        raise KeyError

    with pytest.raises(KeyError):
        b.call(excluded)
    m = b.get_metrics()
    assert (m.total_requests, m.ignored_requests) == (1, 1)
    assert (m.success_rate, m.failure_rate) == (1.0, 0.0)


def test_state_changes_keeps_at_most_the_last_1000(clock: FakeClock) -> None:
    """"state_changes (at most the last 1,000 (timestamp, old, new) tuples)"."""
    b = CircuitBreaker("flip", cfg(), clock=clock)
    for _ in range(600):  # 1,200 changes
        b.force_open()
        b.reset()
    changes = b.get_metrics().state_changes
    assert len(changes) == 1000
    assert all(isinstance(c, tuple) and len(c) == 3 for c in changes)
    assert changes[-1][1:] == (CircuitState.OPEN, CircuitState.CLOSED)


def test_metrics_throughput_and_availability(clock: FakeClock) -> None:
    """BreakerMetrics gains `throughput` and `availability` (1.0 for a new breaker), and
    both appear in to_dict()."""
    b = CircuitBreaker("tp", cfg(reset_timeout=10.0, window_duration=60.0), clock=clock)
    m = b.get_metrics()
    assert m.availability == 1.0
    assert m.throughput == 0.0
    for _ in range(60):
        b.call(lambda: None)
        clock.advance(1.0)
    m = b.get_metrics()
    assert m.throughput == pytest.approx(1.0, rel=0.2)
    d = m.to_dict()
    assert d["throughput"] == m.throughput
    assert d["availability"] == 1.0
    json.dumps(d)  # plain values
    # 60 s closed, then 10 s open, then 10 s more: OPEN for 10 of 80 s (the open period
    # ends on its own: HALF_OPEN from then on, whether or not anyone looked).
    b.force_open()
    b.reset()
    clock.advance(60.0)
    b.transition_to(CircuitState.OPEN, cause="test")  # a 10 s open period
    clock.advance(20.0)
    assert b.get_metrics().availability == pytest.approx(1 - 10 / 80)


def test_metrics_to_dict_has_every_field() -> None:
    """to_dict() carries every metric by its field name, as JSON-friendly values."""
    m = CircuitBreaker("d").get_metrics()
    d = m.to_dict()
    for name in (
        "total_requests",
        "successful_requests",
        "failed_requests",
        "rejected_requests",
        "ignored_requests",
        "success_rate",
        "failure_rate",
        "average_response_time",
        "state_changes",
        "throughput",
        "availability",
    ):
        assert name in d, name
    assert d["success_rate"] == 1.0 and d["state_changes"] == []
    json.dumps(d)


def test_availability_restarts_at_reset(clock: FakeClock) -> None:
    """Availability covers "the breaker's life, since creation or reset()"."""
    b = CircuitBreaker("av", cfg(), clock=clock)
    b.force_open()
    clock.advance(10.0)
    assert b.get_metrics().availability == pytest.approx(0.0)
    b.reset()
    clock.advance(10.0)
    assert b.get_metrics().availability == pytest.approx(1.0)


# == CircuitOpenError, CircuitTimeoutError, RequestRejected, BulkheadFullError ========


def test_errors_in_the_httpx_tree() -> None:
    """CircuitOpenError is an httpx.TransportError; CircuitTimeoutError an
    httpx.TimeoutException; both refusals share RequestRejected, an httpx.TransportError."""
    assert issubclass(CircuitOpenError, httpx.TransportError)
    assert issubclass(CircuitTimeoutError, httpx.TimeoutException)
    assert issubclass(RequestRejected, httpx.TransportError)
    assert issubclass(CircuitOpenError, RequestRejected)
    assert issubclass(BulkheadFullError, RequestRejected)
    assert not issubclass(CircuitTimeoutError, RequestRejected)


def test_circuit_open_error_built_by_hand_with_keywords() -> None:
    """An outsider's test double: CircuitOpenError(key=..., state=..., retry_after=...)."""
    e = CircuitOpenError(key="payments.internal", state=CircuitState.OPEN, retry_after=12.5)
    assert (e.key, e.state, e.retry_after) == ("payments.internal", CircuitState.OPEN, 12.5)
    assert "payments.internal" in str(e)
    req = httpx.Request("GET", "https://payments.internal/")
    e2 = CircuitOpenError(
        key="payments.internal", state=CircuitState.OPEN, retry_after=None, request=req
    )
    assert e2.request is req and e2.retry_after is None
    again = pickle.loads(pickle.dumps(e))
    assert (again.key, again.state, again.retry_after) == (e.key, e.state, e.retry_after)


def test_errors_built_the_httpx_way_as_respx_side_effects_do() -> None:
    """respx raises an exception class given as `side_effect` as
    ``cls("Mock Error", request=request)``, the way every httpx error is built: each of
    our errors must accept that (state, retry_after, timeout, limit have defaults)."""
    req = httpx.Request("GET", URL)
    for cls in (CircuitOpenError, CircuitTimeoutError, BulkheadFullError, RequestRejected):
        e = cls("Mock Error", request=req)  # type: ignore[call-arg]
        assert e.request is req
        str(e)
        repr(e)
    assert CircuitOpenError("k").state is CircuitState.OPEN
    assert CircuitOpenError("k").retry_after is None


async def test_nested_breaker_refusal_from_respx_side_effect_is_ignored(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """"CircuitOpenError from a nested breaker is ignored": simulated with respx's
    ``side_effect=CircuitOpenError``; it reaches the caller and never opens ours."""
    mock.get(URL).mock(side_effect=CircuitOpenError)
    transport = async_transport(clock)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            with pytest.raises(CircuitOpenError):
                await client.get(URL)
    m = transport.registry["api.example.com"].get_metrics()
    assert m.state is CircuitState.CLOSED
    assert (m.failed_requests, m.ignored_requests, m.rejected_requests) == (0, 3, 0)


def test_bulkhead_full_error_attributes() -> None:
    """BulkheadFullError: a RequestRejected with the breaker's key, its limit and, from
    a transport, the request; like every refusal it offers retry_after (None: nobody
    can tell when a slot frees)."""
    req = httpx.Request("GET", URL)
    e = BulkheadFullError("api.example.com", 4, request=req)
    assert e.key == "api.example.com"
    assert e.limit == 4
    assert e.max_concurrent == 4
    assert e.retry_after is None
    assert e.request is req
    assert isinstance(e, httpx.TransportError)
    assert "api.example.com" in str(e)


def test_circuit_timeout_error_attributes() -> None:
    """CircuitTimeoutError carries the key and the timeout; it is an httpx timeout."""
    e = CircuitTimeoutError(key="api.example.com", timeout=2.0)
    assert (e.key, e.timeout) == ("api.example.com", 2.0)
    assert isinstance(e, httpx.TimeoutException)
    again = pickle.loads(pickle.dumps(e))
    assert (again.key, again.timeout) == ("api.example.com", 2.0)


# == BreakerRegistry ==================================================================


def test_registry_is_a_read_only_mapping(clock: FakeClock) -> None:
    """get, [key], iteration over keys, len, in; read-only."""
    t = CircuitBreakerTransport(registry=BreakerRegistry(clock=clock))
    a = t.breaker_for_url("https://a.example/")
    b = t.breaker_for_url("http://b.example:8080/x")
    r = t.registry
    assert r["a.example"] is a and r.get("b.example:8080") is b
    assert r.get("missing") is None and r.get("missing", 1) == 1
    assert "missing" not in r  # reading never creates
    assert sorted(r) == ["a.example", "b.example:8080"]
    assert len(r) == 2 and "a.example" in r
    assert dict(r.items()) == {"a.example": a, "b.example:8080": b}
    with pytest.raises(KeyError):
        r["missing"]
    with pytest.raises(TypeError):
        r["x"] = a  # type: ignore[index]
    with pytest.raises((TypeError, AttributeError)):
        del r["a.example"]  # type: ignore[attr-defined]


async def test_transport_breakers_are_named_by_key(mock: respx.MockRouter) -> None:
    """"A transport's breaker is named by its key"."""
    mock.get("http://api.example.com:8080/x").respond(200)
    transport = AsyncCircuitBreakerTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("http://user:pw@API.example.com:8080/x?y=1")
    assert list(transport.registry) == ["api.example.com:8080"]
    assert transport.registry["api.example.com:8080"].name == "api.example.com:8080"


def test_registry_snapshot_shape(clock: FakeClock) -> None:
    """snapshot() "for dashboards": a JSON-serialisable summary and one row per breaker."""
    r = BreakerRegistry(default=cfg(), clock=clock)
    r.breaker_for("a.example").force_open()
    r.breaker_for("b.example")
    snap = r.snapshot()
    json.dumps(snap)
    assert snap["summary"]["total_breakers"] == 2
    assert snap["summary"]["open_breakers"] == 1
    assert snap["summary"]["closed_breakers"] == 1
    rows = {row["name"]: row for row in snap["breakers"]}
    assert rows["a.example"]["state"] == "open"
    assert rows["b.example"]["state"] == "closed"
    assert rows["b.example"]["metrics"]["success_rate"] == 1.0
    assert "throughput" in rows["b.example"]["metrics"]
    assert "availability" in rows["b.example"]["metrics"]


def test_registry_evicts_lru_that_is_not_open(clock: FakeClock) -> None:
    """"Past max_size it evicts the least-recently-used breaker that is not open or
    half-open"."""
    r = BreakerRegistry(default=cfg(), max_size=3, clock=clock)
    a = r.breaker_for("a")
    r.breaker_for("b")
    r.breaker_for("c")
    a.force_open()
    a.reset()
    a.transition_to(CircuitState.OPEN, cause="test")  # open, not forced
    r.breaker_for("b")  # b is now more recent than c
    r.breaker_for("d")
    assert set(r) == {"a", "b", "d"}  # c was the LRU among the closed


def test_registry_all_open_evicts_the_one_whose_period_ends_first(clock: FakeClock) -> None:
    """"if every one is, the open one whose period ends first"."""
    r = BreakerRegistry(default=cfg(), max_size=2, clock=clock)
    r.breaker_for("late").transition_to(CircuitState.OPEN, cause="t", open_for=100.0)
    r.breaker_for("soon").transition_to(CircuitState.OPEN, cause="t", open_for=10.0)
    r.breaker_for("late")  # most recently used, but its period ends later
    r.breaker_for("new")
    assert set(r) == {"late", "new"}


def test_forced_open_breaker_is_never_evicted(clock: FakeClock) -> None:
    """"A breaker held open by force_open() is never evicted from a registry"."""
    r = BreakerRegistry(default=cfg(), max_size=2, clock=clock)
    forced = r.breaker_for("forced")
    forced.force_open()
    for i in range(10):
        r.breaker_for(f"host{i}")
    assert r.get("forced") is forced
    assert forced.is_open()


@pytest.mark.parametrize("extra", [{"default": CircuitBreakerConfig()}, {"policies": {}}])
def test_registry_with_default_or_policies_is_a_value_error(extra: dict[str, Any]) -> None:
    """"A transport given registry= together with default or policies raises ValueError"."""
    for cls in (AsyncCircuitBreakerTransport, CircuitBreakerTransport):
        with pytest.raises(ValueError):
            cls(registry=BreakerRegistry(), **extra)


def test_registry_listener_hears_every_breaker_even_later_ones(clock: FakeClock) -> None:
    """"BreakerRegistry.add_listener(fn) receives the events of every breaker in the
    registry, including breakers created later"."""
    r = BreakerRegistry(default=cfg(), clock=clock)
    before = r.breaker_for("before")
    events: list[Any] = []
    r.add_listener(events.append)
    after = r.breaker_for("after")
    before.force_open()
    after.force_open()
    changes = [(e.name, e.new_state) for e in events if e.kind == "state_change"]
    assert ("before", CircuitState.OPEN) in changes
    assert ("after", CircuitState.OPEN) in changes


def test_registry_reads_while_threads_create_and_evict() -> None:
    """"Reading a registry (values(), items(), snapshot(), exporters) while other threads
    create and evict breakers never raises"."""
    from httpx_breaker.monitoring import dashboard

    r = BreakerRegistry(max_size=8)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn(n: int) -> None:
        i = 0
        while not stop.is_set():
            r.breaker_for(f"h{n}-{i % 50}")
            i += 1

    def read() -> None:
        try:
            for _ in range(300):
                list(r.values())
                list(r.items())
                r.snapshot()
                dashboard(r)
                list(r)
        except Exception as exc:  # noqa: BLE001 (the failure being tested)
            errors.append(exc)

    writers = [threading.Thread(target=churn, args=(n,)) for n in range(2)]
    for w in writers:
        w.start()
    try:
        read()
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert errors == []
    assert len(r) <= 8


# == get_all_circuit_breakers =========================================================


async def test_get_all_lists_the_transports_breakers(mock: respx.MockRouter) -> None:
    """get_all_circuit_breakers(): dict[str, CircuitBreaker] of every live breaker in the
    process, "the transports' included"."""
    mock.get("https://listed-by-get-all.example/").respond(200)
    transport = AsyncCircuitBreakerTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://listed-by-get-all.example/")
    every = get_all_circuit_breakers()
    assert isinstance(every, dict)
    assert every["listed-by-get-all.example"] is transport.registry["listed-by-get-all.example"]


def test_get_all_most_recent_wins_on_name_clash() -> None:
    """"on a name clash the most recently created wins"."""
    first = CircuitBreaker("clash-name")
    second = CircuitBreaker("clash-name")
    assert get_all_circuit_breakers()["clash-name"] is second
    assert first is not second


def test_get_all_includes_decorated_functions() -> None:
    """The decorator's breakers are live breakers too."""

    @circuit_breaker(name="decorated-for-get-all")
    def f() -> int:
        return 1

    assert get_all_circuit_breakers()["decorated-for-get-all"] is f.circuit_breaker()


# == @circuit_breaker =================================================================


async def test_decorator_name_keyword_async(clock: FakeClock) -> None:
    """@circuit_breaker(name=..., config=...) on an async function; .circuit_breaker()."""

    @circuit_breaker(name="external_api", config=cfg(failure_threshold=2))
    async def call_external_api(x: int) -> int:
        if x < 0:
            raise RuntimeError("bad")
        return x * 2

    assert await call_external_api(2) == 4
    breaker = call_external_api.circuit_breaker()
    assert isinstance(breaker, CircuitBreaker) and breaker.name == "external_api"
    assert breaker.config.failure_threshold == 2
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await call_external_api(-1)
    with pytest.raises(CircuitOpenError) as info:
        await call_external_api(1)
    assert info.value.key == "external_api"


def test_decorator_name_positional_sync() -> None:
    """The name may be given positionally, on a sync function."""

    @circuit_breaker("positional-name")
    def f(x: int) -> int:
        return x + 1

    assert f(1) == 2
    assert f.circuit_breaker().name == "positional-name"
    assert f.circuit_breaker().get_metrics().successful_requests == 1


def test_decorator_config_positional_after_name_is_refused_or_kept() -> None:
    """`config` as a keyword, `classifier=None` default."""
    params = inspect.signature(circuit_breaker).parameters
    assert "config" in params and "classifier" in params
    assert params["classifier"].default is None


def test_decorator_bare() -> None:
    """Used bare (``@circuit_breaker``), it works and names the breaker after the function."""

    @circuit_breaker
    def g() -> str:
        return "g"

    assert g() == "g"
    assert g.circuit_breaker().name.endswith("g")


def test_decorator_result_classifier_trips_on_returned_failures() -> None:
    """"The engine's classifier is (result, exception) -> bool | None, so functions that
    return failures (a Result type) can trip it"."""

    @dataclasses.dataclass
    class Result:
        ok: bool

    def classify(result: Result | None, exc: BaseException | None) -> bool | None:
        if exc is not None:
            return True
        assert result is not None
        return not result.ok

    @circuit_breaker(name="result-type", config=cfg(failure_threshold=2), classifier=classify)
    def fetch(ok: bool) -> Result:
        return Result(ok)

    fetch(False)
    fetch(False)
    assert fetch.circuit_breaker().is_open()
    with pytest.raises(CircuitOpenError):
        fetch(True)


async def test_decorator_async_classifier_none_ignores() -> None:
    """A classifier verdict of None is neither a success nor a failure."""

    @circuit_breaker(name="ignoring", classifier=lambda r, e: None)
    async def f() -> int:
        return 1

    await f()
    m = f.circuit_breaker().get_metrics()
    assert (m.ignored_requests, m.successful_requests, m.failed_requests) == (1, 0, 0)


# == Semantics: opening ===============================================================


def fail_sync() -> None:
    raise RuntimeError("down")


def test_opens_on_consecutive_failures(clock: FakeClock) -> None:
    """"CLOSED opens when consecutive failures reach failure_threshold"; a success in
    between starts the count again."""
    b = CircuitBreaker("c", cfg(failure_threshold=3, window_size=100), clock=clock)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            b.call(fail_sync)
    b.call(lambda: None)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            b.call(fail_sync)
    assert b.is_closed()
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    assert b.is_open()


def test_opens_on_failure_rate_once_minimum_requests_is_reached(clock: FakeClock) -> None:
    """"the window holds at least minimum_requests outcomes and the failure share reaches
    failure_rate_threshold (>=)"."""
    b = CircuitBreaker(
        "r",
        cfg(failure_threshold=100, failure_rate_threshold=0.5, window_size=10, minimum_requests=4),
        clock=clock,
    )
    b.call(lambda: None)
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    b.call(lambda: None)
    assert b.is_closed()  # 1 of 3: below the minimum anyway
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    assert b.is_open()  # 2 of 4 == 0.5: >= opens


def test_minimum_requests_none_means_window_size(clock: FakeClock) -> None:
    """"minimum_requests=None ... means window_size"."""
    b = CircuitBreaker(
        "w", cfg(failure_threshold=100, failure_rate_threshold=0.5, window_size=4), clock=clock
    )
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    b.call(lambda: None)
    assert b.is_closed()  # 3 outcomes < window_size 4
    b.call(lambda: None)
    assert b.is_open()  # 2 of 4


def test_window_duration_expires_old_outcomes(clock: FakeClock) -> None:
    """"window_duration=60.0 (outcomes older than this leave the window)"."""
    b = CircuitBreaker(
        "wd",
        cfg(failure_threshold=100, window_size=4, minimum_requests=4, window_duration=60.0),
        clock=clock,
    )
    for _ in range(3):
        with pytest.raises(RuntimeError):
            b.call(fail_sync)
    clock.advance(61.0)
    b.call(lambda: None)
    assert b.is_closed()  # the three failures have left the window
    assert b.get_metrics().failed_requests == 3


def test_slow_calls_open_on_the_injected_clock(clock: FakeClock) -> None:
    """"or the slow share reaches slow_call_rate_threshold"; "A call is slow when its
    duration, on the injected clock, is >= slow_call_duration"."""
    b = CircuitBreaker(
        "slow",
        cfg(
            failure_threshold=100,
            window_size=4,
            slow_call_duration=1.0,
            slow_call_rate_threshold=0.5,
        ),
        clock=clock,
    )

    def take(seconds: float) -> None:
        clock.advance(seconds)

    b.call(take, 1.0)  # exactly the threshold: slow
    b.call(take, 0.5)
    b.call(take, 0.999)
    assert b.is_closed()
    b.call(take, 1.0)
    assert b.is_open()  # 2 slow of 4 successes
    m = b.get_metrics()
    assert (m.failed_requests, m.successful_requests) == (0, 4)


# == Semantics: one decision per request, half-open ===================================


async def test_half_open_admits_up_to_max_probes_and_closes(clock: FakeClock) -> None:
    """HALF_OPEN admits while "probes in flight plus probes succeeded are fewer than
    half_open_max_requests"; "that many successes close"."""
    b = CircuitBreaker("h", cfg(reset_timeout=10.0, half_open_max_requests=2), clock=clock)
    with pytest.raises(RuntimeError):
        await b.call_async(boom)
    assert b.is_open()
    clock.advance(10.0)
    assert b.state is CircuitState.HALF_OPEN

    gates = [anyio.Event(), anyio.Event()]
    results: list[str] = []

    async def probe(i: int) -> str:
        await gates[i].wait()
        return "ok"

    async def run(i: int) -> None:
        results.append(await b.call_async(probe, i))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, 0)
        tg.start_soon(run, 1)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(CircuitOpenError) as info:
            await b.call_async(fine)  # two in flight: no third
        assert info.value.state is CircuitState.HALF_OPEN
        gates[0].set()
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(CircuitOpenError):
            await b.call_async(fine)  # one in flight + one succeeded
        assert b.is_half_open()
        gates[1].set()
    assert results == ["ok", "ok"]
    assert b.is_closed()


def test_failed_probe_reopens_with_backoff_up_to_the_cap(clock: FakeClock) -> None:
    """"any failure reopens (with the backoff multiplier applied)", "up to the cap"."""
    b = CircuitBreaker(
        "bo",
        cfg(reset_timeout=10.0, reset_timeout_multiplier=2.0, max_reset_timeout=30.0),
        clock=clock,
    )
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    periods = []
    for _ in range(4):
        with pytest.raises(CircuitOpenError) as info:
            b.call(lambda: None)
        assert info.value.retry_after is not None
        periods.append(info.value.retry_after)
        clock.advance(info.value.retry_after)
        with pytest.raises(RuntimeError):
            b.call(fail_sync)  # the probe fails
    assert periods == [10.0, 20.0, 30.0, 30.0]


def test_jitter_never_takes_the_period_past_max_reset_timeout(clock: FakeClock) -> None:
    """"max_reset_timeout is a hard cap: jitter never takes an open period past it"."""
    for _ in range(50):
        b = CircuitBreaker(
            "j", cfg(reset_timeout=10.0, max_reset_timeout=10.0, jitter=1.0), clock=clock
        )
        with pytest.raises(RuntimeError):
            b.call(fail_sync)
        with pytest.raises(CircuitOpenError) as info:
            b.call(lambda: None)
        assert info.value.retry_after is not None and info.value.retry_after <= 10.0


def test_jitter_adds_up_to_the_fraction(clock: FakeClock) -> None:
    """"jitter=0.0 (up to this fraction added at random to each open period)"."""
    seen = set()
    for _ in range(40):
        b = CircuitBreaker("j2", cfg(reset_timeout=10.0, jitter=0.5), clock=clock)
        with pytest.raises(RuntimeError):
            b.call(fail_sync)
        with pytest.raises(CircuitOpenError) as info:
            b.call(lambda: None)
        ra = info.value.retry_after
        assert ra is not None and 10.0 <= ra <= 15.0
        seen.add(round(ra, 6))
    assert len(seen) > 1  # it is random


# == A probe permit is never lost =====================================================


async def test_cancelled_probe_returns_its_permit_and_counts_nothing(clock: FakeClock) -> None:
    """Cancellation (asyncio and trio) returns the permit; "Cancellation is neither a
    success nor a failure"."""
    b = CircuitBreaker("cx", cfg(reset_timeout=5.0, half_open_max_requests=1), clock=clock)
    with pytest.raises(RuntimeError):
        await b.call_async(boom)
    clock.advance(5.0)

    async def forever() -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.01):
        await b.call_async(forever)
    assert b.state is CircuitState.HALF_OPEN
    m = b.get_metrics()
    assert (m.failed_requests, m.successful_requests) == (1, 0)
    assert await b.call_async(fine) == "ok"  # the slot is free again
    assert b.is_closed()


async def test_probe_that_raises_reopens(clock: FakeClock) -> None:
    """An exception in a probe is a failure: it reopens, it does not stick."""
    b = CircuitBreaker("ex", cfg(reset_timeout=5.0), clock=clock)
    with pytest.raises(RuntimeError):
        await b.call_async(boom)
    clock.advance(5.0)
    with pytest.raises(RuntimeError):
        await b.call_async(boom)
    assert b.is_open()


# == retry_after, forcing, reset ======================================================


def test_retry_after_counts_down_and_is_none_when_forced(clock: FakeClock) -> None:
    """retry_after: "seconds until a probe may pass; None where nobody can tell (forced
    open)"."""
    b = CircuitBreaker("ra", cfg(reset_timeout=30.0), clock=clock)
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    clock.advance(12.0)
    with pytest.raises(CircuitOpenError) as info:
        b.call(lambda: None)
    assert info.value.retry_after == pytest.approx(18.0)
    assert info.value.state is CircuitState.OPEN
    assert info.value.key == "ra"
    b.force_open()
    with pytest.raises(CircuitOpenError) as info:
        b.call(lambda: None)
    assert info.value.retry_after is None


def test_force_open_and_force_closed_hold_until_reset(clock: FakeClock) -> None:
    """"force_open() / force_closed() hold until reset()"."""
    b = CircuitBreaker("f", cfg(reset_timeout=1.0), clock=clock)
    b.force_open()
    clock.advance(3600.0)
    assert b.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        b.call(lambda: None)
    b.force_closed()
    for _ in range(10):
        with pytest.raises(RuntimeError):
            b.call(fail_sync)
    assert b.state is CircuitState.CLOSED
    b.reset()
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    assert b.is_open()  # no longer held


def test_reset_closes_with_empty_window_and_keeps_counters(clock: FakeClock) -> None:
    """"reset() returns to CLOSED with an empty window and keeps the counters"."""
    b = CircuitBreaker("rs", cfg(failure_threshold=2, window_size=100), clock=clock)
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    b.reset()
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    assert b.is_closed()  # the first failure left with the window
    m = b.get_metrics()
    assert m.failed_requests == 2
    b.force_open()
    b.reset()
    assert b.state is CircuitState.CLOSED
    assert b.get_metrics().failed_requests == 2


# == dry_run ==========================================================================


def test_dry_run_passes_counts_rejected_fires_event_records_nothing(clock: FakeClock) -> None:
    """"dry_run: a request that would have been rejected passes, counts in
    rejected_requests, fires the rejection event, and its outcome is not recorded"."""
    b = CircuitBreaker("dry", cfg(dry_run=True), clock=clock)
    events: list[Any] = []
    b.add_listener(events.append)
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    assert b.state is CircuitState.OPEN  # states as usual
    assert b.call(lambda: 42) == 42  # would have been rejected: passes
    with pytest.raises(RuntimeError):
        b.call(fail_sync)  # passes too, its outcome not recorded
    m = b.get_metrics()
    assert m.rejected_requests == 2
    assert (m.successful_requests, m.failed_requests) == (0, 1)
    assert [e.kind for e in events].count("rejected") == 2


# == Listeners ========================================================================


def test_on_state_change_seed_form(clock: FakeClock) -> None:
    """"breaker.on_state_change = fn(old, new) (the seed's form)"."""
    b = CircuitBreaker("osc", cfg(reset_timeout=5.0), clock=clock)
    seen: list[tuple[CircuitState, CircuitState]] = []
    b.on_state_change = lambda old, new: seen.append((old, new))
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    clock.advance(5.0)
    b.call(lambda: None)
    b.call(lambda: None)
    b.call(lambda: None)
    assert seen == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]


def test_listeners_run_outside_any_lock(clock: FakeClock) -> None:
    """Listeners are "called outside any lock": one that reads the breaker from another
    thread (which needs its lock) does not deadlock."""
    b = CircuitBreaker("lock", cfg(), clock=clock)
    read: list[Any] = []

    def listener(event: Any) -> None:
        t = threading.Thread(target=lambda: read.append(b.get_metrics()))
        t.start()
        t.join(5.0)
        assert not t.is_alive()

    b.add_listener(listener)
    b.on_state_change = lambda old, new: listener(None)
    with pytest.raises(RuntimeError):
        b.call(fail_sync)
    assert read and b.is_open()


def test_listener_exception_is_logged_and_never_reaches_the_request(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """"an exception in a listener is logged and never reaches the request"."""
    b = CircuitBreaker("bad-listener", cfg(), clock=clock)

    def bad(*args: Any) -> None:
        raise ValueError("listener bug")

    b.add_listener(bad)
    b.on_state_change = bad
    with caplog.at_level(logging.ERROR):
        assert b.call(lambda: 1) == 1
        with pytest.raises(RuntimeError):
            b.call(fail_sync)
    assert b.is_open()
    assert any("listener bug" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


# == call_async deadline ==============================================================


async def test_call_async_timeout_is_a_deadline_on_the_whole_call() -> None:
    """"in call_async, a deadline on the whole call": CircuitTimeoutError, a failure."""
    b = CircuitBreaker("deadline", CircuitBreakerConfig(timeout=0.05, failure_threshold=1))

    async def hang() -> None:
        await anyio.sleep(30)

    with pytest.raises(CircuitTimeoutError) as info:
        await b.call_async(hang)
    assert isinstance(info.value, httpx.TimeoutException)
    assert info.value.timeout == 0.05
    assert b.get_metrics().failed_requests == 1
    assert b.is_open()


async def test_call_async_without_timeout_never_cuts(clock: FakeClock) -> None:
    """Default timeout None: "no deadline"."""
    b = CircuitBreaker("nodeadline", clock=clock)

    async def slowish() -> str:
        await anyio.sleep(0.02)
        return "done"

    assert await b.call_async(slowish) == "done"


# == The classifier ===================================================================


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (200, False),
        (201, False),
        (301, False),
        (400, False),
        (404, False),
        (429, True),
        (500, True),
        (501, False),
        (502, True),
        (503, True),
        (504, True),
        (505, False),
    ],
)
async def test_default_classifier_statuses(
    mock: respx.MockRouter, clock: FakeClock, status: int, failure: bool
) -> None:
    """"429, 500, 502, 503, 504 fail; every other status succeeds"."""
    mock.get(URL).respond(status)
    transport = async_transport(clock, failure_threshold=100)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    m = transport.registry["api.example.com"].get_metrics()
    assert (m.failed_requests, m.successful_requests) == ((1, 0) if failure else (0, 1))


@pytest.mark.parametrize(
    ("exc", "verdict"),
    [
        (httpx.ConnectError, True),
        (httpx.ReadError, True),
        (httpx.ConnectTimeout, True),
        (httpx.ReadTimeout, True),
        (httpx.RemoteProtocolError, True),
        (httpx.UnsupportedProtocol, None),
        (httpx.LocalProtocolError, None),
        (httpx.PoolTimeout, None),
        (CircuitOpenError, None),
    ],
)
async def test_default_classifier_exceptions_through_the_transport(
    mock: respx.MockRouter, clock: FakeClock, exc: type[Exception], verdict: bool | None
) -> None:
    """"transport errors and timeouts fail, except caller-side ones (UnsupportedProtocol,
    LocalProtocolError) which are ignored"; PoolTimeout and a nested CircuitOpenError are
    ignored. Raised the respx way (``side_effect=cls``)."""
    mock.get(URL).mock(side_effect=exc)
    transport = async_transport(clock, failure_threshold=100)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(exc):
            await client.get(URL)
    m = transport.registry["api.example.com"].get_metrics()
    expected = {True: (1, 0), None: (0, 1)}[verdict]
    assert (m.failed_requests, m.ignored_requests) == expected
    assert default_classifier(httpx.Request("GET", URL), None, exc("x")) is verdict  # type: ignore[call-arg]


async def test_custom_classifier_sees_request_response_exception(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """classifier: (request, response | None, exception | None) -> bool | None."""
    mock.get(URL).respond(404)
    mock.get("https://api.example.com/err").mock(side_effect=httpx.ConnectError)
    calls: list[tuple[Any, Any, Any]] = []

    def classify(
        request: httpx.Request, response: httpx.Response | None, exc: BaseException | None
    ) -> bool | None:
        calls.append((request, response, exc))
        return exc is not None or (response is not None and response.status_code == 404)

    transport = AsyncCircuitBreakerTransport(
        registry=BreakerRegistry(default=cfg(failure_threshold=100), clock=clock),
        classifier=classify,
    )
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
        with pytest.raises(httpx.ConnectError):
            await client.get("https://api.example.com/err")
    (req1, resp1, exc1), (_, resp2, exc2) = calls
    assert req1.url == URL and resp1.status_code == 404 and exc1 is None
    assert resp2 is None and isinstance(exc2, httpx.ConnectError)
    m = transport.registry["api.example.com"].get_metrics()
    assert (m.failed_requests, m.successful_requests) == (2, 0)


async def test_outcome_recorded_when_the_body_is_closed(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """"For a response, the outcome is recorded when its body is closed"."""
    mock.get(URL).respond(503, content=b"x" * 100)
    transport = async_transport(clock)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.send(client.build_request("GET", URL), stream=True)
        assert response.status_code == 503
        breaker = transport.registry["api.example.com"]
        assert breaker.get_metrics().failed_requests == 0  # not yet
        assert breaker.is_closed()
        await response.aclose()
        assert breaker.get_metrics().failed_requests == 1
        assert breaker.is_open()


async def test_error_while_the_body_streams_reaches_the_classifier(
    upstream: Upstream, clock: FakeClock
) -> None:
    """"an error while the body streams goes to the classifier as (request, response,
    exception)"."""
    seen: list[tuple[int | None, type[BaseException] | None]] = []

    def classify(
        request: httpx.Request, response: httpx.Response | None, exc: BaseException | None
    ) -> bool | None:
        seen.append((response.status_code if response else None, type(exc) if exc else None))
        return default_classifier(request, response, exc)

    transport = AsyncCircuitBreakerTransport(
        registry=BreakerRegistry(default=cfg(), clock=clock), classifier=classify
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{upstream.url}/cut")
    assert seen == [(200, httpx.RemoteProtocolError)]
    assert transport.registry[f"127.0.0.1:{upstream.port}"].is_open()


def test_sync_error_while_the_body_streams_is_a_failure(
    upstream: Upstream, clock: FakeClock
) -> None:
    """The same with the sync transport: a body cut short counts as a failure."""
    transport = sync_transport(clock)
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.RemoteProtocolError):
        client.get(f"{upstream.url}/cut")
    assert transport.registry[f"127.0.0.1:{upstream.port}"].get_metrics().failed_requests == 1


# == Retry-After ======================================================================


async def test_retry_after_seconds_lengthens_the_open_period(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """"Retry-After ... on a response the classifier calls a failure ... makes the open
    period at least that long ... if the breaker is or becomes open"."""
    mock.get(URL).respond(503, headers={"Retry-After": "120"})
    transport = async_transport(clock, reset_timeout=30.0)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
        with pytest.raises(CircuitOpenError) as info:
            await client.get(URL)
    assert info.value.retry_after == pytest.approx(120.0)


async def test_retry_after_http_date(mock: respx.MockRouter, clock: FakeClock) -> None:
    """An HTTP-date Retry-After works too."""
    when = email.utils.formatdate(time.time() + 200, usegmt=True)
    mock.get(URL).respond(429, headers={"Retry-After": when})
    transport = async_transport(clock, reset_timeout=30.0)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
        with pytest.raises(CircuitOpenError) as info:
            await client.get(URL)
    assert info.value.retry_after is not None
    assert 190.0 <= info.value.retry_after <= 201.0


@pytest.mark.parametrize(
    "form",
    ["%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y"],
    ids=["imf", "rfc850", "asctime"],
)
def test_retry_after_dates_in_every_form_are_gmt(form: str) -> None:
    """"Retry-After HTTP-dates in every form HTTP allows (IMF, RFC 850, asctime) are GMT"."""
    from httpx_breaker.classifiers import parse_retry_after

    now = time.time()
    value = time.strftime(form, time.gmtime(now + 600))
    seconds = parse_retry_after(value, now=now)
    assert seconds is not None
    assert seconds == pytest.approx(600.0, abs=1.0)


async def test_retry_after_capped_by_max_retry_after(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """"(capped by max_retry_after)"."""
    mock.get(URL).respond(503, headers={"Retry-After": "100000"})
    transport = async_transport(clock, reset_timeout=30.0, max_retry_after=90.0)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
        with pytest.raises(CircuitOpenError) as info:
            await client.get(URL)
    assert info.value.retry_after == pytest.approx(90.0)


async def test_retry_after_never_opens_by_itself(mock: respx.MockRouter, clock: FakeClock) -> None:
    """"It never opens a breaker by itself"."""
    mock.get(URL).respond(503, headers={"Retry-After": "600"})
    transport = async_transport(clock, failure_threshold=3)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    assert transport.registry["api.example.com"].is_closed()


async def test_retry_after_ignored_on_success_or_when_not_respected(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """Only on a failure, and only with respect_retry_after."""
    mock.get(URL).respond(503, headers={"Retry-After": "600"})
    transport = async_transport(clock, reset_timeout=30.0, respect_retry_after=False)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
        with pytest.raises(CircuitOpenError) as info:
            await client.get(URL)
    assert info.value.retry_after == pytest.approx(30.0)


# == Keys and policies ================================================================


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://api.example.com/a/b?c=d", "api.example.com"),
        ("https://api.example.com:443/", "api.example.com"),
        ("http://api.example.com:80/", "api.example.com"),
        ("https://api.example.com:8443/", "api.example.com:8443"),
        ("http://api.example.com:443/", "api.example.com:443"),
        ("https://user:secret@api.example.com/", "api.example.com"),
        ("https://API.Example.COM/", "api.example.com"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("http://[::1]/", "[::1]"),
        ("https://example.com./", "example.com"),
        ("http://[::ffff:127.0.0.1]:8080/", "[::ffff:127.0.0.1]:8080"),
        ("http://[::ffff:7f00:1]:8080/", "[::ffff:127.0.0.1]:8080"),
    ],
)
def test_default_key(url: str, key: str) -> None:
    """"the default key is the URL host, plus :port when the port is not the scheme's
    default (IPv6 as [::1]:8080); never userinfo, never the path"; a trailing dot is
    dropped; IPv4-mapped IPv6 is spelled one way."""
    from httpx_breaker.classifiers import default_key

    assert default_key(httpx.Request("GET", url)) == key
    transport = CircuitBreakerTransport()
    assert transport.breaker_for_url(url).name == key


async def test_custom_key_function(mock: respx.MockRouter) -> None:
    """"key= takes a Callable[[httpx.Request], str]"."""
    mock.get(URL).respond(200)
    mock.get("https://other.example.com/").respond(200)
    transport = AsyncCircuitBreakerTransport(key=lambda request: "one-for-all")
    async with httpx.AsyncClient(transport=transport) as client:
        r = await client.get(URL)
        await client.get("https://other.example.com/")
    assert list(transport.registry) == ["one-for-all"]
    assert r.extensions["circuit_breaker"]["key"] == "one-for-all"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("api.example.com:8443", "exact"),
        ("api.example.com", "host"),
        ("api.example.com:9000", "host"),
        ("a.b.example.com", "deep"),
        ("x.example.com", "wild"),
        ("example.com", "default"),
        ("API.EXAMPLE.COM", "host"),
        ("other.org", "default"),
    ],
)
def test_policy_matching_order(key: str, expected: str) -> None:
    """"A policy pattern matches an exact key, then the bare host, then the longest
    *.suffix wildcard (subdomains only), then default; matching is case-insensitive"."""
    names = {
        "exact": CircuitBreakerConfig(failure_threshold=1),
        "host": CircuitBreakerConfig(failure_threshold=2),
        "wild": CircuitBreakerConfig(failure_threshold=3),
        "deep": CircuitBreakerConfig(failure_threshold=4),
        "default": CircuitBreakerConfig(failure_threshold=9),
    }
    registry = BreakerRegistry(
        default=names["default"],
        policies={
            "API.example.com:8443": names["exact"],
            "api.example.com": names["host"],
            "*.example.com": names["wild"],
            "*.B.example.com": names["deep"],
        },
    )
    assert registry.breaker_for(key).config is names[expected]


def test_policy_pattern_with_trailing_dot_matches(mock: respx.MockRouter) -> None:
    """"a trailing dot is dropped (example.com. and example.com are one key)", in
    patterns too."""
    strict = CircuitBreakerConfig(failure_threshold=1)
    transport = CircuitBreakerTransport(policies={"payments.internal.": strict})
    assert transport.breaker_for_url("https://payments.internal/").config is strict
    assert transport.breaker_for_url("https://payments.internal./x") is (
        transport.breaker_for_url("https://payments.internal/")
    )


def test_ipv4_mapped_pattern_matches_either_spelling() -> None:
    """IPv4-mapped IPv6 addresses "are spelled one way in keys and patterns"."""
    special = CircuitBreakerConfig(failure_threshold=1)
    for pattern in ("[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "::ffff:7f00:1"):
        t = CircuitBreakerTransport(policies={pattern: special})
        assert t.breaker_for_url("http://[::ffff:7f00:1]:8080/").config is special
        assert t.breaker_for_url("http://[::ffff:127.0.0.1]/").config is special


def test_breaker_for_url_takes_str_url_and_request() -> None:
    """"transport.breaker_for_url(url) (a str, httpx.URL or httpx.Request) returns the
    breaker a request to that URL would use, creating it if needed"."""
    for transport in (AsyncCircuitBreakerTransport(), CircuitBreakerTransport()):
        assert "api.example.com" not in transport.registry
        b = transport.breaker_for_url("https://api.example.com/x")
        assert transport.registry["api.example.com"] is b
        assert transport.breaker_for_url(httpx.URL("https://api.example.com/y")) is b
        assert transport.breaker_for_url(httpx.Request("POST", "https://api.example.com/")) is b


async def test_breaker_for_url_is_the_one_requests_use(mock: respx.MockRouter) -> None:
    """The breaker it returns is the one a request uses: forcing it open refuses."""
    route = mock.get(URL).respond(200)
    transport = AsyncCircuitBreakerTransport()
    transport.breaker_for_url(URL).force_open()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(CircuitOpenError) as info:
            await client.get(URL)
    assert info.value.retry_after is None
    assert route.call_count == 0


# == Per request: extensions ==========================================================


async def test_bypass_extension_skips_the_breaker(mock: respx.MockRouter, clock: FakeClock) -> None:
    """request.extensions["circuit_breaker"] can "bypass the breaker"."""
    route = mock.get(URL).respond(200)
    transport = async_transport(clock)
    transport.breaker_for_url(URL).force_open()
    async with httpx.AsyncClient(transport=transport) as client:
        r = await client.get(URL, extensions={"circuit_breaker": {"bypass": True}})
    assert r.status_code == 200 and route.call_count == 1


@pytest.mark.parametrize("value", ["true", "false", 1, 0, None])
async def test_bypass_must_be_a_bool(mock: respx.MockRouter, value: object) -> None:
    """"request.extensions["circuit_breaker"]["bypass"] must be a bool (anything else:
    TypeError before any I/O)"."""
    route = mock.get(URL).respond(200)
    async with httpx.AsyncClient(transport=AsyncCircuitBreakerTransport()) as client:
        with pytest.raises(TypeError):
            await client.get(URL, extensions={"circuit_breaker": {"bypass": value}})
    with httpx.Client(transport=CircuitBreakerTransport()) as sync_client, pytest.raises(TypeError):
        sync_client.get(URL, extensions={"circuit_breaker": {"bypass": value}})  # noqa: ASYNC212 (the sync twin, once)
    assert route.call_count == 0


async def test_policy_extension_names_a_policy(mock: respx.MockRouter) -> None:
    """request.extensions["circuit_breaker"] can "name a policy"."""
    mock.get(URL).respond(503)
    lenient = CircuitBreakerConfig(failure_threshold=50)
    transport = AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(failure_threshold=1), policies={"lenient": lenient}
    )
    async with httpx.AsyncClient(transport=transport) as client:
        r = await client.get(URL, extensions={"circuit_breaker": {"policy": "lenient"}})
        r2 = await client.get(URL, extensions={"circuit_breaker": {"policy": "lenient"}})
    assert r2.status_code == 503
    info = r.extensions["circuit_breaker"]
    assert info["breaker"].config is lenient


async def test_response_extension_says_which_breaker_and_state(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """"response.extensions["circuit_breaker"] tells the caller which breaker (key)
    handled it and in what state"."""
    mock.get(URL).respond(200)
    transport = async_transport(clock, reset_timeout=5.0, half_open_max_requests=1)
    breaker = transport.breaker_for_url(URL)
    breaker.transition_to(CircuitState.OPEN, cause="test")
    clock.advance(5.0)
    async with httpx.AsyncClient(transport=transport) as client:
        probe = await client.get(URL)
        after = await client.get(URL)
    assert probe.extensions["circuit_breaker"]["key"] == "api.example.com"
    assert probe.extensions["circuit_breaker"]["state"] is CircuitState.HALF_OPEN
    assert after.extensions["circuit_breaker"]["state"] is CircuitState.CLOSED
    assert after.extensions["circuit_breaker"]["state"] == "closed"


# == The transports: refusing before I/O ==============================================


async def test_open_breaker_refuses_before_io_with_request(upstream: Upstream, clock: FakeClock) -> None:
    """"while a breaker is open raises CircuitOpenError without touching the network";
    `request` when raised by a transport."""
    upstream.mode = "failing"
    transport = async_transport(clock)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(f"{upstream.url}/x")).status_code == 503
        before = upstream.request_count
        with pytest.raises(CircuitOpenError) as info:
            await client.get(f"{upstream.url}/x")
    assert upstream.request_count == before
    assert info.value.request.url == f"{upstream.url}/x"
    assert info.value.key == f"127.0.0.1:{upstream.port}"


def test_sync_transport_refuses_before_io(upstream: Upstream, clock: FakeClock) -> None:
    """The sync twin, same behaviour."""
    upstream.mode = "failing"
    transport = sync_transport(clock, reset_timeout=10.0)
    with httpx.Client(transport=transport) as client:
        assert client.get(f"{upstream.url}/x").status_code == 503
        before = upstream.request_count
        with pytest.raises(CircuitOpenError) as info:
            client.get(f"{upstream.url}/x")
        assert upstream.request_count == before
        assert info.value.retry_after == pytest.approx(10.0)
        upstream.mode = "healthy"
        clock.advance(10.0)
        assert client.get(f"{upstream.url}/x").status_code == 200  # the probe
    breaker = transport.registry[f"127.0.0.1:{upstream.port}"]
    assert breaker.get_metrics().successful_requests == 1


def test_sync_transport_is_thread_safe_for_half_open(upstream: Upstream, clock: FakeClock) -> None:
    """HALF_OPEN admits at most half_open_max_requests "however many ... threads race"."""
    transport = sync_transport(clock, reset_timeout=5.0, half_open_max_requests=2)
    breaker = transport.breaker_for_url(f"{upstream.url}/hold")
    breaker.transition_to(CircuitState.OPEN, cause="test")
    clock.advance(5.0)
    upstream.mode = "hold"
    outcomes: list[str] = []
    lock = threading.Lock()
    client = httpx.Client(transport=transport)

    def one() -> None:
        try:
            client.get(f"{upstream.url}/hold")
            result = "passed"
        except CircuitOpenError:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while (outcomes.count("refused") < 6 or upstream.holding < 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    upstream.release()
    for t in threads:
        t.join(10)
    client.close()
    assert sorted(outcomes) == ["passed"] * 2 + ["refused"] * 6
    assert breaker.is_closed()


# == 0.2: Deadlines (timeout) =========================================================


async def test_transport_timeout_on_a_slow_respx_route(mock: respx.MockRouter) -> None:
    """"When set ... in the transports, a deadline on the response headers": a route whose
    side effect sleeps past `timeout` raises CircuitTimeoutError at `timeout`, counted as
    a failure. (respx on httpcore: the client's pool is never touched.)"""

    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(5)
        return httpx.Response(200)

    mock.get(URL).mock(side_effect=slow)
    transport = AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(timeout=0.1, failure_threshold=1)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with anyio.fail_after(3):  # far below the route's 5 s: the deadline fired
            with pytest.raises(CircuitTimeoutError) as info:
                await client.get(URL)
    assert isinstance(info.value, httpx.TimeoutException)
    assert info.value.request.url == URL
    breaker = transport.registry["api.example.com"]
    assert breaker.get_metrics().failed_requests == 1
    assert breaker.is_open()


async def test_transport_timeout_over_a_mock_transport() -> None:
    """The same deadline over an httpx.MockTransport whose handler sleeps."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(5)
        return httpx.Response(200)

    transport = AsyncCircuitBreakerTransport(
        httpx.MockTransport(slow), default=CircuitBreakerConfig(timeout=0.1)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with anyio.fail_after(3):
            with pytest.raises(CircuitTimeoutError):
                await client.get(URL)


async def test_transport_timeout_on_a_real_slow_server(upstream: Upstream) -> None:
    """Headers later than `timeout` from a real server: CircuitTimeoutError, a failure."""
    transport = AsyncCircuitBreakerTransport(default=CircuitBreakerConfig(timeout=0.2))
    async with httpx.AsyncClient(transport=transport) as client:
        with anyio.fail_after(5):
            with pytest.raises(CircuitTimeoutError):
                await client.get(f"{upstream.url}/delay/3")
    breaker = transport.registry[f"127.0.0.1:{upstream.port}"]
    assert breaker.get_metrics().failed_requests == 1


def test_sync_transport_timeout_on_a_real_slow_server(upstream: Upstream) -> None:
    """"Both transports raise CircuitTimeoutError ... when the deadline is what stopped
    the request, and count it as a failure"."""
    transport = CircuitBreakerTransport(default=CircuitBreakerConfig(timeout=0.2))
    with httpx.Client(transport=transport) as client:
        started = time.monotonic()
        with pytest.raises(CircuitTimeoutError) as info:
            client.get(f"{upstream.url}/delay/3")
        assert time.monotonic() - started < 2.5
    assert info.value.request.url == f"{upstream.url}/delay/3"
    breaker = transport.registry[f"127.0.0.1:{upstream.port}"]
    assert breaker.get_metrics().failed_requests == 1


def test_sync_transport_timeout_on_a_slow_respx_route(mock: respx.MockRouter) -> None:
    """A sync route that sleeps past `timeout` cannot be interrupted, but the response
    came after the deadline: CircuitTimeoutError, a failure, as the async twin."""

    def slow(request: httpx.Request) -> httpx.Response:
        time.sleep(0.3)
        return httpx.Response(200)

    mock.get(URL).mock(side_effect=slow)
    transport = CircuitBreakerTransport(default=CircuitBreakerConfig(timeout=0.1))
    with httpx.Client(transport=transport) as client, pytest.raises(CircuitTimeoutError):
        client.get(URL)
    assert transport.registry["api.example.com"].get_metrics().failed_requests == 1


async def test_default_timeout_never_cuts_a_slow_response(upstream: Upstream) -> None:
    """"Default None: no deadline. httpx's own timeouts govern"."""
    transport = AsyncCircuitBreakerTransport()
    async with httpx.AsyncClient(transport=transport, timeout=None) as client:
        r = await client.get(f"{upstream.url}/delay/0.3")
    assert r.status_code == 200


async def test_httpx_own_timeout_counts_as_failure(upstream: Upstream) -> None:
    """"the timeouts httpx raises count as failures through the classifier"."""
    transport = AsyncCircuitBreakerTransport(default=CircuitBreakerConfig(failure_threshold=1))
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, read=0.1)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{upstream.url}/delay/2")
    breaker = transport.registry[f"127.0.0.1:{upstream.port}"]
    assert breaker.get_metrics().failed_requests == 1 and breaker.is_open()


@pytest.fixture
def sse_server() -> Iterator[str]:
    """A loopback server whose /stream sends 3 lines with 0.4 s pauses between them."""
    import http.server
    import socketserver

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(3):
                if i:
                    time.sleep(0.4)
                data = f"data: {i}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/stream"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_body_that_pauses_longer_than_timeout_is_never_cut(sse_server: str) -> None:
    """"a body that streams for minutes, with pauses longer than timeout ... is never cut
    and never slow"."""
    transport = AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(timeout=0.2, slow_call_duration=0.2, window_size=1)
    )
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", sse_server) as response,
    ):
        lines = [line async for line in response.aiter_lines() if line]
    assert lines == ["data: 0", "data: 1", "data: 2"]
    m = next(iter(transport.registry.values())).get_metrics()
    assert (m.successful_requests, m.failed_requests) == (1, 0)
    assert m.slow_requests == 0
    assert m.state is CircuitState.CLOSED


def test_sync_body_that_pauses_longer_than_timeout_is_never_cut(sse_server: str) -> None:
    """"The sync transport must not shorten the per-read timeouts of the body"."""
    transport = CircuitBreakerTransport(
        default=CircuitBreakerConfig(timeout=0.2, slow_call_duration=0.2, window_size=1)
    )
    with (
        httpx.Client(transport=transport, timeout=5.0) as client,
        client.stream("GET", sse_server) as response,
    ):
        lines = [line for line in response.iter_lines() if line]
    assert lines == ["data: 0", "data: 1", "data: 2"]
    m = next(iter(transport.registry.values())).get_metrics()
    assert (m.successful_requests, m.failed_requests, m.slow_requests) == (1, 0, 0)


async def test_pool_wait_is_outside_the_deadline(upstream: Upstream) -> None:
    """"Time a request spends waiting for a connection from the client's own pool is not
    the host's fault: it is outside the deadline". The client holds its only connection
    (a response left unread) for longer than `timeout`; the request queued behind it is
    answered at once when it gets the connection, and is a success."""
    transport = AsyncCircuitBreakerTransport(
        httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1)),
        default=CircuitBreakerConfig(timeout=0.5, failure_threshold=1),
    )
    results: list[int] = []
    async with httpx.AsyncClient(transport=transport) as client:
        holder = await client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)

        async def queued() -> None:
            results.append((await client.get(f"{upstream.url}/ok")).status_code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(queued)
            await anyio.sleep(1.0)  # the queued request waits twice `timeout` in the pool
            assert results == []
            await holder.aclose()
    assert results == [200]
    m = transport.registry[f"127.0.0.1:{upstream.port}"].get_metrics()
    assert (m.successful_requests, m.failed_requests) == (2, 0)


def test_sync_pool_wait_is_outside_the_deadline(upstream: Upstream) -> None:
    """The same for the sync transport, with a thread waiting for the connection."""
    transport = CircuitBreakerTransport(
        httpx.HTTPTransport(limits=httpx.Limits(max_connections=1)),
        default=CircuitBreakerConfig(timeout=0.5, failure_threshold=1),
    )
    results: list[object] = []
    with httpx.Client(transport=transport) as client:
        holder = client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)

        def queued() -> None:
            try:
                results.append(client.get(f"{upstream.url}/ok").status_code)
            except Exception as exc:  # noqa: BLE001 (the failure being tested)
                results.append(exc)

        thread = threading.Thread(target=queued)
        thread.start()
        time.sleep(1.0)
        assert results == []
        holder.close()
        thread.join(10)
    assert results == [200]
    m = transport.registry[f"127.0.0.1:{upstream.port}"].get_metrics()
    assert (m.successful_requests, m.failed_requests) == (2, 0)


def test_pool_timeout_is_ignored_by_the_default_classifier() -> None:
    """"httpx.PoolTimeout is ignored by the default classifier (neither success nor
    failure)"."""
    assert default_classifier(httpx.Request("GET", URL), None, httpx.PoolTimeout("x")) is None


async def test_saturated_local_pool_never_opens_a_healthy_host(upstream: Upstream) -> None:
    """"A saturated local pool never opens a healthy host's breaker"."""
    upstream.mode = "hold"
    transport = AsyncCircuitBreakerTransport(
        httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1)),
        default=CircuitBreakerConfig(failure_threshold=1),
    )
    errors: list[type[BaseException]] = []
    async with httpx.AsyncClient(
        transport=transport, timeout=httpx.Timeout(5.0, pool=0.1)
    ) as client:

        async def get() -> None:
            try:
                await client.get(f"{upstream.url}/hold")
            except httpx.PoolTimeout as exc:
                errors.append(type(exc))

        async with anyio.create_task_group() as tg:
            tg.start_soon(get)
            await eventually(lambda: upstream.holding >= 1)
            tg.start_soon(get)
            await eventually(lambda: bool(errors))
            upstream.release()
    assert errors == [httpx.PoolTimeout]
    breaker = transport.registry[f"127.0.0.1:{upstream.port}"]
    assert breaker.is_closed()
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests, m.ignored_requests) == (1, 0, 1)


# == 0.2: Outcomes the transports must judge right ====================================


# Under trio, breaking out of `aiter_bytes()` / `aiter_lines()` leaves httpx's own async
# generators (Response.aiter_*, BoundAsyncStream.__aiter__) to the garbage collector, and
# trio reports them: plain httpx does the same without any breaker (checked), so it is let by.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_leaving_a_stream_early_is_judged_as_read(upstream: Upstream, clock: FakeClock) -> None:
    """"A caller that stops reading a body early ... is not an error: the outcome is
    judged on the response as if it had been read"; "A half-open probe read this way
    closes or reopens the breaker like any other"."""
    transport = async_transport(clock, reset_timeout=5.0, half_open_max_requests=1)
    breaker = transport.breaker_for_url(upstream.url)
    breaker.transition_to(CircuitState.OPEN, cause="test")
    clock.advance(5.0)
    upstream.mode = "cut"  # a body that would fail if read to the end
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", f"{upstream.url}/anything") as response,
    ):
        async for _ in response.aiter_bytes():
            break  # leave early: no error
    assert breaker.is_closed()
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests) == (1, 0)


# Under trio, breaking out of `aiter_bytes()` / `aiter_lines()` leaves httpx's own async
# generators (Response.aiter_*, BoundAsyncStream.__aiter__) to the garbage collector, and
# trio reports them: plain httpx does the same without any breaker (checked), so it is let by.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_early_break_out_of_iter_lines_on_failure_status_reopens(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """Judged "as if it had been read": a 503 probe left early still reopens."""
    mock.get(URL).respond(503, text="line\n" * 100)
    transport = async_transport(clock, reset_timeout=5.0)
    breaker = transport.breaker_for_url(URL)
    breaker.transition_to(CircuitState.OPEN, cause="test")
    clock.advance(5.0)
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", URL) as response,
    ):
        async for _ in response.aiter_lines():
            break
    assert breaker.is_open()


def test_sync_close_early_is_not_an_error(upstream: Upstream, clock: FakeClock) -> None:
    """The sync twin: closing the response early is not an error."""
    transport = sync_transport(clock)
    upstream.mode = "cut"
    with (
        httpx.Client(transport=transport) as client,
        client.stream("GET", f"{upstream.url}/x") as response,
    ):
        for _ in response.iter_bytes():
            break
    m = transport.registry[f"127.0.0.1:{upstream.port}"].get_metrics()
    assert (m.successful_requests, m.failed_requests) == (1, 0)


@pytest.mark.parametrize(
    "extensions",
    [
        {"caching": {"from_cache": True}},
        {"hishel_from_cache": True},
        {"from_cache": True},
    ],
    ids=["hishel2", "hishel1", "hishel0"],
)
async def test_cache_hits_are_ignored(extensions: dict[str, Any], clock: FakeClock) -> None:
    """"A response that a caching layer below the breaker served from its cache proves
    nothing about the host ... The default classifier ignores it"."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, extensions=extensions)

    transport = async_transport(clock, inner=httpx.MockTransport(handler))
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            assert (await client.get(URL)).status_code == 503
    m = transport.registry["api.example.com"].get_metrics()
    assert (m.failed_requests, m.ignored_requests, m.state) == (0, 3, CircuitState.CLOSED)
    response = httpx.Response(503, extensions=extensions)
    assert default_classifier(httpx.Request("GET", URL), response, None) is None


async def test_closing_the_client_while_a_body_is_open_is_not_a_failure(
    upstream: Upstream, clock: FakeClock
) -> None:
    """"Errors caused by closing the transport or its client while a body is open are
    ignored, not host failures"."""
    upstream.mode = "hold"
    transport = async_transport(clock)
    client = httpx.AsyncClient(transport=transport)
    upstream.release()
    response = await client.send(client.build_request("GET", f"{upstream.url}/x"), stream=True)
    await client.aclose()
    with contextlib.suppress(httpx.HTTPError):  # whatever httpx says of a closed client
        await response.aread()
    await response.aclose()
    breaker = transport.registry[f"127.0.0.1:{upstream.port}"]
    assert breaker.get_metrics().failed_requests == 0
    assert breaker.is_closed()


async def test_outcome_at_headers_records_on_headers(upstream: Upstream, clock: FakeClock) -> None:
    """"outcome_at="headers" records it when the headers arrive (the status decides; a
    later body error is not counted)"."""
    transport = async_transport(
        clock, outcome_at="headers", reset_timeout=5.0, half_open_max_requests=1
    )
    breaker = transport.breaker_for_url(upstream.url)
    breaker.transition_to(CircuitState.OPEN, cause="test")
    clock.advance(5.0)
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", f"{upstream.url}/cut") as response,
    ):
        assert breaker.is_closed()  # the probe's 200 closed it at the headers
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests) == (1, 0)
    assert breaker.is_closed()


async def test_outcome_at_close_counts_body_errors(upstream: Upstream, clock: FakeClock) -> None:
    """The default, outcome_at="close", counts an error while the body streams."""
    transport = async_transport(clock)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{upstream.url}/cut")
    assert transport.registry[f"127.0.0.1:{upstream.port}"].get_metrics().failed_requests == 1


async def test_unread_response_returns_its_probe_permit_when_collected(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """"a response that is never read or closed (returned when it is garbage-collected)":
    the probe slot comes back."""
    mock.get(URL).respond(200, content=b"x" * 10)
    transport = async_transport(clock, reset_timeout=5.0, half_open_max_requests=1)
    breaker = transport.breaker_for_url(URL)
    breaker.transition_to(CircuitState.OPEN, cause="test")
    clock.advance(5.0)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.send(client.build_request("GET", URL), stream=True)
        with pytest.raises(CircuitOpenError):
            await client.get(URL)  # the only probe slot is held
        ref = weakref.ref(response)
        del response
        gc.collect()
        assert ref() is None
        assert breaker.state is CircuitState.HALF_OPEN  # never sticks
        r = await client.get(URL)  # the slot came back
    assert r.status_code == 200
    assert breaker.is_closed()


async def test_cancelled_request_through_transport_returns_probe(
    upstream: Upstream, clock: FakeClock
) -> None:
    """Cancellation of a request in flight returns the probe permit; not a failure."""
    upstream.mode = "hold"
    transport = async_transport(clock, reset_timeout=5.0, half_open_max_requests=1)
    breaker = transport.breaker_for_url(upstream.url)
    breaker.transition_to(CircuitState.OPEN, cause="test")
    clock.advance(5.0)
    async with httpx.AsyncClient(transport=transport) as client:
        with anyio.move_on_after(0.2):
            await client.get(f"{upstream.url}/x")
        upstream.release()
        assert breaker.state is CircuitState.HALF_OPEN
        assert (await client.get(f"{upstream.url}/x")).status_code == 200
    m = breaker.get_metrics()
    assert (m.failed_requests, m.successful_requests, m.ignored_requests) == (0, 1, 1)
    assert breaker.is_closed()


# == 0.2: Transport lifecycle =========================================================


async def test_aenter_aexit_are_forwarded_so_respx_asserts_all_called() -> None:
    """"The wrapper forwards __enter__/__exit__ and __aenter__/__aexit__ ... so a wrapped
    transport that checks something on exit (respx's assert_all_called) still does"."""
    router = respx.MockRouter(assert_all_called=True)
    router.get(URL).respond(200)
    router.get("https://api.example.com/never").respond(200)
    inner = httpx.MockTransport(router.async_handler)
    entered: list[str] = []

    class Checking(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return await inner.handle_async_request(request)

        async def __aenter__(self) -> Checking:  # noqa: PYI034 (a test double)
            entered.append("enter")
            return self

        async def __aexit__(self, *args: object) -> None:
            entered.append("exit")
            router.assert_all_called()

    with pytest.raises(AssertionError):
        async with httpx.AsyncClient(transport=AsyncCircuitBreakerTransport(Checking())) as c:
            await c.get(URL)
    assert entered == ["enter", "exit"]


def test_sync_enter_exit_are_forwarded() -> None:
    """The sync twin forwards __enter__ / __exit__."""
    calls: list[str] = []

    class Inner(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200)

        def __enter__(self) -> Inner:  # noqa: PYI034 (a test double)
            calls.append("enter")
            return self

        def __exit__(self, *args: object) -> None:
            calls.append("exit")

    with httpx.Client(transport=CircuitBreakerTransport(Inner())) as client:
        client.get(URL)
    assert calls == ["enter", "exit"]


def test_respx_mock_transport_style_wrapped() -> None:
    """respx's router used as a wrapped transport (respx.MockTransport in older respx,
    httpx.MockTransport(router.handler) now) checks assert_all_called on exit."""
    with pytest.raises(AssertionError), respx.mock(assert_all_called=True) as router:
        router.get("https://never.example/").respond(200)
        with httpx.Client(transport=CircuitBreakerTransport()) as client:
            pass
    del client


# == 0.2: Bulkhead ====================================================================


async def test_bulkhead_refuses_before_io_and_is_not_a_failure(upstream: Upstream) -> None:
    """"at most max_concurrent requests in flight per breaker ... A request that finds it
    full waits up to max_wait seconds ... then raises BulkheadFullError, before any I/O";
    "A bulkhead rejection is not a failure of the host"; "counted"."""
    upstream.mode = "hold"
    transport = AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(max_concurrent=1, max_wait=0.0, failure_threshold=1)
    )
    async with httpx.AsyncClient(transport=transport) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.get, f"{upstream.url}/hold")
        await eventually(lambda: upstream.holding >= 1)
        before = upstream.request_count
        with pytest.raises(BulkheadFullError) as info:
            await client.get(f"{upstream.url}/other")
        assert upstream.request_count == before
        upstream.release()
    e = info.value
    assert isinstance(e, RequestRejected) and isinstance(e, httpx.TransportError)
    assert not isinstance(e, CircuitOpenError)
    assert e.key == f"127.0.0.1:{upstream.port}"
    assert e.request.url == f"{upstream.url}/other"
    breaker = transport.registry[e.key]
    m = breaker.get_metrics()
    assert breaker.is_closed()
    assert m.failed_requests == 0
    assert m.bulkhead_rejected_requests == 1
    assert m.rejected_requests == 0


async def test_bulkhead_waits_up_to_max_wait_for_a_slot(upstream: Upstream) -> None:
    """A request that finds the bulkhead full waits (up to max_wait) and then proceeds
    when a slot frees."""
    upstream.mode = "hold"
    transport = AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(max_concurrent=1, max_wait=10.0)
    )
    statuses: list[int] = []
    async with httpx.AsyncClient(transport=transport) as client:

        async def get() -> None:
            statuses.append((await client.get(f"{upstream.url}/hold")).status_code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(get)
            tg.start_soon(get)
            await eventually(lambda: upstream.holding >= 1)
            breaker = next(iter(transport.registry.values()))
            await eventually(lambda: breaker.get_metrics().bulkhead_waiting_requests == 1)
            assert upstream.holding == 1  # the second waits in the bulkhead, not upstream
            upstream.release()
    assert statuses == [200, 200]


def test_sync_bulkhead_refuses(upstream: Upstream) -> None:
    """The sync transport has the same bulkhead, across threads."""
    upstream.mode = "hold"
    transport = CircuitBreakerTransport(default=CircuitBreakerConfig(max_concurrent=1))
    client = httpx.Client(transport=transport)
    thread = threading.Thread(target=client.get, args=(f"{upstream.url}/hold",))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while upstream.holding < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(BulkheadFullError):
            client.get(f"{upstream.url}/hold")
    finally:
        upstream.release()
        thread.join(10)
        client.close()


async def test_bulkhead_wait_is_cancellable(upstream: Upstream) -> None:
    """"waits up to max_wait seconds for a slot (cancellable)"; a cancelled wait holds
    nothing."""
    upstream.mode = "hold"
    transport = AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(max_concurrent=1, max_wait=30.0)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get, f"{upstream.url}/hold")
            await eventually(lambda: upstream.holding >= 1)
            with anyio.move_on_after(0.1) as scope:
                await client.get(f"{upstream.url}/hold")
            assert scope.cancelled_caught
            upstream.release()
        breaker = next(iter(transport.registry.values()))
        m = breaker.get_metrics()
        assert (m.bulkhead_in_flight_requests, m.bulkhead_waiting_requests) == (0, 0)
        assert (await client.get(f"{upstream.url}/ok")).status_code == 200


def test_bulkhead_is_exported_to_dashboard_and_prometheus() -> None:
    """Refusals are "counted and exported"."""
    from prometheus_client import CollectorRegistry, generate_latest

    from httpx_breaker.monitoring import dashboard
    from httpx_breaker.prometheus import CircuitBreakerCollector

    breaker = CircuitBreaker("bulk-export", CircuitBreakerConfig(max_concurrent=1))
    assert breaker.bulkhead is not None and breaker.bulkhead.try_acquire()
    with pytest.raises(BulkheadFullError):
        breaker.call(lambda: None)
    breaker.bulkhead.release()
    row = dashboard([breaker])["breakers"][0]
    assert row["bulkhead"]["rejected_requests"] == 1
    registry = CollectorRegistry()
    registry.register(CircuitBreakerCollector([breaker]))
    text = generate_latest(registry).decode()
    assert 'circuit_breaker_bulkhead_rejected_requests_total{circuit_breaker="bulk-export"} 1.0' in text


# == 0.2: The seed's remaining metrics in every exporter ==============================


def test_throughput_and_availability_in_dashboard_prometheus_and_otel(clock: FakeClock) -> None:
    """throughput and availability "appear in to_dict(), the dashboard, Prometheus and
    OpenTelemetry (for Prometheus, time spent per state as a counter)"."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    from httpx_breaker.monitoring import dashboard
    from httpx_breaker.opentelemetry import register_metrics
    from httpx_breaker.prometheus import CircuitBreakerCollector

    b = CircuitBreaker("exported", cfg(reset_timeout=10.0), clock=clock)
    for _ in range(6):
        b.call(lambda: None)
        clock.advance(1.0)
    b.force_open()
    clock.advance(4.0)
    m = b.get_metrics()
    assert m.availability == pytest.approx(0.6)
    assert m.throughput > 0

    row = dashboard([b])["breakers"][0]
    assert row["metrics"]["availability"] == pytest.approx(0.6)
    assert row["metrics"]["throughput"] == pytest.approx(m.throughput)

    registry = CollectorRegistry()
    registry.register(CircuitBreakerCollector([b]))
    text = generate_latest(registry).decode()
    assert 'circuit_breaker_availability_ratio{circuit_breaker="exported"} 0.6' in text
    assert "circuit_breaker_throughput_requests_per_second" in text
    assert 'circuit_breaker_state_seconds_total{circuit_breaker="exported",state="open"} 4.0' in text
    assert 'circuit_breaker_state_seconds_total{circuit_breaker="exported",state="closed"} 6.0' in text

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    register_metrics([b], meter_provider=provider)
    data = reader.get_metrics_data()
    assert data is not None
    names = {
        metric.name: metric
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    assert "circuit_breaker.availability" in names
    assert "circuit_breaker.throughput" in names
    point = next(iter(names["circuit_breaker.availability"].data.data_points))
    assert point.value == pytest.approx(0.6)
    provider.shutdown()


# == 0.2: Shared state (store=) =======================================================


def test_store_with_an_unreachable_redis_url_starts_local_only(clock: FakeClock) -> None:
    """"an unreachable server is not bad input: the store starts in local-only mode and
    connects when it can"; "If Redis is down ... breakers work exactly as without a store
    ... no request fails or waits because of it"."""
    from httpx_breaker.redis import RedisStore

    store = RedisStore.from_url("redis://127.0.0.1:1/0", namespace="contract")
    try:
        transport = CircuitBreakerTransport(
            httpx.MockTransport(lambda request: httpx.Response(503)),
            default=cfg(reset_timeout=30.0),
            store=store,
        )
        with httpx.Client(transport=transport) as client:
            started = time.monotonic()
            assert client.get(URL).status_code == 503
            with pytest.raises(CircuitOpenError) as info:
                client.get(URL)
            assert time.monotonic() - started < 1.0  # never waited on Redis
        assert info.value.retry_after == pytest.approx(30.0, abs=1.0)
    finally:
        store.close()


async def test_async_transport_with_unreachable_store_works(mock: respx.MockRouter) -> None:
    """The same through the async transport, and through a registry's store=."""
    from httpx_breaker.redis import RedisStore

    mock.get(URL).respond(200)
    store = RedisStore.from_url("redis://127.0.0.1:1/0", namespace="contract-async")
    try:
        transport = AsyncCircuitBreakerTransport(registry=BreakerRegistry(store=store))
        async with httpx.AsyncClient(transport=transport) as client:
            with anyio.fail_after(2):
                assert (await client.get(URL)).status_code == 200
    finally:
        store.close()


@pytest.mark.parametrize("url", ["not a url", "http://127.0.0.1:6379/0", "redis://host:notaport/0", ""])
def test_store_malformed_url_fails_clearly(url: str) -> None:
    """"Bad input fails clearly when the store is built (a malformed URL ...)"."""
    from httpx_breaker.redis import RedisStore

    with pytest.raises(ValueError):
        RedisStore.from_url(url, namespace="x")


def test_store_empty_namespace_fails_clearly() -> None:
    """"... an empty namespace"."""
    from httpx_breaker.redis import RedisStore

    with pytest.raises(ValueError, match="namespace"):
        RedisStore.from_url("redis://127.0.0.1:1/0", namespace="")


def test_store_password_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    """"the store's own credentials (the password in redis://:pw@host) never appear in
    its logs, errors, repr or metrics"."""
    from httpx_breaker.monitoring import dashboard
    from httpx_breaker.redis import RedisStore

    with caplog.at_level(logging.DEBUG):
        store = RedisStore.from_url("redis://:s3cr3t-pw@127.0.0.1:1/0", namespace="pw")
        try:
            shown = repr(store) + str(store)
            shown += json.dumps(dashboard([], stores=[store]), default=str)
            shown += repr(store.health)
        finally:
            store.close()
    shown += caplog.text
    assert "s3cr3t-pw" not in shown


def test_store_rejects_registry_plus_store_on_transport() -> None:
    """registry= configures everything: store= beside it is refused like default=."""
    from httpx_breaker.redis import RedisStore

    store = RedisStore.from_url("redis://127.0.0.1:1/0", namespace="both")
    try:
        with pytest.raises(ValueError):
            AsyncCircuitBreakerTransport(registry=BreakerRegistry(), store=store)
    finally:
        store.close()


# == 0.2: httpx2 ======================================================================

try:
    import httpx2 as _httpx2
except ImportError:  # Python 3.10: httpx2 needs 3.11
    _httpx2 = None
needs_httpx2 = pytest.mark.skipif(_httpx2 is None, reason="httpx2 needs Python 3.11+")


@needs_httpx2
async def test_httpx2_refusal_is_caught_as_httpx_breaker_error() -> None:
    """"The errors they raise are httpx2 transport/timeout errors and are also caught by
    except httpx_breaker.CircuitOpenError"; "one registry may serve httpx and httpx2
    clients together"."""
    import httpx2 as h2

    from httpx_breaker.httpx2 import AsyncCircuitBreakerTransport as Async2
    from httpx_breaker.httpx2 import CircuitBreakerTransport as Sync2

    registry = BreakerRegistry(default=cfg())
    t1 = AsyncCircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(503)), registry=registry
    )
    t2 = Async2(h2.MockTransport(lambda r: h2.Response(200)), registry=registry)
    s2 = Sync2(h2.MockTransport(lambda r: h2.Response(200)), registry=registry)
    async with httpx.AsyncClient(transport=t1) as c1:
        await c1.get(URL)  # opens the shared breaker
    async with h2.AsyncClient(transport=t2) as c2:
        try:
            await c2.get(URL)
        except httpx_breaker.CircuitOpenError as e:
            assert isinstance(e, h2.TransportError)
            assert e.key == "api.example.com"
            assert e.retry_after == pytest.approx(30.0, abs=1.0)
            assert isinstance(e.request, h2.Request)
        else:
            raise AssertionError("httpx2 request passed an open breaker")
    with h2.Client(transport=s2) as c3:
        with pytest.raises(httpx_breaker.CircuitOpenError):
            c3.get(URL)
        with pytest.raises(h2.TransportError):
            c3.get(URL)
    assert len(registry) == 1


@needs_httpx2
async def test_httpx2_default_classifier_knows_httpx2_exceptions() -> None:
    """"its default classifier knows httpx2's exceptions"."""
    import httpx2 as h2

    from httpx_breaker.httpx2 import AsyncCircuitBreakerTransport as Async2
    from httpx_breaker.httpx2 import default_classifier as classify2

    def handler(request: Any) -> Any:
        raise h2.ConnectError("refused", request=request)

    transport = Async2(h2.MockTransport(handler), default=cfg())
    async with h2.AsyncClient(transport=transport) as client:
        with pytest.raises(h2.ConnectError):
            await client.get(URL)
        with pytest.raises(httpx_breaker.CircuitOpenError):
            await client.get(URL)
    req = h2.Request("GET", URL)
    assert classify2(req, None, h2.ReadTimeout("x")) is True
    assert classify2(req, None, h2.PoolTimeout("x")) is None
    assert classify2(req, None, h2.UnsupportedProtocol("x")) is None


@needs_httpx2
async def test_httpx2_timeout_is_caught_as_circuit_timeout_error() -> None:
    """httpx2's CircuitTimeoutError is an httpx2.TimeoutException and ours."""
    import httpx2 as h2

    from httpx_breaker.httpx2 import AsyncCircuitBreakerTransport as Async2

    async def slow(request: Any) -> Any:
        await anyio.sleep(5)
        return h2.Response(200)

    transport = Async2(h2.MockTransport(slow), default=CircuitBreakerConfig(timeout=0.1))
    async with h2.AsyncClient(transport=transport) as client:
        with anyio.fail_after(3):
            try:
                await client.get(URL)
            except httpx_breaker.CircuitTimeoutError as e:
                assert isinstance(e, h2.TimeoutException)
            else:
                raise AssertionError("no timeout")


@pytest.mark.parametrize("kind", ["valkey", "redis"])
def test_fleet_replicas_share_an_open_through_a_real_server(kind: str) -> None:
    """"Replicas that use the same store and namespace share each key's breaker state:
    when one replica's breaker opens, every other replica treats that key as OPEN, with
    the same remaining open period, within a bounded staleness"; "Redis and Valkey
    alike". Two replicas (two stores, two registries) on a real server.

    The fleet's open period runs on the server's clock, so a fake clock cannot end it
    (docs/choices.md): the half-open round and the closing are left to
    tests/test_redis_fleet.py, which ends the period on the server."""
    from httpx_breaker.redis import RedisStore

    from .redis_servers import running, wait_until

    policy = cfg(reset_timeout=30.0, failure_threshold=1)
    with running(kind) as server:
        stores = [RedisStore.from_url(server.url, namespace="contract-fleet") for _ in range(2)]
        try:
            wait_until(lambda: all(s.connected for s in stores), what="both stores connected")
            replicas = [BreakerRegistry(default=policy, store=s) for s in stores]
            a, b = (r.breaker_for("payments.internal") for r in replicas)
            with pytest.raises(RuntimeError):
                a.call(fail_sync)
            assert a.is_open()
            wait_until(lambda: b.state is CircuitState.OPEN, what="the other replica opens")
            with pytest.raises(CircuitOpenError) as info:
                b.call(lambda: None)
            # The same remaining period, give or take the staleness (bounded by the wait).
            assert info.value.retry_after is not None
            assert 20.0 < info.value.retry_after <= 30.0
            assert b.get_metrics().failed_requests == 0  # it learnt, it did not fail
            # "Nothing from a URL (host, userinfo, path, a custom key) appears in Redis
            # keys or messages unless the user asks for readable names".
            import redis as redis_client

            raw = redis_client.Redis.from_url(server.url)
            try:
                keys = raw.keys("*")
                assert keys
                dumped = b"".join(keys) + b"".join(
                    repr(raw.dump(k)).encode() for k in keys if raw.type(k) != b"none"
                )
            finally:
                raw.close()
            assert b"payments" not in dumped
        finally:
            for s in stores:
                s.close()


# == More of "A probe permit is never lost", through the transports ====================


async def test_probe_whose_body_fails_to_read_reopens(upstream: Upstream, clock: FakeClock) -> None:
    """"a body that fails to read" returns the permit (as a failure: it reopens)."""
    transport = async_transport(clock, reset_timeout=5.0, half_open_max_requests=1)
    breaker = transport.breaker_for_url(upstream.url)
    breaker.transition_to(CircuitState.OPEN, cause="test")
    clock.advance(5.0)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{upstream.url}/cut")
    assert breaker.is_open()


def test_sync_probe_that_cannot_connect_reopens(clock: FakeClock) -> None:
    """An exception on a probe (a refused connection) reopens; the breaker never sticks."""
    transport = sync_transport(clock, reset_timeout=5.0, half_open_max_requests=1)
    url = "http://127.0.0.1:1/"  # nothing listens on port 1
    breaker = transport.breaker_for_url(url)
    breaker.transition_to(CircuitState.OPEN, cause="test")
    clock.advance(5.0)
    with httpx.Client(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(url)
        assert breaker.is_open()
        with pytest.raises(CircuitOpenError):
            client.get(url)


def test_sync_unread_response_returns_its_probe_when_collected(
    upstream: Upstream, clock: FakeClock
) -> None:
    """The sync transport: a streamed response dropped unread returns its probe slot."""
    transport = sync_transport(clock, reset_timeout=5.0, half_open_max_requests=1)
    breaker = transport.breaker_for_url(upstream.url)
    breaker.transition_to(CircuitState.OPEN, cause="test")
    clock.advance(5.0)
    with httpx.Client(transport=transport) as client:
        response = client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        with pytest.raises(CircuitOpenError):
            client.get(f"{upstream.url}/ok")
        del response
        gc.collect()
        assert client.get(f"{upstream.url}/ok").status_code == 200
    assert breaker.is_closed()


async def test_dry_run_through_the_transport(mock: respx.MockRouter, clock: FakeClock) -> None:
    """dry_run in a transport: an open breaker lets requests through and counts them."""
    route = mock.get(URL).respond(503)
    transport = async_transport(clock, dry_run=True)
    events: list[Any] = []
    transport.registry.add_listener(events.append)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            r = await client.get(URL)
            assert r.status_code == 503
    assert route.call_count == 3
    breaker = transport.registry["api.example.com"]
    m = breaker.get_metrics()
    assert m.state is CircuitState.OPEN
    assert (m.failed_requests, m.rejected_requests) == (1, 2)
    assert [e.kind for e in events].count("rejected") == 2
    assert r.extensions["circuit_breaker"]["state"] is CircuitState.OPEN


def test_exclude_exceptions_through_the_transport(mock: respx.MockRouter, clock: FakeClock) -> None:
    """"exclude_exceptions=() (neither success nor failure)", in a transport too."""
    mock.get(URL).mock(side_effect=httpx.ReadTimeout)
    transport = async_transport(clock, exclude_exceptions=(httpx.ReadTimeout,))

    async def go() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                with pytest.raises(httpx.ReadTimeout):
                    await client.get(URL)

    anyio.run(go)
    m = transport.registry["api.example.com"].get_metrics()
    assert (m.failed_requests, m.ignored_requests, m.state) == (0, 3, CircuitState.CLOSED)


def test_decorator_config_and_classifier_positional() -> None:
    """The table's form, ``circuit_breaker(name=..., config=..., classifier=None)``, read as
    a Python signature: config (and classifier) may follow the name positionally, as in
    the seed's ``@circuit_breaker("external_api", config)``."""
    config = cfg(failure_threshold=2)

    @circuit_breaker("positional-config", config)
    def f() -> int:
        return 1

    assert f() == 1
    assert f.circuit_breaker().name == "positional-config"
    assert f.circuit_breaker().config is config

    @circuit_breaker("positional-classifier", config, lambda result, exc: result == 0)
    def g(x: int) -> int:
        return x

    g(0)
    g(0)
    assert g.circuit_breaker().is_open()

    @circuit_breaker("keyword-config", config=config)
    def h() -> int:
        return 2

    assert h.circuit_breaker().config is config


def test_bulkhead_slot_of_an_unread_response_returns_when_collected(upstream: Upstream) -> None:
    """A slot is held "until the body is closed, an error, cancellation, or garbage
    collection of an unread response"."""
    transport = CircuitBreakerTransport(default=CircuitBreakerConfig(max_concurrent=1))
    with httpx.Client(transport=transport) as client:
        response = client.send(client.build_request("GET", f"{upstream.url}/ok"), stream=True)
        with pytest.raises(BulkheadFullError):
            client.get(f"{upstream.url}/ok")
        del response
        gc.collect()
        assert client.get(f"{upstream.url}/ok").status_code == 200


# == The seed's own examples, as an outsider would lift them into tests ================


class TestSeedCircuitBreaker:
    """The seed's TestCircuitBreaker, with a FakeClock where it slept."""

    @pytest.fixture
    def test_breaker(self, clock: FakeClock) -> CircuitBreaker:
        config = CircuitBreakerConfig(failure_threshold=2, reset_timeout=1.0, half_open_max_requests=1)
        return CircuitBreaker("test", config, clock=clock)

    async def test_circuit_breaker_opens_on_failures(self, test_breaker: CircuitBreaker) -> None:
        async def failing_function() -> None:
            raise Exception("Test failure")  # noqa: TRY002 (the seed's own)

        for _ in range(3):
            with contextlib.suppress(Exception):  # the seed's own try/except/pass
                await test_breaker.call_async(failing_function)
        assert test_breaker.is_open()
        m = test_breaker.get_metrics()
        assert (m.failed_requests, m.rejected_requests) == (2, 1)

    async def test_circuit_breaker_half_open_recovery(
        self, test_breaker: CircuitBreaker, clock: FakeClock
    ) -> None:
        with pytest.raises(RuntimeError):
            await test_breaker.call_async(boom)
        with pytest.raises(RuntimeError):
            await test_breaker.call_async(boom)
        clock.advance(1.1)

        async def success_function() -> str:
            return "success"

        result = await test_breaker.call_async(success_function)
        assert result == "success"
        assert test_breaker.is_closed()


def test_seed_status_reads(clock: FakeClock) -> None:
    """The seed reads ``get_state().value`` and ``get_metrics().__dict__``, builds configs
    with ``exclude_exceptions=[...]`` and prints ``success_rate:.2%``."""
    breaker = CircuitBreaker(
        name="service_user",
        config=CircuitBreakerConfig(
            failure_threshold=3,
            failure_rate_threshold=0.5,
            timeout=10.0,
            reset_timeout=60.0,
            exclude_exceptions=[httpx.HTTPStatusError],
        ),
        clock=clock,
    )
    request = httpx.Request("GET", URL)

    def not_found() -> None:
        raise httpx.HTTPStatusError(
            "404", request=request, response=httpx.Response(404, request=request)
        )

    for _ in range(5):
        with pytest.raises(httpx.HTTPStatusError):
            breaker.call(not_found)
    assert breaker.get_state().value == "closed"
    status = {"state": breaker.get_state().value, "metrics": breaker.get_metrics().__dict__}
    assert status["metrics"]["ignored_requests"] == 5
    assert status["metrics"]["total_requests"] == 5
    assert f"{breaker.get_metrics().success_rate:.2%}" == "100.00%"


def test_seed_dashboard_shape(clock: FakeClock) -> None:
    """The seed's generate_dashboard_data shape: summary counts, and one row per breaker
    (name, state, metrics, health_score) sorted by health score, lowest first."""
    from httpx_breaker.monitoring import alerts, dashboard

    healthy = CircuitBreaker("seed-healthy", cfg(), clock=clock)
    failing = CircuitBreaker("seed-failing", cfg(), clock=clock)
    healthy.call(lambda: None)
    with pytest.raises(RuntimeError):
        failing.call(fail_sync)
    data = dashboard([healthy, failing])
    assert data["summary"]["total_breakers"] == 2
    assert data["summary"]["open_breakers"] == 1
    assert data["summary"]["closed_breakers"] == 1
    assert data["summary"]["half_open_breakers"] == 0
    names = [row["name"] for row in data["breakers"]]
    assert names == ["seed-failing", "seed-healthy"]
    row = data["breakers"][1]
    for key in (
        "total_requests",
        "success_rate",
        "failure_rate",
        "average_response_time",
        "rejected_requests",
    ):
        assert key in row["metrics"], key
    assert row["health_score"] == pytest.approx(100.0)
    found = alerts([healthy, failing], failure_rate_threshold=0.3)
    # The seed's alerts are dicts; ours are `Alert` objects with `to_dict()`.
    assert [a.to_dict()["severity"] for a in found] == ["critical"]
    json.dumps([a.to_dict() for a in found])


# == More edges an outsider reaches for ===============================================


def test_custom_key_is_matched_by_an_exact_policy() -> None:
    """`key=` keys are matched by policies too: "A policy pattern matches an exact key"."""
    strict = CircuitBreakerConfig(failure_threshold=1)
    transport = CircuitBreakerTransport(
        key=lambda request: "svc:payments", policies={"svc:payments": strict}
    )
    assert transport.breaker_for_url(URL).config is strict
    assert transport.breaker_for_url(URL).name == "svc:payments"


async def test_retry_after_of_a_response_in_flight_lengthens_an_open_period(
    clock: FakeClock,
) -> None:
    """Retry-After counts "if the breaker is or becomes open": a failing response that
    was sent before the breaker opened, and arrives after, lengthens the open period."""
    arrived = anyio.Event()
    release = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slow":
            arrived.set()
            await release.wait()
            return httpx.Response(503, headers={"Retry-After": "300"})
        return httpx.Response(503)

    transport = async_transport(clock, inner=httpx.MockTransport(handler), reset_timeout=30.0)
    async with httpx.AsyncClient(transport=transport) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get, "https://api.example.com/slow")
            await arrived.wait()
            await client.get(URL)  # fails: the breaker opens, 30 s
            breaker = transport.registry["api.example.com"]
            assert breaker.is_open()
            assert breaker.retry_after == pytest.approx(30.0)
            release.set()
        assert breaker.retry_after == pytest.approx(300.0)
        with pytest.raises(CircuitOpenError) as info:
            await client.get(URL)
    assert info.value.retry_after == pytest.approx(300.0)


async def test_retry_after_on_a_failed_probe(mock: respx.MockRouter, clock: FakeClock) -> None:
    """A probe that fails with Retry-After reopens for at least that long."""
    mock.get(URL).respond(503, headers={"Retry-After": "90"})
    transport = async_transport(clock, reset_timeout=10.0)
    transport.breaker_for_url(URL).transition_to(CircuitState.OPEN, cause="test")
    clock.advance(10.0)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)  # the probe fails
        with pytest.raises(CircuitOpenError) as info:
            await client.get(URL)
    assert info.value.retry_after == pytest.approx(90.0)


def test_sync_transport_timeout_over_a_slow_mock_transport() -> None:
    """The sync twin over an httpx.MockTransport whose handler sleeps: CircuitTimeoutError
    once the late headers are in, a failure."""

    def slow(request: httpx.Request) -> httpx.Response:
        time.sleep(0.3)
        return httpx.Response(200)

    transport = CircuitBreakerTransport(
        httpx.MockTransport(slow), default=CircuitBreakerConfig(timeout=0.1, failure_threshold=1)
    )
    with httpx.Client(transport=transport) as client:
        with pytest.raises(CircuitTimeoutError) as info:
            client.get(URL)
        assert info.value.request.url == URL
        with pytest.raises(CircuitOpenError):
            client.get(URL)


async def test_httpx_own_shorter_timeout_stays_httpx_own(upstream: Upstream) -> None:
    """CircuitTimeoutError only "when the deadline is what stopped the request": httpx's
    own read timeout, shorter than the breaker's `timeout`, stays an httpx.ReadTimeout
    (a failure all the same)."""
    transport = AsyncCircuitBreakerTransport(default=CircuitBreakerConfig(timeout=5.0))
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10.0, read=0.1)) as c:
        with pytest.raises(httpx.ReadTimeout) as info:
            await c.get(f"{upstream.url}/delay/1")
    assert not isinstance(info.value, CircuitTimeoutError)
    assert transport.registry[f"127.0.0.1:{upstream.port}"].get_metrics().failed_requests == 1


def test_sync_httpx_own_shorter_timeout_stays_httpx_own(upstream: Upstream) -> None:
    """The same for the sync transport, which lowers httpx's timeouts to fit its deadline
    but must not take credit for one it did not lower."""
    transport = CircuitBreakerTransport(default=CircuitBreakerConfig(timeout=5.0))
    client = httpx.Client(transport=transport, timeout=httpx.Timeout(10.0, read=0.1))
    with client, pytest.raises(httpx.ReadTimeout) as info:
        client.get(f"{upstream.url}/delay/1")
    assert not isinstance(info.value, CircuitTimeoutError)
    assert transport.registry[f"127.0.0.1:{upstream.port}"].get_metrics().failed_requests == 1


@pytest.mark.filterwarnings("ignore:MockTransport is deprecated:DeprecationWarning")
async def test_respx_mock_transport_asserts_all_called_through_the_wrapper() -> None:
    """respx's own MockTransport (router=..., assert_all_called) checks its routes when
    the client leaves its ``async with`` / ``with`` block, through the wrapper."""
    from respx.transports import MockTransport

    router = respx.Router(assert_all_called=True)
    router.get(URL).respond(200)
    router.get("https://api.example.com/never-called").respond(200)
    wrapped = AsyncCircuitBreakerTransport(MockTransport(router=router))
    with pytest.raises(AssertionError):  # raised as the client leaves the block
        async with httpx.AsyncClient(transport=wrapped) as client:
            assert (await client.get(URL)).status_code == 200
    sync_router = respx.Router(assert_all_called=True)
    sync_router.get("https://api.example.com/never-called").respond(200)
    sync_wrapped = CircuitBreakerTransport(MockTransport(router=sync_router))
    with pytest.raises(AssertionError), httpx.Client(transport=sync_wrapped):
        pass
