"""Bad input: invalid config, misbehaving classifiers and key functions, hostile
Retry-After values, unusual URLs. Each gives a clear error, or is survived, and the
request's own result always reaches the caller."""

from __future__ import annotations

import logging
from typing import Any
from unittest import mock

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker._transport import parse_retry_after

from .conftest import FakeClock
from .libraries import Library

# -- config (briefly: tests/test_config.py covers it in depth) ----------------------

INVALID: list[tuple[str, Any]] = [
    ("failure_threshold", 0),
    ("failure_threshold", -1),
    ("failure_threshold", 1.5),
    ("failure_threshold", True),
    ("failure_threshold", "5"),
    ("failure_rate_threshold", 0.0),
    ("failure_rate_threshold", 1.01),
    ("failure_rate_threshold", float("nan")),
    ("timeout", 0),
    ("timeout", -1.0),
    ("timeout", float("inf")),
    ("timeout", "10"),
    ("reset_timeout", -0.1),
    ("reset_timeout", float("nan")),
    ("reset_timeout", None),
    ("half_open_max_requests", 0),
    ("half_open_max_requests", 2.0),
    ("window_size", 0),
    ("window_duration", 0.0),
    ("window_duration", float("inf")),
    ("exclude_exceptions", "ValueError"),
    ("exclude_exceptions", (ValueError, 3)),
    ("minimum_requests", 0),
    ("minimum_requests", 11),
    ("slow_call_duration", 0.0),
    ("slow_call_rate_threshold", 0.0),
    ("reset_timeout_multiplier", 0.5),
    ("reset_timeout_multiplier", float("inf")),
    ("max_reset_timeout", 1.0),  # below reset_timeout (60 s)
    ("jitter", -0.1),
    ("jitter", 1.5),
    ("respect_retry_after", 1),
    ("max_retry_after", -1.0),
    ("max_retry_after", float("inf")),
    ("dry_run", "yes"),
]


@pytest.mark.parametrize(("field", "value"), INVALID, ids=[f"{f}={v!r}" for f, v in INVALID])
def test_every_invalid_config_value_names_its_field(field: str, value: Any) -> None:
    """Each invalid value raises ValueError naming the field (and the value)."""
    with pytest.raises(ValueError, match=field) as info:
        CircuitBreakerConfig(**{field: value})
    assert repr(value) in str(info.value) or field == "exclude_exceptions"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"transport": object()},
        {"classifier": 42},
        {"key": "host"},
        {"default": {"failure_threshold": 1}},
        {"policies": {"*bad*": CircuitBreakerConfig()}},
        {"registry": BreakerRegistry(), "default": CircuitBreakerConfig()},
    ],
)
def test_invalid_transport_arguments_fail_at_construction(kwargs: dict[str, Any]) -> None:
    """A wrong transport argument fails when the transport is built, not on first use."""
    with pytest.raises((TypeError, ValueError)):
        CircuitBreakerTransport(**kwargs)


