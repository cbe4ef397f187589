"""BreakerRegistry: policy matching, the read-only mapping, the size cap, clocks, the global view."""

from __future__ import annotations

import contextlib
import gc
import subprocess
import sys
from collections.abc import Mapping

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
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


def test_a_key_made_by_hand_with_the_root_dot_matches_as_without() -> None:
    """"api.example.com." is "api.example.com" to the policies, with a port or not."""
    registry = BreakerRegistry(policies={"api.example.com:8443": EXACT, "api.example.com": HOST})
    assert registry.config_for("api.example.com.:8443") is EXACT
    assert registry.config_for("API.example.com.") is HOST
    assert registry.config_for("api.example.com.:9000") is HOST  # the bare host's


def test_set_clock_refuses_what_cannot_be_called() -> None:
    """A registry's clock is a callable or None (`time.monotonic`): anything else is a
    TypeError at once, not at the next breaker made."""
    registry = BreakerRegistry()
    with pytest.raises(TypeError, match="clock must be callable"):
        registry.set_clock(42.0)  # type: ignore[arg-type]
    clock = FakeClock(5.0)
    assert registry.set_clock(clock) is None
    assert registry.set_clock(None) is clock


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
        "api.example.com:65536",
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


def test_patterns_take_every_port_from_1_to_65535() -> None:
    """The first and last TCP ports are ports like any other."""
    registry = BreakerRegistry(policies={"api.example.com:1": EXACT, "api.example.com:65535": HOST})
    assert registry.config_for("api.example.com:1") is EXACT
    assert registry.config_for("api.example.com:65535") is HOST


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


def test_cap_judges_an_ended_open_period_as_half_open_unread(clock: FakeClock) -> None:
    """A breaker whose open period has ended is half-open to eviction, as `state` would
    read it, even if nobody read it since: the open one goes, not the one ending first.
    (Nothing here reads `state` before the eviction: a read would move it to HALF_OPEN.)"""
    config = CircuitBreakerConfig(failure_threshold=1, reset_timeout=10.0)
    registry = BreakerRegistry(default=config, max_size=2, clock=clock)
    _open(registry, "ended")
    clock.advance(10.0)  # its period is over: the next request would be a probe
    _open(registry, "open")  # open until t=20
    registry.breaker_for("new")
    assert sorted(registry) == ["ended", "new"]
    assert registry["ended"].state is CircuitState.HALF_OPEN


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
        "bulkhead_rejected_requests": 0,
    }
    rows = {row["name"]: row for row in snap["breakers"]}
    assert set(rows) == {"api.example.com:8443", "other.org"}
    assert rows["api.example.com:8443"]["state"] == "open"
    assert rows["api.example.com:8443"]["metrics"]["failed_requests"] == 1
    assert set(rows["other.org"]) == {"name", "state", "metrics", "bulkhead", "health_score"}
    assert rows["other.org"]["bulkhead"] is None  # no max_concurrent


async def test_transport_breakers_are_in_the_global_view() -> None:
    """A transport's breakers appear in get_all_circuit_breakers() under their key."""
    transport = AsyncCircuitBreakerTransport(httpx.MockTransport(lambda r: httpx.Response(200)))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://global-view.example.com:8443/x")
    everything = get_all_circuit_breakers()
    assert everything["global-view.example.com:8443"] is transport.registry["global-view.example.com:8443"]


# -- forced breakers and eviction (defect 12) ----------------------------------------


def test_forced_open_breaker_is_never_evicted_by_a_half_open_one(clock: FakeClock) -> None:
    """With a forced-open and a half-open breaker filling the registry, the half-open
    one goes: the forcing is what an operator asked for and must hold until reset()."""
    config = CircuitBreakerConfig(failure_threshold=1, reset_timeout=10.0)
    registry = BreakerRegistry(default=config, max_size=2, clock=clock)
    registry.breaker_for("forced").force_open()
    _open(registry, "half")
    clock.advance(10.0)
    assert registry["half"].state is CircuitState.HALF_OPEN
    registry.breaker_for("new")
    assert sorted(registry) == ["forced", "new"]
    assert registry["forced"].state is CircuitState.OPEN


