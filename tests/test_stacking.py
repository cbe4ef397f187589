"""The breaker stacked with its neighbours: stamina, tenacity, httpx-retries, hishel.

Each recipe of docs/stacking.md is tested here with the real library. respx stands in
for the network where only what the breaker decides matters (stamina, tenacity); the
loopback `Upstream` serves where real requests are counted (httpx-retries, hishel).
No test waits for an open period: breakers read a `FakeClock`; stamina runs in its
testing mode (no backoff) and tenacity gets a ``sleep=`` that only records and moves
the fake clock.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import respx

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    BulkheadFullError,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
    RequestRejected,
)
from httpx_breaker.retries import (
    backoff_hook,
    find_rejection,
    retry_if_exception_or_rejection,
    wait_retry_after,
)
from httpx_breaker.testing import FakeClock, Upstream, set_state

from .fake_api import need
from .libraries import Library

stamina = need("stamina")
tenacity = need("tenacity")
httpx_retries = need("httpx_retries")
hishel = need("hishel")
hishel_httpx = need("hishel.httpx")
anysqlite = need("anysqlite")

pytestmark = pytest.mark.anyio

URL = "https://rates.internal/eur"
KEY = "rates.internal"


def registry(clock: FakeClock, **config: Any) -> BreakerRegistry:
    settings: dict[str, Any] = {"failure_threshold": 3, "reset_timeout": 28.0}
    settings.update(config)
    return BreakerRegistry(default=CircuitBreakerConfig(**settings), clock=clock)


def refusal(state: CircuitState = CircuitState.OPEN, retry_after: float | None = 28.0) -> CircuitOpenError:
    return CircuitOpenError(KEY, state, retry_after)


def bulkhead_full() -> BulkheadFullError:
    return BulkheadFullError(KEY, 1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


# The module ---------------------------------------------------------------------------


def test_the_module_needs_neither_stamina_nor_tenacity() -> None:
    """Importing it and building every helper imports neither library."""
    code = (
        "import sys\n"
        "import httpx\n"
        "from httpx_breaker import retries\n"
        "retries.backoff_hook(on=httpx.TransportError, max_wait=1)\n"
        "retries.retry_if_exception_or_rejection(on=httpx.TransportError, max_wait=1)\n"
        "retries.wait_retry_after(fallback=lambda state: 1.0)\n"
        "assert retries.__all__ == sorted(retries.__all__), retries.__all__\n"
        "print(sorted(m for m in ('stamina', 'tenacity') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# find_rejection ---------------------------------------------------------------------


class SDKError(Exception):
    """What an SDK raises in place of the transport's error."""


def wrapped(inner: BaseException, how: str) -> BaseException:
    """`inner` chained under an SDKError the way `how` says."""
    try:
        try:
            raise inner
        except BaseException as exc:
            if how == "cause":
                raise SDKError("Connection error.") from exc
            if how == "context":
                raise SDKError("Connection error.")  # noqa: B904 - the implicit chain is the point
            raise SDKError("Connection error.") from None
    except SDKError as outer:
        return outer


def test_find_rejection_returns_the_refusal_itself() -> None:
    """A CircuitOpenError is its own rejection."""
    error = refusal()
    assert find_rejection(error) is error


@pytest.mark.parametrize("how", ["cause", "context"])
def test_find_rejection_follows_the_chain_python_prints(how: str) -> None:
    """``raise ... from err`` (the openai SDK) and an error raised while handling one."""
    error = refusal()
    assert find_rejection(wrapped(error, how)) is error
    assert find_rejection(wrapped(wrapped(error, how), how)) is error


def test_find_rejection_respects_from_none() -> None:
    """``raise ... from None`` hides the chain from tracebacks, and from us."""
    assert find_rejection(wrapped(refusal(), "none")) is None


def test_find_rejection_finds_nothing_in_other_errors() -> None:
    """Host failures, None and a cyclic chain give None (and terminate)."""
    assert find_rejection(None) is None
    assert find_rejection(httpx.ConnectError("refused")) is None
    assert find_rejection(wrapped(httpx.ReadTimeout("slow"), "cause")) is None
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert find_rejection(a) is None


