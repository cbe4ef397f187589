# Generated from httpx_breaker/_transport.py by scripts/gen_httpx2.py: do not edit.
# Change the source, or a rule in the script, and run `python scripts/gen_httpx2.py`.
"""AsyncCircuitBreakerTransport and CircuitBreakerTransport: a breaker per host.

Both share one synchronous core (`_Core`): map a request to its key and breaker, ask
for a permit (and, with `max_concurrent`, a bulkhead slot) before any I/O, and turn
what came back into one outcome for the breaker. The response body is wrapped so that
the outcome is recorded when the body is closed (an error while it streams reaches the
classifier; a caller that stops reading early is not an error), and a response that is
dropped unclosed hands its permit back when it is garbage-collected. A bulkhead slot
is held until the request ends the same way: its body closed, an error, a
cancellation, or the collection of an unread response.

The transports are otherwise transparent: they change nothing httpx2 users rely on
(streams, the wrapped transport's lifecycle, its timeouts, its extensions) except that a
request to an open host is refused before any I/O.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx2

from . import _errors as httpx2_errors

from .._breaker import FAILURE, IGNORED, SUCCESS, CircuitBreaker, outcome_of
from .._bulkhead import Bulkhead
from ._classify import (
    DEFAULT_FAILURE_STATUSES,
    Classifier,
    default_classifier,
    from_cache,
    reads_body,
)
from .._config import CircuitBreakerConfig
from .._deadline import cancel_scope, scope_now, sweeper_for
from .._errors import CircuitOpenError, CircuitTimeoutError, RequestRejected
from ._keys import default_key
from .._registry import BreakerRegistry
from .._retry_after import parse_retry_after
from .._state import CircuitState
from .._store import Store

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["AsyncCircuitBreakerTransport", "CircuitBreakerTransport", "parse_retry_after"]

logger = logging.getLogger("httpx_breaker")

EXTENSION = "circuit_breaker"
_OPTIONS = frozenset({"bypass", "policy", "key"})
_CLOSED = CircuitState.CLOSED
_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
_new = object.__new__

BODY_KEPT = 1 << 20
"""How much of a body (bytes, as received, and again once decoded) the transports keep
for a classifier that may read it: a body read whole within this reaches the
classifier readable."""


def _check_transport(transport: object, base: type, method: str) -> None:
    """Refuse what httpx2 could not drive through `method`, as a `TypeError` now rather
    than an `AttributeError` at the first request.

    httpx2 itself duck-types a client's transport (it calls `handle_request` or
    `handle_async_request`, nothing more), and so do we: litestar's `TestClientTransport`
    is a plain class. A transport of the wrong kind is refused even when it has a method
    of that name: a sync one given to the async wrapper, or a `BaseTransport` of the
    other library of the family (its requests are of another type). The message then
    names the wrapper that takes it.
    """
    # `base` and the family's bases are read off the modules now, and a test may have
    # patched one with a mock (google-genai's tests patch `AsyncBaseTransport`): only
    # classes are compared, as httpx2, which compares none, would take the transport.
    if isinstance(base, type) and isinstance(transport, base):
        return
    bases = _family_bases()
    misfit = next((name for cls, name in bases.items() if isinstance(transport, cls)), None)
    if (
        isinstance(transport, type)  # the class rather than an instance
        or not callable(getattr(transport, method, None))
        or misfit is not None
    ):
        kind = "AsyncBaseTransport" if method == "handle_async_request" else "BaseTransport"
        hint = "" if misfit is None else f", an {misfit}: {_wrapper_for(misfit)} takes it"
        raise TypeError(
            f"transport must be an httpx2.{kind} (or have a {method} method), "
            f"got {transport!r}{hint}"
        )


def _family_bases() -> dict[type, str]:
    """The base transport classes of both libraries of the family, of those imported,
    each with its public name ("httpx2.AsyncBaseTransport").

    Compared by identity, never by `__module__`: an SDK may rewrite that (openai sets
    it to "openai" on the httpx2 classes it re-exports). The family's name is read off
    the module rather than spelled, so that the generated twin does the same.
    """
    family = httpx2.__name__.rstrip("0123456789")
    found: dict[type, str] = {}
    # httpx2 first: after `httpx2.alias_httpx()`, "httpx2" names httpx2's module too.
    for name in (family + "2", family):
        module = sys.modules.get(name)
        if module is not None:
            for attr in ("BaseTransport", "AsyncBaseTransport"):
                cls = getattr(module, attr, None)
                if isinstance(cls, type):  # not a test's mock of it
                    found.setdefault(cls, f"{name}.{attr}")
    return found


def _wrapper_for(base_name: str) -> str:
    """Our wrapper for transports of the base named `base_name` ("httpx2.BaseTransport"
    gives "httpx_breaker.httpx2.CircuitBreakerTransport")."""
    library, _, attr = base_name.partition(".")
    module = "httpx_breaker" + (".httpx2" if library.endswith("2") else "")
    wrapper = ("Async" if attr.startswith("Async") else "") + "CircuitBreakerTransport"
    return f"{module}.{wrapper}"


def _misdirected(request: object, prefix: str) -> TypeError:
    """The error for a request of the other library of the family that reached this
    transport (an httpx2 client given httpx2's transport, or the reverse): the wrapped
    transport refused it with a bare `AssertionError`; this names the transport to use.

    Built on that error's way out only, so that the request path pays nothing for it.
    """
    name = httpx2.__name__
    family = name.rstrip("0123456789")
    other = family + "2" if name == family else family
    ours = _wrapper_for(f"{name}.{prefix}BaseTransport")
    theirs = _wrapper_for(f"{other}.{prefix}BaseTransport")
    return TypeError(
        f"{ours} is for {name} clients, and a client of another library sent it "
        f"{request!r}: give that client {theirs}"
    )


def _traces(transport: object) -> bool:
    """Whether `transport` is httpx2's own, which reports through httpcore2's ``trace``
    extension when a connection has been assigned to a request."""
    return isinstance(transport, (httpx2.AsyncHTTPTransport, httpx2.HTTPTransport))


class _Core:
    """What both transports do around the wrapped transport, with no I/O of its own."""

    __slots__ = (
        "async_stream",
        "by_url",
        "classifier",
        "closes",
        "default_rules",
        "key",
        "registry",
        "sync_stream",
        "traces",
    )

    def __init__(
        self,
        transport: object,
        *,
        default: CircuitBreakerConfig | None,
        policies: Mapping[str, CircuitBreakerConfig] | None,
        classifier: Classifier | None,
        key: Callable[[httpx2.Request], str] | None,
        registry: BreakerRegistry | None,
        store: Store | None,
    ) -> None:
        if registry is not None:
            given = [
                name
                for name, value in (("default", default), ("policies", policies), ("store", store))
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"registry cannot be combined with {' or '.join(given)}: "
                    "configure the BreakerRegistry itself"
                )
            if not isinstance(registry, BreakerRegistry):
                raise TypeError(f"registry must be a BreakerRegistry, got {registry!r}")
        else:
            registry = BreakerRegistry(default=default, policies=policies, store=store)
        if classifier is not None and not callable(classifier):
            raise TypeError(f"classifier must be callable, got {classifier!r}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be callable, got {key!r}")
        self.registry = registry
        self.classifier: Classifier = classifier or default_classifier
        self.key: Callable[[httpx2.Request], str] = key or default_key
        # With the default key function, the registry finds a request's breaker from its
        # URL without building the key string (None: build it with `key`).
        self.by_url: Callable[[httpx2.URL], CircuitBreaker] | None = (
            registry._breaker_for_url if key is None else None
        )
        # Whether the default rules judge: a response then needs no classifier call.
        self.default_rules = self.classifier is default_classifier
        # What wraps a body whose outcome is known at close: for a classifier that may
        # read the body, one that keeps its chunks (httpx2 stores a response's content
        # only after its body is closed, too late for the classifier).
        keeps = reads_body(self.classifier)
        self.async_stream: type[_AsyncTrackedStream] = (
            _AsyncKeptStream if keeps else _AsyncTrackedStream
        )
        self.sync_stream: type[_SyncTrackedStream] = _SyncKeptStream if keeps else _SyncTrackedStream
        # How many times the transport (or a client over it) was closed. A request keeps
        # the count it was admitted under: an error after a close since then is ours, not
        # the host's. A count, not a flag: a transport shared by clients that come and
        # go (each closes it on leaving its block) serves requests after a close.
        self.closes = 0
        # Whether the wrapped transport reports, through httpcore2's `trace` extension,
        # when a request gets its connection: known for httpx2's own transports, learned
        # from the first traced request for any other. Deadlines then start there.
        self.traces = _traces(transport)

    def breaker_for(self, request: httpx2.Request, *, bypass: bool = True) -> CircuitBreaker | None:
        """The request's breaker, or None when it bypasses the breaker (unless `bypass`
        is False: then the breaker it would use without bypassing)."""
        options = request.extensions.get(EXTENSION)
        if options is None and self.by_url is not None:
            return self.by_url(request.url)
        policy = key = None
        if options is not None:
            if not isinstance(options, Mapping):
                raise TypeError(
                    f'request.extensions["{EXTENSION}"] must be a mapping such as '
                    f'{{"bypass": True}}, got {options!r}'
                )
            unknown = set(options) - _OPTIONS
            if unknown:
                raise ValueError(
                    f'request.extensions["{EXTENSION}"] has unknown options {sorted(unknown)}; '
                    f"known: {sorted(_OPTIONS)}"
                )
            wants_bypass = options.get("bypass", False)
            if not isinstance(wants_bypass, bool):
                # "false" and 0 would otherwise read as truthy or falsy by accident.
                raise TypeError(
                    f'request.extensions["{EXTENSION}"]["bypass"] must be a bool, '
                    f"got {type(wants_bypass).__name__}"
                )
            if wants_bypass and bypass:
                return None
            policy = options.get("policy")
            if policy is not None and not isinstance(policy, str):
                raise TypeError(
                    f'request.extensions["{EXTENSION}"]["policy"] must be a str, '
                    f"got {type(policy).__name__}"
                )
            key = options.get("key")
            if key is not None and not isinstance(key, str):
                raise TypeError(
                    f'request.extensions["{EXTENSION}"]["key"] must be a str, '
                    f"got {type(key).__name__}"
                )
            if key == "":
                raise ValueError(f'request.extensions["{EXTENSION}"]["key"] must not be empty')
        if key is None:
            key = self.key(request)
            if not isinstance(key, str):
                # The type only: the value (a URL, the request) may hold credentials.
                raise TypeError(f"the key function must return a str, got {type(key).__name__}")
        return self.registry.breaker_for(key, policy=policy)

    def outcome(
        self,
        breaker: CircuitBreaker,
        request: httpx2.Request,
        response: httpx2.Response | None,
        exc: BaseException | None,
        closes: int,
    ) -> int:
        """Ask the classifier; cancellations, excluded exceptions and errors caused by
        closing the transport (since the request was admitted, when the count of closes
        was `closes`) are ignored first."""
        if exc is not None:
            if not isinstance(exc, Exception) or closes != self.closes:
                return IGNORED
            excluded = breaker.config.exclude_exceptions
            if excluded and isinstance(exc, excluded):
                return IGNORED
        try:
            verdict = self.classifier(request, response, exc)
        except Exception as error:
            hint = _NOT_READ_HINT if isinstance(error, httpx2.ResponseNotRead) else ""
            logger.exception(
                "classifier raised for circuit breaker %r; the outcome is ignored%s",
                breaker.name,
                hint,
                extra={"circuit_breaker": breaker.name},
            )
            return IGNORED
        return outcome_of(verdict, breaker.name)

    def failed(
        self,
        breaker: CircuitBreaker,
        token: int,
        request: httpx2.Request,
        exc: BaseException,
        start: float,
        bulkhead: Bulkhead | None,
        closes: int,
    ) -> None:
        """Record a request that ended with no response; give back its slot."""
        try:
            if isinstance(exc, CircuitTimeoutError):
                httpx2_errors.adopt(exc, request)
            outcome = self.outcome(breaker, request, None, exc, closes)
            breaker.record(token, outcome, start, breaker.clock())
        finally:
            if bulkhead is not None:
                bulkhead.release()

    def respond(
        self,
        breaker: CircuitBreaker,
        token: int,
        request: httpx2.Request,
        response: httpx2.Response,
        state: object,
        start: float,
        end: float,
        tracked: type[_Tracked],
        bulkhead: Bulkhead | None,
        closes: int,
    ) -> httpx2.Response:
        """Record the outcome now, or wrap the body to record it when it is closed.

        A bulkhead slot is given back now if the body is already closed, else when it
        is (also with outcome_at="headers": the connection is busy until then).
        """
        if response.is_closed:
            # Already read (a MockTransport, a cache): httpx2 will not close its stream
            # again, so the outcome is known now. Wrapping it would also nest wrappers
            # around a response object that an inner transport hands out repeatedly.
            try:
                _finish(self, breaker, token, request, response, None, start, end, closes)
            finally:
                if bulkhead is not None:
                    bulkhead.release()
        elif breaker._config.outcome_at == "headers":
            # The status decides now and the body is free of the outcome; not of the
            # slot, which it holds until it is closed.
            if bulkhead is not None:
                response.stream = tracked(  # type: ignore[assignment]  # as below
                    response.stream, None, breaker, token, request, None, 0.0, 0.0, bulkhead, 0
                )
            _finish(self, breaker, token, request, response, None, start, end, closes)
        else:
            if tracked is _AsyncTrackedStream:
                tracked = self.async_stream
            elif tracked is _SyncTrackedStream:
                tracked = self.sync_stream
            response.stream = tracked(  # type: ignore[assignment]  # one of the two stream classes
                response.stream,
                self,
                breaker,
                token,
                request,
                response,
                start,
                end,
                bulkhead,
                closes,
            )
        response.extensions[EXTENSION] = {"key": breaker._name, "state": state, "breaker": breaker}
        return response


_NOT_READ_HINT = (
    " (a classifier can read a body only when it was read to the end, within "
    f"{BODY_KEPT:,} bytes, with outcome_at=\"close\"; "
    "catch httpx2.ResponseNotRead for the others)"
)


def _finish(
    core: _Core,
    breaker: CircuitBreaker,
    token: int,
    request: httpx2.Request,
    response: httpx2.Response,
    error: BaseException | None,
    start: float,
    end: float,
    closes: int,
) -> None:
    """Record the outcome of a request that got a response (Retry-After included).

    `start` to `end` is the time to the headers; the outcome is known now, at close.
    `closes` is the transport's count of closes when the request was admitted.
    """
    clock = breaker._clock
    if error is None and core.default_rules:
        # The default rules for a response that arrived whole, without the call.
        if response.status_code not in DEFAULT_FAILURE_STATUSES:
            if from_cache(response):
                breaker.record(token, IGNORED, start, end, None, clock())
            else:
                breaker.record_success(token, start, end, clock())
            return
        outcome = IGNORED if from_cache(response) else FAILURE
    else:
        outcome = core.outcome(breaker, request, response, error, closes)
        if outcome == SUCCESS:
            breaker.record_success(token, start, end, clock())
            return
    retry_after = None
    if outcome == FAILURE and breaker.config.respect_retry_after:
        header = response.headers.get("retry-after")
        if header is not None:
            retry_after = parse_retry_after(header)
    breaker.record(token, outcome, start, end, retry_after, clock())


class _Tracked:
    """The pending outcome of one response, settled once: on close, or when collected;
    and its bulkhead slot, if it holds one, given back then too."""

    __slots__ = (
        "_breaker",
        "_bulkhead",
        "_chunks",
        "_closes",
        "_core",
        "_end",
        "_error",
        "_request",
        "_response",
        "_start",
        "_stream",
        "_token",
    )

    def __init__(
        self,
        stream: Any,
        core: _Core | None,
        breaker: CircuitBreaker,
        token: int,
        request: httpx2.Request,
        response: httpx2.Response | None,
        start: float,
        end: float,
        bulkhead: Bulkhead | None,
        closes: int,
    ) -> None:
        self._stream = stream  # the wrapped transport's byte stream
        self._chunks: Any = None  # its iterator, while one is open
        # None once the outcome is settled (from the start with outcome_at="headers").
        self._core: _Core | None = core
        self._breaker = breaker
        self._token = token
        self._request = request
        # Dropped once the outcome is settled: the stream then keeps nothing of the
        # response (they would hold each other until the garbage collector came by).
        self._response: httpx2.Response | None = response
        self._start = start
        self._end = end
        self._error: BaseException | None = None
        self._bulkhead = bulkhead  # the slot held until close, if any
        self._closes = closes  # the transport's count of closes at admission

    def _settle(self) -> None:
        core = self._core
        try:
            if core is not None:
                self._core = None
                response = self._response
                assert response is not None
                self._response = None
                breaker, error = self._breaker, self._error
                extensions = response.extensions
                if (
                    error is None
                    and core.default_rules
                    and response.status_code not in DEFAULT_FAILURE_STATUSES
                    # `cache_marked(extensions)`, spelled out: the call alone costs as much
                    # as the three lookups, on every response.
                    and "caching" not in extensions
                    and "hishel_from_cache" not in extensions
                    and "from_cache" not in extensions
                ):
                    # The default rules' verdict on a response read to the end (or left
                    # early): a success. The rest, `_finish` decides.
                    # The clock read into a local and called: a method call on the slot
                    # would be a lookup that the interpreter never specialises.
                    clock = breaker._clock
                    breaker.record_success(self._token, self._start, self._end, clock())
                else:
                    self._error = None
                    _finish(
                        core,
                        breaker,
                        self._token,
                        self._request,
                        response,
                        error,
                        self._start,
                        self._end,
                        self._closes,
                    )
        finally:  # the slot comes back even if recording failed (a bug of ours)
            bulkhead = self._bulkhead
            if bulkhead is not None:
                self._bulkhead = None
                bulkhead.release()

    def _abandon(self) -> None:
        """What the collector does with a response nobody closed: the permit back,
        counted as ignored, and the slot back; neither ever blocks."""
        if self._core is not None:
            self._core = None
            self._breaker.release(self._token)
        bulkhead = self._bulkhead
        if bulkhead is not None:  # release() never blocks: safe in a finaliser
            self._bulkhead = None
            bulkhead.release()

    __del__ = _abandon


class _AsyncTrackedStream(_Tracked, httpx2.AsyncByteStream):
    """The wrapped body: an iterator, not a generator, so that a caller who stops
    reading early (breaks out of a loop, closes the response) leaves no generator to be
    finalised with `GeneratorExit`: walking away is not an error, and the response is
    judged as if it had been read. Closing it closes what it iterates, even when the
    reader stopped half way, so no generator of the wrapped transport is left open."""

    __slots__ = ()

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            self._chunks = self._stream.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk: bytes = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._chunks = None  # read to the end: nothing left to close
            raise
        except BaseException as exc:
            self._error = exc
            raise
        return chunk

    def aclose(self) -> Awaitable[None]:  # type: ignore[override]  # awaited like the original
        # Not a coroutine of its own: the outcome is known now, so it is settled now and
        # the caller awaits the wrapped stream's own close (one coroutine less per
        # response). Only a body left half read takes the longer way, to close what we
        # were iterating first.
        if self._chunks is not None:
            return self._aclose_iterator()
        try:
            self._settle()
        except Exception as exc:  # noqa: BLE001 (a bug of ours: still close what we wrap)
            return self._aclose_then_raise(exc)
        return self._stream.aclose()  # type: ignore[no-any-return]

    async def _aclose_then_raise(self, exc: BaseException) -> None:
        await self._stream.aclose()
        raise exc

    async def _aclose_iterator(self) -> None:
        # An error that a read still in progress (another task's) meets from here on is
        # the close's doing, not the host's: the outcome is what the body did before.
        error = self._error
        try:
            # Kept, closed: a reader that resumes after the close gets what the wrapped
            # iterator gives then (its end, for a generator), as without the breaker,
            # never an error of ours.
            chunks = self._chunks
            # A stream that is its own iterator (a class with `__anext__`, or another
            # breaker's body) is closed once, by its own close below, as httpx2 closes it.
            close = None if chunks is self._stream else getattr(chunks, "aclose", None)
            # Not while another task is inside it (a read in progress): it cannot be
            # closed then (RuntimeError). Closing the stream ends that read, as it does
            # without the breaker.
            if close is not None and not getattr(chunks, "ag_running", False):
                await close()
            await self._stream.aclose()
        finally:
            self._error = error
            self._settle()


class _SyncTrackedStream(_Tracked, httpx2.SyncByteStream):
    """The sync twin of `_AsyncTrackedStream`, closed once (see `close`)."""

    __slots__ = ("_closed",)

    def __init__(self, *args: Any) -> None:  # `_Tracked`'s arguments
        super().__init__(*args)
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        # Not ourselves: a generator that reads us with `yield from` (httpx2's response
        # stream) closes what it iterates when it is closed, and that must be the
        # wrapped stream's iterator, as without the breaker, not the stream: the
        # response closes the stream, and what that raises reaches its caller.
        if self._chunks is None:
            self._chunks = iter(self._stream)
        chunks = _new(_SyncChunks)
        chunks._tracked = self
        return chunks

    def close(self) -> None:
        if self._closed:
            # Closed once, as the wrapped stream would be by a response. (Not "settled
            # already": a finaliser may have given the permit back before the response
            # is closed; the stream still needs its close.)
            return
        self._closed = True
        error = self._error  # see the async twin: later errors are the close's doing
        try:
            chunks = self._chunks
            # Kept, closed: see the async twin; and not while another thread is inside
            # it (a read in progress): it cannot be closed then (ValueError). Closing the
            # stream ends that read, as it does without the breaker. A stream that is its
            # own iterator, or another breaker's body (whose close closes its iterator),
            # is closed once, by its own close below.
            stream = self._stream
            if (
                chunks is not None
                and chunks is not stream
                and not (isinstance(chunks, _SyncChunks) and chunks._tracked is stream)
                and not getattr(chunks, "gi_running", False)
            ):
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            stream.close()
        finally:
            self._error = error
            if self._breaker._held():
                # The collector closes us (freeing a generator that read us, from a
                # reference cycle) while this thread is inside one of the breaker's
                # locked steps: recording now would wait for ourselves. A response left
                # to the collector counts as ignored, as in `__del__`.
                self._abandon()
            else:
                self._settle()


class _SyncChunks:
    """The iterator of a `_SyncTrackedStream`: the wrapped stream's chunks, and an error
    among them kept for the outcome. Its `close` is what a `yield from` reading it calls
    when left: the wrapped iterator's, so that only the response's close closes the
    stream."""

    __slots__ = ("_tracked",)

    _tracked: _SyncTrackedStream

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        tracked = self._tracked
        try:
            chunk: bytes = next(tracked._chunks)
        except StopIteration:
            tracked._chunks = None  # read to the end: nothing left to close
            raise
        except BaseException as exc:
            tracked._error = exc
            raise
        return chunk

    def close(self) -> None:
        tracked = self._tracked
        chunks = tracked._chunks
        # Not while another thread is inside it (it cannot be closed then): see
        # `_SyncTrackedStream.close`.
        if chunks is not None and not getattr(chunks, "gi_running", False):
            close = getattr(chunks, "close", None)
            if close is not None:
                # Closed once: the stream's close that follows finds nothing to close,
                # and a read after this one finds the end, as a closed generator gives.
                tracked._chunks = iter(())
                close()


class _AsyncKeptStream(_AsyncTrackedStream):
    """`_AsyncTrackedStream` for a classifier that may read the body: it keeps the
    chunks (up to `BODY_KEPT` bytes), so that a body read to the end reaches the
    classifier readable (`_ReadResponse`). A body left early, cut by an error or longer
    than that reaches it unread, as before."""

    __slots__ = ("_kept", "_kept_size", "_whole")

    _kept: list[bytes] | None  # None: keeping nothing (any more)
    _kept_size: int
    _whole: bool  # read to the end

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            self._chunks = self._stream.__aiter__()
            # Set here, not at construction (the transports build the object without
            # `__init__`); with no outcome pending (a bulkhead slot only), keep nothing.
            self._kept = [] if self._core is not None else None
            self._kept_size = 0
            self._whole = False
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk: bytes = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._chunks = None
            self._whole = True
            raise
        except BaseException as exc:
            self._error = exc
            raise
        if self._kept is not None:
            _keep(self, chunk)
        return chunk

    def _settle(self) -> None:
        _offer_body(self)
        _Tracked._settle(self)


class _SyncKeptStream(_SyncTrackedStream):
    """The sync twin of `_AsyncKeptStream`."""

    __slots__ = ("_kept", "_kept_size", "_whole")

    _kept: list[bytes] | None  # None: keeping nothing (any more)
    _kept_size: int
    _whole: bool  # read to the end

    def __iter__(self) -> Iterator[bytes]:
        if self._chunks is None:
            self._chunks = iter(self._stream)
            self._kept = [] if self._core is not None else None
            self._kept_size = 0
            self._whole = False
        chunks = _new(_SyncKeptChunks)
        chunks._tracked = self
        return chunks

    def _settle(self) -> None:
        _offer_body(self)
        _Tracked._settle(self)


class _SyncKeptChunks(_SyncChunks):
    """The iterator of a `_SyncKeptStream`: `_SyncChunks`, keeping what it reads."""

    __slots__ = ()

    def __next__(self) -> bytes:
        tracked: Any = self._tracked
        try:
            chunk: bytes = next(tracked._chunks)
        except StopIteration:
            tracked._chunks = None
            tracked._whole = True
            raise
        except BaseException as exc:
            tracked._error = exc
            raise
        if tracked._kept is not None:
            _keep(tracked, chunk)
        return chunk


def _keep(tracked: _AsyncKeptStream | _SyncKeptStream, chunk: bytes) -> None:
    """Keep `chunk` for the classifier, or stop keeping once the body is too long."""
    size = tracked._kept_size + len(chunk)
    if size > BODY_KEPT:
        tracked._kept = None  # no longer readable whole: the classifier gets it unread
    else:
        tracked._kept_size = size
        tracked._kept.append(chunk)  # type: ignore[union-attr]  # checked by the callers


def _offer_body(tracked: _AsyncKeptStream | _SyncKeptStream) -> None:
    """Before the outcome of a body read to the end, with no error, within `BODY_KEPT`:
    let the classifier have the response with its content."""
    kept = getattr(tracked, "_kept", None)  # unset if the body was never iterated
    if kept is None:
        return
    tracked._kept = None
    response = tracked._response
    if tracked._core is not None and tracked._whole and tracked._error is None and response is not None:
        tracked._response = _ReadResponse._of(response, kept)


class _ReadResponse(httpx2.Response):
    """What a classifier that may read the body gets for a response read to the end:
    the same response (a copy of its fields; the headers, request and extensions are
    the same objects), whose content is there: httpx2 stores it on the caller's response
    only after the body is closed, which is when the outcome is judged. The content is
    decoded from the kept chunks when first asked for; the caller's response is never
    touched."""

    @classmethod
    def _of(cls, response: httpx2.Response, chunks: list[bytes]) -> _ReadResponse:
        view = _new(cls)
        fields = view.__dict__
        fields.update(response.__dict__)
        fields.pop("_decoder", None)  # the caller's, mid-way through the same bytes
        fields["_chunks_kept"] = chunks
        return view

    def __getattr__(self, name: str) -> Any:
        # Only for what is not set: `_content` until first asked for (httpx2's `content`,
        # `read()` and `iter_bytes()` all look for it with `hasattr`).
        if name != "_content":
            raise AttributeError(name)
        fields = self.__dict__
        chunks = fields.get("_chunks_kept")
        if chunks is None:  # decoded past `BODY_KEPT` at a first try
            raise httpx2.ResponseNotRead
        fields["_chunks_kept"] = None
        raw = b"".join(chunks)
        encoding = self.headers.get("content-encoding")
        content = raw if encoding is None else _decoded(raw, encoding)
        if content is None:
            raise httpx2.ResponseNotRead
        fields["_content"] = content
        return content


class _Slices(httpx2.SyncByteStream):
    """`data` in small slices: a decoder fed one at a time can be stopped before a
    small compressed body has grown into a huge one."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        data = self._data
        for start in range(0, len(data), 1024):
            yield data[start : start + 1024]


