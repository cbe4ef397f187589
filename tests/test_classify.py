"""Classifiers: the default rules, make_classifier, and classifiers that misbehave."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BulkheadFullError,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker.classifiers import (
    DEFAULT_FAILURE_STATUSES,
    default_classifier,
    from_cache,
)

from .libraries import Library, require_httpx2

pytestmark = pytest.mark.anyio

REQUEST = httpx.Request("GET", "https://api.example.com/")

# The default rules and make_classifier are tested for each library (`lib`): httpx's in
# httpx_breaker.classifiers, httpx2's in httpx_breaker.httpx2.


def request_for(lib: Library) -> Any:
    return lib.Request("GET", "https://api.example.com/")


def response(lib: Library, status: int, **extensions: object) -> Any:
    return lib.Response(status, request=request_for(lib), extensions=extensions)


def judge(lib: Library, response: object = None, exc: BaseException | None = None) -> bool | None:
    """The default classifier's verdict, checked against make_classifier()'s."""
    request = request_for(lib)
    verdict: bool | None = lib.default_classifier(request, response, exc)
    assert lib.make_classifier()(request, response, exc) is verdict
    return verdict


def error(name: str, *args: object) -> Callable[[Library], BaseException]:
    """An exception of the library's (or of the breaker's for that library) by name."""
    return lambda lib: getattr(lib, name)(*args)


# -- the default rules --------------------------------------------------------------


@pytest.mark.parametrize(
    "make_error",
    [
        pytest.param(error("ConnectError", "refused"), id="ConnectError"),
        pytest.param(error("ConnectTimeout", "slow connect"), id="ConnectTimeout"),
        pytest.param(error("ReadTimeout", "slow read"), id="ReadTimeout"),
        pytest.param(error("ReadError", "reset"), id="ReadError"),
        pytest.param(error("RemoteProtocolError", "cut"), id="RemoteProtocolError"),
        pytest.param(error("ProxyError", "proxy"), id="ProxyError"),
        pytest.param(
            error("CircuitTimeoutError", "api.example.com", 1.0), id="CircuitTimeoutError"
        ),
    ],
)
def test_default_transport_errors_and_timeouts_fail(
    lib: Library, make_error: Callable[[Library], BaseException]
) -> None:
    """Transport errors and timeouts are failures."""
    assert judge(lib, None, make_error(lib)) is True


@pytest.mark.parametrize(
    "make_error",
    [
        pytest.param(error("UnsupportedProtocol", "ftp://"), id="UnsupportedProtocol"),
        pytest.param(error("LocalProtocolError", "bad header"), id="LocalProtocolError"),
        pytest.param(
            error("CircuitOpenError", "inner.example.com", CircuitState.OPEN, 3.0),
            id="CircuitOpenError",
        ),
        pytest.param(
            lambda lib: CircuitOpenError("inner.example.com", CircuitState.OPEN, 3.0),
            id="httpx_breaker.CircuitOpenError",
        ),
        pytest.param(
            lambda lib: BulkheadFullError("inner.example.com", 4), id="BulkheadFullError"
        ),
        pytest.param(error("PoolTimeout", "waited for the client's own pool"), id="PoolTimeout"),
        pytest.param(lambda lib: ValueError("not the host's fault"), id="ValueError"),
    ],
)
def test_default_caller_side_errors_are_ignored(
    lib: Library, make_error: Callable[[Library], BaseException]
) -> None:
    """Caller-side errors, a nested breaker's CircuitOpenError (of either library), the
    client's own pool timing out and errors of no HTTP library are ignored."""
    assert judge(lib, None, make_error(lib)) is None


def test_errors_of_the_other_library_are_not_judged() -> None:
    """Each library's default rules know its own errors: the other's are ignored."""
    require_httpx2()
    import httpx2

    from httpx_breaker import httpx2 as breaker2

    assert default_classifier(REQUEST, None, httpx2.ConnectError("refused")) is None
    request2 = httpx2.Request("GET", "https://api.example.com/")
    assert breaker2.default_classifier(request2, None, httpx.ConnectError("refused")) is None
    assert breaker2.default_classifier(request2, None, httpx2.ConnectError("refused")) is True


@pytest.mark.parametrize(
    "extensions",
    [
        {"caching": {"from_cache": True, "revalidated": False, "stored": False}},  # hishel 2
        {"hishel_from_cache": True},  # hishel 1
        {"from_cache": True},  # hishel 0.x
    ],
)
@pytest.mark.parametrize("status", [200, 503])
def test_default_cache_hits_are_ignored(
    lib: Library, extensions: dict[str, object], status: int
) -> None:
    """A response a cache below the breaker served proves nothing about the host."""
    hit = response(lib, status, **extensions)
    assert from_cache(hit)
    assert judge(lib, hit) is None
    no_cache_rule = lib.make_classifier(ignore_cache_hits=False)
    assert no_cache_rule(request_for(lib), hit, None) is (status == 503)


