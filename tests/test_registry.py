"""BreakerRegistry: policy matching, the read-only mapping, the size cap, clocks, the global view."""

from __future__ import annotations

import gc
from collections.abc import Mapping

import httpx
import pytest

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitState,
    get_all_circuit_breakers,
)
from httpx_breaker._breaker import FAILURE

from .conftest import FakeClock

pytestmark = pytest.mark.anyio

EXACT = CircuitBreakerConfig(failure_threshold=1)
HOST = CircuitBreakerConfig(failure_threshold=2)
WIDE = CircuitBreakerConfig(failure_threshold=3)
NARROW = CircuitBreakerConfig(failure_threshold=4)
DEFAULT = CircuitBreakerConfig(failure_threshold=9)


@pytest.fixture
def registry() -> BreakerRegistry:
    return BreakerRegistry(
        default=DEFAULT,
        policies={
            "api.example.com:8443": EXACT,
            "api.example.com": HOST,
            "*.example.com": WIDE,
            "*.eu.example.com": NARROW,
        },
    )


# -- policies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "config"),
    [
        ("api.example.com:8443", EXACT),  # exact key first
        ("api.example.com", HOST),
        ("api.example.com:9000", HOST),  # then the bare host
        ("web.example.com", WIDE),  # then a wildcard
        ("a.b.example.com:81", WIDE),
        ("x.eu.example.com", NARROW),  # the longest wildcard wins
        ("eu.example.com", WIDE),  # *.eu.example.com matches subdomains only
        ("example.com", DEFAULT),  # *.example.com does not match example.com itself
        ("badexample.com", DEFAULT),
        ("other.org", DEFAULT),
    ],
)
def test_policy_precedence(registry: BreakerRegistry, key: str, config: CircuitBreakerConfig) -> None:
    """Exact key, then bare host, then the longest ``*.suffix`` (subdomains only), then default."""
    assert registry.config_for(key) is config
    assert registry.breaker_for(key).config is config


def test_policy_matching_is_case_insensitive() -> None:
    """Patterns and keys match whatever their case."""
    registry = BreakerRegistry(policies={"API.Example.COM": HOST, "*.EXAMPLE.org": WIDE})
    assert registry.config_for("api.example.com") is HOST
    assert registry.config_for("Api.EXAMPLE.com") is HOST
    assert registry.config_for("www.example.ORG") is WIDE
    assert set(registry.policies) == {"api.example.com", "*.example.org"}


def test_idna_and_ipv6_patterns_match_request_keys() -> None:
    """Punycode and IPv6 patterns are spelled as keys are, so they match real requests."""
    registry = BreakerRegistry(
        policies={"*.XN--bcher-kva.example": WIDE, "[0:0::1]:8080": EXACT, "::2": HOST}
    )
    transport = CircuitBreakerTransport(httpx.MockTransport(lambda r: httpx.Response(200)), registry=registry)
    with httpx.Client(transport=transport) as client:
        r1 = client.get("https://shop.bücher.example/")
        r2 = client.get("http://[::1]:8080/")
        r3 = client.get("http://[::2]:9/")
    assert r1.extensions["circuit_breaker"]["breaker"].config is WIDE
    assert r2.extensions["circuit_breaker"]["breaker"].config is EXACT
    assert r3.extensions["circuit_breaker"]["breaker"].config is HOST


def test_custom_key_patterns_are_exact_keys() -> None:
    """A pattern that is not a host (a custom key) matches that exact key."""
    registry = BreakerRegistry(policies={"svc:Payments": EXACT, "api.example.com/v2": HOST})
    assert registry.config_for("svc:payments") is EXACT
    assert registry.config_for("api.example.com/v2") is HOST
    assert registry.config_for("api.example.com") is registry.default


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "*",
        "*.",
        "*example.com",
        "api.*.com",
        "*.*.com",
        "https://api.example.com",
        "user@api.example.com",
        "api example.com",
        "api..example.com",
        ".example.com",
        "api.example.com:",
        "api.example.com:0",
        "api.example.com:70000",
        "*.example.com:443",
        "*.example.com/v1",
        "[::1",
        "[not-v6]",
    ],
)
def test_invalid_patterns_raise_value_error(pattern: str) -> None:
    """A malformed pattern is refused with a ValueError that quotes it."""
    with pytest.raises(ValueError, match="not valid"):
        BreakerRegistry(policies={pattern: HOST})


