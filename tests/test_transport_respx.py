"""The async transport over the real AsyncHTTPTransport, with respx mocking httpcore beneath it.

respx's ``using="httpcore"`` patches httpcore (``"httpcore2"``, from pytest-httpx2,
patches httpcore2), so the wrapper and the library's own transport both run; these tests
run with httpx and httpx2, under asyncio and trio alike.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator

import httpx
import pytest
import respx

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
)

from .conftest import FakeClock
from .libraries import Library

pytestmark = pytest.mark.anyio

URL = "https://api.example.com/charge"


@pytest.fixture
def mock(lib: Library) -> Iterator[respx.MockRouter]:
    with lib.mock(assert_all_called=False) as router:
        yield router


def make(lib: Library, clock: FakeClock, **config: object) -> AsyncCircuitBreakerTransport:
    defaults: dict[str, object] = {"failure_threshold": 1, "reset_timeout": 5.0}
    defaults.update(config)
    return lib.AsyncCircuitBreakerTransport(
        registry=BreakerRegistry(default=CircuitBreakerConfig(**defaults), clock=clock)  # type: ignore[arg-type]
    )


async def open_error(client: httpx.AsyncClient, url: str = URL) -> CircuitOpenError:
    with pytest.raises(CircuitOpenError) as info:
        await client.get(url)
    return info.value


async def test_wraps_the_real_http_transport(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """With respx on httpcore the real AsyncHTTPTransport runs beneath the wrapper."""
    route = mock.get(URL).respond(200, json={"ok": True})
    transport = make(lib, clock)
    assert isinstance(transport.transport, lib.AsyncHTTPTransport)
    async with lib.AsyncClient(transport=transport) as client:
        r = await client.get(URL)
    assert r.json() == {"ok": True}
    assert route.call_count == 1
    info = r.extensions["circuit_breaker"]
    assert info["key"] == "api.example.com"
    assert info["state"] is CircuitState.CLOSED
    assert info["breaker"] is transport.registry["api.example.com"]


async def test_open_breaker_rejects_before_io(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """Once open, requests raise CircuitOpenError carrying key, state, retry_after and request."""
    route = mock.get(URL).respond(503)
    async with lib.AsyncClient(transport=make(lib, clock)) as client:
        assert (await client.get(URL)).status_code == 503
        error = await open_error(client)
    assert route.call_count == 1
    assert error.key == "api.example.com"
    assert error.state is CircuitState.OPEN
    assert error.retry_after == 5.0
    assert error.request.url == URL
    assert isinstance(error, lib.TransportError)
    assert isinstance(error.request, lib.Request)


async def test_transport_errors_count_as_failures(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """A connect error from below opens the breaker and reaches the caller unchanged."""
    mock.get(URL).mock(side_effect=lib.ConnectError("refused"))
    async with lib.AsyncClient(transport=make(lib, clock)) as client:
        with pytest.raises(lib.ConnectError, match="refused"):
            await client.get(URL)
        await open_error(client)


async def test_caller_errors_are_ignored(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """A LocalProtocolError is the caller's fault: it never opens the breaker."""
    mock.get(URL).mock(side_effect=lib.LocalProtocolError("bad header"))
    transport = make(lib, clock)
    async with lib.AsyncClient(transport=transport) as client:
        for _ in range(3):
            with pytest.raises(lib.LocalProtocolError):
                await client.get(URL)
    breaker = transport.registry["api.example.com"]
    assert breaker.state is CircuitState.CLOSED
    assert breaker.get_metrics().ignored_requests == 3