@pytest.mark.parametrize(
    "extensions",
    [
        {},
        {"caching": {"from_cache": False, "revalidated": False, "stored": True}},
        {"hishel_from_cache": False},
        {"caching": "not a mapping"},
        {"http_version": b"HTTP/1.1"},
    ],
)
def test_responses_from_the_network_are_judged(lib: Library, extensions: dict[str, object]) -> None:
    """A response that did not come from a cache is judged by its status."""
    fresh = response(lib, 503, **extensions)
    assert not from_cache(fresh)
    assert judge(lib, fresh) is True


@pytest.mark.parametrize("status", sorted(DEFAULT_FAILURE_STATUSES))
def test_default_failure_statuses(lib: Library, status: int) -> None:
    """429, 500, 502, 503 and 504 are failures."""
    assert {429, 500, 502, 503, 504} == DEFAULT_FAILURE_STATUSES
    assert judge(lib, response(lib, status)) is True


@pytest.mark.parametrize("status", [200, 201, 204, 301, 304, 400, 401, 403, 404, 418, 501, 505])
def test_default_other_statuses_succeed(lib: Library, status: int) -> None:
    """Every other status, client errors included, is a success."""
    assert judge(lib, response(lib, status)) is False


def test_default_error_while_streaming_a_body_fails(lib: Library) -> None:
    """An error raised while a 200 body streams is a failure."""
    assert judge(lib, response(lib, 200), lib.RemoteProtocolError("cut")) is True


# -- make_classifier ----------------------------------------------------------------


def test_make_classifier_failure_and_ignored_statuses(lib: Library) -> None:
    """Statuses listed fail or are ignored; every other one succeeds."""
    classify = lib.make_classifier(failure_statuses=range(500, 600), ignored_statuses={404})
    request = request_for(lib)
    assert classify(request, response(lib, 501), None) is True
    assert classify(request, response(lib, 599), None) is True
    assert classify(request, response(lib, 429), None) is False
    assert classify(request, response(lib, 404), None) is None
    assert classify(request, response(lib, 200), None) is False


def test_make_classifier_takes_the_first_and_last_status_codes(lib: Library) -> None:
    """HTTP's status codes run from 100 to 599, both ends included."""
    classify = lib.make_classifier(failure_statuses=[100, 599], ignored_statuses=[101, 598])
    request = request_for(lib)
    assert classify(request, response(lib, 599), None) is True
    assert classify(request, response(lib, 598), None) is None


def test_make_classifier_exceptions_with_carve_outs(lib: Library) -> None:
    """Ignored exception types are checked before failing ones; others are ignored."""
    classify = lib.make_classifier(
        failure_exceptions=(lib.TransportError,), ignored_exceptions=(lib.ReadTimeout,)
    )
    request = request_for(lib)
    assert classify(request, None, lib.ConnectError("x")) is True
    assert classify(request, None, lib.ReadTimeout("x")) is None
    assert classify(request, None, KeyError("x")) is None
    assert classify(request, None, None) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"failure_statuses": [99]}, "failure_statuses must hold HTTP status codes"),
        ({"ignored_statuses": [600]}, "ignored_statuses must hold HTTP status codes"),
        ({"failure_statuses": [True]}, "failure_statuses"),
        ({"ignored_statuses": ["404"]}, "ignored_statuses"),
        ({"failure_statuses": [500], "ignored_statuses": [500]}, "overlap"),
        ({"failure_exceptions": [ValueError("x")]}, "failure_exceptions must hold only exception classes"),
        ({"ignored_exceptions": [int]}, "ignored_exceptions"),
    ],
)
def test_make_classifier_validates(lib: Library, kwargs: dict[str, object], match: str) -> None:
    """Bad arguments raise ValueError saying which one is wrong."""
    with pytest.raises(ValueError, match=match):
        lib.make_classifier(**kwargs)


# -- custom classifiers through the transport ----------------------------------------


def _handler(request: httpx.Request) -> httpx.Response:
    status = int(request.url.path.rsplit("/", 1)[-1])
    return httpx.Response(status, json={"status": status})