def _decoded(raw: bytes, encoding: str) -> bytes | None:
    """`raw` decoded as httpx2 decodes a body with that ``Content-Encoding``, or None when
    it decodes to more than `BODY_KEPT` bytes (a body the caller may never have decoded
    must not cost more memory than one kept as received)."""
    decoding = httpx2.Response(200, headers={"content-encoding": encoding}, stream=_Slices(raw))
    parts = []
    size = 0
    for part in decoding.iter_bytes():
        size += len(part)
        if size > BODY_KEPT:
            decoding.close()
            return None
        parts.append(part)
    return b"".join(parts)


def _pool_timeout(request: httpx2.Request) -> float | None:
    timeouts = request.extensions.get("timeout")
    # httpx2 puts a plain dict there; the ABC check is for anything else.
    if type(timeouts) is dict or isinstance(timeouts, Mapping):
        pool = timeouts.get("pool")
        return pool if isinstance(pool, (int, float)) else None
    return None


def _pool_has_room(transport: object) -> bool:
    """Whether a request sent now through `transport` gets a connection without waiting
    for the client's own pool: httpx2's transport, whose httpcore2 pool holds fewer
    requests than its `max_connections` (a request only queues when every connection
    it may have is busy). False when that cannot be read (another transport, or an
    httpcore2 that keeps its pool differently): then the pool may make it wait.

    Read just before the request enters the pool, with no await in between, so no other
    task of this event loop can take the room first.
    """
    pool: Any = getattr(transport, "_pool", None)
    if pool is None:  # not httpx2's transport: said without raising and catching an error
        return False
    try:
        return bool(len(pool._requests) < pool._max_connections)
    except (AttributeError, TypeError):
        return False