async def refusals_of(lib: Library, clock: FakeClock) -> tuple[BaseException, BaseException]:
    """`lib`'s refusals, as its breaker transport raises them: an open breaker's, and a
    full bulkhead's (`max_concurrent=1`, one streamed response holding the slot)."""

    async def body() -> AsyncIterator[bytes]:
        yield b"{}"

    transport = lib.AsyncCircuitBreakerTransport(
        lib.MockTransport(lambda request: lib.Response(200, content=body())),
        registry=registry(clock, max_concurrent=1),
    )
    async with lib.AsyncClient(transport=transport) as client:
        async with client.stream("GET", URL):
            with pytest.raises(RequestRejected) as full:
                await client.get(URL)
        set_state(transport, KEY, CircuitState.OPEN)
        with pytest.raises(RequestRejected) as circuit:
            await client.get(URL)
    return circuit.value, full.value


async def test_find_rejection_finds_every_refusal_of_either_library(
    lib: Library, clock: FakeClock
) -> None:
    """An open breaker's and a full bulkhead's, from httpx's transport or httpx2's."""
    circuit, bulkhead = await refusals_of(lib, clock)
    assert isinstance(circuit, lib.CircuitOpenError)
    assert isinstance(bulkhead, BulkheadFullError)
    for error in (circuit, bulkhead):
        assert isinstance(error, lib.TransportError)  # the library's own tree
        assert find_rejection(error) is error
        assert find_rejection(wrapped(error, "cause")) is error
        assert find_rejection(wrapped(wrapped(error, "context"), "cause")) is error
        assert find_rejection(wrapped(error, "none")) is None


# backoff_hook: the decisions ----------------------------------------------------------


def test_backoff_hook_waits_retry_after_within_max_wait() -> None:
    """OPEN with a known retry_after no longer than max_wait: wait exactly that."""
    hook = backoff_hook(on=httpx.HTTPStatusError, max_wait=30.0)
    assert hook(refusal(retry_after=28.0)) == 28.0
    assert hook(refusal(retry_after=30.0)) == 30.0
    assert hook(refusal(retry_after=0.0)) == 0.0
    # Inside an SDK's error too, and whatever `on` names.
    assert hook(wrapped(refusal(retry_after=12.5), "cause")) == 12.5  # type: ignore[arg-type]


def test_backoff_hook_gives_up_beyond_max_wait_or_when_nobody_can_tell() -> None:
    """Longer than max_wait, or forced open (retry_after None): False, so the caller hears now."""
    hook = backoff_hook(on=httpx.TransportError, max_wait=dt.timedelta(seconds=30))
    assert hook(refusal(retry_after=30.5)) is False
    assert hook(refusal(retry_after=None)) is False
    assert backoff_hook(on=httpx.TransportError, max_wait=0)(refusal(retry_after=0.1)) is False


def test_backoff_hook_keeps_staminas_backoff_while_probes_are_in_flight() -> None:
    """HALF_OPEN with every probe slot taken: True, i.e. stamina's own backoff."""
    hook = backoff_hook(on=httpx.TransportError, max_wait=30.0)
    assert hook(refusal(CircuitState.HALF_OPEN, retry_after=None)) is True
    assert hook(refusal(CircuitState.HALF_OPEN, retry_after=0.0)) is True


def test_backoff_hook_keeps_staminas_backoff_for_a_full_bulkhead() -> None:
    """BulkheadFullError has no retry_after: True (stamina's backoff), even with max_wait=0."""
    assert backoff_hook(on=ValueError, max_wait=30.0)(bulkhead_full()) is True
    assert backoff_hook(on=ValueError, max_wait=0)(bulkhead_full()) is True
    hook = backoff_hook(on=ValueError, max_wait=30.0)
    assert hook(wrapped(bulkhead_full(), "cause")) is True  # type: ignore[arg-type]


async def test_backoff_hook_decides_the_same_for_either_librarys_refusals(
    lib: Library, clock: FakeClock
) -> None:
    """The httpx2 twins are ours too: retry_after for the open breaker, backoff for the bulkhead."""
    circuit, bulkhead = await refusals_of(lib, clock)
    hook = backoff_hook(on=ValueError, max_wait=30.0)
    assert hook(circuit) == 28.0  # type: ignore[arg-type]
    assert hook(bulkhead) is True  # type: ignore[arg-type]
    assert hook(wrapped(circuit, "cause")) == 28.0  # type: ignore[arg-type]