async def test_an_exception_the_policy_does_not_exclude_still_fails(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """`exclude_exceptions` ignores the exceptions it names and only those: under a
    policy that excludes read timeouts, a connect error still opens the breaker."""
    mock.get(URL).mock(side_effect=lib.ConnectError("refused"))
    transport = make(lib, clock, exclude_exceptions=(lib.ReadTimeout,))
    async with lib.AsyncClient(transport=transport) as client:
        with pytest.raises(lib.ConnectError):
            await client.get(URL)
        await open_error(client)
    assert transport.registry["api.example.com"].get_metrics().failed_requests == 1


async def test_custom_classifier_through_httpcore(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """A make_classifier classifier turns 404 into a failure and ignores 503."""
    mock.get("https://api.example.com/missing").respond(404)
    mock.get("https://api.example.com/busy").respond(503)
    transport = lib.AsyncCircuitBreakerTransport(
        registry=BreakerRegistry(default=CircuitBreakerConfig(failure_threshold=2), clock=clock),
        classifier=lib.make_classifier(failure_statuses={404}, ignored_statuses={503}),
    )
    async with lib.AsyncClient(transport=transport) as client:
        for _ in range(5):
            await client.get("https://api.example.com/busy")
        breaker = transport.registry["api.example.com"]
        assert breaker.state is CircuitState.CLOSED
        await client.get("https://api.example.com/missing")
        await client.get("https://api.example.com/missing")
        assert breaker.state is CircuitState.OPEN


async def test_hosts_have_separate_breakers_and_policies(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """A failing host opens only its own breaker; policies pick each host's config."""
    mock.get(host="payments.internal").respond(503)
    mock.get(host="api.example.com").respond(503)
    mock.get(host="web.example.com").respond(200)
    transport = lib.AsyncCircuitBreakerTransport(
        registry=BreakerRegistry(
            default=CircuitBreakerConfig(failure_threshold=5),
            policies={
                "payments.internal": CircuitBreakerConfig(failure_threshold=2),
                "*.example.com": CircuitBreakerConfig(failure_threshold=3),
            },
            clock=clock,
        )
    )
    async with lib.AsyncClient(transport=transport) as client:
        for _ in range(2):
            await client.get("https://payments.internal/charge")
        await open_error(client, "https://payments.internal/charge")
        for _ in range(2):
            await client.get("https://api.example.com/")
        assert transport.registry["api.example.com"].state is CircuitState.CLOSED
        await client.get("https://api.example.com/")
        await open_error(client, "https://api.example.com/")
        assert (await client.get("https://web.example.com/")).status_code == 200
    assert transport.registry["web.example.com"].config.failure_threshold == 3


async def test_ports_and_userinfo_in_keys(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """Non-default ports get their own breaker; userinfo does not."""
    mock.get(host="api.example.com").respond(503)
    transport = make(lib, clock)
    async with lib.AsyncClient(transport=transport) as client:
        await client.get("https://api.example.com:8443/")
        await open_error(client, "https://user:pw@api.example.com:8443/other?x=1")
        assert (await client.get("https://api.example.com/")).status_code == 503
    assert sorted(transport.registry) == ["api.example.com", "api.example.com:8443"]


# -- Retry-After ------------------------------------------------------------------


async def test_retry_after_seconds_lengthens_the_open_period(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """Retry-After in seconds on a failure makes the open period that long."""
    mock.get(URL).respond(503, headers={"Retry-After": "120"})
    async with lib.AsyncClient(transport=make(lib, clock)) as client:
        await client.get(URL)
        assert (await open_error(client)).retry_after == 120.0
        clock.advance(119.0)
        assert (await open_error(client)).retry_after == 1.0
        clock.advance(1.0)
        assert (await client.get(URL)).status_code == 503  # the probe passes


async def test_retry_after_http_date(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """Retry-After as an HTTP-date gives the seconds until that date."""
    when = email.utils.formatdate(time.time() + 600, usegmt=True)
    mock.get(URL).respond(503, headers={"Retry-After": when})
    async with lib.AsyncClient(transport=make(lib, clock, max_retry_after=3600.0)) as client:
        await client.get(URL)
        retry_after = (await open_error(client)).retry_after
    assert retry_after is not None
    # The date has one-second resolution and wall-clock time moved on a little.
    assert 590.0 < retry_after <= 600.0


async def test_retry_after_is_capped(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """max_retry_after caps what a server can ask for."""
    mock.get(URL).respond(503, headers={"Retry-After": "86400"})
    async with lib.AsyncClient(transport=make(lib, clock, max_retry_after=60.0)) as client:
        await client.get(URL)
        assert (await open_error(client)).retry_after == 60.0


async def test_retry_after_ignored_when_not_respected(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """With respect_retry_after=False the open period is reset_timeout."""
    mock.get(URL).respond(503, headers={"Retry-After": "120"})
    async with lib.AsyncClient(transport=make(lib, clock, respect_retry_after=False)) as client:
        await client.get(URL)
        assert (await open_error(client)).retry_after == 5.0


async def test_retry_after_shorter_than_reset_timeout_does_not_shorten(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """Retry-After only ever lengthens the open period."""
    mock.get(URL).respond(503, headers={"Retry-After": "1"})
    async with lib.AsyncClient(transport=make(lib, clock)) as client:
        await client.get(URL)
        assert (await open_error(client)).retry_after == 5.0


async def test_retry_after_never_opens_by_itself(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """A failure with Retry-After below the threshold leaves the breaker closed, and is not remembered."""
    route = mock.get(URL)
    route.respond(429, headers={"Retry-After": "120"})
    transport = make(lib, clock, failure_threshold=2)
    async with lib.AsyncClient(transport=transport) as client:
        await client.get(URL)
        assert transport.registry["api.example.com"].state is CircuitState.CLOSED
        route.respond(503)
        await client.get(URL)
        assert (await open_error(client)).retry_after == 5.0


async def test_retry_after_on_a_success_is_ignored(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """Retry-After on a response the classifier calls a success changes nothing."""
    mock.get(URL).respond(200, headers={"Retry-After": "120"})
    transport = make(lib, clock)
    async with lib.AsyncClient(transport=transport) as client:
        await client.get(URL)
    assert transport.registry["api.example.com"].state is CircuitState.CLOSED


@pytest.mark.parametrize("value", ["soon", "-5", "1.5", "", "  ", "Mon, 99 Foo 2024 99:99:99 GMT", "1e9"])
async def test_malformed_retry_after_is_ignored(
    lib: Library, mock: respx.MockRouter, clock: FakeClock, value: str
) -> None:
    """A Retry-After that is neither delta-seconds nor an HTTP-date is ignored."""
    mock.get(URL).respond(503, headers={"Retry-After": value})
    async with lib.AsyncClient(transport=make(lib, clock)) as client:
        await client.get(URL)
        assert (await open_error(client)).retry_after == 5.0


async def test_retry_after_from_a_late_response_applies_to_an_open_breaker(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """A failure closed after the breaker opened still lengthens the open period ("is open")."""
    mock.get("https://api.example.com/slow").respond(503, headers={"Retry-After": "200"})
    mock.get(URL).respond(503)
    async with lib.AsyncClient(transport=make(lib, clock)) as client:
        async with client.stream("GET", "https://api.example.com/slow") as slow:
            await client.get(URL)  # opens the breaker with the plain reset_timeout
            assert (await open_error(client)).retry_after == 5.0
            assert slow.status_code == 503
        assert (await open_error(client)).retry_after == 200.0


async def test_retry_after_on_a_failed_probe(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """A failed half-open probe with Retry-After reopens for at least that long."""
    route = mock.get(URL)
    route.respond(503)
    async with lib.AsyncClient(transport=make(lib, clock)) as client:
        await client.get(URL)
        clock.advance(5.0)
        route.respond(503, headers={"Retry-After": "100"})
        await client.get(URL)
        error = await open_error(client)
    assert error.state is CircuitState.OPEN
    assert error.retry_after == 100.0


# -- per-request control -------------------------------------------------------------


async def test_bypass_skips_an_open_breaker(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """{"bypass": True} sends the request even while open and records nothing."""
    route = mock.get(URL).respond(503)
    transport = make(lib, clock)
    async with lib.AsyncClient(transport=transport) as client:
        await client.get(URL)
        breaker = transport.registry["api.example.com"]
        before = breaker.get_metrics()
        r = await client.get(URL, extensions={"circuit_breaker": {"bypass": True}})
    assert r.status_code == 503
    assert route.call_count == 2
    assert "circuit_breaker" not in r.extensions
    after = breaker.get_metrics()
    assert (after.total_requests, after.rejected_requests) == (before.total_requests, before.rejected_requests)


async def test_per_request_policy_and_key(
    lib: Library, mock: respx.MockRouter, clock: FakeClock
) -> None:
    """A request can name a policy (its own breaker) or a key."""
    mock.get(URL).respond(503)
    transport = lib.AsyncCircuitBreakerTransport(
        registry=BreakerRegistry(
            default=CircuitBreakerConfig(failure_threshold=5),
            policies={"strict": CircuitBreakerConfig(failure_threshold=1)},
            clock=clock,
        )
    )
    async with lib.AsyncClient(transport=transport) as client:
        r = await client.get(URL, extensions={"circuit_breaker": {"policy": "strict"}})
        assert r.extensions["circuit_breaker"]["key"] == "api.example.com#strict"
        with pytest.raises(CircuitOpenError) as info:
            await client.get(URL, extensions={"circuit_breaker": {"policy": "STRICT"}})
        assert info.value.key == "api.example.com#strict"
        # the host's own breaker is untouched
        assert (await client.get(URL)).status_code == 503
        r = await client.get(URL, extensions={"circuit_breaker": {"key": "payments"}})
        assert r.extensions["circuit_breaker"]["key"] == "payments"
    assert transport.registry["api.example.com"].get_metrics().failed_requests == 1


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"bypas": True}, ValueError, "unknown options"),
        ({"policy": "nope"}, ValueError, "not one of this registry's policies"),
        ({"key": 7}, TypeError, "must be a str"),
        (True, TypeError, "must be a mapping"),
        # The option is named, not "a policy pattern", whatever the value.
        ({"policy": 3}, TypeError, r'\["policy"\] must be a str, got int'),
        ({"policy": ""}, ValueError, "not one of this registry's policies"),
        ({"key": ""}, ValueError, r'\["key"\] must not be empty'),
    ],
)
async def test_bad_request_options_fail_before_io(
    lib: Library,
    mock: respx.MockRouter,
    clock: FakeClock,
    options: object,
    error: type[Exception],
    match: str,
) -> None:
    """Unknown or malformed per-request options raise before any I/O."""
    route = mock.get(URL).respond(200)
    async with lib.AsyncClient(transport=make(lib, clock)) as client:
        with pytest.raises(error, match=match):
            await client.get(URL, extensions={"circuit_breaker": options})
    assert route.call_count == 0