class DuckTransport:
    """A transport that derives from no httpx class, as litestar's TestClientTransport:
    httpx only calls its `handle_request` / `handle_async_request`."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(self.status, text="duck")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self.handle_request(request)

    def close(self) -> None:  # no __enter__: httpx's `with Client(...)` would fail too
        pass

    async def aclose(self) -> None:
        pass


def test_a_duck_typed_transport_is_wrapped_as_httpx_drives_it() -> None:
    """httpx takes any object with the method it calls; so do both wrappers, and the
    breaker works over it (found running litestar's suite: it refused them)."""
    config = CircuitBreakerConfig(failure_threshold=2)
    inner = DuckTransport(200)
    client = httpx.Client(transport=CircuitBreakerTransport(inner, default=config))  # type: ignore[arg-type]
    assert client.get("http://svc/").text == "duck"
    inner.status = 503
    for _ in range(2):
        assert client.get("http://svc/").status_code == 503
    with pytest.raises(CircuitOpenError):
        client.get("http://svc/")
    assert inner.calls == 3
    client.close()


@pytest.mark.anyio
async def test_a_duck_typed_transport_is_wrapped_as_httpx_drives_it_async() -> None:
    """The async twin of the test above."""
    config = CircuitBreakerConfig(failure_threshold=2)
    inner = DuckTransport(503)
    client = httpx.AsyncClient(transport=AsyncCircuitBreakerTransport(inner, default=config))  # type: ignore[arg-type]
    for _ in range(2):
        assert (await client.get("http://svc/")).text == "duck"
    with pytest.raises(CircuitOpenError):
        await client.get("http://svc/")
    assert inner.calls == 2
    await client.aclose()


class BaseTransport:
    """Another library's base class that happens to share httpx's name."""


class DuckOfAnotherFamily(BaseTransport, DuckTransport):
    """A duck-typed transport whose own base is called BaseTransport, but is not httpx's."""


def test_a_duck_typed_transport_whose_base_shares_httpx_s_name_is_wrapped() -> None:
    """Only httpx's (and httpx2's) own base classes mark a transport of the wrong kind."""
    inner = DuckOfAnotherFamily(200)
    assert AsyncCircuitBreakerTransport(inner).transport is inner  # type: ignore[arg-type]
    client = httpx.Client(transport=CircuitBreakerTransport(inner))  # type: ignore[arg-type]
    assert client.get("http://svc/").text == "duck"
    client.close()


def test_a_transport_of_the_wrong_kind_is_refused_though_it_has_the_method() -> None:
    """A sync transport under the async wrapper (and the reverse), or an object with no
    such method, is a TypeError when the wrapper is built, naming what was expected."""
    with pytest.raises(
        TypeError,
        match=r"httpx\.AsyncBaseTransport .*handle_async_request.*, an httpx\.BaseTransport: "
        r"httpx_breaker\.CircuitBreakerTransport takes it$",
    ):
        AsyncCircuitBreakerTransport(httpx.HTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"httpx\.BaseTransport .*handle_request.*, an httpx\.AsyncBaseTransport: "
        r"httpx_breaker\.AsyncCircuitBreakerTransport takes it$",
    ):
        CircuitBreakerTransport(httpx.AsyncHTTPTransport())  # type: ignore[arg-type]

    class SyncOnly(httpx.BaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise AssertionError("never called")

    with pytest.raises(TypeError):  # a BaseTransport is sync, whatever else it has
        AsyncCircuitBreakerTransport(SyncOnly())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CircuitBreakerTransport(httpx.Client())  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # the class, not an instance
        AsyncCircuitBreakerTransport(DuckTransport)  # type: ignore[arg-type]


@pytest.mark.parametrize("patched", ["AsyncBaseTransport", "BaseTransport"])
@pytest.mark.parametrize("family", ["httpx", "own"])
def test_wrapping_works_while_a_test_has_mocked_the_base_classes(
    lib: Library, patched: str, family: str
) -> None:
    """google-genai's tests patch `httpx.AsyncBaseTransport` with a mock and hand the
    mock to a client as its transport; httpx takes it. So do the wrappers, and a real
    transport, while what they compare with is a mock (httpx's, or the wrapper's own
    library's); the wrong kind is still refused."""
    with mock.patch.object(httpx if family == "httpx" else lib.http, patched) as mocked:
        assert lib.AsyncCircuitBreakerTransport(mocked)._transport is mocked
        assert lib.CircuitBreakerTransport(mocked)._transport is mocked
        lib.AsyncCircuitBreakerTransport(lib.AsyncHTTPTransport())
        lib.CircuitBreakerTransport(lib.HTTPTransport())
        with pytest.raises(TypeError, match=r"AsyncBaseTransport .*handle_async_request"):
            lib.AsyncCircuitBreakerTransport(lib.HTTPTransport())
        with pytest.raises(TypeError, match=r"\.BaseTransport .*handle_request"):
            lib.CircuitBreakerTransport(lib.AsyncHTTPTransport())


@pytest.mark.parametrize("cls", [AsyncCircuitBreakerTransport, CircuitBreakerTransport])
def test_a_transport_whose_constructor_refused_its_arguments_still_has_a_repr(
    cls: type[Any],
) -> None:
    """Tracebacks that show locals call repr() on the half-built object: it must not raise."""
    transport = cls.__new__(cls)
    with pytest.raises(TypeError):
        transport.__init__(object())
    assert repr(transport) == f"<{cls.__name__} around None>"


# -- classifiers that misbehave -------------------------------------------------------


class Inner(httpx.BaseTransport):
    """A fake upstream: answers `status`, or raises `error`; counts its calls."""

    def __init__(self, status: int = 200, error: Exception | None = None) -> None:
        self.status = status
        self.error = error
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status, json={"n": self.calls}, headers={"x-from": "inner"})


def _raising_classifier(*_: object) -> bool | None:
    raise RuntimeError("classifier bug")


BAD_VERDICTS: list[object] = ["yes", 1, 0, 0.0, [], object()]


@pytest.mark.parametrize("status", [200, 503])
def test_raising_classifier_on_a_response(status: int, caplog: pytest.LogCaptureFixture) -> None:
    """The response reaches the caller unchanged, the error is logged, the outcome ignored."""
    inner = Inner(status)
    transport = CircuitBreakerTransport(inner, classifier=_raising_classifier)
    with (
        caplog.at_level(logging.ERROR, logger="httpx_breaker"),
        httpx.Client(transport=transport) as client,
    ):
        response = client.get("http://svc/x")
    assert response.status_code == status
    assert response.json() == {"n": 1} and response.headers["x-from"] == "inner"
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and "classifier bug" in str(record.exc_info[1])
    metrics = transport.registry["svc"].get_metrics()
    assert (metrics.ignored_requests, metrics.failed_requests, metrics.successful_requests) == (
        1,
        0,
        0,
    )


def test_raising_classifier_on_an_exception(caplog: pytest.LogCaptureFixture) -> None:
    """The request's own exception (the very object) reaches the caller; the outcome is ignored."""
    error = httpx.ConnectError("refused")
    transport = CircuitBreakerTransport(Inner(error=error), classifier=_raising_classifier)
    with (
        caplog.at_level(logging.ERROR, logger="httpx_breaker"),
        httpx.Client(transport=transport) as client,
        pytest.raises(httpx.ConnectError) as info,
    ):
        client.get("http://svc/x")
    assert info.value is error
    assert any(r.exc_info and "classifier bug" in str(r.exc_info[1]) for r in caplog.records)
    assert transport.registry["svc"].get_metrics().ignored_requests == 1


@pytest.mark.parametrize("verdict", BAD_VERDICTS, ids=[type(v).__name__ for v in BAD_VERDICTS])
def test_classifier_returning_a_non_bool(verdict: object, caplog: pytest.LogCaptureFixture) -> None:
    """A verdict that is not True/False/None is logged and ignored; it never trips."""
    inner = Inner(503)
    transport = CircuitBreakerTransport(
        inner,
        default=CircuitBreakerConfig(failure_threshold=1),
        classifier=lambda *_: verdict,  # type: ignore[arg-type,return-value]
    )
    with (
        caplog.at_level(logging.ERROR, logger="httpx_breaker"),
        httpx.Client(transport=transport) as client,
    ):
        for _ in range(3):
            assert client.get("http://svc/x").status_code == 503
    breaker = transport.registry["svc"]
    assert breaker.state is CircuitState.CLOSED
    assert breaker.get_metrics().ignored_requests == 3
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 3


@pytest.mark.anyio
async def test_raising_classifier_async(caplog: pytest.LogCaptureFixture) -> None:
    """The async transport hands the response through a raising classifier too."""
    transport = AsyncCircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(502, text="upstream says")),
        classifier=_raising_classifier,
    )
    with caplog.at_level(logging.ERROR, logger="httpx_breaker"):
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get("http://svc/x")
    assert (response.status_code, response.text) == (502, "upstream says")
    assert transport.registry["svc"].get_metrics().ignored_requests == 1
    assert any(r.exc_info for r in caplog.records)