def test_patterns_equal_up_to_case_are_refused() -> None:
    """Two patterns that are the same once normalised are a configuration mistake."""
    with pytest.raises(ValueError, match="twice"):
        BreakerRegistry(policies={"api.example.com": HOST, "API.example.com": WIDE})


def test_policy_values_must_be_configs() -> None:
    """A policy that is not a CircuitBreakerConfig is a TypeError naming the pattern."""
    with pytest.raises(TypeError, match=r"policies\['api.example.com'\]"):
        BreakerRegistry(policies={"api.example.com": {"failure_threshold": 2}})  # type: ignore[dict-item]


def test_registry_with_default_or_policies_is_refused() -> None:
    """A transport given `registry=` and `default` or `policies` raises ValueError."""
    registry = BreakerRegistry()
    with pytest.raises(ValueError, match="registry cannot be combined"):
        AsyncCircuitBreakerTransport(registry=registry, default=DEFAULT)
    with pytest.raises(ValueError, match="registry cannot be combined"):
        CircuitBreakerTransport(registry=registry, policies={"a.com": HOST})
    with pytest.raises(TypeError, match="must be a BreakerRegistry"):
        AsyncCircuitBreakerTransport(registry={})  # type: ignore[arg-type]


@pytest.mark.parametrize(("size", "error"), [(0, ValueError), (-1, ValueError), ("10", TypeError), (True, TypeError)])
def test_max_size_is_validated(size: object, error: type[Exception]) -> None:
    """max_size must be a positive int."""
    with pytest.raises(error, match="max_size"):
        BreakerRegistry(max_size=size)  # type: ignore[arg-type]


def test_per_request_policy_uses_its_own_breaker(registry: BreakerRegistry) -> None:
    """Naming a policy gives a separate breaker ``key#pattern`` with that policy."""
    main = registry.breaker_for("other.org")
    special = registry.breaker_for("other.org", policy="*.EU.example.com")
    assert special is not main
    assert special.name == "other.org#*.eu.example.com"
    assert special.config is NARROW
    with pytest.raises(ValueError, match="not one of this registry's policies"):
        registry.breaker_for("other.org", policy="nowhere.org")


# -- the mapping --------------------------------------------------------------------


def test_registry_is_a_read_only_mapping(registry: BreakerRegistry) -> None:
    """get, [key], iteration, len and `in` work; nothing can be assigned or deleted."""
    assert isinstance(registry, Mapping)
    assert len(registry) == 0
    assert registry.get("a.com") is None
    with pytest.raises(KeyError):
        registry["a.com"]
    assert "a.com" not in registry
    assert len(registry) == 0  # reading never creates a breaker
    a = registry.breaker_for("a.com")
    b = registry.breaker_for("b.com")
    assert registry.breaker_for("a.com") is a
    assert registry["a.com"] is a and registry.get("b.com") is b
    assert "a.com" in registry and 42 not in registry
    assert sorted(registry) == ["a.com", "b.com"]
    assert dict(registry.items()) == {"a.com": a, "b.com": b}
    assert len(registry) == 2
    with pytest.raises(TypeError):
        registry["c.com"] = a  # type: ignore[index]
    with pytest.raises(TypeError):
        del registry["a.com"]  # type: ignore[attr-defined]


def test_iteration_survives_new_breakers(registry: BreakerRegistry) -> None:
    """Creating breakers while iterating over the registry does not raise."""
    for name in ("a.com", "b.com"):
        registry.breaker_for(name)
    for key in registry:
        registry.breaker_for(key + ".x")
    assert len(registry) == 4


# -- the size cap -------------------------------------------------------------------


def _open(registry: BreakerRegistry, key: str) -> None:
    breaker = registry.breaker_for(key)
    for _ in range(breaker.config.failure_threshold):
        breaker._record(breaker._acquire(), FAILURE, 0.0, breaker.clock())
    assert breaker.state is CircuitState.OPEN


def test_cap_evicts_least_recently_used(clock: FakeClock) -> None:
    """Past max_size the least recently used breaker goes."""
    registry = BreakerRegistry(max_size=3, clock=clock)
    for key in ("a", "b", "c"):
        registry.breaker_for(key)
    registry.breaker_for("a")  # a is now the most recently used
    registry.breaker_for("d")
    assert sorted(registry) == ["a", "c", "d"]


