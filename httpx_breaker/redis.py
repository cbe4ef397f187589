"""Shared breaker state across a fleet of replicas, through Redis or Valkey: `RedisStore`.

Needs the extra: ``pip install 'httpx-breaker[redis]'`` (redis-py; it speaks to Valkey
too):

```python
from httpx_breaker.redis import RedisStore

store = RedisStore.from_url("redis://127.0.0.1:6379/0", namespace="checkout")
...
store.close()
```

How it works, in one paragraph: decisions stay local, transitions travel. Each breaker
decides every request from its own state; when it opens, half-opens or reopens, the
store's own thread runs one small Lua script on the server (atomic, on the server's
clock) and the script publishes the result on the namespace's channel; every other
replica applies it to its breaker as a normal transition. Half-open probes are leased
from the server, so the probe budget is fleet-wide, and leases expire. A periodic read
(and one after every reconnect) catches anything a message missed. No Redis command
ever runs on a request's thread or event loop: if Redis is down or frozen, the
breakers work as if there were no store, and resynchronise when it is back.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import logging
import math
import os
import random
import select
import socket
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "httpx_breaker.redis needs redis-py; install it with "
        "pip install 'httpx-breaker[redis]'"
    ) from exc

from . import _redis_scripts as scripts
from ._config import CircuitBreakerConfig, ConfigTypeError
from ._state import CircuitState
from ._store import (
    Lease,
    LocalTransition,
    LocalView,
    ProbeOutcome,
    SharedBreaker,
    StoreHealth,
    register_live_store,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RedisStore", "StoreHealth"]

logger = logging.getLogger("httpx_breaker.redis")
logger.addHandler(logging.NullHandler())

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN

_STATE_CODES: Final = {"c": _CLOSED, "o": _OPEN, "h": _HALF_OPEN}
_CODE_OF: Final = {_CLOSED: "c", _OPEN: "o", _HALF_OPEN: "h"}
_OUTCOME_CODES: Final = {
    ProbeOutcome.SUCCESS: "s",
    ProbeOutcome.SLOW_SUCCESS: "w",
    ProbeOutcome.FAILURE: "f",
    ProbeOutcome.IGNORED: "i",
}
_SCHEMES: Final = {
    "redis": "redis",
    "rediss": "rediss",
    "unix": "unix",
    "valkey": "redis",
    "valkeys": "rediss",
}

# An open period the server is asked for is never longer than this (a year): an
# uncapped backoff multiplier must not overflow the server's arithmetic.
_MAX_PERIOD_MS: Final = 365 * 24 * 3600 * 1000
# Two views of an open period closer than this are the same period (transit time).
_SAME_PERIOD: Final = 0.025
# A refused half-open request keeps asking for a lease this long.
_DEMAND_WINDOW: Final = 1.0
# A lease nobody took within this long goes back to the fleet.
_LEASE_HOLD: Final = 1.0
# While the probe budget is taken, ask again at most this often.
_LEASE_POLL: Final = 0.1
# Keys read per round trip while reconciling.
_PEEK_BATCH: Final = 200
# The first and the longest wait between reconnection attempts.
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 5.0
# How often `share_counts` sends the counts it gathered.
_COUNT_EVERY: Final = 0.1
# Buckets per window for `share_counts`.
_COUNT_BUCKETS: Final = 10

_tokens = itertools.count(1)

# Every store in the process, for the fork handler below.
_stores: weakref.WeakSet[RedisStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A store made before fork() (gunicorn --preload, multiprocessing's fork) arrives in
    # the child without its thread, with its parent's sockets. Give each a fresh start:
    # otherwise its links would look connected and half-open requests would wait for
    # leases that nobody fetches.
    for store in list(_stores):
        store._start_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)

# What a Redis call can raise when the server is down, frozen or restarting.
_LOST: Final = (redis.RedisError, OSError)
# How much later than its timeout a command may still run on the server: room for the
# error of the measured clock offset.
_LATE_MARGIN: Final = 0.5


class _Link:
    """One key shared through a `RedisStore` (the `StoreLink` of the seam).

    The request-path methods only append to deques, set plain attributes and poke the
    store's wake-up socket: nothing here waits or does I/O. Everything else is the
    store's thread's.
    """

    __slots__ = (
        "__weakref__",
        "_breaker",
        "_counts",
        "_counts_lock",
        "_store",
        "acked",
        "changed_at",
        "config",
        "demand_queued",
        "detached",
        "fleet_epoch",
        "fleet_state",
        "key",
        "leases",
        "own",
        "redis_key",
        "ref",
        "retry_at",
        "sent",
        "token",
        "want_at",
    )

    def __init__(
        self, store: RedisStore, key: str, breaker: SharedBreaker, config: CircuitBreakerConfig
    ) -> None:
        self._store = store
        self._breaker = weakref.ref(breaker)
        self.key = key
        self.config = config
        self.ref = store._ref(key)
        self.redis_key = f"{store._prefix}k:{self.ref}"
        self.leases: collections.deque[Lease] = collections.deque()
        self._counts = [0, 0]  # failures, outcomes
        self._counts_lock = threading.Lock()
        self.detached = False
        # Written by the request path:
        self.token = 0  # the last local transition published
        self.changed_at = 0.0  # when (store clock)
        self.own = False  # the breaker's state is its own decision, not the fleet's
        self.want_at = -math.inf  # the last half-open request refused for want of a lease
        self.demand_queued = False
        # Written by the store's thread:
        self.acked = 0  # the last local transition the server has answered
        # The last local transition taken off the queue (sent, or dropped while
        # disconnected): one newer than this is still queued, and will be sent.
        self.sent = 0
        self.fleet_epoch = 0
        self.fleet_state: str | None = None
        self.retry_at: float | None = None

    # -- the seam: called on the request path -----------------------------------

    @property
    def active(self) -> bool:
        return self._store._connected and not self.detached

    @property
    def counts(self) -> bool:
        return self._store._share_counts

    def published(self, transition: LocalTransition) -> None:
        self.token = next(_tokens)
        self.changed_at = self._store._clock()
        self.own = True
        self.leases.clear()
        self._store._submit(("t", self, transition, self.token))

    def extended(self, retry_after: float) -> None:
        self._store._submit(("x", self, retry_after, self.token))

    def take_lease(self) -> Lease | None:
        leases = self.leases
        now = self._store._clock()
        while leases:
            try:
                lease = leases.popleft()
            except IndexError:  # another request took the last one just now
                break
            if lease.usable_until > now:
                return lease
            self._store._submit(("r", self, lease, ProbeOutcome.IGNORED))
        self.want_at = now
        if not self.demand_queued:
            self.demand_queued = True
            self._store._submit(("d", self))
        return None

    def probe_done(self, lease: Lease, outcome: ProbeOutcome) -> None:
        self._store._submit(("r", self, lease, outcome))

    def counted(self, failed: bool) -> None:
        if not self._store._share_counts:
            return
        with self._counts_lock:
            counts = self._counts
            counts[1] += 1
            if failed:
                counts[0] += 1
        store = self._store
        store._counting.add(self)
        if not store._counts_armed:  # the first count of a batch wakes the store
            store._counts_armed = True
            store._wake()

    def detach(self) -> None:
        if not self.detached:
            self.detached = True
            self.leases.clear()
            self._store._submit(("u", self))

    # -- the store's thread ------------------------------------------------------

    def view(self) -> LocalView | None:
        """The breaker's state, or None if it is gone or cannot tell."""
        breaker = self._breaker()
        if breaker is None:
            return None
        try:
            return breaker.shared_view()
        except Exception:
            logger.exception("reading breaker %r for the shared store failed", self.key)
            return None

    def enter(self, state: CircuitState, open_for: float | None) -> None:
        """Hand the fleet's `state` to the breaker; an error there is logged, not raised."""
        breaker = self._breaker()
        if breaker is None:
            return
        self.leases.clear()
        self.own = False
        try:
            breaker.apply_shared(state, open_for)
        except Exception:
            logger.exception("applying a shared transition to breaker %r failed", self.key)

    def take_counts(self) -> tuple[int, int]:
        with self._counts_lock:
            counts = self._counts
            failed, total = counts
            counts[0] = counts[1] = 0
        return failed, total

    def __repr__(self) -> str:
        return f"<StoreLink {self.ref}>"


