"""The openai SDK over a breaker, against a loopback fake of its API.

The tests run with whichever openai is installed. openai 3.x (the dev extra's on Python
3.11+, so the one CI drives) sends through httpx2: the SDK gets httpx2 clients around
`httpx_breaker.httpx2`'s transports. openai 2.x (the dev extra's on 3.10) sends through
httpx and gets the httpx ones. `lib` below is that library; the tests are the same.

The fake (tests/fake_api.py) runs under uvicorn in a child process and speaks the real
wire format, streaming included. The breakers read a `FakeClock`, and stamina runs in
its testing mode, so nothing here waits for an open period; only the first test lets
the SDK sleep its own short backoff, because that backoff is what it shows.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from httpx_breaker import (
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    RequestRejected,
)
from httpx_breaker.retries import backoff_hook, find_rejection
from httpx_breaker.testing import FakeClock, set_state

from .fake_api import FakeAPI, need
from .libraries import Library

openai = need("openai")
stamina = need("stamina")

OPENAI_MAJOR = int(openai.__version__.split(".")[0])
lib = Library("httpx2" if OPENAI_MAJOR >= 3 else "httpx")
"""The HTTP library this openai sends through, with our transports for it."""

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "user", "content": "ping"}]


@pytest.fixture(scope="module")
def fake_api_server() -> Iterator[FakeAPI]:
    with FakeAPI() as server:
        yield server


@pytest.fixture
def api(fake_api_server: FakeAPI) -> FakeAPI:
    """The fake API, healthy and with its counters at zero."""
    fake_api_server.reset()
    return fake_api_server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def breakers(clock: FakeClock, **config: Any) -> BreakerRegistry:
    settings: dict[str, Any] = {"failure_threshold": 2, "reset_timeout": 28.0}
    settings.update(config)
    return BreakerRegistry(default=CircuitBreakerConfig(**settings), clock=clock)


def key(api: FakeAPI) -> str:
    return f"127.0.0.1:{api.port}"


def sdk_http_client(transport: Any, *, sync: bool = False) -> Any:
    """The SDK's own client factory (its timeouts, limits, redirects) around `transport`:
    `DefaultAsyncHttpx2Client` on openai 3.x, `DefaultAsyncHttpxClient` on 2.x."""
    if OPENAI_MAJOR >= 3:
        return (openai.DefaultHttpx2Client if sync else openai.DefaultAsyncHttpx2Client)(
            transport=transport
        )
    return (openai.DefaultHttpxClient if sync else openai.DefaultAsyncHttpxClient)(
        transport=transport
    )


def async_client(api: FakeAPI, transport: Any, **kw: Any) -> Any:
    return openai.AsyncOpenAI(
        api_key="sk-test",
        base_url=f"{api.url}/v1",
        http_client=sdk_http_client(transport),
        **kw,
    )


def retryable(exc: Exception) -> bool:
    """What the SDK itself would retry: connection errors, timeouts, 408/409/429/5xx."""
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError is one too
        return True
    return isinstance(exc, openai.APIStatusError) and (
        exc.status_code in (408, 409, 429) or exc.status_code >= 500
    )


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
def retries(clock: FakeClock) -> Iterator[list[Any]]:
    """stamina in testing mode, recording each retry it schedules."""
    scheduled: list[Any] = []
    old_hooks = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([scheduled.append])
    with stamina.set_testing(True, attempts=10, cap=True):
        yield scheduled
    stamina.instrumentation.set_on_retry_hooks(old_hooks)


def sleep_on_the_fake_clock(
    clock: FakeClock, decisions: Decisions, scheduled: list[Any]
) -> None:
    """Each retry moves the breakers' clock by the delay the hook asked stamina for.

    stamina's testing mode skips every sleep, custom ones too; this is the sleep.
    """

    def on_retry(details: Any) -> None:
        scheduled.append(details)
        if not isinstance(decisions.seen[-1], bool):
            clock.advance(decisions.seen[-1])

    stamina.instrumentation.set_on_retry_hooks([on_retry])


def test_the_sdk_is_built_on_the_library_the_breaker_is_for() -> None:
    """openai 3.x's clients are httpx2 clients, 2.x's httpx ones; CI drives the newest."""
    assert issubclass(openai.DefaultAsyncHttpxClient, lib.AsyncClient)
    assert issubclass(openai.DefaultHttpxClient, lib.Client)
    if os.environ.get("CI") == "true":
        pinned = 3 if sys.version_info >= (3, 11) else 2  # the dev extra's pins
        assert pinned == OPENAI_MAJOR, f"openai {openai.__version__} under CI"


async def test_the_sdk_alone_retries_a_refusal_and_hides_it(
    api: FakeAPI, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """What goes wrong without the recipe: the SDK's own retries ignore retry_after."""
    transport = lib.AsyncCircuitBreakerTransport(registry=breakers(clock))
    set_state(transport, key(api), CircuitState.OPEN)
    client = async_client(api, transport)  # the SDK's defaults: max_retries=2

    with (
        caplog.at_level(logging.INFO, logger="openai"),
        pytest.raises(openai.APIConnectionError) as info,
    ):
        await client.chat.completions.create(model="gpt-fake", messages=MESSAGES)
    await client.close()

    assert str(info.value) == "Connection error."
    assert not isinstance(info.value, RequestRejected)
    cause = info.value.__cause__
    assert isinstance(cause, lib.CircuitOpenError)  # ours, only as the cause
    assert cause.retry_after == 28.0  # what the breaker asked for
    assert find_rejection(info.value) is cause
    # Refused three times: the SDK retried twice, after its own backoff (about 0.5 s,
    # then 1 s, as its log says), not after 28 s.
    assert transport.registry[key(api)].get_metrics().rejected_requests == 3
    delays = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"Retrying request .*in ([0-9.]+) seconds", r.getMessage()))
    ]
    assert len(delays) == 2
    assert all(0 < d <= 1.0 for d in delays), delays
    assert api.completions == 0