class _StartAtConnection:
    """httpcore2's ``trace`` hook for one request: at the first event (the request has its
    connection) it hands tracing back to the caller's own hook, so later events cost
    nothing (httpcore2 reads the hook anew every step), notes the breaker's clock in
    `began` (the request's duration starts there: the wait for the pool is not the
    host's time), and starts the deadline, if any (`_start`, the subclass's); every
    event goes on to the caller's hook.

    An object, not closures: a closure that checks whether it is still the installed
    hook names itself, a reference cycle per request that only the GC would free; and
    one object per request costs less than a hook and a callback made for it.
    """

    __slots__ = ("_began", "_clock", "_core", "_extensions", "_user")

    def __init__(
        self,
        extensions: dict[str, Any],
        user: Callable[[str, dict[str, Any]], Awaitable[None]] | None,
        core: _Core,
        began: list[float],
        clock: Callable[[], float],
    ) -> None:
        self._extensions = extensions
        self._user = user
        self._core = core
        self._began = began
        self._clock = clock

    def _start(self) -> None:
        """Start the deadline, if any (the request has its connection); as it stands,
        the hook of a request with no deadline (only its duration matters)."""

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        extensions = self._extensions
        user = self._user
        if extensions.get("trace") is self:
            if user is None:
                del extensions["trace"]
            else:
                extensions["trace"] = user
            self._core.traces = True
            self._began[0] = self._clock()
            self._start()
        if user is not None:
            await user(event, info)


