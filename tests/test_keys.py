"""Breaker keys: which breaker a request goes to, and errors from custom key functions."""

from __future__ import annotations

import httpx
import pytest

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
)
from httpx_breaker.keys import default_key, key_for_url

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


# -- one spelling per address, in keys and patterns alike (defect 4) -----------------


MAPPED = CircuitBreakerConfig(failure_threshold=7)
PAYMENTS = CircuitBreakerConfig(failure_threshold=2)
INTERNAL = CircuitBreakerConfig(failure_threshold=3)


@pytest.mark.parametrize(
    "url",
    [
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::FFFF:7F00:1]/",
        "http://[0:0:0:0:0:ffff:127.0.0.1]/",
        "http://[::ffff:127.0.0.1]:80/",
    ],
)
def test_ipv4_mapped_address_has_one_key(url: str) -> None:
    """An IPv4-mapped IPv6 address has one key however it is written, on every Python."""
    assert key_of(url) == "[::ffff:127.0.0.1]"


@pytest.mark.parametrize("pattern", ["[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "::ffff:7f00:1", "::FFFF:127.0.0.1"])
@pytest.mark.parametrize("url", ["http://[::ffff:127.0.0.1]:8080/", "http://[::ffff:7f00:1]:8080/"])
def test_policy_for_an_ipv4_mapped_address_matches_its_requests(pattern: str, url: str) -> None:
    """A policy for an IPv4-mapped address applies to requests to it, whichever way
    either is written (on Python 3.10 to 3.12 the two were spelled differently)."""
    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)), policies={pattern: MAPPED}
    )
    with httpx.Client(transport=transport) as client:
        response = client.get(url)
    info = response.extensions["circuit_breaker"]
    assert info["key"] == "[::ffff:127.0.0.1]:8080"
    assert info["breaker"].config is MAPPED
    assert list(transport.registry.policies) == ["[::ffff:127.0.0.1]"]


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://payments.internal./charge", "payments.internal"),
        ("https://Payments.Internal.:8443/", "payments.internal:8443"),
        ("https://bücher.example./", "xn--bcher-kva.example"),
        ("http://127.0.0.1./", "127.0.0.1"),
    ],
)
def test_trailing_dot_is_dropped_from_keys(url: str, key: str) -> None:
    """A host with its trailing (root) dot has the same key as without it."""
    assert key_of(url) == key


@pytest.mark.parametrize("pattern", ["payments.internal", "payments.internal.", "PAYMENTS.internal."])
@pytest.mark.parametrize("url", ["https://payments.internal/", "https://payments.internal./"])
def test_policy_with_or_without_trailing_dot_matches_both(pattern: str, url: str) -> None:
    """`payments.internal.` and `payments.internal` are one host for policies too."""
    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)),
        policies={pattern: PAYMENTS, "*.internal.": INTERNAL},
    )
    with httpx.Client(transport=transport) as client:
        exact = client.get(url).extensions["circuit_breaker"]
        sub = client.get("https://ledger.internal./").extensions["circuit_breaker"]
        sub2 = client.get("https://ledger.internal/").extensions["circuit_breaker"]
    assert exact["key"] == "payments.internal"
    assert exact["breaker"].config is PAYMENTS
    assert sub["breaker"] is sub2["breaker"]
    assert sub["breaker"].config is INTERNAL
    assert sorted(transport.registry.policies) == ["*.internal", "payments.internal"]


def test_patterns_equal_up_to_a_trailing_dot_are_refused() -> None:
    """Two patterns for one host (with and without its dot) are a configuration mistake."""
    with pytest.raises(ValueError, match="twice"):
        CircuitBreakerTransport(policies={"a.example": PAYMENTS, "a.example.": INTERNAL})


# -- the public home of key derivation: httpx_breaker.keys ---------------------------


def test_keys_module_exports_default_key_and_key_for_url() -> None:
    """`httpx_breaker.keys` is the documented home; `classifiers.default_key` stays."""
    import httpx_breaker.classifiers
    import httpx_breaker.keys

    assert httpx_breaker.keys.__all__ == ["default_key", "key_for_url"]
    assert httpx_breaker.classifiers.default_key is httpx_breaker.keys.default_key


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://api.example.com/charge", "api.example.com"),
        ("https://api.example.com:443/", "api.example.com"),
        ("http://api.example.com:443/", "api.example.com:443"),
        ("wss://api.example.com:443/", "api.example.com"),
        ("ws://api.example.com:8080/", "api.example.com:8080"),
        ("https://user:pw@API.Example.COM:8443/p?q=1#f", "api.example.com:8443"),
        ("https://bücher.example./", "xn--bcher-kva.example"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("http://[2001:DB8:0::1]/", "[2001:db8::1]"),
        ("http://[::ffff:7f00:1]:8080/", "[::ffff:127.0.0.1]:8080"),
        ("http://payments.internal.:9000/", "payments.internal:9000"),
    ],
)
def test_key_for_url_takes_str_url_and_request(url: str, key: str) -> None:
    """`key_for_url` gives the key a request to the URL gets, from a str, an
    `httpx.URL` or an `httpx.Request`, and agrees with `default_key`."""
    assert key_for_url(url) == key
    assert key_for_url(httpx.URL(url)) == key
    assert key_for_url(httpx.Request("GET", url)) == key
    assert default_key(httpx.Request("GET", url)) == key


