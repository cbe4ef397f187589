"""Breaker keys: which breaker a request goes to, and errors from custom key functions."""

from __future__ import annotations

import httpx
import pytest

from httpx_breaker import AsyncCircuitBreakerTransport, CircuitBreakerTransport
from httpx_breaker.classifiers import default_key

pytestmark = pytest.mark.anyio


def key_of(url: str) -> str:
    return default_key(httpx.Request("GET", url))


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://api.example.com/charge", "api.example.com"),
        ("http://api.example.com/", "api.example.com"),
        ("https://api.example.com:443/", "api.example.com"),
        ("http://api.example.com:80/", "api.example.com"),
        ("https://api.example.com:8443/", "api.example.com:8443"),
        ("http://api.example.com:443/", "api.example.com:443"),
        ("https://api.example.com:80/", "api.example.com:80"),
        ("http://127.0.0.1:8080/x", "127.0.0.1:8080"),
    ],
)
def test_host_and_non_default_port(url: str, key: str) -> None:
    """The key is the host, plus the port only when it is not the scheme's default."""
    assert key_of(url) == key


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://[::1]:8080/", "[::1]:8080"),
        ("http://[::1]/", "[::1]"),
        ("https://[2001:DB8:0::1]/", "[2001:db8::1]"),
        ("https://[2001:db8::1]:8443/", "[2001:db8::1]:8443"),
    ],
)
def test_ipv6_is_bracketed_and_canonical(url: str, key: str) -> None:
    """An IPv6 host is bracketed, lower-cased and compressed, so one address has one key."""
    assert key_of(url) == key


def test_userinfo_path_query_and_fragment_are_never_in_the_key() -> None:
    """Credentials, path, query and fragment never reach the key (nor logs and metrics)."""
    key = key_of("https://user:s3cret@api.example.com:8443/v1/users?token=abc#frag")
    assert key == "api.example.com:8443"
    assert "s3cret" not in key and "token" not in key


def test_host_case_does_not_matter() -> None:
    """Hosts differing only in case share a key."""
    assert key_of("https://API.Example.COM/") == key_of("https://api.example.com/")


@pytest.mark.parametrize(
    "url",
    [
        "https://bücher.example/",
        "https://BÜCHER.example/",
        "https://xn--bcher-kva.example/",
        "https://XN--BCHER-KVA.example/",
    ],
)
def test_idna_host_has_one_key_in_every_spelling(url: str) -> None:
    """A Unicode host and its punycode spelling share one ASCII key."""
    assert key_of(url) == "xn--bcher-kva.example"


async def test_idna_subdomain_key_through_a_client() -> None:
    """An internationalised label after the first gets the same key as its punycode."""
    transport = AsyncCircuitBreakerTransport(httpx.MockTransport(lambda r: httpx.Response(200)))
    async with httpx.AsyncClient(transport=transport) as client:
        r1 = await client.get("https://shop.bücher.example/")
        r2 = await client.get("https://shop.xn--bcher-kva.example/")
    assert r1.extensions["circuit_breaker"]["key"] == "shop.xn--bcher-kva.example"
    assert r2.extensions["circuit_breaker"]["breaker"] is r1.extensions["circuit_breaker"]["breaker"]


async def test_custom_key_callable_names_the_breaker() -> None:
    """A `key=` callable decides which breaker a request uses."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200)

    transport = AsyncCircuitBreakerTransport(
        httpx.MockTransport(handler), key=lambda r: f"{r.url.host}{r.url.path.rsplit('/', 1)[0]}"
    )
    async with httpx.AsyncClient(transport=transport) as client:
        r1 = await client.get("https://api.example.com/v1/a")
        r2 = await client.get("https://api.example.com/v2/b")
    assert r1.extensions["circuit_breaker"]["key"] == "api.example.com/v1"
    assert r2.extensions["circuit_breaker"]["key"] == "api.example.com/v2"
    assert sorted(transport.registry) == ["api.example.com/v1", "api.example.com/v2"]
    assert len(seen) == 2


class KeyBoom(Exception):
    pass


def _raising_key(request: httpx.Request) -> str:
    raise KeyBoom("no key for you")


def _not_a_str(request: httpx.Request) -> str:
    return 42  # type: ignore[return-value]


class _Never(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """An inner transport that must never be called."""

    calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(200)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(200)


async def test_key_function_that_raises_fails_before_io() -> None:
    """A key function's own exception reaches the caller and the inner transport is never called."""
    inner = _Never()
    transport = AsyncCircuitBreakerTransport(inner, key=_raising_key)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(KeyBoom, match="no key for you"):
            await client.get("https://api.example.com/")
    assert inner.calls == 0
    assert len(transport.registry) == 0


async def test_key_function_returning_non_str_is_a_clear_type_error() -> None:
    """A key function returning a non-str raises TypeError naming the value, before any I/O."""
    inner = _Never()
    transport = AsyncCircuitBreakerTransport(inner, key=_not_a_str)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(TypeError, match=r"key function must return a str, got int$"):
            await client.get("https://api.example.com/")
    assert inner.calls == 0
    assert len(transport.registry) == 0


def test_sync_key_errors_fail_before_io() -> None:
    """The sync transport reports key-function errors the same way, with no I/O."""
    inner = _Never()
    raising = CircuitBreakerTransport(inner, key=_raising_key)
    with httpx.Client(transport=raising) as client, pytest.raises(KeyBoom):
        client.get("https://api.example.com/")
    not_a_str = CircuitBreakerTransport(inner, key=_not_a_str)
    with httpx.Client(transport=not_a_str) as client, pytest.raises(TypeError, match="a str"):
        client.get("https://api.example.com/")
    assert inner.calls == 0


def test_key_must_be_callable() -> None:
    """A `key=` that is not callable is refused when the transport is built."""
    with pytest.raises(TypeError, match="key must be callable"):
        AsyncCircuitBreakerTransport(_Never(), key="api.example.com")  # type: ignore[arg-type]
