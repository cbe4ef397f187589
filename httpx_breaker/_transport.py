"""AsyncCircuitBreakerTransport and CircuitBreakerTransport: a breaker per host.

Both share one synchronous core (`_Core`): map a request to its key and breaker, ask
for a permit before any I/O, and turn what came back into one outcome for the
breaker. The response body is wrapped so that the outcome is recorded when the body
is closed (an error while it streams reaches the classifier), and a response that is
dropped unclosed hands its permit back when it is garbage-collected.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import httpx

from ._breaker import FAILURE, IGNORED, SUCCESS, CircuitBreaker, outcome_of
from ._classify import DEFAULT_FAILURE_STATUSES, Classifier, default_classifier
from ._config import CircuitBreakerConfig
from ._deadline import run_with_deadline
from ._errors import CircuitOpenError, CircuitTimeoutError
from ._registry import BreakerRegistry, default_key
from ._retry_after import parse_retry_after

__all__ = ["AsyncCircuitBreakerTransport", "CircuitBreakerTransport", "parse_retry_after"]

logger = logging.getLogger("httpx_breaker")

EXTENSION = "circuit_breaker"
_OPTIONS = frozenset({"bypass", "policy", "key"})


class _Core:
    """What both transports do around the wrapped transport, with no I/O of its own."""

    __slots__ = ("classifier", "key", "registry")

    def __init__(
        self,
        *,
        default: CircuitBreakerConfig | None,
        policies: Mapping[str, CircuitBreakerConfig] | None,
        classifier: Classifier | None,
        key: Callable[[httpx.Request], str] | None,
        registry: BreakerRegistry | None,
    ) -> None:
        if registry is not None:
            if default is not None or policies is not None:
                raise ValueError(
                    "registry cannot be combined with default or policies: "
                    "configure the BreakerRegistry itself"
                )
            if not isinstance(registry, BreakerRegistry):
                raise TypeError(f"registry must be a BreakerRegistry, got {registry!r}")
        else:
            registry = BreakerRegistry(default=default, policies=policies)
        if classifier is not None and not callable(classifier):
            raise TypeError(f"classifier must be callable, got {classifier!r}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be callable, got {key!r}")
        self.registry = registry
        self.classifier: Classifier = classifier or default_classifier
        self.key: Callable[[httpx.Request], str] = key or default_key

    def admit(self, request: httpx.Request) -> tuple[CircuitBreaker, int] | None:
        """The request's breaker and permit, None to bypass; raises CircuitOpenError."""
        options = request.extensions.get(EXTENSION)
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
            if options.get("bypass"):
                return None
            policy = options.get("policy")
            key = options.get("key")
            if key is not None and not isinstance(key, str):
                raise TypeError(
                    f'request.extensions["{EXTENSION}"]["key"] must be a str, '
                    f"got {type(key).__name__}"
                )
        if key is None:
            key = self.key(request)
            if not isinstance(key, str):
                # The type only: the value (a URL, the request) may hold credentials.
                raise TypeError(f"the key function must return a str, got {type(key).__name__}")
        breaker = self.registry.breaker_for(key, policy=policy)
        try:
            return breaker, breaker._acquire()
        except CircuitOpenError as exc:
            exc.request = request
            raise

    def outcome(
        self,
        breaker: CircuitBreaker,
        request: httpx.Request,
        response: httpx.Response | None,
        exc: BaseException | None,
    ) -> int:
        """Ask the classifier; cancellations and excluded exceptions are ignored first."""
        if exc is not None:
            if not isinstance(exc, Exception):
                return IGNORED
            excluded = breaker.config.exclude_exceptions
            if excluded and isinstance(exc, excluded):
                return IGNORED
        try:
            verdict = self.classifier(request, response, exc)
        except Exception:
            logger.exception(
                "classifier raised for circuit breaker %r; the outcome is ignored",
                breaker.name,
                extra={"circuit_breaker": breaker.name},
            )
            return IGNORED
        return outcome_of(verdict, breaker.name)

    def failed(
        self,
        breaker: CircuitBreaker,
        token: int,
        request: httpx.Request,
        exc: BaseException,
        start: float,
    ) -> None:
        """Record a request that ended with no response."""
        if isinstance(exc, CircuitTimeoutError):
            exc.request = request
        breaker._record(token, self.outcome(breaker, request, None, exc), start, breaker.clock())


