"""BreakerRegistry: one breaker per key, per-host policies, a size cap; and keys.

Keys: the URL host, plus ``:port`` when the port is not the scheme's default, IPv6
in brackets; never userinfo, path or query. Policies: an exact key, then the bare
host, then the longest ``*.suffix`` wildcard (subdomains only), then the default;
case-insensitive.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import httpx

from ._breaker import CircuitBreaker, _live_breakers
from ._config import CircuitBreakerConfig, ConfigTypeError
from ._state import CircuitState

# How many breakers one eviction looks at, at most: bounded work under the lock.
EVICTION_SCAN = 64

__all__ = ["BreakerRegistry", "default_key", "get_all_circuit_breakers", "normalize_pattern"]


def get_all_circuit_breakers() -> dict[str, CircuitBreaker]:
    """Every live breaker in the process by name, the transports' included.

    Breakers are held weakly: one that nobody uses any more drops out. On a name
    clash the most recently created breaker wins.
    """
    return _live_breakers()


def default_key(request: httpx.Request) -> str:
    """The breaker key of a request: host, plus ``:port`` when it is not the default.

    The host is lower-case ASCII (an internationalised name in its punycode form,
    ``xn--bcher-kva.example``); an IPv6 address is bracketed and compressed
    (``[::1]:8080``). Userinfo, path, query and fragment are never part of the key.
    """
    url = request.url
    # raw_host is the one spelling of a host: lower case, IDNA as punycode. (`url.host`
    # decodes punycode only when it starts the host, so it has two spellings.)
    host = url.raw_host.decode("ascii")
    if ":" in host:
        host = f"[{_canonical_ipv6(host)}]"
    port = url.port
    return host if port is None else f"{host}:{port}"


def _canonical_ipv6(address: str) -> str:
    """One spelling per IPv6 address (httpx keeps ``[2001:DB8:0::1]`` as written)."""
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address.lower()
    mapped = ip.ipv4_mapped
    if mapped is not None:
        # Spelled as RFC 5952 recommends, on every Python (3.13 changed `compressed`
        # for these from "::ffff:7f00:1" to "::ffff:127.0.0.1").
        return f"::ffff:{mapped}"
    return ip.compressed


# Characters no pattern holds: whitespace, or userinfo given by mistake.
_NEVER_IN_PATTERN = frozenset(" \t\r\n@")
# Characters a host[:port] never holds; a pattern with one is an opaque custom key.
_NOT_IN_HOST = frozenset("/\\?#%")


def normalize_pattern(pattern: str) -> str:
    """The canonical form of a policy pattern, as keys are spelled; ValueError if invalid.

    A pattern is a host (``"api.example.com"``, ``"[::1]"``), a host with a port
    (``"api.example.com:8443"``) or a wildcard for subdomains (``"*.example.com"``).
    Hosts are lower-cased, internationalised names take their ASCII (punycode) form
    as keys do, IPv6 addresses are bracketed and compressed. Anything
    else that is not a host (a key of a custom `key` function such as ``"svc:payments"``
    or ``"api.example.com/v2"``) is matched as an exact key, case-insensitively.
    """
    if not isinstance(pattern, str):
        raise ConfigTypeError(f"a policy pattern must be a str, got {pattern!r}")
    what = (
        f"policy pattern {pattern!r} is not valid: use a host such as 'api.example.com', "
        "a host and port such as 'api.example.com:8443', or a wildcard such as "
        "'*.example.com'"
    )
    wildcard = pattern.startswith("*.")
    rest = pattern[2:] if wildcard else pattern
    if not rest or "*" in rest or "://" in rest or not _NEVER_IN_PATTERN.isdisjoint(rest):
        raise ValueError(what)
    if not _NOT_IN_HOST.isdisjoint(rest):
        if wildcard:
            raise ValueError(what)
        return rest.lower()
    port = ""
    if rest.startswith("["):
        end = rest.find("]")
        if end == -1:
            raise ValueError(what)
        host, tail = rest[1:end], rest[end + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise ValueError(what)
            port = tail[1:]
        ipv6 = True
    elif rest.count(":") > 1:
        host, ipv6 = rest, True
    else:
        host, sep, port = rest.partition(":")
        ipv6 = False
        if sep and not (port.isascii() and port.isdigit()):
            if wildcard or not port:
                raise ValueError(what)
            return rest.lower()  # "svc:payments": a custom key, not host:port
    if port:
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{what} (bad port {port!r})")
        if wildcard:
            raise ValueError(f"{what} (a wildcard matches hosts on any port; drop the port)")
    if ipv6:
        if wildcard:
            raise ValueError(what)
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise ValueError(f"{what} ({host!r} is not an IPv6 address)") from None
    else:
        if "" in host.split(".") or "[" in host or "]" in host:
            raise ValueError(what)
        try:
            host = httpx.URL(f"http://{host}/").raw_host.decode("ascii")
        except (httpx.InvalidURL, ValueError) as exc:
            raise ValueError(f"{what} ({exc})") from None
    normalized = f"{host}:{port}" if port else host
    return f"*.{normalized}" if wildcard else normalized


def _bare_host(key: str) -> str:
    """`key` without its ``:port`` (brackets of an IPv6 literal kept)."""
    if key.startswith("["):
        end = key.find("]")
        return key[: end + 1] if end != -1 else key
    head, sep, tail = key.rpartition(":")
    if sep and tail.isdigit():
        return head
    return key


def _check_policies(
    policies: Mapping[str, CircuitBreakerConfig] | None,
) -> dict[str, CircuitBreakerConfig]:
    if policies is None:
        return {}
    if not isinstance(policies, Mapping):
        raise TypeError(f"policies must be a mapping of pattern to CircuitBreakerConfig, got {policies!r}")
    checked: dict[str, CircuitBreakerConfig] = {}
    for pattern, config in policies.items():
        if not isinstance(config, CircuitBreakerConfig):
            raise TypeError(
                f"policies[{pattern!r}] must be a CircuitBreakerConfig, got {config!r}"
            )
        normalized = normalize_pattern(pattern)
        if normalized in checked:
            raise ValueError(
                f"policies has {pattern!r} twice (patterns are case-insensitive; "
                f"both are {normalized!r})"
            )
        checked[normalized] = config
    return checked


class BreakerRegistry(Mapping[str, CircuitBreaker]):
    """A read-only mapping of key to breaker, creating each breaker on first use.

    Args:
        default: the policy for keys no pattern matches (`CircuitBreakerConfig()` if
            omitted).
        policies: pattern -> policy; a pattern is an exact key (``"api.example.com:8443"``),
            a host (``"api.example.com"``) or a wildcard for subdomains (``"*.example.com"``).
        max_size: the most breakers kept. Past it the least-recently-used breaker that
            is neither open nor half-open is dropped; if every one is, the open one whose
            period ends first.
        clock: the clock every breaker here reads (`time.monotonic` by default).
    """

    def __init__(
        self,
        *,
        default: CircuitBreakerConfig | None = None,
        policies: Mapping[str, CircuitBreakerConfig] | None = None,
        max_size: int = 10_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if default is None:
            default = CircuitBreakerConfig()
        elif not isinstance(default, CircuitBreakerConfig):
            raise TypeError(f"default must be a CircuitBreakerConfig, got {default!r}")
        if isinstance(max_size, bool) or not isinstance(max_size, int):
            raise TypeError(f"max_size must be an int, got {max_size!r}")
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self._default = default
        self._policies = _check_policies(policies)
        self._max_size = max_size
        self._clock = clock
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def default(self) -> CircuitBreakerConfig:
        return self._default

    @property
    def policies(self) -> Mapping[str, CircuitBreakerConfig]:
        """The policies, keyed by lower-cased pattern."""
        return MappingProxyType(self._policies)

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def clock(self) -> Callable[[], float] | None:
        return self._clock

    def set_clock(self, clock: Callable[[], float] | None) -> Callable[[], float] | None:
        """Give the breakers made from now on `clock` (None: `time.monotonic`); return
        the previous one. Breakers already made keep theirs (`CircuitBreaker.set_clock`
        swaps one)."""
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        with self._lock:
            old, self._clock = self._clock, clock
        return old

    def config_for(self, key: str) -> CircuitBreakerConfig:
        """The policy for `key`: exact key, bare host, longest ``*.suffix``, default."""
        policies = self._policies
        if not policies:
            return self._default
        k = key.lower()
        config = policies.get(k)
        if config is not None:
            return config
        host = _bare_host(k)
        config = policies.get(host)
        if config is not None:
            return config
        if not host.startswith("["):
            dot = host.find(".")
            while dot != -1:
                config = policies.get("*" + host[dot:])
                if config is not None:
                    return config
                dot = host.find(".", dot + 1)
        return self._default

    def breaker_for(self, key: str, *, policy: str | None = None) -> CircuitBreaker:
        """The breaker for `key`, created on first use.

        With `policy` (a pattern of `policies`), the breaker is a separate one named
        ``"{key}#{policy}"`` that follows that policy: requests that opt into another
        policy do not share failures with the host's main breaker.
        """
        if policy is not None:
            pattern = normalize_pattern(policy)
            config = self._policies.get(pattern)
            if config is None:
                raise ValueError(
                    f"policy {policy!r} is not one of this registry's policies "
                    f"({sorted(self._policies)})"
                )
            key = f"{key}#{pattern}"
        else:
            config = None
        breakers = self._breakers
        breaker = breakers.get(key)
        if breaker is not None:
            try:  # noqa: SIM105 (contextlib.suppress costs more, and this is every request)
                breakers.move_to_end(key)
            except KeyError:  # evicted by another thread just now: still usable
                pass
            return breaker
        with self._lock:
            breaker = breakers.get(key)
            if breaker is None:
                if len(breakers) >= self._max_size:
                    self._evict_one()
                breaker = CircuitBreaker(
                    key, config or self.config_for(key), clock=self._clock
                )
                breakers[key] = breaker
            return breaker

    def _evict_one(self) -> None:
        """Drop the LRU breaker that is neither open nor half-open (lock held).

        Open and half-open breakers met on the way are moved to the recent end, so the
        next eviction starts past them. The walk stops after `EVICTION_SCAN` breakers:
        if all of those are open (or half-open), the one whose open period ends first
        goes. In a registry of up to `EVICTION_SCAN` breakers that is exactly the rule
        "LRU closed breaker, else the soonest-ending open one"; in a larger one it keeps
        a flood of failing hosts from costing a full scan per new host.
        """
        breakers = self._breakers
        soonest: tuple[float, str] | None = None
        for _ in range(min(len(breakers), EVICTION_SCAN)):
            key, breaker = next(iter(breakers.items()))
            if breaker._state is CircuitState.CLOSED:
                del breakers[key]
                return
            until = breaker._open_until if breaker._state is CircuitState.OPEN else math.inf
            if breaker._forced is CircuitState.OPEN:
                until = math.inf
            if soonest is None or until < soonest[0]:
                soonest = (until, key)
            breakers.move_to_end(key)
        if soonest is not None:
            del breakers[soonest[1]]

    def __getitem__(self, key: str) -> CircuitBreaker:
        return self._breakers[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._breakers))

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, key: object) -> bool:
        return key in self._breakers

    def snapshot(self) -> dict[str, Any]:
        """Dashboard data for this registry's breakers (see `httpx_breaker.monitoring`)."""
        from .monitoring import dashboard  # monitoring reads breakers; import on demand

        return dashboard(list(self._breakers.values()))

    def __repr__(self) -> str:
        return f"<BreakerRegistry {len(self)} breakers, max_size={self._max_size}>"
