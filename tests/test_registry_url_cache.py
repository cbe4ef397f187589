"""`BreakerRegistry._breaker_for_url`: the transports' lookup by URL, exactly
`breaker_for(default_key(request))` without building the key."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpx_breaker import BreakerRegistry, CircuitBreakerConfig
from httpx_breaker._registry import URL_SPELLINGS
from httpx_breaker.keys import default_key, key_for_url

from .test_keys import DuckURL

URLS = [
    "https://api.example.com/charge",
    "https://API.Example.COM/",
    "https://api.example.com:443/",
    "http://api.example.com:443/",
    "https://api.example.com:80/",
    "http://api.example.com:80/x",
    "ws://api.example.com/",
    "wss://api.example.com:8443/",
    "https://user:secret@api.example.com:8443/?token=1",
    "https://payments.internal./",
    "https://Payments.Internal.:8443/",
    "https://bücher.example/",
    "https://BÜCHER.example./",
    "https://xn--bcher-kva.example/",
    "https://shop.bücher.example/",
    "http://[::1]/",
    "http://[::1]:8080/",
    "http://[0:0::1]:8080/",
    "http://[2001:DB8:0::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::FFFF:7F00:1]:9000/",
    "http://127.0.0.1:8000/",
    "http://127.0.0.1./",
    "http://localhost/",
]


@pytest.mark.parametrize("url", URLS)
def test_lookup_by_url_is_breaker_for_default_key(url: str) -> None:
    """For each URL, the URL lookup and `breaker_for(default_key(request))` return the
    same breaker, whichever of the two runs first."""
    request = httpx.Request("GET", url)
    first = BreakerRegistry()
    by_url = first._breaker_for_url(request.url)
    assert by_url is first.breaker_for(default_key(request))
    assert by_url.name == key_for_url(url)
    assert first._breaker_for_url(request.url) is by_url  # and again, from the cache
    second = BreakerRegistry()
    by_key = second.breaker_for(default_key(request))
    assert second._breaker_for_url(request.url) is by_key
    assert len(first) == len(second) == 1


def test_every_spelling_of_a_host_finds_one_breaker() -> None:
    """All the URLs above share a breaker exactly when their keys are equal."""
    registry = BreakerRegistry(max_size=100)
    for url in URLS:
        breaker = registry._breaker_for_url(httpx.URL(url))
        assert breaker is registry[key_for_url(url)]
    assert sorted(registry) == sorted({key_for_url(url) for url in URLS})


def test_policies_and_listeners_apply_as_through_breaker_for() -> None:
    """A breaker made through the URL lookup gets the same policy (trailing dot and
    IPv4-mapped spellings included) and the registry's listeners."""
    special = CircuitBreakerConfig(failure_threshold=2)
    mapped = CircuitBreakerConfig(failure_threshold=3)
    registry = BreakerRegistry(
        policies={"payments.internal.": special, "[::ffff:7f00:1]": mapped}
    )
    events: list[str] = []
    registry.add_listener(lambda event: events.append(event.name))
    payments = registry._breaker_for_url(httpx.URL("https://payments.internal/"))
    assert payments.config is special
    assert registry._breaker_for_url(httpx.URL("http://[::ffff:127.0.0.1]:81/")).config is mapped
    payments.force_open()
    assert events == ["payments.internal"]


def test_eviction_clears_the_cache_and_the_lookup_stays_exact() -> None:
    """An evicted breaker's spellings leave the cache: the next request to its host gets
    the registry's new breaker, the same one `breaker_for` gives."""
    registry = BreakerRegistry(max_size=2)
    a_url, b_url, c_url = (httpx.URL(f"https://{h}.example./") for h in "abc")
    a = registry._breaker_for_url(a_url)
    registry._breaker_for_url(httpx.URL("https://a.example/"))  # a second spelling
    registry._breaker_for_url(b_url)
    registry._breaker_for_url(c_url)  # evicts a, the least recently used
    assert "a.example" not in registry
    assert all(entry.breaker.name != "a.example" for entry in registry._by_url.values())
    again = registry._breaker_for_url(a_url)
    assert again is not a
    assert again is registry["a.example"] is registry.breaker_for("a.example")
    assert registry._breaker_for_url(httpx.URL("https://a.example/")) is again
    assert len(registry._by_url) <= URL_SPELLINGS * len(registry)