def _finish(
    core: _Core,
    breaker: CircuitBreaker,
    token: int,
    request: httpx.Request,
    response: httpx.Response,
    error: BaseException | None,
    start: float,
    end: float,
) -> None:
    """Record the outcome of a request that got a response (Retry-After included).

    `start` to `end` is the time to the headers; the outcome is known now, at close.
    """
    if error is None and core.classifier is default_classifier:
        # The default rules for a response that arrived whole, without the call.
        if response.status_code not in DEFAULT_FAILURE_STATUSES:
            breaker._record_success(token, start, end, breaker.clock())
            return
        outcome = FAILURE
    else:
        outcome = core.outcome(breaker, request, response, error)
        if outcome == SUCCESS:
            breaker._record_success(token, start, end, breaker.clock())
            return
    retry_after = None
    if outcome == FAILURE and breaker.config.respect_retry_after:
        header = response.headers.get("retry-after")
        if header is not None:
            retry_after = parse_retry_after(header)
    breaker._record(token, outcome, start, end, retry_after, breaker.clock())


class _Tracked:
    """The pending outcome of one response, settled once: on close, or when collected."""

    __slots__ = (
        "_breaker",
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
        core: _Core,
        breaker: CircuitBreaker,
        token: int,
        request: httpx.Request,
        response: httpx.Response,
        start: float,
        end: float,
    ) -> None:
        self._stream = stream  # the wrapped transport's byte stream
        self._core: _Core | None = core
        self._breaker = breaker
        self._token = token
        self._request = request
        # Dropped once the outcome is settled: the stream then keeps nothing of the response.
        self._response: httpx.Response | None = response
        self._start = start
        self._end = end
        self._error: BaseException | None = None

    def _settle(self) -> None:
        core = self._core
        if core is None:
            return
        self._core = None
        response = self._response
        assert response is not None
        breaker, error = self._breaker, self._error
        _finish(core, breaker, self._token, self._request, response, error, self._start, self._end)
        # Drop references the breaker does not need, so a long-lived response holds less.
        self._error = None
        self._response = None

    def __del__(self) -> None:
        if self._core is not None:
            self._core = None
            self._breaker._release_abandoned(self._token)


class _AsyncTrackedStream(_Tracked, httpx.AsyncByteStream):
    __slots__ = ()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except BaseException as exc:
            self._error = exc
            raise

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._settle()


class _SyncTrackedStream(_Tracked, httpx.SyncByteStream):
    __slots__ = ()

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except BaseException as exc:
            self._error = exc
            raise

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._settle()


def _annotate(response: httpx.Response, breaker: CircuitBreaker, state: object) -> None:
    """Tell the caller which breaker handled the response, and its state at admission."""
    response.extensions[EXTENSION] = {"key": breaker.name, "state": state, "breaker": breaker}


class AsyncCircuitBreakerTransport(httpx.AsyncBaseTransport):
    """An `httpx.AsyncBaseTransport` that puts a circuit breaker in front of each host.

    Args:
        transport: the transport to wrap; `httpx.AsyncHTTPTransport()` by default.
            Closing this transport closes it.
        default: the policy for hosts no pattern of `policies` matches.
        policies: pattern -> policy (exact key, host, or ``*.suffix``).
        classifier: `(request, response, exception) -> bool | None`; see
            `httpx_breaker.classifiers`. Defaults to the rules of `default_classifier`.
        key: `request -> str` naming the breaker of a request; host[:port] by default.
        registry: a `BreakerRegistry` to use (and share); not together with `default`
            or `policies`.

    Raises (from `handle_async_request`):
        CircuitOpenError: the host's breaker is open; the wrapped transport was not called.
        CircuitTimeoutError: response headers did not arrive within the policy's `timeout`.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        default: CircuitBreakerConfig | None = None,
        policies: Mapping[str, CircuitBreakerConfig] | None = None,
        classifier: Classifier | None = None,
        key: Callable[[httpx.Request], str] | None = None,
        registry: BreakerRegistry | None = None,
    ) -> None:
        self._core = _Core(
            default=default, policies=policies, classifier=classifier, key=key, registry=registry
        )
        if transport is None:
            transport = httpx.AsyncHTTPTransport()
        elif not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport, got {transport!r}")
        self._transport = transport

    @classmethod
    def from_http_options(
        cls,
        *,
        default: CircuitBreakerConfig | None = None,
        policies: Mapping[str, CircuitBreakerConfig] | None = None,
        classifier: Classifier | None = None,
        key: Callable[[httpx.Request], str] | None = None,
        registry: BreakerRegistry | None = None,
        **http_options: Any,
    ) -> AsyncCircuitBreakerTransport:
        """Wrap an `httpx.AsyncHTTPTransport(**http_options)` (``http2``, ``retries``,
        ``limits``, ``proxy``, ``verify``, ...).

        A client given `transport=` no longer reads proxies from the environment:
        pass ``proxy=`` here instead.
        """
        return cls(
            httpx.AsyncHTTPTransport(**http_options),
            default=default,
            policies=policies,
            classifier=classifier,
            key=key,
            registry=registry,
        )

    @property
    def registry(self) -> BreakerRegistry:
        """The breakers of this transport, by key."""
        return self._core.registry

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The wrapped transport."""
        return self._transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        admitted = core.admit(request)
        if admitted is None:
            return await self._transport.handle_async_request(request)
        breaker, token = admitted
        state = breaker._state
        clock = breaker.clock
        start = clock()
        timeout = breaker.config.timeout
        try:
            if timeout is None:
                response = await self._transport.handle_async_request(request)
            else:
                response = await run_with_deadline(
                    self._transport.handle_async_request(request), timeout, breaker.name
                )
        except BaseException as exc:
            core.failed(breaker, token, request, exc, start)
            raise
        if response.is_closed:
            # Already read (a MockTransport, a cache): httpx will not close its stream
            # again, so the outcome is known now. Wrapping it would also nest wrappers
            # around a response object that an inner transport hands out repeatedly.
            _finish(core, breaker, token, request, response, None, start, clock())
        else:
            response.stream = _AsyncTrackedStream(
                response.stream, core, breaker, token, request, response, start, clock()
            )
        _annotate(response, breaker, state)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