# -- key functions that misbehave ------------------------------------------------------


def test_raising_key_function_fails_before_any_io() -> None:
    """The key function's own error reaches the caller; the upstream is never called."""
    inner = Inner()

    def key(request: httpx.Request) -> str:
        raise LookupError("no tenant header")

    transport = CircuitBreakerTransport(inner, key=key)
    with httpx.Client(transport=transport) as client, pytest.raises(LookupError, match="tenant"):
        client.get("http://svc/x")
    assert inner.calls == 0
    assert len(transport.registry) == 0


@pytest.mark.parametrize("bad", [None, 42, b"svc", ("svc",)], ids=repr)
def test_key_function_returning_a_non_string(bad: object) -> None:
    """A key that is not a str is a TypeError naming the key function, before any I/O."""
    inner = Inner()
    transport = CircuitBreakerTransport(inner, key=lambda r: bad)  # type: ignore[arg-type,return-value]
    with (
        httpx.Client(transport=transport) as client,
        pytest.raises(TypeError, match="key function must return a str"),
    ):
        client.get("http://svc/x")
    assert inner.calls == 0
    assert len(transport.registry) == 0


@pytest.mark.anyio
async def test_key_function_errors_async() -> None:
    """The async transport checks the key before any I/O too."""
    calls = []
    transport = AsyncCircuitBreakerTransport(
        httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200)),  # type: ignore[func-returns-value]
        key=lambda r: 7,  # type: ignore[arg-type,return-value]
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(TypeError, match="key function"):
            await client.get("http://svc/x")
    assert calls == []