class RedisStore:
    """Shares breaker state between replicas through a Redis or Valkey server.

    Build it with `RedisStore.from_url()`; hand it to `BreakerRegistry(store=...)` or a
    transport's `store=`; `close()` it when the process is done with it.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS,
            ``unix:///path/to/socket[?db=N]``; ``valkey://`` and ``valkeys://`` are
            accepted as spellings of the first two.
        namespace: replicas with the same server and namespace share state; other
            namespaces on that server are separate fleets. Non-empty, no whitespace.
        timeout: seconds one Redis command may take on the store's thread before the
            server counts as unreachable (connecting included). Requests never wait
            on it.
        reconcile_interval: seconds between full reads of every shared key (a safety
            net under pub/sub; there is always one right after connecting).
        lease_ttl: seconds a half-open probe lease lasts. A probe that answers later
            does not count, and a replica that dies holding one delays its round by at
            most this long.
        ttl: seconds a key outlives its last change (past any open period). Closed
            keys, and keys nobody touches, disappear after it.
        share_counts: also add every replica's outcomes in CLOSED into fleet-wide
            counts (sent in batches, every 0.1 s), so that the fleet opens when its
            failure rate over `window_duration` reaches `failure_rate_threshold` with
            at least `minimum_requests` outcomes, even when no single replica sees
            enough to open.
        readable_keys: name keys in Redis by the breaker key (percent-encoded) instead
            of a digest. Off by default: a breaker key is a host name, and host names
            are not Redis's business.

    Raises:
        ValueError: a malformed URL, an empty or invalid namespace, or a bad option.
            An unreachable server is not an error: the store works locally and
            connects in the background.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        timeout: float = 0.5,
        reconcile_interval: float = 10.0,
        lease_ttl: float = 10.0,
        ttl: float = 600.0,
        share_counts: bool = False,
        readable_keys: bool = False,
    ) -> None:
        self._display_url, self._secrets, connect_url = _check_url(url)
        _check_namespace(namespace)
        self._timeout = _check_seconds("timeout", timeout)
        self._reconcile_interval = _check_seconds("reconcile_interval", reconcile_interval)
        self._lease_ttl = _check_seconds("lease_ttl", lease_ttl)
        self._ttl = _check_seconds("ttl", ttl)
        if not isinstance(share_counts, bool):
            raise ConfigTypeError(f"share_counts must be a bool, got {share_counts!r}")
        if not isinstance(readable_keys, bool):
            raise ConfigTypeError(f"readable_keys must be a bool, got {readable_keys!r}")
        self._namespace = namespace
        self._share_counts = share_counts
        self._readable_keys = readable_keys
        self._prefix = f"httpx-breaker:{namespace}:"
        self._channel = f"{self._prefix}events"
        self._origin = os.urandom(6).hex()
        self._clock: Callable[[], float] = time.monotonic
        try:
            self._client = redis.Redis.from_url(
                connect_url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                # One try per command: the store retries on its own schedule, with
                # backoff, and never holds anything while it waits.
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                retry_on_error=[],
                health_check_interval=0,
                protocol=2,
                client_name="httpx-breaker",
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"url {self._display_url!r} is not a valid Redis URL: {self._redact(exc)}"
            ) from None
        self._scripts = {
            name: self._client.register_script(source)
            for name, source in (
                ("trip", scripts.TRIP),
                ("half_open", scripts.HALF_OPEN),
                ("lease", scripts.LEASE),
                ("result", scripts.RESULT),
                ("push", scripts.PUSH),
                ("peek", scripts.PEEK),
                ("count", scripts.COUNT),
            )
        }
        # ref -> the links of that key: usually one, more when several registries of the
        # process share this store. Replaced, never changed in place (read without a lock).
        self._links: dict[str, tuple[_Link, ...]] = {}
        self._links_lock = threading.Lock()
        self._ops: collections.deque[tuple[Any, ...]] = collections.deque()
        self._counting: set[_Link] = set()
        self._counts_armed = False
        self._holding: set[_Link] = set()
        self._retrying: set[_Link] = set()
        self._pubsub: Any = None
        self._connected = False
        self._closing = False
        self._state = "connecting"
        self._since = self._clock()
        self._last_error: str | None = None
        self._reconnects = 0
        self._lag: float | None = None
        self._dropped = 0
        self._messages = 0
        self._offset = 0.0  # server wall clock minus ours, seconds
        self._next_reconcile = math.inf
        self._next_count = math.inf
        self._start()
        _stores.add(self)
        register_live_store(self)

    def _start(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._thread = threading.Thread(
            target=self._run, name=f"httpx-breaker-redis-{self._namespace}", daemon=True
        )
        self._thread.start()

    def _start_in_child(self) -> None:
        """After fork(): a new identity, new connections, a new thread (the parent's stay)."""
        if self._closing:
            return
        self._connected = False
        self._pubsub = None  # the parent's socket: dropped, never closed from here
        self._ops.clear()
        self._holding.clear()
        self._retrying.clear()
        self._origin = os.urandom(6).hex()
        self._set_state("connecting")
        # Another thread of the parent may have held a lock at the fork: in the child it
        # would stay held for good. Fresh locks.
        self._links_lock = threading.Lock()
        for link in self._all_links():
            link._counts_lock = threading.Lock()
            link.leases.clear()
            link.demand_queued = False
        self._discard_counts()  # the parent's: the parent sends them
        self._start()

    @classmethod
    def from_url(cls, url: str, *, namespace: str, **options: Any) -> RedisStore:
        """A store for the server at `url` (see the class for `options`)."""
        return cls(url, namespace=namespace, **options)

    # -- what it is ----------------------------------------------------------------

    @property
    def namespace(self) -> str:
        """The fleet this store belongs to on its server (the `namespace` argument)."""
        return self._namespace

    @property
    def server(self) -> str:
        """The server's URL without credentials (as logs, health and exporters name it)."""
        return self._display_url

    @property
    def connected(self) -> bool:
        """True while transitions are shared; False while breakers are local-only."""
        return self._connected

    @property
    def health(self) -> StoreHealth:
        """A snapshot of the connection and the sync (see `StoreHealth`)."""
        return StoreHealth(
            connected=self._connected,
            state=self._state,
            since=self._clock() - self._since,
            last_error=self._last_error,
            reconnects=self._reconnects,
            lag=self._lag,
            keys=len(self._all_links()),
            queued=len(self._ops),
            dropped=self._dropped,
            messages=self._messages,
        )

    def metrics(self) -> dict[str, float]:
        """Numbers for exporters: connection state, sync lag, counters."""
        health = self.health
        return {
            "connected": 1.0 if health.connected else 0.0,
            "lag_seconds": health.lag if health.lag is not None else math.nan,
            "reconnects": float(health.reconnects),
            "keys": float(health.keys),
            "queued": float(health.queued),
            "dropped": float(health.dropped),
            "messages": float(health.messages),
        }

    def __repr__(self) -> str:
        return (
            f"<RedisStore {self._display_url} namespace={self._namespace!r} {self._state}>"
        )

    # -- the seam ----------------------------------------------------------------

    def attach(
        self, key: str, breaker: SharedBreaker, config: CircuitBreakerConfig
    ) -> _Link:
        """Share `key`'s state through `breaker` (held weakly: keep it alive)."""
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {key!r}")
        if not isinstance(config, CircuitBreakerConfig):
            raise TypeError(f"config must be a CircuitBreakerConfig, got {config!r}")
        link = _Link(self, key, breaker, config)
        with self._links_lock:
            self._links[link.ref] = (*self._links.get(link.ref, ()), link)
        self._submit(("a", link))
        return link

    def close(self) -> None:
        """Stop the store's thread and drop its connections; breakers go on locally."""
        if self._closing:
            return
        self._closing = True
        self._connected = False
        self._wake()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5 * self._timeout + 1.0)
        with self._links_lock:
            for link in self._all_links():
                link.detached = True
                link.leases.clear()
        self._set_state("closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the request path's side -----------------------------------------------------

    def _submit(self, op: tuple[Any, ...]) -> None:
        if self._closing:
            return
        self._ops.append(op)
        self._wake()

    def _wake(self) -> None:
        # The flag is cleared by the store's thread before it reads the queue, so an
        # op appended after that read always finds it clear and writes.
        if not self._wake_pending:
            self._wake_pending = True
            try:  # noqa: SIM105 (contextlib.suppress costs more, and requests call this)
                self._wake_w.send(b"\0")
            except OSError:  # full (it is awake anyway) or closed (it is stopping)
                pass

    # -- naming ---------------------------------------------------------------------

    def _all_links(self) -> list[_Link]:
        return [link for links in list(self._links.values()) for link in links]

    def _ref(self, key: str) -> str:
        """How Redis knows `key`: a digest, or the key itself if readable names were asked."""
        if self._readable_keys:
            return urllib.parse.quote(key, safe="")
        data = f"{self._namespace}\0{key}".encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    def _redact(self, exc: BaseException | str) -> str:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- the store's thread -----------------------------------------------------------

    def _run(self) -> None:
        backoff = _BACKOFF_FIRST
        while not self._closing:
            if not self._connected:
                try:
                    self._connect()
                except Exception as exc:  # noqa: BLE001 - anything: stay local, retry later
                    # The error first: whoever sees `connected` go False sees why.
                    self._failed(exc)
                    self._disconnect()
                    self._pause(random.uniform(backoff / 2, backoff))
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
                backoff = _BACKOFF_FIRST
            try:
                self._serve()
            except _LOST as exc:
                self._failed(exc)
                self._disconnect()
            except Exception as exc:  # a bug of ours must not kill the thread
                logger.exception("shared store %s: unexpected error", self._display_url)
                self._failed(exc)  # health says disconnected, as it is until the reconnect
                self._disconnect()
                self._pause(_BACKOFF_FIRST)
        self._disconnect()
        self._set_state("closed")  # also when close() stopped waiting for this thread
        self._wake_r.close()
        self._wake_w.close()

    def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if woken (close); drop the work that arrives meanwhile."""
        try:
            select.select([self._wake_r], [], [], seconds)
        except (OSError, ValueError):
            return
        self._drain_wake()
        self._drop_ops()

    def _drain_wake(self) -> None:
        self._wake_pending = False
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _connect(self) -> None:
        client = self._client
        client.ping()
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        self._pubsub = pubsub
        pubsub.subscribe(self._channel)
        deadline = self._clock() + self._timeout
        while True:  # the subscription stands once confirmed: no message is lost after
            message = pubsub.get_message(timeout=max(0.0, deadline - self._clock()))
            if message is not None and message.get("type") == "subscribe":
                break
            if self._clock() >= deadline:
                raise redis.TimeoutError("no confirmation of the subscription")
        self._measure_offset()
        # Work queued while disconnected is settled by the reconcile instead; work
        # queued from here on is sent as usual, after it.
        self._drop_ops()
        # Outcomes counted while disconnected are old news to the fleet's window (it
        # would open on failures from minutes ago): the local breakers judged them.
        self._discard_counts()
        self._reconcile()
        if self._closing:  # close() gave up waiting for this thread: stay closed
            return
        was = self._state
        self._connected = True
        if was == "disconnected":
            self._reconnects += 1
            logger.info(
                "shared store %s is back after %.1f s; resynchronised",
                self._display_url,
                self._clock() - self._since,
                extra={"store": self._display_url, "namespace": self._namespace},
            )
        self._set_state("connected")
        self._last_error = None
        self._next_count = self._clock() + _COUNT_EVERY

    def _disconnect(self) -> None:
        self._connected = False
        pubsub, self._pubsub = self._pubsub, None
        # Closing a broken connection may raise anything; it is being dropped anyway.
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()
        with contextlib.suppress(Exception):
            self._client.connection_pool.disconnect()
        for link in self._holding:
            link.leases.clear()
        self._holding.clear()
        self._retrying.clear()

    def _failed(self, exc: BaseException) -> None:
        self._last_error = self._redact(exc)
        if self._state in ("connected", "connecting") and not self._closing:
            first = self._state == "connecting"
            self._set_state("disconnected")
            logger.warning(
                "shared store %s %s (%s); breakers work locally until it is back",
                self._display_url,
                "is unreachable" if first else "lost",
                self._last_error,
                extra={"store": self._display_url, "namespace": self._namespace},
            )

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._since = self._clock()

    def _drop_ops(self) -> None:
        """Discard queued work while disconnected; the reconcile on reconnect settles it."""
        ops = self._ops
        while ops:
            op = ops.popleft()
            kind = op[0]
            if kind in ("t", "x"):
                self._dropped += 1
                if kind == "t":  # the reconcile after the reconnect pushes it instead
                    op[1].sent = op[3]
            elif kind == "d":
                op[1].demand_queued = False
            elif kind == "u":
                self._forget(op[1])

    def _serve(self) -> None:
        """One turn: messages, queued work, timers, then wait for more."""
        self._read_messages()
        self._run_ops()
        now = self._clock()
        if now >= self._next_reconcile:
            self._measure_offset()
            self._reconcile()
        if self._counting and now >= self._next_count:
            self._send_counts()
            self._next_count = now + _COUNT_EVERY
        wake_at = self._run_lease_timers(now)
        wake_at = min(wake_at, self._next_reconcile)
        if self._counting:
            wake_at = min(wake_at, self._next_count)
        self._wait(max(0.0, wake_at - self._clock()))

    def _wait(self, timeout: float) -> None:
        if self._ops:
            return
        readers: list[Any] = [self._wake_r]
        fd = self._pubsub_socket()
        if fd is not None:
            readers.append(fd)
        else:  # no socket to watch (an unusual redis-py): look for messages often
            timeout = min(timeout, 0.02)
        select.select(readers, [], [], timeout)
        self._drain_wake()

    def _pubsub_socket(self) -> Any:
        pubsub = self._pubsub
        connection = getattr(pubsub, "connection", None)
        sock = getattr(connection, "_sock", None)
        return sock if sock is not None and sock.fileno() >= 0 else None

    # -- messages ------------------------------------------------------------------------

    def _read_messages(self) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return
        while True:
            message = pubsub.get_message(timeout=0.0)
            if message is None:
                return
            if message.get("type") != "message":
                continue
            data = message.get("data")
            if isinstance(data, bytes):
                self._heard(data.decode("ascii", "replace"))

    def _heard(self, text: str) -> None:
        parts = text.split("|")
        if len(parts) != 7 or parts[0] != "1":
            return
        _, ref, epoch_text, code, left_text, _cause, origin = parts
        try:
            epoch, left = int(epoch_text), int(left_text)
        except ValueError:
            return
        state = _STATE_CODES.get(code)
        if state is None:
            return
        if origin != self._origin:
            self._messages += 1
            self._lag = max(0.0, time.time() + self._offset - epoch / 1e6)
        for link in self._links.get(ref, ()):
            if link.detached or epoch <= link.fleet_epoch:
                continue
            link.fleet_epoch, link.fleet_state = epoch, code
            if link.token != link.acked:
                continue  # a local change on its way: the server's answer settles it
            # A link's own transition never gets here: the server's answer to it (read
            # before any message) already raised the link's epoch to the message's.
            self._apply(link, code, left / 1000)

    # -- queued work ---------------------------------------------------------------------

    def _run_ops(self) -> None:
        ops = self._ops
        attached: list[_Link] = []
        for _ in range(len(ops)):
            try:
                op = ops.popleft()
            except IndexError:
                break
            kind, link = op[0], op[1]
            if kind == "a":
                # A breaker made after its key opened elsewhere learns it now, not at
                # the next reconcile. Read in one round trip with the others.
                attached.append(link)
                continue
            if kind == "u":
                self._forget(link)
                continue
            if link.detached:
                if kind == "d":
                    link.demand_queued = False
                continue
            if kind == "t":
                link.sent = op[3]
                self._send_transition(link, op[2], op[3])
            elif kind == "x":
                self._send_floor(link, op[2], op[3])
            elif kind == "d":
                link.demand_queued = False
                self._fetch_lease(link)
            elif kind == "r":
                self._send_result(link, op[2], op[3])
        for start in range(0, len(attached), _PEEK_BATCH):
            batch = attached[start : start + _PEEK_BATCH]
            for link, reply in zip(batch, self._peek(batch), strict=True):
                self._settle(link, _decode(reply))

    def _forget(self, link: _Link) -> None:
        with self._links_lock:
            rest = tuple(x for x in self._links.get(link.ref, ()) if x is not link)
            if rest:
                self._links[link.ref] = rest
            else:
                self._links.pop(link.ref, None)
        self._holding.discard(link)
        self._retrying.discard(link)
        self._counting.discard(link)

    def _call(self, name: str, link: _Link, *args: Any) -> list[Any]:
        """Run one script on `link`'s key: EVALSHA, reloaded after a restart or flush."""
        ttl_ms = int(self._ttl * 1000)
        head: list[Any] = [self._channel, link.ref, self._origin, ttl_ms, ttl_ms]
        # Past our timeout (and a margin for the clocks) the server must not run it: we
        # will have given up on the answer, and a frozen server that resumes would run
        # it on its own clock (a stale trip would reopen a fleet that has recovered).
        too_late = int((time.time() + self._offset + self._timeout + _LATE_MARGIN) * 1000)
        reply = _decode(self._scripts[name](keys=[link.redis_key], args=[*head, *args, too_late]))
        if reply[3] == "late":  # our clocks disagree now: measure again on the reconnect
            raise redis.TimeoutError("the server ran a command after its timeout")
        return reply

    def _period_args(self, link: _Link, floor: float | None) -> tuple[Any, ...]:
        config = link.config
        cap = config.max_reset_timeout
        cap_ms = _MAX_PERIOD_MS if cap is None else min(_MAX_PERIOD_MS, int(cap * 1000))
        jitter = config.jitter * random.random() if config.jitter else 0.0
        return (
            int(config.reset_timeout * 1000),
            repr(float(config.reset_timeout_multiplier)),
            cap_ms,
            repr(jitter),
            int(min(max(floor or 0.0, 0.0), config.max_retry_after) * 1000),
        )

    def _send_transition(self, link: _Link, transition: LocalTransition, token: int) -> None:
        new, old = transition.new, transition.old
        if new is _OPEN and old is _CLOSED:
            floor = transition.retry_after if link.config.respect_retry_after else None
            reply = self._call("trip", link, transition.cause, *self._period_args(link, floor))
        elif new is _HALF_OPEN:
            reply = self._call("half_open", link)
            if reply[3] == "missing":
                link.acked = max(link.acked, token)
                return
        elif link.fleet_state == _CODE_OF[new] and token == link.token:
            # A leased probe's result already moved the fleet where this replica went.
            link.acked = max(link.acked, token)
            return
        else:
            pushed = self._push(link, self._clock() - link.changed_at)
            if pushed is None:
                link.acked = max(link.acked, token)
                return
            reply = pushed
        self._answered(link, reply, token)

    def _send_floor(self, link: _Link, retry_after: float, token: int) -> None:
        if not link.config.respect_retry_after:
            return
        reply = self._call("trip", link, "retry_after", *self._period_args(link, retry_after))
        self._answered(link, reply, token, ack=False)

    def _push(self, link: _Link, age: float) -> list[Any] | None:
        """Offer the breaker's state to the fleet; the newer of the two wins."""
        view = link.view()
        if view is None or view.forced:
            return None
        left = view.open_for if view.state is _OPEN and view.open_for is not None else 0.0
        return self._call(
            "push",
            link,
            link.fleet_epoch,  # the fleet's state this replica last knew
            _CODE_OF[view.state],
            int(min(left, _MAX_PERIOD_MS / 1000) * 1000),
            view.failed_rounds,
            int(max(age, 0.0) * 1000),
        )

    def _answered(self, link: _Link, reply: list[Any], token: int, *, ack: bool = True) -> None:
        """Take the server's answer to this replica's own work on `link`."""
        code, epoch, left = reply[0], int(reply[1]), int(reply[2])
        if code == "-":
            if ack:
                link.acked = max(link.acked, token)
            return
        if epoch >= link.fleet_epoch:
            link.fleet_epoch, link.fleet_state = epoch, code
        if token != link.token:
            return  # the breaker moved on since: its newer transition is on its way
        if ack:
            link.acked = max(link.acked, token)
        self._apply(link, code, left / 1000)

    def _apply(self, link: _Link, code: str, left: float) -> None:
        """Bring the breaker to the fleet's state, if it is not there already."""
        view = link.view()
        if view is None or view.forced:
            return
        state = _STATE_CODES[code]
        if state is _OPEN and left <= 0.0 and view.state is _HALF_OPEN:
            return  # the fleet's period has ended too: half-open in effect
        if state is _OPEN:
            if (
                view.state is _OPEN
                and view.open_for is not None
                and abs(view.open_for - left) <= _SAME_PERIOD
            ):
                return
            link.enter(_OPEN, left)
        elif state is not view.state:
            link.enter(state, None)

    # -- leases ---------------------------------------------------------------------------

    def _fetch_lease(self, link: _Link) -> None:
        if link.leases:
            return
        view = link.view()
        if view is None or view.forced or view.state is not _HALF_OPEN:
            return
        asked = self._clock()
        reply = self._call(
            "lease",
            link,
            int(self._lease_ttl * 1000),
            link.config.half_open_max_requests,
            view.failed_rounds,
        )
        verdict = reply[3]
        code, epoch = reply[0], int(reply[1])
        if epoch >= link.fleet_epoch:
            link.fleet_epoch, link.fleet_state = epoch, code
        if verdict == "granted":
            ttl = int(reply[5]) / 1000
            link.leases.append(
                Lease(
                    id=int(reply[4]),
                    epoch=epoch,
                    usable_until=asked + min(_LEASE_HOLD, ttl),
                )
            )
            self._holding.add(link)
            self._retrying.discard(link)
            link.retry_at = None
        elif verdict == "full":
            wait = int(reply[4]) / 1000
            link.retry_at = self._clock() + max(0.001, min(wait, _LEASE_POLL))
            self._retrying.add(link)
        else:  # "wait" (the fleet's period has not ended) or "closed": follow the fleet
            self._retrying.discard(link)
            link.retry_at = None
            if link.token == link.acked:
                self._apply(link, code, int(reply[2]) / 1000)

    def _send_result(self, link: _Link, lease: Lease, outcome: ProbeOutcome) -> None:
        config = link.config
        slow_rate = config.slow_call_rate_threshold if config.slow_call_duration is not None else -1
        reply = self._call(
            "result",
            link,
            lease.id,
            lease.epoch,
            _OUTCOME_CODES[outcome],
            config.half_open_max_requests,
            repr(float(slow_rate)),
            *self._period_args(link, None),
        )
        code, epoch = reply[0], int(reply[1])
        if epoch >= link.fleet_epoch:
            link.fleet_epoch, link.fleet_state = epoch, code
        if reply[3] in ("reopened", "closed") and link.token == link.acked:
            self._apply(link, code, int(reply[2]) / 1000)
        if outcome is ProbeOutcome.IGNORED and self._clock() - link.want_at < _DEMAND_WINDOW:
            self._fetch_lease(link)  # a slot came free and someone is waiting for one

    def _run_lease_timers(self, now: float) -> float:
        """Return unused leases, ask again where the budget was full; the next due time."""
        wake_at = math.inf
        for link in list(self._holding):
            # Requests take leases from the left at any time (`take_lease`): every read
            # of the head may find the deque emptier than the last one did.
            leases = link.leases
            while True:
                try:
                    head = leases[0]
                except IndexError:
                    self._holding.discard(link)
                    break
                if head.usable_until > now:
                    wake_at = min(wake_at, head.usable_until)
                    break
                try:
                    lease = leases.popleft()
                except IndexError:
                    continue  # taken just now: look again (the except above ends it)
                if lease.usable_until > now:  # a request took the expired head first
                    leases.appendleft(lease)
                    continue
                if not link.detached:
                    self._send_result(link, lease, ProbeOutcome.IGNORED)
        for link in list(self._retrying):
            if link.detached or now - link.want_at >= _DEMAND_WINDOW:
                self._retrying.discard(link)
                link.retry_at = None
            elif link.retry_at is not None and now >= link.retry_at:
                self._retrying.discard(link)
                link.retry_at = None
                self._fetch_lease(link)
                # Full again (the next ask) or granted (the hold): a new due time either way.
                if link.retry_at is not None:
                    wake_at = min(wake_at, link.retry_at)
                with contextlib.suppress(IndexError):  # none granted, or already taken
                    wake_at = min(wake_at, link.leases[0].usable_until)
            elif link.retry_at is not None:
                wake_at = min(wake_at, link.retry_at)
        return wake_at

    # -- share_counts ----------------------------------------------------------------------

    def _discard_counts(self) -> None:
        self._counts_armed = False
        links = list(self._counting)
        self._counting.difference_update(links)
        for link in links:
            link.take_counts()

    def _send_counts(self) -> None:
        self._counts_armed = False
        links = list(self._counting)
        self._counting.difference_update(links)
        for link in links:
            failed, total = link.take_counts()
            if not total or link.detached:
                continue
            config = link.config
            window_ms = int(config.window_duration * 1000)
            reply = self._call(
                "count",
                link,
                failed,
                total,
                window_ms,
                _COUNT_BUCKETS,
                config.effective_minimum_requests,
                repr(float(config.failure_rate_threshold)),
                *self._period_args(link, None),
            )
            code, epoch = reply[0], int(reply[1])
            if reply[3] == "opened" or (code != "c" and epoch > link.fleet_epoch):
                link.fleet_epoch, link.fleet_state = epoch, code
                if link.token == link.acked:
                    self._apply(link, code, int(reply[2]) / 1000)

    # -- reconciling -------------------------------------------------------------------------

    def _measure_offset(self) -> None:
        before = time.time()
        seconds, micros = self._client.time()
        after = time.time()
        self._offset = seconds + micros / 1e6 - (before + after) / 2

    def _reconcile(self) -> None:
        """Read every shared key and settle each difference: the newer state wins."""
        self._next_reconcile = self._clock() + self._reconcile_interval * random.uniform(0.8, 1.2)
        links = []
        for link in self._all_links():
            if link._breaker() is None:  # dropped without detach(): forget it
                link.detached = True
                self._forget(link)
            elif not link.detached:
                links.append(link)
        for start in range(0, len(links), _PEEK_BATCH):
            batch = links[start : start + _PEEK_BATCH]
            replies = self._peek(batch)
            for link, reply in zip(batch, replies, strict=True):
                self._settle(link, _decode(reply))

    def _peek(self, links: Iterable[_Link]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        script = self._scripts["peek"]
        ttl_ms = int(self._ttl * 1000)
        for link in links:
            script(
                keys=[link.redis_key],
                args=[self._channel, link.ref, self._origin, ttl_ms, ttl_ms, 0],  # reads only
                client=pipe,
            )
        return list(pipe.execute())

    def _settle(self, link: _Link, reply: list[Any]) -> None:
        if link.detached:
            return
        code, epoch, left, age = reply[0], int(reply[1]), int(reply[2]), int(reply[4])
        token = link.token
        view = link.view()
        if view is None or view.forced:
            return
        local_age = self._clock() - link.changed_at
        if token != link.sent:
            # A local change still queued: its own script settles it (a trip keeps an
            # open fleet's period: no double trip), and this reading predates it. A push
            # now would offer the change as newer than the fleet's open and restart it.
            return
        if token != link.acked:  # a local change the fleet has not answered
            if code == "-" or age / 1000 > local_age:
                answer = self._push(link, local_age)
                if answer is not None:
                    self._answered(link, answer, token)
                return
            link.acked = max(link.acked, token)
            if epoch >= link.fleet_epoch:
                link.fleet_epoch, link.fleet_state = epoch, code
            self._apply(link, code, left / 1000)
            return
        if code == "-":
            if link.own and view.state is not _CLOSED:
                answer = self._push(link, local_age)
                if answer is not None:
                    self._answered(link, answer, token)
            return
        if epoch > link.fleet_epoch:
            link.fleet_epoch, link.fleet_state = epoch, code
            self._apply(link, code, left / 1000)


def _decode(reply: Any) -> list[Any]:
    if not isinstance(reply, list):
        raise redis.ResponseError("unexpected reply from a breaker script")
    return [item.decode("ascii") if isinstance(item, bytes) else item for item in reply]


def _check_url(url: object) -> tuple[str, tuple[str, ...], str]:
    """(the URL without credentials, the secrets in it, the URL redis-py is given)."""
    if not isinstance(url, str):
        raise ConfigTypeError(f"url must be a str, got {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    # redis-py also takes the password from the query (`?password=`), as unix:// URLs
    # must give it.
    asked = urllib.parse.parse_qs(parts.query).get("password", [])
    secrets = tuple(
        s
        for s in (
            parts.password,
            urllib.parse.unquote(parts.password or ""),
            parts.username if parts.password else None,
            *asked,
            *(urllib.parse.quote(a, safe="") for a in asked),
        )
        if s
    )
    host = parts.hostname or ""
    netloc = host if ":" not in host else f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
        bad_port = True
    else:
        bad_port = False
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    # Spelt out: `urlunsplit` drops the "//" of a URL with no host (unix:///path).
    display = f"{parts.scheme}://{netloc}{parts.path}"
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(
            f"url {display!r} is not a Redis URL: use redis://host:port/db, rediss:// "
            "(TLS) or unix:///path/to/socket (valkey:// and valkeys:// work too)"
        )
    if bad_port:
        raise ValueError(f"url {display!r} has a port that is not a number from 1 to 65535")
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"url {display!r} names no socket path")
    else:
        if not host:
            raise ValueError(f"url {display!r} names no host")
        path = parts.path.strip("/")
        if path and not (path.isascii() and path.isdigit()):
            raise ValueError(f"url {display!r}: the database must be a number, got {path!r}")
    # The URL as given, but for the scheme (valkey:// is redis:// to redis-py); not
    # rebuilt by `urlunsplit`, which would turn unix:///path into unix:/path. The
    # scheme ends at the first colon (`urlsplit` may have stripped leading spaces).
    connect = scheme + url[url.index(":") :]
    return display, secrets, connect


def _check_namespace(namespace: object) -> None:
    if not isinstance(namespace, str):
        raise ConfigTypeError(f"namespace must be a str, got {type(namespace).__name__}")
    if not namespace:
        raise ValueError("namespace must not be empty: replicas of one service share one")
    if len(namespace) > 200 or not namespace.isprintable() or any(c.isspace() for c in namespace):
        raise ValueError(
            f"namespace must be at most 200 printable characters without spaces, "
            f"got {namespace!r}"
        )


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{name} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{name} must be > 0 seconds and finite, got {value!r}")
    return seconds