class CircuitBreakerTransport(httpx.BaseTransport):
    """The sync twin of `AsyncCircuitBreakerTransport`, for `httpx.Client`; thread-safe.

    A sync request cannot be abandoned: the policy's `timeout` caps the wrapped
    transport's connect, read, write and pool timeouts for the request, and a request
    whose headers still arrive later than `timeout` is recorded as a failure (its
    response is returned all the same).
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        default: CircuitBreakerConfig | None = None,
        policies: Mapping[str, CircuitBreakerConfig] | None = None,
        classifier: Classifier | None = None,
        key: Callable[[httpx.Request], str] | None = None,
        registry: BreakerRegistry | None = None,
    ) -> None:
        self._core = _Core(
            default=default, policies=policies, classifier=classifier, key=key, registry=registry
        )
        if transport is None:
            transport = httpx.HTTPTransport()
        elif not isinstance(transport, httpx.BaseTransport):
            raise TypeError(f"transport must be an httpx.BaseTransport, got {transport!r}")
        self._transport = transport

    @classmethod
    def from_http_options(
        cls,
        *,
        default: CircuitBreakerConfig | None = None,
        policies: Mapping[str, CircuitBreakerConfig] | None = None,
        classifier: Classifier | None = None,
        key: Callable[[httpx.Request], str] | None = None,
        registry: BreakerRegistry | None = None,
        **http_options: Any,
    ) -> CircuitBreakerTransport:
        """Wrap an `httpx.HTTPTransport(**http_options)`; see the async twin."""
        return cls(
            httpx.HTTPTransport(**http_options),
            default=default,
            policies=policies,
            classifier=classifier,
            key=key,
            registry=registry,
        )

    @property
    def registry(self) -> BreakerRegistry:
        """The breakers of this transport, by key."""
        return self._core.registry

    @property
    def transport(self) -> httpx.BaseTransport:
        """The wrapped transport."""
        return self._transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        admitted = core.admit(request)
        if admitted is None:
            return self._transport.handle_request(request)
        breaker, token = admitted
        state = breaker._state
        clock = breaker.clock
        timeout = breaker.config.timeout
        if timeout is not None:
            _cap_timeouts(request, timeout)
        start = clock()
        try:
            response = self._transport.handle_request(request)
        except BaseException as exc:
            core.failed(breaker, token, request, exc, start)
            raise
        end = clock()
        overrun = None
        if timeout is not None and end - start > timeout:
            overrun = CircuitTimeoutError(breaker.name, timeout, request=request)
        if response.is_closed:
            # Already read: see the async twin.
            _finish(core, breaker, token, request, response, overrun, start, end)
        else:
            tracked = _SyncTrackedStream(
                response.stream, core, breaker, token, request, response, start, end
            )
            tracked._error = overrun
            response.stream = tracked
        _annotate(response, breaker, state)
        return response

    def close(self) -> None:
        self._transport.close()


def _cap_timeouts(request: httpx.Request, timeout: float) -> None:
    current = request.extensions.get("timeout")
    if not isinstance(current, Mapping):
        request.extensions["timeout"] = dict.fromkeys(("connect", "read", "write", "pool"), timeout)
        return
    capped = {}
    for phase in ("connect", "read", "write", "pool"):
        value = current.get(phase)
        capped[phase] = timeout if value is None or value > timeout else value
    request.extensions["timeout"] = capped