class _ScopeAtConnection(_StartAtConnection):
    """The hook of a deadline kept by a cancel scope (trio; asyncio before 3.11): at the
    connection it moves the scope's deadline to `timeout` from then."""

    __slots__ = ("_scope", "_timeout")

    def __init__(
        self,
        extensions: dict[str, Any],
        user: Callable[[str, dict[str, Any]], Awaitable[None]] | None,
        core: _Core,
        began: list[float],
        clock: Callable[[], float],
        scope: Any,
        timeout: float,
    ) -> None:
        # The base's stores, spelled out: calling its `__init__` costs a deadline
        # request more than the stores themselves (about 770 instructions).
        self._extensions = extensions
        self._user = user
        self._core = core
        self._began = began
        self._clock = clock
        self._scope = scope
        self._timeout = timeout

    def _start(self) -> None:
        scope = self._scope
        scope.deadline = scope_now(scope) + self._timeout


class _ArmAtConnection(_StartAtConnection):
    """The hook of a deadline kept by the loop's `Sweeper` (asyncio 3.11+): at the
    connection it (re)arms the deadline for the whole `timeout`. `place` is where the
    deadline is armed (None while it is not), for the transport to disarm it after."""

    __slots__ = ("_loop", "_sweeper", "_task", "_timeout", "place")

    def __init__(
        self,
        extensions: dict[str, Any],
        user: Callable[[str, dict[str, Any]], Awaitable[None]] | None,
        core: _Core,
        began: list[float],
        clock: Callable[[], float],
        sweeper: Any,
        loop: asyncio.AbstractEventLoop,
        task: asyncio.Task[Any],
        timeout: float,
        place: tuple[int, int] | None,
    ) -> None:
        self._extensions = extensions  # the base's stores, spelled out as above
        self._user = user
        self._core = core
        self._began = began
        self._clock = clock
        self._sweeper = sweeper
        self._loop = loop
        self._task = task
        self._timeout = timeout
        self.place = place

    def _start(self) -> None:
        # httpcore2's first event for a request: it has its connection (new or pooled).
        # Start the deadline there, once.
        sweeper, place = self._sweeper, self.place
        if place is None or sweeper.disarm(*place):
            self.place = sweeper.arm(self._loop, self._task, self._timeout)