# -- Retry-After ------------------------------------------------------------------------

MAX_RETRY_AFTER = 30.0
RESET = 1.0
RETRY_AFTER_CASES: list[tuple[str, float]] = [
    # (header value, expected open period)
    ("7", 7.0),
    (" 7 ", 7.0),
    ("120", MAX_RETRY_AFTER),
    ("0", RESET),
    ("-5", RESET),
    ("-0", RESET),
    ("1.5", RESET),
    ("1e3", RESET),
    ("0x10", RESET),
    ("inf", RESET),
    ("nan", RESET),
    ("soon", RESET),
    ("", RESET),
    ("7, 8", RESET),
    ("\u0661\u0662", RESET),  # Arabic-Indic digits: not delta-seconds
    ("1" + "0" * 400, MAX_RETRY_AFTER),  # 10**400
    ("9" * 5000, MAX_RETRY_AFTER),
    ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
    ("Thu, 01 Jan 1970 00:00:00 GMT", RESET),
    ("Sun, 06 Nov 1994 08:49:37 GMT", RESET),
    ("Mon, 32 Foo 2020 99:99:99 GMT", RESET),
    ("Fri, 31 Dec 99999 23:59:59 GMT", RESET),
    ("Wed, 21 Oct 2015 07:28:00 +9999", RESET),
]