def test_backoff_hook_leaves_other_errors_to_on() -> None:
    """Not a refusal: an exception class (or tuple) is matched, a callable is asked."""
    by_type = backoff_hook(on=(httpx.ConnectError, httpx.ReadTimeout), max_wait=30.0)
    assert by_type(httpx.ConnectError("refused")) is True
    assert by_type(ValueError("bug")) is False

    def rate_limited(exc: Exception) -> bool | float:
        if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 429:
            return 7.0
        return isinstance(exc, httpx.HTTPStatusError)

    by_hook = backoff_hook(on=rate_limited, max_wait=30.0)
    request = httpx.Request("GET", URL)
    error_429 = httpx.HTTPStatusError("429", request=request, response=httpx.Response(429))
    error_404 = httpx.HTTPStatusError("404", request=request, response=httpx.Response(404))
    assert by_hook(error_429) == 7.0
    assert by_hook(error_404) is True
    assert by_hook(KeyError("x")) is False
    assert repr(by_hook) == (
        "backoff_hook(on=test_backoff_hook_leaves_other_errors_to_on.<locals>.rate_limited, "
        "max_wait=30)"
    )


def test_backoff_hook_rejects_bad_arguments() -> None:
    """Bad `on` is a TypeError; a negative or NaN max_wait a ValueError naming the field."""
    with pytest.raises(TypeError, match="on must be"):
        backoff_hook(on="httpx.TransportError", max_wait=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on must be"):
        backoff_hook(on=(ValueError, "x"), max_wait=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_wait must be >= 0"):
        backoff_hook(on=ValueError, max_wait=-1.0)
    with pytest.raises(ValueError, match="max_wait must be >= 0"):
        backoff_hook(on=ValueError, max_wait=float("nan"))
    with pytest.raises(TypeError, match="max_wait must be seconds"):
        backoff_hook(on=ValueError, max_wait="30")  # type: ignore[arg-type]
    assert repr(backoff_hook(on=httpx.TransportError, max_wait=30)) == (
        "backoff_hook(on=httpx.TransportError, max_wait=30)"
    )


# stamina, for real ---------------------------------------------------------------------


class Decisions:
    """Wraps a backoff hook and remembers what it told stamina."""

    def __init__(self, hook: Callable[[Exception], Any]) -> None:
        self.hook = hook
        self.seen: list[Any] = []

    def __call__(self, exc: Exception) -> Any:
        decision = self.hook(exc)
        self.seen.append(decision)
        return decision


@pytest.fixture
def stamina_waits(clock: FakeClock) -> Iterator[list[Any]]:
    """stamina in testing mode; each retry it schedules moves the fake clock instead.

    In testing mode stamina does not sleep at all, not even a custom backoff. The
    on-retry hook moves the breakers' clock by the delay our hook asked for (found on
    the test's `Decisions`), which is what a real sleep would have done.
    """
    retries: list[Any] = []
    old_hooks = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([retries.append])
    with stamina.set_testing(True, attempts=10, cap=True):
        yield retries
    stamina.instrumentation.set_on_retry_hooks(old_hooks)


def advancing(clock: FakeClock, decisions: Decisions) -> Callable[[Any], None]:
    def on_retry(details: Any) -> None:
        last = decisions.seen[-1]
        if not isinstance(last, bool):
            clock.advance(last)

    return on_retry


async def test_stamina_waits_retry_after_and_the_retry_is_the_probe(
    mock: respx.MockRouter, clock: FakeClock, stamina_waits: list[Any]
) -> None:
    """An open breaker: one retry after exactly retry_after, which passes as the probe."""
    route = mock.get(URL).respond(200, json={"eur": 1.0})
    transport = AsyncCircuitBreakerTransport(registry=registry(clock, half_open_max_requests=1))
    set_state(transport, KEY, CircuitState.OPEN)
    decisions = Decisions(backoff_hook(on=httpx.TransportError, max_wait=30.0))
    stamina.instrumentation.set_on_retry_hooks([stamina_waits.append, advancing(clock, decisions)])

    async with httpx.AsyncClient(transport=transport) as client:

        @stamina.retry(on=decisions, attempts=3)
        async def get_rates() -> httpx.Response:
            return (await client.get(URL)).raise_for_status()

        response = await get_rates()

    assert response.json() == {"eur": 1.0}
    assert decisions.seen == [28.0]  # asked stamina for retry_after, not its backoff
    assert [type(r.caused_by) for r in stamina_waits] == [CircuitOpenError]
    assert route.call_count == 1  # the refused attempt never reached the host
    assert transport.registry[KEY].state is CircuitState.CLOSED


async def test_stamina_gives_up_at_once_when_retry_after_exceeds_max_wait(
    mock: respx.MockRouter, clock: FakeClock, stamina_waits: list[Any]
) -> None:
    """retry_after 60 s, max_wait 30 s: no retry, the refusal reaches the caller at once."""
    route = mock.get(URL).respond(200)
    transport = AsyncCircuitBreakerTransport(registry=registry(clock, reset_timeout=60.0))
    set_state(transport, KEY, CircuitState.OPEN)

    async with httpx.AsyncClient(transport=transport) as client:

        @stamina.retry(on=backoff_hook(on=httpx.TransportError, max_wait=30.0), attempts=5)
        async def get_rates() -> httpx.Response:
            return (await client.get(URL)).raise_for_status()

        with pytest.raises(CircuitOpenError) as info:
            await get_rates()

    assert info.value.retry_after == 60.0
    assert stamina_waits == []
    assert route.call_count == 0
    assert transport.registry[KEY].get_metrics().rejected_requests == 1


async def test_stamina_retries_host_failures_until_the_breaker_opens(
    mock: respx.MockRouter, clock: FakeClock, stamina_waits: list[Any]
) -> None:
    """Each attempt counts; once the breaker opens, the loop stops instead of hammering."""
    route = mock.get(URL).respond(503)
    transport = AsyncCircuitBreakerTransport(registry=registry(clock, reset_timeout=60.0))

    def server_error(exc: Exception) -> bool:
        return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500

    async with httpx.AsyncClient(transport=transport) as client:

        @stamina.retry(on=backoff_hook(on=server_error, max_wait=30.0), attempts=10)
        async def get_rates() -> httpx.Response:
            return (await client.get(URL)).raise_for_status()

        with pytest.raises(CircuitOpenError):
            await get_rates()

    assert route.call_count == 3  # failure_threshold attempts, then the breaker said no
    assert [type(r.caused_by) for r in stamina_waits] == [httpx.HTTPStatusError] * 3


def test_stamina_sync_recipe(mock: respx.MockRouter, clock: FakeClock, stamina_waits: list[Any]) -> None:
    """The same hook works for stamina's sync retries through the sync transport."""
    route = mock.get(URL).respond(200)
    transport = CircuitBreakerTransport(registry=registry(clock, half_open_max_requests=1))
    set_state(transport, KEY, CircuitState.OPEN)
    decisions = Decisions(backoff_hook(on=httpx.TransportError, max_wait=30.0))
    stamina.instrumentation.set_on_retry_hooks([stamina_waits.append, advancing(clock, decisions)])

    with httpx.Client(transport=transport) as client:
        for attempt in stamina.retry_context(on=decisions, attempts=3):
            with attempt:
                response = client.get(URL).raise_for_status()

    assert response.status_code == 200
    assert decisions.seen == [28.0]
    assert route.call_count == 1


# tenacity, for real --------------------------------------------------------------------


class Sleeps:
    """A tenacity ``sleep=`` that records each wait and moves the fake clock by it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self(seconds)


def tenacity_retrying(sleeps: Sleeps, **kw: Any) -> Any:
    settings: dict[str, Any] = {
        "retry": retry_if_exception_or_rejection(on=httpx.TransportError, max_wait=30.0),
        "wait": wait_retry_after(fallback=tenacity.wait_fixed(1.5)),
        "stop": tenacity.stop_after_attempt(5),
        "reraise": True,
    }
    settings.update(kw)
    return tenacity.AsyncRetrying(sleep=sleeps.asleep, **settings)


async def test_tenacity_waits_retry_after_and_the_retry_is_the_probe(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """One wait of exactly retry_after (not the fallback's 1.5 s), then the probe passes."""
    route = mock.get(URL).respond(200)
    transport = AsyncCircuitBreakerTransport(registry=registry(clock, half_open_max_requests=1))
    set_state(transport, KEY, CircuitState.OPEN)
    sleeps = Sleeps(clock)

    async with httpx.AsyncClient(transport=transport) as client:
        async for attempt in tenacity_retrying(sleeps):
            with attempt:
                response = (await client.get(URL)).raise_for_status()

    assert response.status_code == 200
    assert sleeps.waits == [28.0]
    assert route.call_count == 1
    assert transport.registry[KEY].state is CircuitState.CLOSED


async def test_tenacity_falls_back_for_host_failures_and_stops_at_the_open_breaker(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """Host failures wait the fallback; the refusal after them (60 s > 30 s) is not retried."""
    route = mock.get(URL).respond(503)
    transport = AsyncCircuitBreakerTransport(registry=registry(clock, reset_timeout=60.0))
    sleeps = Sleeps(clock)
    retry = retry_if_exception_or_rejection(
        on=(httpx.TransportError, httpx.HTTPStatusError), max_wait=30.0
    )

    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(CircuitOpenError) as info:
            async for attempt in tenacity_retrying(sleeps, retry=retry):
                with attempt:
                    (await client.get(URL)).raise_for_status()

    # One fallback wait after each failure (the third opened the breaker); the refusal
    # that followed (60 - 1.5 s to go, more than max_wait) ended the loop, unslept.
    assert sleeps.waits == [1.5, 1.5, 1.5]
    assert info.value.retry_after == 58.5
    assert route.call_count == 3


async def test_tenacity_stop_before_delay_is_a_budget_for_the_whole_loop(
    mock: respx.MockRouter, clock: FakeClock
) -> None:
    """With tenacity's own retry, stop_before_delay gives up when retry_after would pass it."""
    route = mock.get(URL).respond(200)
    transport = AsyncCircuitBreakerTransport(registry=registry(clock, reset_timeout=60.0))
    set_state(transport, KEY, CircuitState.OPEN)
    sleeps = Sleeps(clock)

    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(CircuitOpenError):
            async for attempt in tenacity_retrying(
                sleeps,
                retry=tenacity.retry_if_exception_type(httpx.TransportError),
                stop=tenacity.stop_before_delay(45),
            ):
                with attempt:
                    await client.get(URL)

    assert sleeps.waits == []
    assert route.call_count == 0


def test_tenacity_sync_recipe(mock: respx.MockRouter, clock: FakeClock) -> None:
    """The decorator form, sync transport: waits retry_after once, then succeeds."""
    route = mock.get(URL).respond(200)
    transport = CircuitBreakerTransport(registry=registry(clock, half_open_max_requests=1))
    set_state(transport, KEY, CircuitState.OPEN)
    sleeps = Sleeps(clock)

    with httpx.Client(transport=transport) as client:

        @tenacity.retry(
            retry=retry_if_exception_or_rejection(on=httpx.TransportError, max_wait=30.0),
            wait=wait_retry_after(fallback=tenacity.wait_exponential_jitter()),
            stop=tenacity.stop_after_attempt(3),
            sleep=sleeps,
            reraise=True,
        )
        def get_rates() -> httpx.Response:
            return client.get(URL).raise_for_status()

        assert get_rates().status_code == 200

    assert sleeps.waits == [28.0]
    assert route.call_count == 1


def retry_state(outcome: BaseException | object) -> Any:
    """A tenacity RetryCallState whose attempt ended with `outcome`."""
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    if isinstance(outcome, BaseException):
        state.set_exception((type(outcome), outcome, None))
    else:
        state.set_result(outcome)
    return state


def test_tenacity_helpers_decide_like_the_stamina_hook() -> None:
    """Refusals: retried within max_wait (waiting retry_after) or half-open; else not."""
    retry = retry_if_exception_or_rejection(on=httpx.ConnectError, max_wait=30.0)
    wait = wait_retry_after(fallback=tenacity.wait_fixed(2))

    assert retry(retry_state(refusal(retry_after=28.0))) is True
    assert wait(retry_state(refusal(retry_after=28.0))) == 28.0
    assert retry(retry_state(wrapped(refusal(retry_after=5.0), "cause"))) is True
    assert wait(retry_state(wrapped(refusal(retry_after=5.0), "cause"))) == 5.0

    assert retry(retry_state(refusal(retry_after=31.0))) is False
    assert retry(retry_state(refusal(retry_after=None))) is False  # forced open
    assert wait(retry_state(refusal(retry_after=None))) == 2

    half_open = refusal(CircuitState.HALF_OPEN, retry_after=None)
    assert retry(retry_state(half_open)) is True
    assert wait(retry_state(half_open)) == 2

    # A full bulkhead: retried after the fallback, whatever max_wait says.
    assert retry(retry_state(bulkhead_full())) is True
    assert wait(retry_state(bulkhead_full())) == 2
    assert wait(retry_state(wrapped(bulkhead_full(), "cause"))) == 2
    never_wait = retry_if_exception_or_rejection(on=httpx.ConnectError, max_wait=0)
    assert never_wait(retry_state(bulkhead_full())) is True
    assert never_wait(retry_state(refusal(retry_after=0.5))) is False

    assert retry(retry_state(httpx.ConnectError("refused"))) is True
    assert retry(retry_state(httpx.ReadTimeout("slow"))) is False
    assert wait(retry_state(httpx.ConnectError("refused"))) == 2
    assert retry(retry_state("a result")) is False
    assert wait(retry_state("a result")) == 2

    predicate = retry_if_exception_or_rejection(
        on=lambda exc: "retry me" in str(exc), max_wait=dt.timedelta(minutes=1)
    )
    assert predicate(retry_state(ValueError("retry me"))) is True
    assert predicate(retry_state(ValueError("no"))) is False
    assert predicate(retry_state(refusal(retry_after=59.0))) is True
    assert predicate(retry_state("retry me")) is False  # a result, never passed to `on`


def test_tenacity_helpers_combine_like_tenacitys_own() -> None:
    """``|``, ``&`` and ``+`` build tenacity's combinations."""
    retry = retry_if_exception_or_rejection(on=httpx.ConnectError, max_wait=30.0)
    wait = wait_retry_after(fallback=tenacity.wait_fixed(2))

    either = retry | tenacity.retry_if_result(lambda r: r == "again")
    assert either(retry_state("again")) is True
    assert either(retry_state(refusal())) is True
    both = retry & tenacity.retry_if_exception_type(CircuitOpenError)
    assert both(retry_state(refusal())) is True
    assert both(retry_state(httpx.ConnectError("refused"))) is False

    assert (wait + tenacity.wait_fixed(1))(retry_state(refusal(retry_after=28.0))) == 29.0
    assert sum([wait, tenacity.wait_fixed(1)])(retry_state(httpx.ConnectError("x"))) == 3  # type: ignore[operator]


def test_tenacity_helpers_reject_bad_arguments() -> None:
    """Bad arguments fail when the helper is built, naming what is wrong."""
    with pytest.raises(TypeError, match="fallback must be a tenacity wait"):
        wait_retry_after(fallback=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on must be"):
        retry_if_exception_or_rejection(on=None, max_wait=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_wait must be >= 0"):
        retry_if_exception_or_rejection(on=ValueError, max_wait=-0.5)


# httpx-retries: which order -------------------------------------------------------------

# httpx-retries' async transport sleeps with asyncio.sleep, so it runs under asyncio
# only. The checks are shared coroutines, so the sync transports (which work under any
# framework) are driven from the same asyncio test.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def retries_outside(clock: FakeClock, upstream: Upstream, *, sync: bool) -> tuple[Any, BreakerRegistry]:
    """client -> RetryTransport -> breaker -> network (the order that works)."""
    breakers = registry(clock)
    retry = httpx_retries.Retry(total=3, backoff_factor=0)
    inner: Any = (
        CircuitBreakerTransport(registry=breakers)
        if sync
        else AsyncCircuitBreakerTransport(registry=breakers)
    )
    return httpx_retries.RetryTransport(transport=inner, retry=retry), breakers


def breaker_outside(clock: FakeClock, upstream: Upstream, *, sync: bool) -> tuple[Any, BreakerRegistry]:
    """client -> breaker -> RetryTransport -> network (the order that hammers)."""
    breakers = registry(clock)
    retry = httpx_retries.Retry(total=3, backoff_factor=0)
    if sync:
        return (
            CircuitBreakerTransport(
                httpx_retries.RetryTransport(transport=httpx.HTTPTransport(), retry=retry),
                registry=breakers,
            ),
            breakers,
        )
    return (
        AsyncCircuitBreakerTransport(
            httpx_retries.RetryTransport(transport=httpx.AsyncHTTPTransport(), retry=retry),
            registry=breakers,
        ),
        breakers,
    )


class Run:
    """Send GETs through a client, sync or async, and count what reached the upstream."""

    def __init__(self, upstream: Upstream, client: Any) -> None:
        self.upstream = upstream
        self.client = client

    async def get(self) -> tuple[str, int]:
        """(outcome, requests that reached the upstream for this GET)."""
        before = self.upstream.request_count
        url = f"{self.upstream.url}/status/503"
        try:
            if isinstance(self.client, httpx.AsyncClient):
                response = await self.client.get(url)
            else:
                response = self.client.get(url)
            outcome = str(response.status_code)
        except CircuitOpenError:
            outcome = "refused"
        return outcome, self.upstream.request_count - before


async def check_retries_outside(run: Run, breakers: BreakerRegistry, clock: FakeClock) -> None:
    key = f"127.0.0.1:{run.upstream.port}"
    # Every attempt counts: the third failed attempt opens the breaker, and the
    # retry after it is refused without I/O, which httpx-retries does not retry.
    assert await run.get() == ("refused", 3)
    assert breakers[key].state is CircuitState.OPEN
    assert await run.get() == ("refused", 0)
    # Half-open: the probe is one attempt; it fails, the breaker reopens, the retry
    # is refused. A recovering host sees one request per probe, not a burst.
    clock.advance(breakers[key].retry_after)
    assert await run.get() == ("refused", 1)
    assert breakers[key].state is CircuitState.OPEN


async def check_breaker_outside(run: Run, breakers: BreakerRegistry, clock: FakeClock) -> None:
    key = f"127.0.0.1:{run.upstream.port}"
    # The breaker sees one outcome per retry sequence: each failure it counts cost the
    # host 4 requests, so it opens after 12 instead of 3.
    for _ in range(3):
        assert await run.get() == ("503", 4)
    assert breakers[key].state is CircuitState.OPEN
    assert breakers[key].get_metrics().failed_requests == 3
    assert await run.get() == ("refused", 0)
    # Half-open: the probe is a burst of 4 requests at a host that may be recovering.
    clock.advance(breakers[key].retry_after)
    assert await run.get() == ("503", 4)
    assert breakers[key].state is CircuitState.OPEN


@asyncio_only
@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_httpx_retries_outside_the_breaker(
    clock: FakeClock, upstream: Upstream, sync: bool
) -> None:
    """Retries outside: attempts count, and an open breaker stops the retries."""
    transport, breakers = retries_outside(clock, upstream, sync=sync)
    if sync:
        with httpx.Client(transport=transport) as client:
            await check_retries_outside(Run(upstream, client), breakers, clock)
    else:
        async with httpx.AsyncClient(transport=transport) as client:
            await check_retries_outside(Run(upstream, client), breakers, clock)


@asyncio_only
@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_httpx_retries_inside_the_breaker_hammers(
    clock: FakeClock, upstream: Upstream, sync: bool
) -> None:
    """Breaker outside: 4x the requests per counted failure, and a burst per probe."""
    transport, breakers = breaker_outside(clock, upstream, sync=sync)
    if sync:
        with httpx.Client(transport=transport) as client:
            await check_breaker_outside(Run(upstream, client), breakers, clock)
    else:
        async with httpx.AsyncClient(transport=transport) as client:
            await check_breaker_outside(Run(upstream, client), breakers, clock)


# hishel: which order ----------------------------------------------------------------------


async def test_cache_above_the_breaker_serves_hits_while_the_host_is_open(
    clock: FakeClock, upstream: Upstream
) -> None:
    """client -> cache -> breaker: hits are served while OPEN and never touch the breaker."""
    breaker_transport = AsyncCircuitBreakerTransport(registry=registry(clock))
    storage = hishel.AsyncSqliteStorage(connection=await anysqlite.connect(":memory:"))
    transport = hishel_httpx.AsyncCacheTransport(next_transport=breaker_transport, storage=storage)
    key = f"127.0.0.1:{upstream.port}"
    cached, uncached = f"{upstream.url}/ok", f"{upstream.url}/status/200"

    async with httpx.AsyncClient(transport=transport) as client:
        first = await client.get(cached)  # a miss: through the breaker to the host
        assert first.extensions["caching"]["stored"] is True
        assert upstream.request_count == 1
        breaker = breaker_transport.registry[key]
        assert breaker.get_metrics().successful_requests == 1

        set_state(breaker_transport, key, CircuitState.OPEN)
        hit = await client.get(cached)
        assert hit.extensions["caching"]["from_cache"] is True
        assert hit.json() == first.json()
        with pytest.raises(CircuitOpenError):  # a miss is refused, before any I/O
            await client.get(uncached)
        assert upstream.request_count == 1

        # Half-open: a hit is no probe; it neither closes the breaker nor takes a slot.
        set_state(breaker_transport, key, CircuitState.HALF_OPEN)
        before = breaker.get_metrics()
        assert (await client.get(cached)).extensions["caching"]["from_cache"] is True
        assert breaker.state is CircuitState.HALF_OPEN
        assert breaker.get_metrics().total_requests == before.total_requests


def test_cache_above_the_breaker_sync(clock: FakeClock, upstream: Upstream) -> None:
    """The same order with the sync transports and hishel's sync SQLite storage."""
    breaker_transport = CircuitBreakerTransport(registry=registry(clock))
    storage = hishel.SqliteStorage(connection=sqlite3.connect(":memory:", check_same_thread=False))
    transport = hishel_httpx.CacheTransport(next_transport=breaker_transport, storage=storage)
    key = f"127.0.0.1:{upstream.port}"

    with httpx.Client(transport=transport) as client:
        client.get(f"{upstream.url}/ok")
        set_state(breaker_transport, key, CircuitState.OPEN)
        assert client.get(f"{upstream.url}/ok").extensions["caching"]["from_cache"] is True
        with pytest.raises(CircuitOpenError):
            client.get(f"{upstream.url}/status/200")
    assert upstream.request_count == 1


async def test_cache_below_the_breaker_cannot_serve_while_open(
    clock: FakeClock, upstream: Upstream
) -> None:
    """client -> breaker -> cache: the breaker refuses first, even what the cache holds."""
    storage = hishel.AsyncSqliteStorage(connection=await anysqlite.connect(":memory:"))
    cache = hishel_httpx.AsyncCacheTransport(
        next_transport=httpx.AsyncHTTPTransport(), storage=storage
    )
    transport = AsyncCircuitBreakerTransport(cache, registry=registry(clock))
    key = f"127.0.0.1:{upstream.port}"

    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(f"{upstream.url}/ok")
        assert (await client.get(f"{upstream.url}/ok")).extensions["caching"]["from_cache"] is True
        set_state(transport, key, CircuitState.OPEN)
        with pytest.raises(CircuitOpenError):
            await client.get(f"{upstream.url}/ok")
    assert upstream.request_count == 1


# A loop that waits for a server to start --------------------------------------------------


class _Ready(BaseHTTPRequestHandler):
    """The server the loop waits for, once it is up: 200 to everything."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_readiness_loop_is_refused_until_the_open_period_ends_unless_it_bypasses(
    clock: FakeClock,
) -> None:
    """docs/stacking.md: polls that catch the refusal go on, but do not see the server
    come up until the open period (the default 60 s) ends; a bypassed poll does."""
    with Upstream() as gone:
        port = gone.port  # nothing listens there once it stops
    url = f"http://127.0.0.1:{port}/ready"
    transport = CircuitBreakerTransport(httpx.HTTPTransport(), registry=BreakerRegistry(clock=clock))
    seen: list[str] = []
    with httpx.Client(transport=transport) as client:

        def poll(**options: Any) -> None:
            try:
                seen.append(str(client.get(url, **options).status_code))
            except httpx.TransportError as exc:  # what such loops catch; a refusal is one
                seen.append(type(exc).__name__)

        for _ in range(6):
            poll()
        server = ThreadingHTTPServer(("127.0.0.1", port), _Ready)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
        try:
            poll()  # the server is up, but the breaker still refuses
            poll(extensions={"circuit_breaker": {"bypass": True}})
            clock.advance(transport.breaker_for_url(url).retry_after)
            assert transport.breaker_for_url(url).retry_after == 0
            poll()  # the open period is over: the probe reaches the server
        finally:
            server.shutdown()
            server.server_close()
    assert seen == ["ConnectError"] * 5 + ["CircuitOpenError"] * 2 + ["200", "200"]
    assert transport.breaker_for_url(url).config.reset_timeout == 60.0