def _restore(extensions: dict[str, Any], name: str, value: object) -> None:
    if value is None:
        extensions.pop(name, None)
    else:
        extensions[name] = value


class AsyncCircuitBreakerTransport(httpx2.AsyncBaseTransport):
    """An `httpx2.AsyncBaseTransport` that puts a circuit breaker in front of each host.

    Give it to a client as ``transport=``; every host then gets its own breaker, and
    code that makes requests does not change:

    ```python
    transport = AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(failure_threshold=5, reset_timeout=30.0),
        policies={"payments.internal": CircuitBreakerConfig(failure_threshold=2)},
    )
    async with httpx2.AsyncClient(transport=transport) as client:
        response = await client.get("https://payments.internal/charge")
    ```

    Args:
        transport: the transport to wrap; `httpx2.AsyncHTTPTransport()` by default. As for
            httpx2, any object with a `handle_async_request` method will do.
            Closing this transport (or leaving its ``async with`` block) closes it.
        default: the policy for hosts no pattern of `policies` matches.
        policies: pattern -> policy (exact key, host, or ``*.suffix``).
        classifier: `(request, response, exception) -> bool | None`; see
            `httpx_breaker.classifiers`. Defaults to the rules of `default_classifier`.
            Any other than those and `make_classifier`'s may read a body read to the
            end, up to `BODY_KEPT` bytes (`response.json()`): its chunks are kept for it.
        key: `request -> str` naming the breaker of a request; host[:port] by default.
        registry: a `BreakerRegistry` to use (and share); not together with `default`,
            `policies` or `store`.
        store: share the breakers' state with other processes through this store
            (`httpx_breaker.redis.RedisStore`; see docs/fleet.md). Closing the
            transport does not close the store.

    Raises:
        ValueError: a malformed policy pattern, or `registry` together with `default`
            or `policies`.
        TypeError: `transport` is not an `httpx2.AsyncBaseTransport`.

    What a request may raise besides the wrapped transport's own errors is listed
    under `handle_async_request`.
    """

    def __init__(
        self,
        transport: httpx2.AsyncBaseTransport | None = None,
        *,
        default: CircuitBreakerConfig | None = None,
        policies: Mapping[str, CircuitBreakerConfig] | None = None,
        classifier: Classifier | None = None,
        key: Callable[[httpx2.Request], str] | None = None,
        registry: BreakerRegistry | None = None,
        store: Store | None = None,
    ) -> None:
        if transport is None:
            transport = httpx2.AsyncHTTPTransport()
        else:
            _check_transport(transport, httpx2.AsyncBaseTransport, "handle_async_request")
        self._core = _Core(
            transport,
            default=default,
            policies=policies,
            classifier=classifier,
            key=key,
            registry=registry,
            store=store,
        )
        self._transport = transport

    @classmethod
    def from_http_options(
        cls,
        *,
        default: CircuitBreakerConfig | None = None,
        policies: Mapping[str, CircuitBreakerConfig] | None = None,
        classifier: Classifier | None = None,
        key: Callable[[httpx2.Request], str] | None = None,
        registry: BreakerRegistry | None = None,
        store: Store | None = None,
        **http_options: Any,
    ) -> AsyncCircuitBreakerTransport:
        """Wrap an `httpx2.AsyncHTTPTransport(**http_options)` (``http2``, ``retries``,
        ``limits``, ``proxy``, ``verify``, ...).

        A client given `transport=` no longer reads proxies from the environment:
        pass ``proxy=`` here instead.
        """
        return cls(
            httpx2.AsyncHTTPTransport(**http_options),
            default=default,
            policies=policies,
            classifier=classifier,
            key=key,
            registry=registry,
            store=store,
        )

    @property
    def registry(self) -> BreakerRegistry:
        """The breakers of this transport, by key."""
        return self._core.registry

    @property
    def transport(self) -> httpx2.AsyncBaseTransport:
        """The wrapped transport."""
        return self._transport

    def breaker_for_url(self, url: str | httpx2.URL | httpx2.Request) -> CircuitBreaker:
        """The breaker a request to `url` uses (created if no request has made it yet).

        Accepts a URL (`str` or `httpx2.URL`) or an `httpx2.Request`, whose per-request
        options (``extensions["circuit_breaker"]``: ``key``, ``policy``) are honoured;
        a request that would bypass the breaker gets the breaker it would otherwise use.

        Raises:
            ValueError: the URL has no host (``"api.example.com"``, without a scheme,
                is a relative URL) and no key function or ``key`` option names the
                breaker instead.
            TypeError: `url` is none of those types.
        """
        return _breaker_for_url(self._core, url)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` through its host's breaker (httpx2 calls this for the client).

        The breaker admits or refuses the request before any I/O. The outcome is
        recorded when the response's body is closed (or when its headers arrive, with
        `outcome_at="headers"`); the response's ``extensions["circuit_breaker"]`` says
        which breaker handled it.

        Raises:
            CircuitOpenError: the host's breaker is open (or every half-open probe slot
                is taken); the wrapped transport was not called.
            BulkheadFullError: the policy's `max_concurrent` requests were in flight and
                no slot came free within `max_wait`; nothing was sent.
            CircuitTimeoutError: the policy sets `timeout` and the response headers did
                not arrive within it (counted from the moment the request got a
                connection).
            ValueError: ``extensions["circuit_breaker"]`` holds an unknown option, or
                a ``policy`` that is not a pattern of the policies, or an empty ``key``.
            TypeError: ``extensions["circuit_breaker"]`` is not a mapping, its
                ``bypass`` not a `bool`, its ``policy`` or ``key`` not a `str`; or the `key`
                function returned something that is not a `str`; or a client of the other
                library sent the request (the message names the transport to use).
        """
        core = self._core
        by_url = core.by_url
        if by_url is not None and EXTENSION not in request.extensions:
            # The common case: the default key, no per-request options.
            breaker = by_url(request.url)
        else:
            maybe = core.breaker_for(request)
            if maybe is None:  # bypassed
                return await self._transport.handle_async_request(request)
            breaker = maybe
        # `breaker.admit()`, inlined: CLOSED is two reads; any other state takes the
        # engine's slow path (a probe, or a refusal that names the request).
        token = breaker._epoch
        state = breaker._state
        if state is not _CLOSED:
            try:
                token = breaker._admit_slow()
            except CircuitOpenError as exc:
                httpx2_errors.adopt(exc, request)
                raise
            state = breaker._state
        bulkhead = breaker._bulkhead  # None without max_concurrent: the default costs one read
        if bulkhead is not None and not bulkhead.try_acquire():
            token, bulkhead = await self._wait_for_slot(breaker, token, request)
            state = breaker._state
        clock = breaker._clock
        start = clock()  # after any wait for a slot: queueing here is not the host's time
        closes = core.closes
        config = breaker._config
        timeout = config.timeout
        try:
            if timeout is None and config.slow_call_duration is None:
                response = await self._transport.handle_async_request(request)
            else:
                # The duration starts when the request has its connection, where the
                # wrapped transport tells (at admission otherwise): the wait for the
                # client's own pool must not make a healthy host's calls slow.
                began = [start]
                try:
                    response = await self._send_watched(request, breaker, timeout, began)
                finally:
                    start = began[0]
        except BaseException as exc:
            core.failed(breaker, token, request, exc, start, bulkhead, closes)
            if exc.__class__ is AssertionError and not isinstance(request, httpx2.Request):
                raise _misdirected(request, "Async") from exc
            raise
        end = clock()
        if response.is_closed or config.outcome_at != "close":
            return core.respond(
                breaker,
                token,
                request,
                response,
                state,
                start,
                end,
                _AsyncTrackedStream,
                bulkhead,
                closes,
            )
        # `_AsyncTrackedStream(response.stream, core, ...)`, spelled out: a class call
        # with an `__init__` costs twice the stores it makes.
        tracked = _new(core.async_stream)
        tracked._stream = response.stream
        tracked._chunks = None
        tracked._core = core
        tracked._breaker = breaker
        tracked._token = token
        tracked._request = request
        tracked._response = response
        tracked._start = start
        tracked._end = end
        tracked._error = None
        tracked._bulkhead = bulkhead
        tracked._closes = closes
        response.stream = tracked
        response.extensions[EXTENSION] = {"key": breaker._name, "state": state, "breaker": breaker}
        return response

    @staticmethod
    async def _wait_for_slot(
        breaker: CircuitBreaker, token: int, request: httpx2.Request
    ) -> tuple[int, Bulkhead | None]:
        """The permit and held slot of a request that found its bulkhead full at once."""
        try:
            return await breaker.wait_for_slot_async(token)
        except RequestRejected as exc:
            httpx2_errors.adopt(exc, request)
            raise

    async def _send_watched(
        self,
        request: httpx2.Request,
        breaker: CircuitBreaker,
        timeout: float | None,
        began: list[float],
    ) -> httpx2.Response:
        """The wrapped transport's response, its headers within `timeout` (if not None)
        of the request getting a connection; `began[0]` becomes the breaker's clock at
        that moment, where the wrapped transport reports it.

        Where the wrapped transport reports (through httpcore2's ``trace``) when the
        request gets a connection, the deadline starts there: the wait for the client's
        own pool is not the host's fault. Until then it allows the pool's own timeout on
        top (no deadline if the pool may wait forever), unless the pool has room, so that
        the request cannot wait for it. Elsewhere it starts now.

        A pool with room matters beyond speed: a mock that replaces httpcore2's pool
        (respx) never reports a connection, and its slow route must still time out at
        `timeout`, as over any other transport.
        """
        core = self._core
        extensions = request.extensions
        clock = breaker._clock
        user_trace = extensions.get("trace")
        if timeout is None:
            stamp = _StartAtConnection(extensions, user_trace, core, began, clock)
            extensions["trace"] = stamp
            try:
                return await self._transport.handle_async_request(request)
            finally:
                if extensions.get("trace") is stamp:
                    _restore(extensions, "trace", user_trace)
        name = breaker._name
        first: float | None = timeout
        if core.traces and not _pool_has_room(self._transport):
            pool = _pool_timeout(request)
            first = None if pool is None else timeout + pool
        loop = _running_loop()
        task = _current_task(loop) if loop is not None else None
        if sys.version_info >= (3, 11) and task is not None:
            assert loop is not None
            sweeper = sweeper_for(loop)
            cancelling = task.cancelling()
            trace = _ArmAtConnection(
                extensions,
                user_trace,
                core,
                began,
                clock,
                sweeper,
                loop,
                task,
                timeout,
                None if first is None else sweeper.arm(loop, task, first),
            )
            extensions["trace"] = trace
            try:
                response = await self._transport.handle_async_request(request)
            except asyncio.CancelledError:
                # Ours only if the sweeper fired and nobody else asked to cancel the task.
                place = trace.place
                fired = place is not None and not sweeper.disarm(*place)
                if fired:
                    if task.uncancel() <= cancelling:
                        raise httpx2_errors.CircuitTimeoutError(name, timeout) from None
                    # Someone else asked too, and asyncio folded their request into
                    # ours: this CancelledError carries no word of theirs, and anyio's
                    # cancel scopes tell their own by its message (else it escapes them).
                    # One turn of the loop lets a scope deliver its own, as it does until
                    # it is left; a canceller that counts requests (`Task.cancel`,
                    # `asyncio.timeout`) gets this one.
                    await asyncio.sleep(0)
                raise
            except BaseException:
                place = trace.place
                if place is not None:
                    sweeper.disarm(*place)
                raise
            finally:
                if extensions.get("trace") is trace:
                    _restore(extensions, "trace", user_trace)
            place = trace.place
            if place is not None and not sweeper.disarm(*place):
                task.uncancel()  # the wrapped transport swallowed our cancellation
            return response

        scope = cancel_scope(first)
        scope_trace = _ScopeAtConnection(
            extensions, user_trace, core, began, clock, scope, timeout
        )
        extensions["trace"] = scope_trace
        try:
            with scope:
                return await self._transport.handle_async_request(request)
        finally:
            if extensions.get("trace") is scope_trace:
                _restore(extensions, "trace", user_trace)
        raise httpx2_errors.CircuitTimeoutError(name, timeout)

    def __repr__(self) -> str:
        # getattr: a constructor refused its arguments before setting `_transport`, and
        # a traceback that shows locals still calls repr() on the half-built object.
        return f"<{type(self).__name__} around {getattr(self, '_transport', None)!r}>"

    async def __aenter__(self) -> Self:
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._core.closes += 1
        await self._transport.__aexit__(exc_type, exc_value, traceback)

    async def aclose(self) -> None:
        """Close the wrapped transport (the client does this when it is closed)."""
        self._core.closes += 1
        await self._transport.aclose()


class CircuitBreakerTransport(httpx2.BaseTransport):
    """The sync twin of `AsyncCircuitBreakerTransport`, for `httpx2.Client`; thread-safe.

    A sync request cannot be abandoned half way. When the policy sets `timeout` and the
    wrapped transport is httpx2's own, each step up to the response headers (connect,
    TLS, send, wait for headers) gets at most what is left of the deadline as its
    timeout, counted from the moment the request got a connection, and running out
    raises `CircuitTimeoutError`; the body keeps httpx2's own timeouts. Headers that
    still arrive later than `timeout` (a server trickling them, a wrapped transport
    that cannot be bounded such as a mock whose handler sleeps, or an HTTP/2
    connection, whose reads serve every request on it and so are never lowered) raise
    `CircuitTimeoutError` too, once they have come: the response is closed unread and
    the request counts as a failure, as in the async twin.

    ```python
    transport = CircuitBreakerTransport(default=CircuitBreakerConfig(failure_threshold=5))
    with httpx2.Client(transport=transport) as client:
        response = client.get("https://api.example.com/users/42")
    ```

    Args:
        transport: the transport to wrap; `httpx2.HTTPTransport()` by default. As for
            httpx2, any object with a `handle_request` method will do.
        default: the policy for hosts no pattern of `policies` matches.
        policies: pattern -> policy (exact key, host, or ``*.suffix``).
        classifier: `(request, response, exception) -> bool | None`; see
            `httpx_breaker.classifiers`; it may read a body as in the async twin.
        key: `request -> str` naming the breaker of a request; host[:port] by default.
        registry: a `BreakerRegistry` to use (and share, with async transports too); not
            together with `default` or `policies`.

    Raises:
        ValueError: a malformed policy pattern, or `registry` together with `default`
            or `policies`.
        TypeError: `transport` is not an `httpx2.BaseTransport`.
    """

    def __init__(
        self,
        transport: httpx2.BaseTransport | None = None,
        *,
        default: CircuitBreakerConfig | None = None,
        policies: Mapping[str, CircuitBreakerConfig] | None = None,
        classifier: Classifier | None = None,
        key: Callable[[httpx2.Request], str] | None = None,
        registry: BreakerRegistry | None = None,
        store: Store | None = None,
    ) -> None:
        if transport is None:
            transport = httpx2.HTTPTransport()
        else:
            _check_transport(transport, httpx2.BaseTransport, "handle_request")
        self._core = _Core(
            transport,
            default=default,
            policies=policies,
            classifier=classifier,
            key=key,
            registry=registry,
            store=store,
        )
        self._transport = transport

    @classmethod
    def from_http_options(
        cls,
        *,
        default: CircuitBreakerConfig | None = None,
        policies: Mapping[str, CircuitBreakerConfig] | None = None,
        classifier: Classifier | None = None,
        key: Callable[[httpx2.Request], str] | None = None,
        registry: BreakerRegistry | None = None,
        store: Store | None = None,
        **http_options: Any,
    ) -> CircuitBreakerTransport:
        """Wrap an `httpx2.HTTPTransport(**http_options)`; see the async twin."""
        return cls(
            httpx2.HTTPTransport(**http_options),
            default=default,
            policies=policies,
            classifier=classifier,
            key=key,
            registry=registry,
            store=store,
        )

    @property
    def registry(self) -> BreakerRegistry:
        """The breakers of this transport, by key."""
        return self._core.registry

    @property
    def transport(self) -> httpx2.BaseTransport:
        """The wrapped transport."""
        return self._transport

    def breaker_for_url(self, url: str | httpx2.URL | httpx2.Request) -> CircuitBreaker:
        """The breaker a request to `url` uses; see the async twin."""
        return _breaker_for_url(self._core, url)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` through its host's breaker (httpx2 calls this for the client).

        Raises:
            CircuitOpenError: the host's breaker is open (or every half-open probe slot
                is taken); the wrapped transport was not called.
            BulkheadFullError: the policy's `max_concurrent` requests were in flight and
                no slot came free within `max_wait`; nothing was sent.
            CircuitTimeoutError: the policy sets `timeout` and a step up to the response
                headers ran out of it, or the headers came later than `timeout`.
            ValueError: ``extensions["circuit_breaker"]`` holds an unknown option, or
                a ``policy`` that is not a pattern of the policies, or an empty ``key``.
            TypeError: ``extensions["circuit_breaker"]`` is not a mapping, its
                ``bypass`` not a `bool`, its ``policy`` or ``key`` not a `str`; or the `key`
                function returned something that is not a `str`; or a client of the other
                library sent the request (the message names the transport to use).
        """
        core = self._core
        by_url = core.by_url
        if by_url is not None and EXTENSION not in request.extensions:
            breaker = by_url(request.url)  # see the async twin
        else:
            maybe = core.breaker_for(request)
            if maybe is None:  # bypassed
                return self._transport.handle_request(request)
            breaker = maybe
        token = breaker._epoch
        state = breaker._state
        if state is not _CLOSED:
            try:
                token = breaker._admit_slow()
            except CircuitOpenError as exc:
                httpx2_errors.adopt(exc, request)
                raise
            state = breaker._state
        bulkhead = breaker._bulkhead  # None without max_concurrent: the default costs one read
        if bulkhead is not None and not bulkhead.try_acquire():
            token, bulkhead = self._wait_for_slot(breaker, token, request)
            state = breaker._state
        clock = breaker._clock
        start = clock()  # after any wait for a slot: queueing here is not the host's time
        closes = core.closes
        config = breaker._config
        timeout = config.timeout
        try:
            if timeout is None and config.slow_call_duration is None:
                response = self._transport.handle_request(request)
            elif timeout is None:
                # Only the duration matters: it starts when the request has its
                # connection, as in the async twin.
                stamp = _SyncStamp(request, clock)
                try:
                    response = self._transport.handle_request(request)
                finally:
                    stamp.close()
                    if stamp.started is not None:
                        start = stamp.started
            else:
                bound = _SyncDeadline(request, breaker._name, timeout, clock)
                try:
                    response = self._transport.handle_request(request)
                except httpx2.TimeoutException as exc:
                    mine = bound.explain(exc)
                    if mine is exc:
                        raise
                    raise mine from exc
                finally:
                    bound.close()
                    # The deadline ran from the connection (as in the async twin), and
                    # so does the call's duration.
                    if bound.started is not None:
                        start = bound.started
                if clock() - start > timeout:
                    # The headers came, but later than the deadline (a server trickling
                    # them, or a wrapped transport that cannot be bounded): the deadline
                    # failed as surely as if it had stopped the request, so the caller
                    # gets what the async twin raises, and the response is closed.
                    response.close()
                    raise httpx2_errors.CircuitTimeoutError(breaker._name, timeout, request=request)
        except BaseException as exc:
            core.failed(breaker, token, request, exc, start, bulkhead, closes)
            if exc.__class__ is AssertionError and not isinstance(request, httpx2.Request):
                raise _misdirected(request, "") from exc
            raise
        end = clock()
        if response.is_closed or config.outcome_at != "close":
            return core.respond(
                breaker,
                token,
                request,
                response,
                state,
                start,
                end,
                _SyncTrackedStream,
                bulkhead,
                closes,
            )
        # `_SyncTrackedStream(response.stream, core, ...)`, spelled out as in the async twin.
        tracked = _new(core.sync_stream)
        tracked._stream = response.stream
        tracked._chunks = None
        tracked._closed = False
        tracked._core = core
        tracked._breaker = breaker
        tracked._token = token
        tracked._request = request
        tracked._response = response
        tracked._start = start
        tracked._end = end
        tracked._error = None
        tracked._bulkhead = bulkhead
        tracked._closes = closes
        response.stream = tracked
        response.extensions[EXTENSION] = {"key": breaker._name, "state": state, "breaker": breaker}
        return response

    @staticmethod
    def _wait_for_slot(
        breaker: CircuitBreaker, token: int, request: httpx2.Request
    ) -> tuple[int, Bulkhead | None]:
        """The permit and held slot of a request that found its bulkhead full at once."""
        try:
            return breaker.wait_for_slot(token)
        except RequestRejected as exc:
            httpx2_errors.adopt(exc, request)
            raise

    def __repr__(self) -> str:
        # getattr: a constructor refused its arguments before setting `_transport`, and
        # a traceback that shows locals still calls repr() on the half-built object.
        return f"<{type(self).__name__} around {getattr(self, '_transport', None)!r}>"

    def __enter__(self) -> Self:
        self._transport.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._core.closes += 1
        self._transport.__exit__(exc_type, exc_value, traceback)

    def close(self) -> None:
        """Close the wrapped transport (the client does this when it is closed)."""
        self._core.closes += 1
        self._transport.close()


_monotonic = time.monotonic
_PHASES = ("connect", "read", "write")
_LONGEST_TIMEOUT = threading.TIMEOUT_MAX  # what a socket (or lock) timeout can hold
# The phase whose timeout each of httpx2's timeouts means (a pool timeout is never ours:
# it is not lowered).
_PHASE_OF: tuple[tuple[type[httpx2.TimeoutException], str], ...] = (
    (httpx2.ConnectTimeout, "connect"),
    (httpx2.ReadTimeout, "read"),
    (httpx2.WriteTimeout, "write"),
)
_NOT_CAPPED = ("response_body.started", "response_closed.started")


class _SyncStamp:
    """The sync request's httpcore2 ``trace`` hook when only its duration matters: notes
    the breaker's clock at the first event (the request has its connection) and hands
    tracing back to the caller's own hook."""

    __slots__ = ("_clock", "_extensions", "_user_trace", "started")

    def __init__(self, request: httpx2.Request, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.started: float | None = None
        extensions = self._extensions = request.extensions
        self._user_trace = extensions.get("trace")
        extensions["trace"] = self

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        extensions = self._extensions
        user_trace = self._user_trace
        if extensions.get("trace") is self:
            self.started = self._clock()
            _restore(extensions, "trace", user_trace)
        if user_trace is not None:
            user_trace(event, info)

    def close(self) -> None:
        if self._extensions.get("trace") is self:
            _restore(self._extensions, "trace", self._user_trace)


class _SyncDeadline:
    """A deadline on the steps of one sync request up to its response headers.

    Installed as the request's httpcore2 ``trace`` hook (the caller's own hook is still
    called). At the first event the request has its connection and the deadline starts;
    at the start of every step the connect, read and write timeouts httpcore2 is about
    to read are lowered to what is left (for a connect or TLS step, the timeout it
    passes in the event's `info`), so the step ends in time. On close the
    request gets back its own timeouts (the body reads with those) and its own hook.
    """

    __slots__ = (
        "_clock",
        "_extensions",
        "_t0",
        "_timeouts",
        "_user_trace",
        "lowered",
        "name",
        "started",
        "timeout",
    )

    def __init__(
        self,
        request: httpx2.Request,
        name: str,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self._clock = clock
        self.name = name
        self.timeout = timeout
        self.started: float | None = None  # the breaker's clock at the first step
        self._t0 = 0.0  # the real clock then
        # The phases ("connect", "read", "write") whose timeout we lowered for the step
        # under way: a timeout of one of those is the deadline's, any other is httpx2's.
        self.lowered: tuple[str, ...] = ()
        extensions = self._extensions = request.extensions
        self._timeouts = extensions.get("timeout")
        self._user_trace = extensions.get("trace")
        extensions["trace"] = self._trace

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        # The steps up to the response headers; never the body, nor the clean-up after
        # an error (raising there would hide that error).
        if event.endswith(".started") and not event.endswith(_NOT_CAPPED):
            # Socket timeouts are real seconds, so the deadline runs on the real clock;
            # the breaker's own (injectable) clock times the call for the record.
            now = _monotonic()
            if self.started is None:
                self.started = self._clock()
                self._t0 = now
            left = self.timeout - (now - self._t0)
            if left <= 0:
                raise httpx2_errors.CircuitTimeoutError(self.name, self.timeout)
            if event.startswith("http2."):
                # An HTTP/2 connection carries other requests' streams too, and httpcore2
                # fails every one of them after a read or write timeout: no lowered
                # timeout there. The deadline is checked at each step and at the
                # headers (a late response raises, as everywhere).
                _restore(self._extensions, "timeout", self._timeouts)
                self.lowered = ()
            else:
                cap = self._cap(left)
                if type(info) is dict and "timeout" in info:
                    # httpcore2's connect steps (`connect_tcp`, `connect_unix_socket`,
                    # `start_tls`, a proxy's `start_tls`) read their timeout before the
                    # first event and pass it in `info`, the very mapping they then
                    # call with: lowered there, or the extension's lowered value comes
                    # too late and a host slow to accept or to shake hands is not cut.
                    value = info["timeout"]
                    if value is None or (isinstance(value, (int, float)) and value > cap):
                        info["timeout"] = cap
        user_trace = self._user_trace
        if user_trace is not None:
            user_trace(event, info)

    def _cap(self, left: float) -> float:
        """Lower the request's connect, read and write timeouts to `left` (at most what
        a socket timeout holds, which it returns)."""
        left = min(left, _LONGEST_TIMEOUT)  # a config may ask for more
        own = self._timeouts if isinstance(self._timeouts, Mapping) else {}
        capped = dict(own)
        lowered = []
        for phase in _PHASES:
            value = own.get(phase)
            if value is None or value > left:
                capped[phase] = left
                lowered.append(phase)
        self.lowered = tuple(lowered)
        self._extensions["timeout"] = capped
        return left

    def explain(self, exc: httpx2.TimeoutException) -> httpx2.TimeoutException:
        """`exc`, or a `CircuitTimeoutError` if a timeout we lowered is what fired.

        httpx2's own timeout of a phase (a `read` shorter than what is left of the
        deadline, say) stays httpx2's: the deadline is not what stopped the request.
        """
        if isinstance(exc, CircuitTimeoutError):
            return exc
        for kind, phase in _PHASE_OF:
            if isinstance(exc, kind):
                return httpx2_errors.CircuitTimeoutError(self.name, self.timeout) if phase in self.lowered else exc
        return exc

    def close(self) -> None:
        extensions = self._extensions
        _restore(extensions, "timeout", self._timeouts)
        _restore(extensions, "trace", self._user_trace)


def _breaker_for_url(core: _Core, url: str | httpx2.URL | httpx2.Request) -> CircuitBreaker:
    if isinstance(url, httpx2.Request):
        request = url
    elif isinstance(url, (str, httpx2.URL)):
        try:
            request = httpx2.Request("GET", url)
        except httpx2.InvalidURL as exc:  # as key_for_url: bad input is a ValueError
            raise ValueError(f"not a valid URL: {exc}") from None
    else:
        raise TypeError(f"url must be a str, an httpx2.URL or an httpx2.Request, got {url!r}")
    if core.by_url is not None and not request.url.host:
        # The default key is the host: without one ("api.example.com" has no scheme, so
        # it parses as a path) no request would use the breaker this returned.
        options = request.extensions.get(EXTENSION)
        if not (isinstance(options, Mapping) and options.get("key") is not None):
            raise ValueError(
                "the URL has no host, so no breaker (give an absolute URL such as "
                "'https://api.example.com/')"
            )
    breaker = core.breaker_for(request, bypass=False)
    assert breaker is not None
    return breaker
