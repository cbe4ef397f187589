"""The openai SDK (2.x, built on httpx) over a breaker, against a loopback fake of its API.

The fake (tests/fake_api.py) runs under uvicorn in a child process and speaks the real
wire format, streaming included. The breakers read a `FakeClock`, and stamina runs in
its testing mode, so nothing here waits for an open period; only the first test lets
the SDK sleep its own short backoff once, because that backoff is what it shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker.retries import backoff_hook, find_rejection
from httpx_breaker.testing import FakeClock, set_state

from .fake_api import FakeAPI, need

openai = need("openai")
stamina = need("stamina")

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


def async_client(api: FakeAPI, transport: AsyncCircuitBreakerTransport, **kw: Any) -> Any:
    return openai.AsyncOpenAI(
        api_key="sk-test",
        base_url=f"{api.url}/v1",
        http_client=openai.DefaultAsyncHttpxClient(transport=transport),
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


async def test_the_sdk_alone_retries_a_refusal_and_hides_it(api: FakeAPI, clock: FakeClock) -> None:
    """What goes wrong without the recipe: the SDK's own retries ignore retry_after."""
    transport = AsyncCircuitBreakerTransport(registry=breakers(clock))
    set_state(transport, key(api), CircuitState.OPEN)
    client = async_client(api, transport, max_retries=1)

    with pytest.raises(openai.APIConnectionError) as info:
        await client.chat.completions.create(model="gpt-fake", messages=MESSAGES)
    await client.close()

    assert str(info.value) == "Connection error."
    assert isinstance(info.value.__cause__, CircuitOpenError)  # ours is only the cause
    assert find_rejection(info.value) is info.value.__cause__
    # Refused twice: the retry came after the SDK's half-second backoff, not 28 s.
    assert transport.registry[key(api)].get_metrics().rejected_requests == 2
    assert api.completions == 0


async def test_recipe_waits_retry_after_and_the_retry_is_the_probe(
    api: FakeAPI, clock: FakeClock, retries: list[Any]
) -> None:
    """max_retries=0 and stamina with backoff_hook: one wait of retry_after, then success."""
    transport = AsyncCircuitBreakerTransport(registry=breakers(clock, half_open_max_requests=1))
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
    assert api.completions == 1  # the refused attempt sent nothing
    assert transport.registry[key(api)].state is CircuitState.CLOSED


async def test_recipe_gives_up_at_once_when_retry_after_exceeds_max_wait(
    api: FakeAPI, clock: FakeClock, retries: list[Any]
) -> None:
    """retry_after 60 s, max_wait 30 s: the caller hears the refusal at once, and can tell."""
    transport = AsyncCircuitBreakerTransport(registry=breakers(clock, reset_timeout=60.0))
    set_state(transport, key(api), CircuitState.OPEN)
    client = async_client(api, transport, max_retries=0)

    @stamina.retry(on=backoff_hook(on=retryable, max_wait=30.0), attempts=5)
    async def ask() -> Any:
        return await client.chat.completions.create(model="gpt-fake", messages=MESSAGES)

    with pytest.raises(openai.APIConnectionError) as info:
        await ask()
    await client.close()

    rejection = find_rejection(info.value)
    assert rejection is not None
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
    transport = AsyncCircuitBreakerTransport(registry=breakers(clock, reset_timeout=60.0))
    client = async_client(api, transport, max_retries=0)

    @stamina.retry(on=backoff_hook(on=retryable, max_wait=30.0), attempts=10)
    async def ask() -> Any:
        return await client.chat.completions.create(model="gpt-fake", messages=MESSAGES)

    with pytest.raises(openai.APIConnectionError) as info:
        await ask()
    await client.close()

    assert find_rejection(info.value) is not None
    assert [type(r.caused_by) for r in retries] == [openai.InternalServerError] * 2
    assert api.completions == 2  # failure_threshold attempts reached the API, no more
    assert transport.registry[key(api)].state is CircuitState.OPEN


# The SDK breaks out of its SSE generators at "[DONE]" without closing them; trio
# reports them when they are collected. The SDK's, not ours: only those two are let by.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object "
    "(AsyncStream._iter_events|SSEDecoder.aiter_bytes) :pytest.PytestUnraisableExceptionWarning"
)
async def test_a_streamed_completion_through_the_breaker(api: FakeAPI, clock: FakeClock) -> None:
    """SSE chunks arrive whole, and the finished stream counts as one success."""
    transport = AsyncCircuitBreakerTransport(registry=breakers(clock))
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
    """openai.OpenAI over CircuitBreakerTransport, stamina's sync retries: the same."""
    transport = CircuitBreakerTransport(registry=breakers(clock, half_open_max_requests=1))
    set_state(transport, key(api), CircuitState.OPEN)
    client = openai.OpenAI(
        api_key="sk-test",
        base_url=f"{api.url}/v1",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(transport=transport),
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


def test_the_sdk_keeps_the_breakers_client(api: FakeAPI, clock: FakeClock) -> None:
    """The SDK sends through the http_client it was given: no request bypasses the breaker."""
    transport = CircuitBreakerTransport(registry=breakers(clock))
    set_state(transport, key(api), CircuitState.OPEN)
    client = openai.OpenAI(
        api_key="sk-test",
        base_url=f"{api.url}/v1",
        max_retries=0,
        http_client=httpx.Client(transport=transport),
    )
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-fake", messages=MESSAGES)  # type: ignore[arg-type]
    client.close()
    assert transport.registry[key(api)].get_metrics().rejected_requests == 2
    assert api.completions == 0