async def test_recipe_waits_retry_after_and_the_retry_is_the_probe(
    api: FakeAPI, clock: FakeClock, retries: list[Any]
) -> None:
    """max_retries=0 and stamina with backoff_hook: one wait of retry_after, then success."""
    transport = lib.AsyncCircuitBreakerTransport(registry=breakers(clock, half_open_max_requests=1))
    set_state(transport, key(api), CircuitState.OPEN)
    client = async_client(api, transport, max_retries=0)
    decisions = Decisions(backoff_hook(on=retryable, max_wait=30.0))
    sleep_on_the_fake_clock(clock, decisions, retries)

    @stamina.retry(on=decisions, attempts=3)
    async def ask() -> str:
        completion = await client.chat.completions.create(model="gpt-fake", messages=MESSAGES)
        return str(completion.choices[0].message.content)

    assert await ask() == "pong"
    await client.close()

    assert decisions.seen == [28.0]  # the breaker's retry_after, found under the SDK's error
    assert [type(r.caused_by) for r in retries] == [openai.APIConnectionError]
    assert transport.registry[key(api)].get_metrics().rejected_requests == 1
    assert api.completions == 1  # the refused attempt sent nothing
    assert transport.registry[key(api)].state is CircuitState.CLOSED


async def test_recipe_per_call_with_options(
    api: FakeAPI, clock: FakeClock, retries: list[Any]
) -> None:
    """A client kept at the SDK's max_retries=2: ``with_options(max_retries=0)`` per call."""
    transport = lib.AsyncCircuitBreakerTransport(registry=breakers(clock, half_open_max_requests=1))
    set_state(transport, key(api), CircuitState.OPEN)
    client = async_client(api, transport)
    decisions = Decisions(backoff_hook(on=retryable, max_wait=30.0))
    sleep_on_the_fake_clock(clock, decisions, retries)

    @stamina.retry(on=decisions, attempts=3)
    async def ask() -> str:
        completion = await client.with_options(max_retries=0).chat.completions.create(
            model="gpt-fake", messages=MESSAGES
        )
        return str(completion.choices[0].message.content)

    assert await ask() == "pong"
    await client.close()
    assert decisions.seen == [28.0]
    assert transport.registry[key(api)].get_metrics().rejected_requests == 1  # no SDK retry
    assert api.completions == 1  # the refused attempt sent nothing
    assert transport.registry[key(api)].state is CircuitState.CLOSED