async def test_custom_classifier_decides_failures() -> None:
    """A custom callable sees (request, response, exception) and decides the outcome."""
    seen: list[tuple[str, int | None, type[BaseException] | None]] = []

    def classify(
        request: httpx.Request, resp: httpx.Response | None, exc: BaseException | None
    ) -> bool | None:
        seen.append((request.url.path, resp.status_code if resp else None, type(exc) if exc else None))
        if resp is not None and resp.status_code == 404:
            return True
        if resp is not None and resp.status_code == 503:
            return None
        return False

    transport = AsyncCircuitBreakerTransport(
        httpx.MockTransport(_handler),
        default=CircuitBreakerConfig(failure_threshold=2),
        classifier=classify,
    )
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://api.example.com/s/503")
        await client.get("https://api.example.com/s/404")
        breaker = transport.registry["api.example.com"]
        assert breaker.state is CircuitState.CLOSED
        await client.get("https://api.example.com/s/404")
        assert breaker.state is CircuitState.OPEN
    metrics = breaker.get_metrics()
    assert (metrics.failed_requests, metrics.ignored_requests, metrics.successful_requests) == (2, 1, 0)
    assert seen == [("/s/503", 503, None), ("/s/404", 404, None), ("/s/404", 404, None)]


def _raising(request: httpx.Request, resp: httpx.Response | None, exc: BaseException | None) -> bool:
    raise RuntimeError("classifier bug")


def _junk(request: httpx.Request, resp: httpx.Response | None, exc: BaseException | None) -> bool:
    return "yes"  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("classifier", "logged"),
    [(_raising, "classifier raised"), (_junk, "returned a str, not True, False or None")],
)
async def test_misbehaving_classifier_never_reaches_the_caller(
    classifier: object, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A classifier that raises or returns junk: the response arrives unchanged, the error is logged, the outcome is ignored."""
    transport = AsyncCircuitBreakerTransport(
        httpx.MockTransport(_handler),
        default=CircuitBreakerConfig(failure_threshold=1),
        classifier=classifier,  # type: ignore[arg-type]
    )
    with caplog.at_level(logging.ERROR, logger="httpx_breaker"):
        async with httpx.AsyncClient(transport=transport) as client:
            r = await client.get("https://api.example.com/s/503")
    assert r.status_code == 503
    assert r.json() == {"status": 503}
    breaker = transport.registry["api.example.com"]
    assert breaker.state is CircuitState.CLOSED
    metrics = breaker.get_metrics()
    assert (metrics.ignored_requests, metrics.failed_requests, metrics.successful_requests) == (1, 0, 0)
    assert logged in caplog.text
    assert "'yes'" not in caplog.text  # the verdict's type is logged, never its value
    assert any(getattr(rec, "circuit_breaker", None) == "api.example.com" for rec in caplog.records)


async def test_misbehaving_classifier_on_an_exception_keeps_the_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the request failed, a raising classifier leaves the original exception to the caller."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = AsyncCircuitBreakerTransport(httpx.MockTransport(refuse), classifier=_raising)
    with caplog.at_level(logging.ERROR, logger="httpx_breaker"):
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.ConnectError, match="refused"):
                await client.get("https://api.example.com/")
    assert transport.registry["api.example.com"].get_metrics().ignored_requests == 1
    assert "classifier raised" in caplog.text


def test_sync_misbehaving_classifier(caplog: pytest.LogCaptureFixture) -> None:
    """The sync transport treats a raising classifier the same way."""
    transport = CircuitBreakerTransport(
        httpx.MockTransport(_handler),
        default=CircuitBreakerConfig(failure_threshold=1),
        classifier=_raising,
    )
    with caplog.at_level(logging.ERROR, logger="httpx_breaker"), httpx.Client(transport=transport) as client:
        r = client.get("https://api.example.com/s/500")
    assert r.status_code == 500
    assert transport.registry["api.example.com"].get_metrics().ignored_requests == 1
    assert "classifier raised" in caplog.text


def test_classifier_must_be_callable() -> None:
    """A classifier that is not callable is refused up front."""
    with pytest.raises(TypeError, match="classifier must be callable"):
        AsyncCircuitBreakerTransport(httpx.MockTransport(_handler), classifier=True)  # type: ignore[arg-type]


async def test_excluded_exceptions_are_ignored_before_the_classifier() -> None:
    """An exception in the policy's exclude_exceptions is ignored without asking the classifier."""
    asked: list[object] = []

    def classify(request: httpx.Request, resp: object, exc: BaseException | None) -> bool:
        asked.append(exc)
        return True

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = AsyncCircuitBreakerTransport(
        httpx.MockTransport(refuse),
        default=CircuitBreakerConfig(failure_threshold=1, exclude_exceptions=(httpx.ConnectError,)),
        classifier=classify,
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("https://api.example.com/")
    assert asked == []
    assert transport.registry["api.example.com"].state is CircuitState.CLOSED