def test_cap_keeps_open_and_half_open_breakers(clock: FakeClock) -> None:
    """Open and half-open breakers survive eviction while a closed one exists."""
    config = CircuitBreakerConfig(failure_threshold=1, reset_timeout=10.0)
    registry = BreakerRegistry(default=config, max_size=3, clock=clock)
    _open(registry, "half")
    clock.advance(10.0)
    assert registry["half"].state is CircuitState.HALF_OPEN
    _open(registry, "open")
    registry.breaker_for("closed")
    registry.breaker_for("new")
    assert sorted(registry) == ["half", "new", "open"]


def test_cap_with_every_breaker_open_evicts_the_one_ending_first(clock: FakeClock) -> None:
    """If every breaker is open, the one whose open period ends first is evicted."""
    registry = BreakerRegistry(
        default=CircuitBreakerConfig(failure_threshold=1, reset_timeout=50.0),
        policies={
            "short": CircuitBreakerConfig(failure_threshold=1, reset_timeout=10.0),
            "mid": CircuitBreakerConfig(failure_threshold=1, reset_timeout=30.0),
        },
        max_size=3,
        clock=clock,
    )
    for key in ("long", "short", "mid"):
        _open(registry, key)
    registry["long"].force_open()  # forced open never ends: never the first to go
    registry.breaker_for("new")
    assert sorted(registry) == ["long", "mid", "new"]


def test_memory_is_bounded_with_many_hosts() -> None:
    """20,000 distinct hosts through a registry capped at 100 keep 100 breakers."""
    registry = BreakerRegistry(max_size=100)
    for i in range(20_000):
        registry.breaker_for(f"host{i}.example.com")
        assert len(registry) <= 100
    assert len(registry) == 100
    assert "host19999.example.com" in registry and "host0.example.com" not in registry


def test_transport_memory_is_bounded_with_many_hosts() -> None:
    """Requests to 2,000 hosts through a capped transport leave only the cap in memory."""
    transport = CircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)), registry=BreakerRegistry(max_size=100)
    )
    with httpx.Client(transport=transport) as client:
        for i in range(2_000):
            client.get(f"http://bounded{i}.example.com/")
    assert len(transport.registry) == 100
    gc.collect()
    live = [name for name in get_all_circuit_breakers() if name.startswith("bounded")]
    assert len(live) == 100


# -- clocks, snapshots, the process-wide view ---------------------------------------


async def test_injected_clock_reaches_transport_breakers(clock: FakeClock) -> None:
    """A registry's clock drives the open period of its transport's breakers."""
    registry = BreakerRegistry(
        default=CircuitBreakerConfig(failure_threshold=1, reset_timeout=30.0), clock=clock
    )
    transport = AsyncCircuitBreakerTransport(
        httpx.MockTransport(lambda r: httpx.Response(503)), registry=registry
    )
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://api.example.com/")
        breaker = registry["api.example.com"]
        assert breaker.clock is clock
        assert breaker.state is CircuitState.OPEN
        assert breaker.retry_after == 30.0
        clock.advance(29.0)
        assert breaker.state is CircuitState.OPEN
        clock.advance(1.0)
        assert breaker.state is CircuitState.HALF_OPEN


def test_snapshot_shape(registry: BreakerRegistry) -> None:
    """snapshot() gives a summary by state and one row per breaker of this registry only."""
    _open(registry, "api.example.com:8443")
    registry.breaker_for("other.org")
    snap = registry.snapshot()
    assert snap["summary"] == {
        "total_breakers": 2,
        "open_breakers": 1,
        "half_open_breakers": 0,
        "closed_breakers": 1,
    }
    rows = {row["name"]: row for row in snap["breakers"]}
    assert set(rows) == {"api.example.com:8443", "other.org"}
    assert rows["api.example.com:8443"]["state"] == "open"
    assert rows["api.example.com:8443"]["metrics"]["failed_requests"] == 1
    assert set(rows["other.org"]) == {"name", "state", "metrics", "health_score"}


async def test_transport_breakers_are_in_the_global_view() -> None:
    """A transport's breakers appear in get_all_circuit_breakers() under their key."""
    transport = AsyncCircuitBreakerTransport(httpx.MockTransport(lambda r: httpx.Response(200)))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://global-view.example.com:8443/x")
    everything = get_all_circuit_breakers()
    assert everything["global-view.example.com:8443"] is transport.registry["global-view.example.com:8443"]
