"""BreakerRegistry: one breaker per key, per-host policies, a size cap, listeners.

Policies: an exact key, then the bare host, then the longest ``*.suffix`` wildcard
(subdomains only), then the default; case-insensitive. Keys and patterns are spelled
by `_keys` (one spelling per host).

Thread safety. One lock guards every change: creating a breaker, evicting one, the
listeners. A lookup that finds its breaker (every request but a host's first) takes no
lock and changes no shared container: it reads a dict and writes its entry's last-use
stamp, a plain attribute. Reads of the whole registry (`values()`, `items()`,
iteration, `snapshot()`) copy it under the lock, so they never meet a half-done
eviction.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, ItemsView, Iterator, Mapping, ValuesView
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from ._breaker import CircuitBreaker, Listener, _call_listener, _live_breakers
from ._config import CircuitBreakerConfig
from ._dashboard import build_dashboard
from ._keys import HTTPX_URL, URLLike, bare_host, default_key, normalize_pattern, url_key
from ._shared import attach
from ._state import BreakerEvent, CircuitState
from ._store import Store

# default_key and normalize_pattern are re-exported for code that imported them from
# here in 0.1; their home is `_keys` (and `httpx_breaker.keys` for default_key).
__all__ = ["BreakerRegistry", "default_key", "get_all_circuit_breakers", "normalize_pattern"]

logger = logging.getLogger("httpx_breaker")

EVICTION_SCAN: Final = 64
"""How many breakers (not counting forced ones) one eviction looks at, at most: bounded
work under the lock, however many of them are open."""

URL_SPELLINGS: Final = 4
"""How many spellings of one key the URL cache keeps (with and without a trailing dot,
the ways an IPv6 address can be written...): the cache stays within this many entries
per breaker, however many ways a client writes one host."""

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN


_Spelling: TypeAlias = "str | tuple[str, int] | tuple[str, bytes, int | None]"
"""A URL as the URL cache knows it. For an `httpx.URL`, whose port is None for its
scheme's default: the host as the str it keeps (`raw_host` is its ASCII encoding), or
``(host, port)``. For another URL type: ``(scheme, raw_host, port)``. The three shapes
never compare equal to one another, so they cannot collide."""


def get_all_circuit_breakers() -> dict[str, CircuitBreaker]:
    """Every live breaker in the process by name, the transports' included.

    Breakers are held weakly: one that nobody uses any more drops out. On a name
    clash the most recently created breaker wins.
    """
    return _live_breakers()


class _Entry:
    """One breaker of a registry, with what eviction needs to know about it."""

    __slots__ = ("breaker", "placed", "stamp", "urls")

    def __init__(self, breaker: CircuitBreaker, stamp: int) -> None:
        self.breaker = breaker
        # When it was last used (written on every lookup, without the lock: a plain
        # attribute store, which no thread can see half done).
        self.stamp = stamp
        # `stamp` when it last took its place at the back of the eviction queue.
        self.placed = stamp
        # Its spellings in the URL cache, removed with it.
        self.urls: tuple[_Spelling, ...] = ()


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
            period ends first. A breaker forced open or closed is never dropped (see
            "Eviction" below).
        clock: the clock every breaker here reads (`time.monotonic` by default).
        store: share every breaker's state with other processes through this store
            (`httpx_breaker.redis.RedisStore`), keyed by the breaker's name: replicas
            that use the same store share each key's state (see docs/fleet.md). The
            registry does not close it.

    Raises:
        ValueError: a malformed pattern, the same pattern twice (case and a trailing
            dot aside), or `max_size` < 1.
        TypeError: an argument of the wrong type.

    One registry can serve several transports (sync, async, httpx2), which then share
    their breakers:

    ```python
    registry = BreakerRegistry(
        default=CircuitBreakerConfig(failure_threshold=5),
        policies={"*.internal": CircuitBreakerConfig(failure_threshold=2)},
        max_size=1_000,
    )
    async_client = httpx.AsyncClient(transport=AsyncCircuitBreakerTransport(registry=registry))
    sync_client = httpx.Client(transport=CircuitBreakerTransport(registry=registry))
    registry.config_for("payments.internal").failure_threshold   # 2
    ```

    Eviction. Making a new breaker in a full registry drops one, chosen among the
    breakers at the front of a queue, up to `EVICTION_SCAN` (64) of them that were not
    used since they took their place there (see below), not counting forced ones:

    - the least recently used (by `breaker_for` and the transports) of those that are
      CLOSED; if none is, the OPEN one whose open period ends first; if none is, the
      least recently used HALF_OPEN one (an OPEN breaker whose period has ended is
      HALF_OPEN here, as `state` reads it, whether or not anybody read it since);
    - a breaker held by `force_open()` or `force_closed()` is never dropped: forcing
      is an operator's decision that holds until `reset()`, and a new breaker in its
      place would forget it. A forced breaker does not count against the 64.
    - a breaker whose bulkhead (`max_concurrent`) has requests in flight or waiting
      is never dropped either: a new breaker for its key would bring a new bulkhead,
      and the host would get twice its limit while the old requests finish. It is
      looked at (like any other) and goes to the back of the queue.

    In a registry of up to 64 unforced breakers, every one is looked at, so the rule
    above is exact. In a larger one it holds among those looked at: breakers that were
    used since they took their place, and open or half-open ones, go to the back as the
    scan passes them, so the front gathers breakers that have gone unused longest. The
    used ones do not count against the 64 (each such look is paid for by a use since
    the last look), so using the breakers at the front never hides an idle one behind
    them. A flood of failing hosts thus costs at most 64 looks per new host, never a
    scan of the whole registry per new host (a burst of uses is paid once: the next
    eviction passes each breaker used since, up to the whole registry, and the ones
    after it do not): where the 64 are all open, the one among them whose period ends
    first goes, even if a closed breaker sits further along.

    When every breaker is forced (or, among the 64 looked at, busy: its bulkhead has
    requests in flight or waiting) and the registry is full, the new breaker is added
    anyway and the registry grows past `max_size` (a WARNING is logged). A request to
    a new host must not fail because an operator forced other hosts, dropping a forced
    breaker would silently undo the forcing, and dropping a busy one would let a new
    breaker for the same host double its limit. The excess is bounded by the forced
    breakers (only your own `force_*()` calls make those) and the busy ones (at most
    the requests in flight), and it shrinks back as they are `reset()` or go idle: while
    past `max_size`, each new breaker evicts two.

    Reading. `values()`, `items()`, iteration, `len`, `in`, `get` and `snapshot()`
    never raise while other threads create and evict breakers: the bulk reads copy
    the registry under its lock. ``registry[key]`` raises `KeyError` for a key that
    is not (or no longer) there, as any mapping does; so can ``dict(registry)``, which
    reads key by key, when a key is evicted midway: use ``dict(registry.items())``.

    Listeners. `add_listener(fn)` calls `fn(event)` for every `BreakerEvent` of every
    breaker in the registry, those made later included.

    Copies. A registry (and so a transport) pickles and deep-copies as its
    configuration: the copy has the same policies, `max_size`, clock and listeners, and
    no breakers, whose state (permits in flight, times on this process's clock) belongs
    to the original. A registry with a `store` raises `TypeError` instead: make the
    store in each process.
    """

    def __init__(
        self,
        *,
        default: CircuitBreakerConfig | None = None,
        policies: Mapping[str, CircuitBreakerConfig] | None = None,
        max_size: int = 10_000,
        clock: Callable[[], float] | None = None,
        store: Store | None = None,
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
        if store is not None and not isinstance(store, Store):
            raise TypeError(
                f"store must be a shared store such as httpx_breaker.redis.RedisStore, "
                f"got {store!r}"
            )
        self._store = store
        self._default = default
        self._policies = _check_policies(policies)
        self._max_size = max_size
        self._clock = clock
        self._lock = threading.Lock()
        # key -> entry: read without the lock, changed under it.
        self._entries: dict[str, _Entry] = {}
        # The same entries in eviction order (front: first to be looked at); only ever
        # touched under the lock.
        self._queue: OrderedDict[str, _Entry] = OrderedDict()
        # A URL's spelling (see `_Spelling`) -> entry, for the default key rules: read
        # without the lock, filled under it, cleared of an entry's spellings with it.
        self._by_url: dict[_Spelling, _Entry] = {}
        # Last-use stamps. `next()` on a count is one C call: atomic under the GIL, and
        # at worst a repeated number (a tie between two uses) on a free-threaded build.
        self._stamps = itertools.count(1)
        self._listeners: tuple[Listener, ...] = ()

    @property
    def default(self) -> CircuitBreakerConfig:
        """The policy for keys no pattern matches."""
        return self._default

    @property
    def policies(self) -> Mapping[str, CircuitBreakerConfig]:
        """The policies, keyed by normalised pattern (lower case, no trailing dot)."""
        return MappingProxyType(self._policies)

    @property
    def max_size(self) -> int:
        """The most breakers kept (see "Eviction" above)."""
        return self._max_size

    @property
    def clock(self) -> Callable[[], float] | None:
        """The clock given to breakers made from now on; None for `time.monotonic`."""
        return self._clock

    @property
    def store(self) -> Store | None:
        """The store the breakers share their state through, or None."""
        return self._store

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

    # -- lookups (every request) --------------------------------------------------

    def breaker_for(self, key: str, *, policy: str | None = None) -> CircuitBreaker:
        """The breaker for `key`, created on first use.

        With `policy` (a pattern of `policies`), the breaker is a separate one named
        ``"{key}#{policy}"`` that follows that policy: requests that opt into another
        policy do not share failures with the host's main breaker.
        """
        config = None
        if policy is not None:
            pattern = normalize_pattern(policy) if policy else ""
            config = self._policies.get(pattern)
            if config is None:
                raise ValueError(
                    f"policy {policy!r} is not one of this registry's policies "
                    f"({sorted(self._policies)})"
                )
            key = f"{key}#{pattern}"
        entry = self._entries.get(key)
        if entry is not None:
            entry.stamp = next(self._stamps)
            return entry.breaker
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._add(key, config)
            else:
                entry.stamp = next(self._stamps)
            return entry.breaker

    def _breaker_for_url(self, url: URLLike) -> CircuitBreaker:
        """``breaker_for(default_key(request))`` for a request to `url`, exactly, and
        without building the key string: the transports' lookup when they use the
        default key function and the request names no policy.

        Contract: for every `url` (an `httpx.URL`, or any object with its `scheme`,
        `raw_host` and `port`), this returns the breaker that
        ``breaker_for(url_key(url))`` would return at that moment, creates it when that
        would (with the same policy and listeners), and counts as a use for eviction
        just the same. Calls of the two may be mixed freely; they share the breakers.

        How: a cache maps the URL's spelling (`_Spelling`: its host and port, plus its
        scheme for URL types other than httpx's, whose port httpx already leaves out
        when it is the scheme's default) to the breaker's entry. A hit reads the cache
        and stamps the entry, like `breaker_for`, and takes no lock. A miss computes the
        key with `url_key` and fills the cache under the registry's lock. Every spelling
        of a breaker leaves the cache when the breaker is evicted, and at most
        `URL_SPELLINGS` are kept per breaker (further spellings take the miss path,
        which is still exact), so the cache stays within the registry's cap. As with
        `breaker_for`, a breaker that another thread evicts at that very moment may
        still be returned: it works, it is just no longer in the registry.
        """
        if type(url) is HTTPX_URL:
            # httpx's own URL: its parts are plain tuple fields (the properties cost
            # three times as much, and `raw_host` encodes the host anew), read by
            # position (scheme, userinfo, host, port, ...): a NamedTuple's field names
            # are descriptors the interpreter does not specialise. Its port is None for
            # the scheme's default, so host and port decide the key; the host str is
            # the same object at every call, its hash computed once.
            ref = url._uri_reference
            port = ref[3]
            spelling: _Spelling = ref[2] if port is None else (ref[2], port)
        else:
            spelling = (url.scheme, url.raw_host, url.port)
        entry = self._by_url.get(spelling)
        if entry is not None:
            entry.stamp = next(self._stamps)
            return entry.breaker
        return self._add_url(url, spelling)

    def _add_url(self, url: URLLike, spelling: _Spelling) -> CircuitBreaker:
        key = url_key(url)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._add(key, None)
            else:
                entry.stamp = next(self._stamps)
            if len(entry.urls) < URL_SPELLINGS and spelling not in self._by_url:
                entry.urls = (*entry.urls, spelling)
                self._by_url[spelling] = entry
            return entry.breaker

    # -- changes (under the lock) -----------------------------------------------

    def _add(self, key: str, config: CircuitBreakerConfig | None) -> _Entry:
        """Make the breaker for `key`, evicting one first if full (lock held); one more
        while the registry is still past `max_size`, so that it shrinks back."""
        if (
            len(self._entries) >= self._max_size
            and self._evict_one()
            and len(self._entries) >= self._max_size
        ):
            self._evict_one()
        breaker = CircuitBreaker(key, config or self.config_for(key), clock=self._clock)
        if self._listeners:
            breaker.add_listener(self._dispatch)
        if self._store is not None:
            attach(breaker, self._store)
        entry = _Entry(breaker, next(self._stamps))
        self._entries[key] = entry
        self._queue[key] = entry
        return entry

    def _evict_one(self) -> bool:
        """Drop one breaker by the rule in the class docstring (lock held); False if
        none may go."""
        queue = self._queue
        sample: list[tuple[str, _Entry]] = []
        forced: list[str] = []
        unused = 0
        for key, entry in queue.items():
            if entry.breaker._forced is not None:
                forced.append(key)
                continue
            sample.append((key, entry))
            # A breaker used since it took its place is a candidate too (the rule goes
            # by last use), but it does not count against the 64: it goes to the back
            # below, so each such look is paid for by a use since the last one, and a
            # burst of uses of the breakers at the front cannot hide the ones behind.
            if entry.stamp == entry.placed:
                unused += 1
                if unused == EVICTION_SCAN:
                    break
        for key in forced:
            queue.move_to_end(key)  # so that the next scan starts past them
        victim = _choose_victim(sample)
        if victim is None:
            logger.warning(
                "circuit breaker registry: every breaker it looked at (of %d) is forced "
                "open or closed, or has requests in flight; it grows past max_size=%d "
                "rather than drop one",
                len(self._entries),
                self._max_size,
            )
            for key, entry in sample:  # busy: let the next scan look at others first
                entry.placed = entry.stamp
                queue.move_to_end(key)
            return False
        for key, entry in sample:
            if key == victim:
                continue
            stamp = entry.stamp
            if stamp != entry.placed or entry.breaker._state is not _CLOSED or _busy(entry.breaker):
                entry.placed = stamp
                queue.move_to_end(key)
        self._drop(victim)
        return True

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        del self._queue[key]
        side = entry.breaker._fleet
        if side is not None:  # it may still serve a request in flight, on its own
            entry.breaker._attach_fleet(None)
            side.detach()
        by_url = self._by_url
        for spelling in entry.urls:
            del by_url[spelling]

    # -- listeners ----------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(event)` for every `BreakerEvent` of every breaker in the
        registry: those it holds now and those it makes later.

        The same contract as `CircuitBreaker.add_listener`: listeners run outside every
        lock, in the order they were added; an exception in one is logged and never
        reaches the request. A breaker with a listener leaves the engine's fast path for
        successes (each call builds an event); a registry without listeners costs
        nothing per request.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        with self._lock:
            attach = not self._listeners
            self._listeners = (*self._listeners, listener)
            if attach:
                for entry in self._entries.values():
                    entry.breaker.add_listener(self._dispatch)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling `listener`; a listener that was never added is ignored.

        When the last one goes, the registry's breakers are back on the fast path.
        """
        with self._lock:
            before = self._listeners
            # Equality, not identity: `obj.method` is a new bound method at every access.
            self._listeners = tuple(x for x in before if x != listener)
            if before and not self._listeners:
                for entry in self._entries.values():
                    entry.breaker.remove_listener(self._dispatch)

    def _dispatch(self, event: BreakerEvent) -> None:
        """The one listener the registry adds to each breaker: fans out, never raises."""
        for listener in self._listeners:
            _call_listener(listener, event)

    # -- the mapping ----------------------------------------------------------------

    def _copy(self) -> dict[str, CircuitBreaker]:
        with self._lock:
            return {key: entry.breaker for key, entry in self._entries.items()}

    def __getitem__(self, key: str) -> CircuitBreaker:
        return self._entries[key].breaker

    def get(self, key: str, default: Any = None) -> Any:
        """The breaker for `key` if the registry holds one, else `default` (never creates)."""
        entry = self._entries.get(key)
        return default if entry is None else entry.breaker

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            keys = list(self._entries)
        return iter(keys)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def values(self) -> ValuesView[CircuitBreaker]:
        """The breakers, as of one instant."""
        return self._copy().values()

    def items(self) -> ItemsView[str, CircuitBreaker]:
        """``(key, breaker)`` pairs, as of one instant."""
        return self._copy().items()

    def snapshot(self) -> dict[str, Any]:
        """Dashboard data for this registry's breakers (the shape of
        `httpx_breaker.monitoring.dashboard`)."""
        return build_dashboard(self._copy().values())

    def __repr__(self) -> str:
        return f"<BreakerRegistry {len(self)} breakers, max_size={self._max_size}>"

    # -- copies ---------------------------------------------------------------------

    def __reduce__(self) -> tuple[Callable[..., BreakerRegistry], tuple[Any, ...]]:
        """Pickled and copied as its configuration: the copy starts with no breakers.

        A breaker's state belongs to its process: permits in flight (a copy would wait
        for closes that never reach it, and stick half-open) and times on this process's
        clock. So a client pickled for a worker process (as sanic-testing's is) gets
        breakers of its own there, as a process started anew would, and a transport that
        pickles or deep-copies without the breaker still does with it. A registry that
        shares state through a store is not copied: each process makes its own store.

        Raises:
            TypeError: the registry has a `store`.
        """
        if self._store is not None:
            raise TypeError(
                "a BreakerRegistry with a store cannot be pickled or copied: make the "
                "store, and the registry or transport over it, in each process"
            )
        return _from_configuration, (
            type(self),
            self._default,
            self._policies,
            self._max_size,
            self._clock,
            self._listeners,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> BreakerRegistry:
        # Built from the same objects, not copies of them: the policies are frozen, and
        # the clock and listeners are the caller's (a test advances its own clock).
        rebuild, args = self.__reduce__()
        return rebuild(*args)


def _from_configuration(
    cls: type[BreakerRegistry],
    default: CircuitBreakerConfig,
    policies: Mapping[str, CircuitBreakerConfig],
    max_size: int,
    clock: Callable[[], float] | None,
    listeners: tuple[Listener, ...],
) -> BreakerRegistry:
    """A registry without breakers, configured as a copied one was (`__reduce__`)."""
    registry = cls(default=default, policies=policies, max_size=max_size, clock=clock)
    registry._listeners = tuple(listeners)  # its breakers get them as they are made
    return registry


def _busy(breaker: CircuitBreaker) -> bool:
    """Whether the breaker's bulkhead has requests in flight or waiting."""
    bulkhead = breaker._bulkhead
    return bulkhead is not None and (bulkhead.in_use > 0 or bulkhead.waiting > 0)


def _choose_victim(sample: list[tuple[str, _Entry]]) -> str | None:
    """The key to evict among `sample` (none of them forced), or None if there is none
    that may go (every one busy, see `_busy`)."""
    sample = [(key, entry) for key, entry in sample if not _busy(entry.breaker)]
    closed = [(entry.stamp, key) for key, entry in sample if entry.breaker._state is _CLOSED]
    if closed:
        return min(closed)[1]
    # Open now: an OPEN breaker whose period has ended reads HALF_OPEN (`state` moves it
    # when next read), and is judged as one, whether or not anybody has read it since.
    opened = [
        (breaker._open_until, entry.stamp, key)
        for key, entry in sample
        if (breaker := entry.breaker)._state is _OPEN and breaker._clock() < breaker._open_until
    ]
    if opened:
        return min(opened)[2]
    rest = [(entry.stamp, key) for key, entry in sample]
    return min(rest)[1] if rest else None
