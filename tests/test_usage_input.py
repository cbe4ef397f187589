"""Bad input a newcomer gives, found by using 0.2 as users do: each gets a clear error."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider

from httpx_breaker import CircuitState
from httpx_breaker.monitoring import alerts
from httpx_breaker.opentelemetry import register_metrics
from httpx_breaker.prometheus import CircuitBreakerCollector
from httpx_breaker.testing import set_state

from .libraries import Library

# What people type when they mean a host: no scheme, so httpx parses a relative URL.
NO_HOST = ["api.example.com", "api.example.com:8443", "localhost:8080", "/users/1", ""]


@pytest.mark.parametrize("url", NO_HOST)
@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
def test_breaker_for_url_without_a_host_is_a_value_error(lib: Library, url: str, sync: bool) -> None:
    """`breaker_for_url("api.example.com")` (no scheme) raises ValueError, as
    `keys.key_for_url` does, instead of making and returning a breaker named ""
    that no request to the host would ever use."""
    kind = lib.CircuitBreakerTransport if sync else lib.AsyncCircuitBreakerTransport
    transport = kind()
    with pytest.raises(ValueError, match="no host"):
        transport.breaker_for_url(url)
    assert len(transport.registry) == 0


@pytest.mark.parametrize("url", ["http://\x00x/", "https://[::1/"], ids=["nul", "bracket"])
def test_breaker_for_url_of_an_invalid_url_is_a_value_error(lib: Library, url: str) -> None:
    """A URL httpx cannot parse is bad input: ValueError (httpx's InvalidURL is neither a
    ValueError nor a TypeError, the two errors the method documents)."""
    transport = lib.AsyncCircuitBreakerTransport()
    with pytest.raises(ValueError, match="not a valid URL"):
        transport.breaker_for_url(url)
    assert len(transport.registry) == 0


def test_breaker_for_url_of_a_custom_key_needs_no_host(lib: Library) -> None:
    """A key function (or a per-request key) names the breaker without the URL's host."""
    transport = lib.CircuitBreakerTransport(key=lambda request: "backend")
    assert transport.breaker_for_url("/users/1").name == "backend"
    request = lib.Request("GET", "/users/1", extensions={"circuit_breaker": {"key": "users"}})
    assert lib.CircuitBreakerTransport().breaker_for_url(request).name == "users"


@pytest.mark.parametrize("url", ["https://api.example.com", "http://api.example.com/users/1"])
def test_set_state_with_a_url_for_a_key_warns(lib: Library, url: str) -> None:
    """`set_state(transport, "https://api.example.com", OPEN)` names a breaker no request
    uses (default keys are "host[:port]"; only a key function could make that key): it
    warns, saying how to reach a URL's breaker, rather than leave the test wondering
    why the host's breaker stayed closed."""
    transport = lib.CircuitBreakerTransport()
    with pytest.warns(UserWarning, match=r"breaker_for_url\(url\)"):
        set_state(transport, url, CircuitState.OPEN)
    breaker = set_state(transport.breaker_for_url(url), CircuitState.OPEN)
    assert breaker.name == "api.example.com"


@pytest.mark.parametrize("source", ["payments.internal", ["payments.internal"], 42])
def test_exporters_reject_a_bad_source_when_built_not_at_every_scrape(source: object) -> None:
    """`CircuitBreakerCollector("payments.internal")` (a breaker's name where breakers are
    wanted) raises TypeError when built. It used to register fine and then fail every
    scrape, and one collector that raises fails the whole /metrics page."""
    with pytest.raises(TypeError, match=r"(?i)breaker"):
        CircuitBreakerCollector(source)  # type: ignore[arg-type]
    provider = MeterProvider()
    try:
        with pytest.raises(TypeError, match=r"(?i)breaker"):
            register_metrics(source, meter_provider=provider)  # type: ignore[arg-type]
    finally:
        provider.shutdown()


@pytest.mark.parametrize("threshold", ["0.5", None])
def test_alerts_threshold_of_the_wrong_type_names_the_field(threshold: object) -> None:
    """`alerts(failure_rate_threshold="0.5")` names the argument (it raised "'<=' not
    supported between instances of 'float' and 'str'")."""
    with pytest.raises(TypeError, match="failure_rate_threshold must be a number"):
        alerts(failure_rate_threshold=threshold)  # type: ignore[arg-type]