class DuckURL:
    """A URL type that is not httpx's (httpx2's URL, say): only the attributes keys read."""

    def __init__(self, scheme: str, raw_host: bytes, port: int | None) -> None:
        self.scheme, self.raw_host, self.port = scheme, raw_host, port


class DuckRequest:
    def __init__(self, url: DuckURL) -> None:
        self.url = url


@pytest.mark.parametrize(
    ("url", "key"),
    [
        (DuckURL("https", b"api.example.com", None), "api.example.com"),
        (DuckURL("https", b"api.example.com", 443), "api.example.com"),  # default port as written
        (DuckURL("http", b"api.example.com", 443), "api.example.com:443"),
        (DuckURL("https", b"api.example.com.", 8443), "api.example.com:8443"),
        (DuckURL("http", b"::FFFF:7F00:1", None), "[::ffff:127.0.0.1]"),
        (DuckURL("http", b"xn--bcher-kva.example", 81), "xn--bcher-kva.example:81"),
        (DuckURL("ws", b"api.example.com", 80), "api.example.com"),
        (DuckURL("wss", b"api.example.com", 443), "api.example.com"),
    ],
)
def test_keys_come_from_duck_typed_urls(url: DuckURL, key: str) -> None:
    """Any URL object with `scheme`, `raw_host` and `port` (or a request holding one)
    gets its key by the same rules."""
    assert key_for_url(url) == key
    assert key_for_url(DuckRequest(url)) == key
    assert default_key(DuckRequest(url)) == key  # type: ignore[arg-type]


class HalfURL:
    """Has a host and scheme but no port: not enough to make a key from."""

    scheme, raw_host = "https", b"api.example.com"


@pytest.mark.parametrize("bad", [42, None, b"https://api.example.com/", object(), HalfURL()])
def test_key_for_url_refuses_what_is_not_a_url(bad: object) -> None:
    """Anything that is not a URL or request is a TypeError naming its type."""
    with pytest.raises(TypeError, match=r"url must be a str, an httpx\.URL or an httpx\.Request"):
        key_for_url(bad)


@pytest.mark.parametrize("url", ["/charge", "", "http://[::1/"])
def test_key_for_url_refuses_urls_without_a_host(url: str) -> None:
    """A relative or malformed URL has no key: ValueError, not an empty key."""
    with pytest.raises(ValueError, match="URL"):
        key_for_url(url)


# One spelling per address, whatever Python's `ipaddress` prints: this table is the
# same on 3.10 and 3.13 (3.13 changed how `compressed` writes IPv4-mapped addresses).
SPELLINGS = [
    ("::1", "[::1]"),
    ("0:0:0:0:0:0:0:1", "[::1]"),
    ("2001:DB8:0:0:0:0:0:1", "[2001:db8::1]"),
    ("::ffff:127.0.0.1", "[::ffff:127.0.0.1]"),
    ("::ffff:7f00:1", "[::ffff:127.0.0.1]"),
    ("0:0:0:0:0:FFFF:7F00:0001", "[::ffff:127.0.0.1]"),
    ("::ffff:0:7f00:1", "[::ffff:0:7f00:1]"),  # IPv4-translated, not mapped
    ("::127.0.0.1", "[::7f00:1]"),  # IPv4-compatible (deprecated), not mapped
    ("64:ff9b::1.2.3.4", "[64:ff9b::102:304]"),
    ("Payments.Internal.", "payments.internal"),
    ("xn--bcher-kva.example.", "xn--bcher-kva.example"),
    ("127.0.0.1.", "127.0.0.1"),
]


@pytest.mark.parametrize(("host", "spelling"), SPELLINGS)
def test_one_spelling_per_host_on_every_python(host: str, spelling: str) -> None:
    """Keys and patterns share one canonical spelling, the same on every Python."""
    from httpx_breaker._keys import canonical_host, normalize_pattern

    assert canonical_host(host) == spelling
    pattern = f"[{host}]" if ":" in host else host
    assert normalize_pattern(pattern) == spelling
    assert normalize_pattern(f"{pattern}:8443") == f"{spelling}:8443"
    if ":" not in host and not host[0].isdigit():
        assert normalize_pattern(f"*.{host}") == f"*.{spelling}"


def test_httpx_s_own_urls_take_the_fast_path() -> None:
    """With the httpx releases it was written for (0.27, 0.28), the registry reads a
    URL's parsed parts directly (a third of the cost of its properties). A release of
    httpx that moved them would turn the fast path off without a word; this says so."""
    from httpx_breaker import _keys

    if not httpx.__version__.startswith(("0.27.", "0.28.")):
        pytest.skip(f"httpx {httpx.__version__}: not a release this was checked against")
    assert _keys.HTTPX_URL is httpx.URL