@pytest.mark.parametrize(
    ("value", "period"), RETRY_AFTER_CASES, ids=[v[:20] for v, _ in RETRY_AFTER_CASES]
)
def test_hostile_retry_after_values(value: str, period: float, clock: FakeClock) -> None:
    """Malformed, negative, huge, past and far-future Retry-After values are ignored or
    capped: never an exception, never an open period past max_retry_after."""
    inner = httpx.MockTransport(
        lambda r: httpx.Response(503, headers=[(b"Retry-After", value.encode())])
    )
    transport = CircuitBreakerTransport(
        inner,
        registry=BreakerRegistry(
            default=CircuitBreakerConfig(
                failure_threshold=1, reset_timeout=RESET, max_retry_after=MAX_RETRY_AFTER
            ),
            clock=clock,
        ),
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("http://svc/x").status_code == 503
        with pytest.raises(CircuitOpenError) as info:
            client.get("http://svc/x")
        assert info.value.retry_after == pytest.approx(period)
        clock.advance(period)
        assert client.get("http://svc/x").status_code == 503  # the probe passes, then fails


@settings(max_examples=300, deadline=None)
@given(
    st.text()
    | st.from_regex(r"\A-?[0-9]{1,500}\Z")
    | st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT"))
)
def test_parse_retry_after_never_raises(value: str) -> None:
    """Any header text parses to None or a non-negative, non-NaN number of seconds."""
    seconds = parse_retry_after(value)
    assert seconds is None or seconds >= 0.0


def test_retry_after_never_opens_a_breaker_by_itself(clock: FakeClock) -> None:
    """A Retry-After on a success, or on a failure below the threshold, opens nothing."""
    statuses = iter([200, 503, 200])
    inner = httpx.MockTransport(
        lambda r: httpx.Response(next(statuses), headers={"Retry-After": "999999"})
    )
    transport = CircuitBreakerTransport(
        inner,
        registry=BreakerRegistry(default=CircuitBreakerConfig(failure_threshold=2), clock=clock),
    )
    with httpx.Client(transport=transport) as client:
        assert [client.get("http://svc/").status_code for _ in range(3)] == [200, 503, 200]
    assert transport.registry["svc"].state is CircuitState.CLOSED


# -- unusual URLs -----------------------------------------------------------------------

URLS = [
    ("https://alice:s3cr3t@api.example.com/v1/x?token=q", "api.example.com"),
    ("http://alice:s3cr3t@api.example.com:8080/", "api.example.com:8080"),
    ("http://alice@API.Example.COM/", "api.example.com"),
    ("https://api.example.com:443/", "api.example.com"),
    ("http://[::1]:8080/x", "[::1]:8080"),
    ("https://[2001:db8::1]/x", "[2001:db8::1]"),
    ("http://[::ffff:7f00:1]/", "[::ffff:127.0.0.1]"),  # one spelling, on every Python
    ("http://[::ffff:127.0.0.1]/", "[::ffff:127.0.0.1]"),
    ("https://B\u00fccher.example/x", "xn--bcher-kva.example"),
    ("https://xn--bcher-kva.example/x", "xn--bcher-kva.example"),
    ("https://api.b\u00fccher.example/x", "api.xn--bcher-kva.example"),
    ("http://127.0.0.1:1/", "127.0.0.1:1"),
]


@pytest.mark.parametrize(("url", "key"), URLS, ids=[u for u, _ in URLS])
def test_unusual_urls_map_to_clean_keys(url: str, key: str) -> None:
    """Credentials, paths and queries never reach the key; IPv6 is bracketed; an IDNA host
    has one key whichever spelling the caller used."""
    seen: list[httpx.Request] = []
    inner = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200))  # type: ignore[func-returns-value]
    transport = CircuitBreakerTransport(inner)
    with httpx.Client(transport=transport) as client:
        response = client.get(url)
    assert list(transport.registry) == [key]
    assert response.extensions["circuit_breaker"]["key"] == key
    assert len(seen) == 1 and seen[0].url == httpx.URL(url)  # the request itself is untouched


@pytest.mark.parametrize("pattern", ["b\u00fccher.example", "xn--bcher-kva.example", "*.example"])
@pytest.mark.parametrize(
    "url", ["https://b\u00fccher.example/x", "https://xn--bcher-kva.example/x"]
)
def test_idna_policy_matches_either_spelling(pattern: str, url: str) -> None:
    """A policy written in Unicode or in punycode applies whichever spelling the caller used."""
    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(503)),
        policies={pattern: CircuitBreakerConfig(failure_threshold=1)},
    )
    with httpx.Client(transport=transport) as client:
        assert client.get(url).status_code == 503
        with pytest.raises(CircuitOpenError):
            client.get(url)