def test_forced_open_breaker_survives_a_flood_of_hosts(clock: FakeClock) -> None:
    """However many hosts pass through, a forced-open breaker stays, still open."""
    registry = BreakerRegistry(max_size=4, clock=clock)
    forced = registry.breaker_for("down.example")
    forced.force_open()
    for i in range(500):
        registry.breaker_for(f"h{i}.example")
    assert registry["down.example"] is forced
    assert forced.state is CircuitState.OPEN
    assert len(registry) == 4


def test_registry_never_imports_monitoring() -> None:
    """The registry sits below `monitoring` (which reads registries): building one and
    taking its snapshot loads neither `monitoring` nor an exporter."""
    code = (
        "import sys\n"
        "from httpx_breaker import BreakerRegistry\n"
        "registry = BreakerRegistry()\n"
        "registry.breaker_for('a.example').force_open()\n"
        "assert registry.snapshot()['summary']['open_breakers'] == 1\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('httpx_breaker.'))\n"
        "assert 'httpx_breaker.monitoring' not in loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_forced_closed_breaker_is_never_evicted(clock: FakeClock) -> None:
    """`force_closed()` holds until `reset()` too: eviction passes over it, even when it
    is the least recently used breaker."""
    registry = BreakerRegistry(max_size=2, clock=clock)
    registry.breaker_for("pinned").force_closed()
    registry.breaker_for("b")
    registry.breaker_for("c")
    assert sorted(registry) == ["c", "pinned"]
    registry["pinned"].reset()  # no longer forced: the least recently used goes next
    registry.breaker_for("d")
    assert sorted(registry) == ["c", "d"]


def test_full_of_forced_breakers_grows_past_max_size_and_warns(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """When every breaker is forced, a new host still gets its breaker: the registry
    grows by one past `max_size` (with a warning) rather than drop a forced one, and
    never by more than the forced breakers need."""
    registry = BreakerRegistry(max_size=2, clock=clock)
    registry.breaker_for("a").force_open()
    registry.breaker_for("b").force_closed()
    with caplog.at_level("WARNING", logger="httpx_breaker"):
        c = registry.breaker_for("c")
    assert sorted(registry) == ["a", "b", "c"]
    assert "grows past max_size=2" in caplog.text
    registry.breaker_for("d")  # c is not forced: it makes room for d
    assert sorted(registry) == ["a", "b", "d"]
    assert "c" not in registry and c.name == "c"
    registry["a"].reset()  # a forced breaker released: the next new host shrinks it back
    registry.breaker_for("e")
    assert sorted(registry) == ["b", "e"]
    registry.breaker_for("f")
    assert sorted(registry) == ["b", "f"]
    assert registry["b"].is_closed() and "b" in registry


def test_a_registry_grown_past_max_size_shrinks_back_once_its_breakers_may_go(
    clock: FakeClock,
) -> None:
    """Forced breakers grow it; once released, each new breaker evicts two until it is
    back at `max_size` (it used to keep the excess for good)."""
    registry = BreakerRegistry(max_size=2, clock=clock)
    for key in ("a", "b", "c"):
        registry.breaker_for(key).force_open()
    registry.breaker_for("d")
    assert len(registry) == 4
    for key in ("a", "b", "c"):
        registry[key].reset()
    registry.breaker_for("e")
    assert len(registry) == 3
    registry.breaker_for("f")
    assert len(registry) == 2
    for i in range(20):
        registry.breaker_for(f"new{i}")
    assert len(registry) == 2


def test_hot_breaker_survives_a_flood_in_a_large_registry() -> None:
    """In a registry larger than one eviction's scan, a breaker used between every new
    host is never the one evicted, wherever it sits in the queue."""
    registry = BreakerRegistry(max_size=300)
    hot = registry.breaker_for("hot.example")
    for i in range(3_000):
        registry.breaker_for(f"cold{i}.example")
        assert registry.breaker_for("hot.example") is hot
    assert len(registry) == 300


def test_eviction_in_a_large_registry_prefers_the_long_unused() -> None:
    """Past the scan size, recently used breakers outlive ones nobody used since."""
    registry = BreakerRegistry(max_size=200)
    for i in range(200):
        registry.breaker_for(f"k{i}")
    recent = [f"k{i}" for i in range(0, 200, 2)]  # every other breaker used again
    for key in recent:
        registry.breaker_for(key)
    for i in range(100):
        registry.breaker_for(f"new{i}")
    assert all(key in registry for key in recent)
    assert len(registry) == 200


def test_uses_at_the_front_of_a_large_registry_do_not_hide_the_idle() -> None:
    """Past the scan size, the breakers used since they took their place do not use up
    the scan: when more than 64 at the front of the queue were used again, the least
    recently used one behind them goes, not the least recent of those used again."""
    registry = BreakerRegistry(max_size=100)
    for i in range(100):
        registry.breaker_for(f"h{i}")
    for i in range(70):  # the 70 at the front, used again: h70 is now the least recent
        registry.breaker_for(f"h{i}")
    registry.breaker_for("new")
    assert sorted({f"h{i}" for i in range(100)} - set(registry)) == ["h70"]
    registry.breaker_for("new2")  # and then the next least recent, still exactly
    assert "h71" not in registry
    assert len(registry) == 100


# -- the eviction rule against a model ---------------------------------------------

OPS = ("use", "use_url", "fail", "advance", "force_open", "force_closed", "reset")


class EvictionModel:
    """The design's rule, written plainly: membership and last use, nothing else."""

    def __init__(self, registry: BreakerRegistry, max_size: int) -> None:
        self.registry = registry
        self.max_size = max_size
        self.last: dict[str, int] = {}
        self.forced: set[str] = set()
        self.tick = 0
        # The most breakers the rule allows: max_size, or more once every candidate was
        # forced (the registry then grows, and shrinks back only as it evicts later).
        self.ceiling = max_size

    def use(self, key: str) -> None:
        if key not in self.last and len(self.last) >= self.max_size:
            self.evict()
        self.tick += 1
        self.last[key] = self.tick

    def evict(self) -> None:
        candidates = [k for k in self.last if k not in self.forced]
        if not candidates:
            self.ceiling = max(self.ceiling, len(self.last) + 1)
            return  # every breaker forced: the registry grows
        states = {k: self.registry[k].state for k in candidates}
        closed = [k for k in candidates if states[k] is CircuitState.CLOSED]
        opened = [k for k in candidates if states[k] is CircuitState.OPEN]
        if closed:
            victim = min(closed, key=self.last.__getitem__)
        elif opened:
            victim = min(opened, key=lambda k: (self.registry[k].retry_after, self.last[k]))
        else:
            victim = min(candidates, key=self.last.__getitem__)
        del self.last[victim]


def _boom() -> None:
    raise RuntimeError("down")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_size=st.integers(1, 6),
    steps=st.lists(
        st.tuples(st.sampled_from(OPS), st.integers(0, 9), st.sampled_from([1.0, 5.0, 12.0])),
        max_size=60,
    ),
)
@example(  # grown past max_size while h1 was forced; still grown after its reset
    max_size=1,
    steps=[("use", 1, 1.0), ("force_open", 1, 1.0), ("use", 0, 1.0), ("reset", 1, 1.0)],
)
def test_small_registry_evicts_exactly_by_the_rule(
    max_size: int, steps: list[tuple[str, int, float]]
) -> None:
    """In a registry of up to 64 breakers, eviction follows the design's rule exactly:
    the least recently used closed breaker; else the open one whose period ends first;
    forced breakers never (checked against a plain model over random histories)."""
    clock = FakeClock()
    registry = BreakerRegistry(
        default=CircuitBreakerConfig(failure_threshold=1, reset_timeout=10.0, half_open_max_requests=1),
        max_size=max_size,
        clock=clock,
    )
    model = EvictionModel(registry, max_size)
    for op, n, seconds in steps:
        key = f"h{n}.example"
        if op == "advance":
            clock.advance(seconds)
        elif op in ("use", "fail"):
            model.use(key)
            breaker = registry.breaker_for(key)
            if op == "fail":
                with contextlib.suppress(RuntimeError, CircuitOpenError):
                    breaker.call(_boom)
        elif op == "use_url":
            model.use(key)
            registry._breaker_for_url(httpx.URL(f"https://{key}/"))
        elif key in registry:  # force_open, force_closed, reset: only on present keys
            getattr(registry[key], op)()
            if op == "reset":
                model.forced.discard(key)
            else:
                model.forced.add(key)
        # Let every breaker whose open period ended read HALF_OPEN, as the next call would.
        for breaker in registry.values():
            _ = breaker.state
        assert sorted(registry) == sorted(model.last)
        assert len(registry) <= model.ceiling