async def test_recipe_gives_up_at_once_when_retry_after_exceeds_max_wait(
    api: FakeAPI, clock: FakeClock, retries: list[Any]
) -> None:
    """retry_after 60 s, max_wait 30 s: the caller hears the refusal at once, and can tell."""
    transport = lib.AsyncCircuitBreakerTransport(registry=breakers(clock, reset_timeout=60.0))
    set_state(transport, key(api), CircuitState.OPEN)
    client = async_client(api, transport, max_retries=0)

    @stamina.retry(on=backoff_hook(on=retryable, max_wait=30.0), attempts=5)
    async def ask() -> Any:
        return await client.chat.completions.create(model="gpt-fake", messages=MESSAGES)

    with pytest.raises(openai.APIConnectionError) as info:
        await ask()
    await client.close()

    rejection = find_rejection(info.value)
    assert isinstance(rejection, CircuitOpenError)
    assert rejection.key == key(api)
    assert rejection.retry_after == 60.0
    assert retries == []
    assert transport.registry[key(api)].get_metrics().rejected_requests == 1
    assert api.completions == 0


async def test_recipe_counts_each_attempt_and_stops_when_the_breaker_opens(
    api: FakeAPI, clock: FakeClock, retries: list[Any]
) -> None:
    """A failing API: stamina retries the 503s, the breaker opens, the loop stops there."""
    api.fail(503)
    transport = lib.AsyncCircuitBreakerTransport(registry=breakers(clock, reset_timeout=60.0))
    client = async_client(api, transport, max_retries=0)

    @stamina.retry(on=backoff_hook(on=retryable, max_wait=30.0), attempts=10)
    async def ask() -> Any:
        return await client.chat.completions.create(model="gpt-fake", messages=MESSAGES)

    with pytest.raises(openai.APIConnectionError) as info:
        await ask()
    await client.close()

    assert isinstance(find_rejection(info.value), lib.CircuitOpenError)
    assert [type(r.caused_by) for r in retries] == [openai.InternalServerError] * 2
    assert api.completions == 2  # failure_threshold attempts reached the API, no more
    assert transport.registry[key(api)].state is CircuitState.OPEN


# The SDK (2.x and 3.x) breaks out of its SSE generators at "[DONE]" without closing
# them, nor the response's `aiter_bytes()` they read from; trio reports them when they
# are collected (whether it sees the last one depends on the order they are collected
# in): the first filter lets those three by. The breaker's body wrapper closes the
# generator it iterates when the response is closed half read (openai 2.x closes it
# without draining it). httpcore 1.x (openai 2.x, Python 3.10) then leaves the
# generators that one was iterating to the collector, which trio reports too: the
# second filter names those, httpcore's own. (httpx2's close theirs.) Python 3.14 words
# the warning "Exception ignored while finalizing generator".
@pytest.mark.filterwarnings(
    "ignore:Exception ignored (in.|while finalizing generator) <async_generator object "
    "(AsyncStream._iter_events|SSEDecoder.aiter_bytes|Response.aiter_bytes) "
    ":pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.filterwarnings(
    "ignore:Exception ignored (in.|while finalizing generator) <async_generator object "
    "(PoolByteStream.__aiter__|HTTP11ConnectionByteStream.__aiter__"
    "|AsyncHTTP11Connection._receive_response_body) "
    ":pytest.PytestUnraisableExceptionWarning"
)
async def test_a_streamed_completion_through_the_breaker(api: FakeAPI, clock: FakeClock) -> None:
    """SSE chunks arrive whole, and the finished stream counts as one success."""
    transport = lib.AsyncCircuitBreakerTransport(registry=breakers(clock))
    client = async_client(api, transport, max_retries=0)

    stream = await client.chat.completions.create(
        model="gpt-fake", messages=MESSAGES, stream=True
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    await client.close()

    assert text == "pong"
    metrics = transport.registry[key(api)].get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests) == (1, 0)


def test_recipe_with_the_sync_client(api: FakeAPI, clock: FakeClock, retries: list[Any]) -> None:
    """openai.OpenAI over the sync transport, stamina's sync retries: the same."""
    transport = lib.CircuitBreakerTransport(registry=breakers(clock, half_open_max_requests=1))
    set_state(transport, key(api), CircuitState.OPEN)
    client = openai.OpenAI(
        api_key="sk-test",
        base_url=f"{api.url}/v1",
        max_retries=0,
        http_client=sdk_http_client(transport, sync=True),
    )
    decisions = Decisions(backoff_hook(on=retryable, max_wait=30.0))
    sleep_on_the_fake_clock(clock, decisions, retries)

    @stamina.retry(on=decisions, attempts=3)
    def ask() -> str:
        completion = client.chat.completions.create(model="gpt-fake", messages=MESSAGES)
        return str(completion.choices[0].message.content)

    assert ask() == "pong"
    client.close()
    assert decisions.seen == [28.0]
    assert api.completions == 1
    assert transport.registry[key(api)].get_metrics().rejected_requests == 1
    assert transport.registry[key(api)].state is CircuitState.CLOSED


