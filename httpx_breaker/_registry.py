"""BreakerRegistry: one breaker per key, per-host policies, a size cap; and keys.

Keys and patterns are spelled by `_keys` (one spelling per host). Policies: an exact key, then the bare
host, then the longest ``*.suffix`` wildcard (subdomains only), then the default;
case-insensitive.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from ._breaker import CircuitBreaker, _live_breakers
from ._config import CircuitBreakerConfig
from ._dashboard import build_dashboard
from ._keys import bare_host, default_key, normalize_pattern
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
                f"policies has {pattern!r} twice (patterns are case-insensitive and a "
                f"trailing dot is dropped; both are {normalized!r})"
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

    def config_for(self, key: str) -> CircuitBreakerConfig:
        """The policy for `key`: exact key, bare host, longest ``*.suffix``, default."""
        policies = self._policies
        if not policies:
            return self._default
        k = key.lower()
        host = bare_host(k)
        if host.endswith(".") and len(host) > 1:
            # A key made by hand with the root dot: match it as the default key
            # rules would have spelled it.
            k = host[:-1] + k[len(host) :]
            host = host[:-1]
        config = policies.get(k)
        if config is not None:
            return config
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
        return build_dashboard(list(self._breakers.values()))

    def __repr__(self) -> str:
        return f"<BreakerRegistry {len(self)} breakers, max_size={self._max_size}>"