def test_lookups_by_url_count_as_use_for_eviction() -> None:
    """A breaker used through the URL lookup is recently used, as with `breaker_for`."""
    registry = BreakerRegistry(max_size=3)
    for host in ("a", "b", "c"):
        registry.breaker_for(host)
    registry._breaker_for_url(httpx.URL("http://a/"))
    registry.breaker_for("d")
    assert sorted(registry) == ["a", "c", "d"]


def test_cache_stays_bounded_however_a_host_is_spelled() -> None:
    """Many spellings of one host (IPv6 zero runs, trailing dot, schemes, ports written
    out) keep at most `URL_SPELLINGS` cache entries, and every one still finds the
    host's breaker."""
    registry = BreakerRegistry(max_size=10)
    spellings = [
        f"{scheme}://[{':'.join(['0'] * zeros)}::1]/"
        for scheme in ("http", "https", "ws", "wss")
        for zeros in range(1, 7)
    ]
    spellings += ["http://[::1]/", "https://[::1]:443/", "http://[::1]:80/"]
    for _ in range(3):
        for url in spellings:
            assert registry._breaker_for_url(httpx.URL(url)) is registry["[::1]"]
    assert len(registry) == 1
    assert len(registry._by_url) == URL_SPELLINGS


@pytest.mark.parametrize(
    ("url", "key"),
    [
        (DuckURL("https", b"api.example.com", None), "api.example.com"),
        (DuckURL("https", b"api.example.com", 443), "api.example.com"),
        (DuckURL("http", b"api.example.com", 443), "api.example.com:443"),
        (DuckURL("https", b"api.example.com.", 8443), "api.example.com:8443"),
        (DuckURL("http", b"::FFFF:7F00:1", None), "[::ffff:127.0.0.1]"),
    ],
)
def test_lookup_by_duck_typed_url(url: DuckURL, key: str) -> None:
    """A URL type other than httpx's (httpx2's) finds the same breaker as httpx's URL."""
    registry = BreakerRegistry()
    breaker = registry._breaker_for_url(url)
    assert breaker is registry.breaker_for(key)
    assert registry._breaker_for_url(url) is breaker
    assert registry._breaker_for_url(httpx.URL(f"{url.scheme}://{key}/")) is breaker


_label = st.text("abcXYZ09-", min_size=1, max_size=6).filter(
    lambda s: not s.startswith("-") and not s.endswith("-")
)
_host = st.one_of(
    st.lists(_label, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["[::1]", "[0::1]", "[::FFFF:7F00:1]", "[::ffff:127.0.0.1]", "127.0.0.1"]),
)


@settings(max_examples=100, deadline=None)
@given(
    urls=st.lists(
        st.tuples(
            st.sampled_from(["http", "https", "ws", "wss"]),
            _host,
            st.booleans(),
            st.sampled_from([None, 80, 443, 8080]),
        ),
        min_size=1,
        max_size=30,
    ),
    max_size=st.integers(1, 5),
)
def test_lookup_by_url_matches_breaker_for_under_eviction(
    urls: list[tuple[str, str, bool, int | None]], max_size: int
) -> None:
    """Random URLs (case, trailing dots, IPv6, default ports) through a small registry,
    half by URL and half by key: both always give the breaker the registry holds."""
    registry = BreakerRegistry(max_size=max_size)
    for i, (scheme, host, dot, port) in enumerate(urls):
        if dot and not host.startswith("["):
            host += "."
        url = httpx.URL(f"{scheme}://{host}{'' if port is None else f':{port}'}/")
        key = default_key(httpx.Request("GET", url))
        breaker = registry._breaker_for_url(url) if i % 2 else registry.breaker_for(key)
        assert breaker is registry[key]
        assert registry._breaker_for_url(url) is registry.breaker_for(key)
        live = {id(registry[k]) for k in registry}
        assert all(id(entry.breaker) in live for entry in registry._by_url.values())