def test_the_sdk_keeps_the_breakers_client(api: FakeAPI, clock: FakeClock) -> None:
    """The SDK sends through the http_client it was given: no request bypasses the breaker."""
    transport = lib.CircuitBreakerTransport(registry=breakers(clock))
    set_state(transport, key(api), CircuitState.OPEN)
    client = openai.OpenAI(
        api_key="sk-test",
        base_url=f"{api.url}/v1",
        max_retries=0,
        http_client=lib.Client(transport=transport),
    )
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-fake", messages=MESSAGES)  # type: ignore[arg-type]
    client.close()
    assert transport.registry[key(api)].get_metrics().rejected_requests == 2
    assert api.completions == 0


@pytest.mark.skipif(OPENAI_MAJOR < 3, reason="openai 2.x sends through httpx only")
async def test_openai_3_also_takes_an_httpx_client_with_the_httpx_transport(
    api: FakeAPI, clock: FakeClock, retries: list[Any]
) -> None:
    """openai 3.x still accepts an ``httpx.AsyncClient``: the httpx transports work there too."""
    import httpx

    from httpx_breaker import AsyncCircuitBreakerTransport

    transport = AsyncCircuitBreakerTransport(registry=breakers(clock, half_open_max_requests=1))
    set_state(transport, key(api), CircuitState.OPEN)
    client = openai.AsyncOpenAI(
        api_key="sk-test",
        base_url=f"{api.url}/v1",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport),
    )
    decisions = Decisions(backoff_hook(on=retryable, max_wait=30.0))
    sleep_on_the_fake_clock(clock, decisions, retries)

    @stamina.retry(on=decisions, attempts=3)
    async def ask() -> str:
        completion = await client.chat.completions.create(model="gpt-fake", messages=MESSAGES)
        return str(completion.choices[0].message.content)

    assert await ask() == "pong"
    await client.close()
    assert decisions.seen == [28.0]
    assert [type(r.caused_by.__cause__) for r in retries] == [CircuitOpenError]
    assert api.completions == 1


def aiohttp_client(api: FakeAPI, transport: Any) -> Any:
    """`openai.DefaultAioHttpClient` (openai[aiohttp]) around `transport`, as the docs
    give it: the SDK's aiohttp client, sending through the breaker over aiohttp."""
    return openai.AsyncOpenAI(
        api_key="sk-test",
        base_url=f"{api.url}/v1",
        max_retries=0,
        http_client=openai.DefaultAioHttpClient(transport=transport),
    )


@pytest.mark.skipif(OPENAI_MAJOR < 3, reason="openai's aiohttp client is httpx2's from 3.x")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp runs on asyncio only
async def test_openais_aiohttp_client_over_the_breaker(api: FakeAPI, clock: FakeClock) -> None:
    """Completions, streamed or not, go through aiohttp below the breaker and count;
    a failing API opens the breaker, and the refusal is found under the SDK's error."""
    aiohttp_transport = need("httpx_aiohttp.httpx2").AiohttpTransport
    below = aiohttp_transport(limits=openai.DEFAULT_CONNECTION_LIMITS)
    transport = lib.AsyncCircuitBreakerTransport(below, registry=breakers(clock))
    client = aiohttp_client(api, transport)
    answer = await client.chat.completions.create(model="gpt-fake", messages=MESSAGES)
    stream = await client.chat.completions.create(
        model="gpt-fake", messages=MESSAGES, stream=True
    )
    streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    left = await client.chat.completions.create(model="gpt-fake", messages=MESSAGES, stream=True)
    async for _ in left:
        break  # a stream left after its first chunk
    await left.close()
    breaker = transport.registry[key(api)]
    assert (answer.choices[0].message.content, streamed) == ("pong", "pong")
    assert breaker.get_metrics().successful_requests == 3
    assert api.completions == 3

    api.fail(503)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="gpt-fake", messages=MESSAGES)
    with pytest.raises(openai.APIConnectionError) as info:
        await client.chat.completions.create(model="gpt-fake", messages=MESSAGES)
    await client.close()
    assert isinstance(find_rejection(info.value), lib.CircuitOpenError)
    assert breaker.state is CircuitState.OPEN
    assert api.completions == 5  # the refused one never reached the API
    assert transport.transport is below  # aiohttp's, not one the client built
