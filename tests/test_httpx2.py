"""httpx_breaker.httpx2: what is particular to httpx2.

The transport behaviours themselves (opening, rejection before I/O, half-open, bodies,
Retry-After, deadlines, extensions, lifecycle) run against httpx2 in the transport
tests, through the `lib` fixture. Here: the errors that belong to both exception trees,
one registry serving both libraries, keys, the inner transports accepted, the ways to
mock httpx2 in a test suite, and the type check as the Python 3.11 code it is.
"""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest

import httpx_breaker
from httpx_breaker import (
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    CircuitTimeoutError,
    _errors,
)
from httpx_breaker._upstream import Upstream
from httpx_breaker.classifiers import default_key
from httpx_breaker.testing import FakeClock, breaker_testing, set_state

from .libraries import require_httpx2

require_httpx2()
httpx2: Any = importlib.import_module("httpx2")
httpcore2: Any = importlib.import_module("httpcore2")
breaker2: Any = importlib.import_module("httpx_breaker.httpx2")
twins: Any = importlib.import_module("httpx_breaker._httpx2._errors")

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
URL = "https://api.example.com/v1/chat"
KEY = "api.example.com"


def test_the_public_names() -> None:
    """httpx_breaker.httpx2 offers the transports, their errors and the classifier kit."""
    assert sorted(breaker2.__all__) == [
        "AsyncCircuitBreakerTransport",
        "BulkheadFullError",
        "CircuitBreakerTransport",
        "CircuitOpenError",
        "CircuitTimeoutError",
        "Classifier",
        "DEFAULT_FAILURE_STATUSES",
        "NOT_THE_HOSTS_FAULT",
        "RequestRejected",
        "default_classifier",
        "default_key",
        "from_cache",
        "make_classifier",
        "parse_retry_after",
    ]
    for name in breaker2.__all__:
        assert getattr(breaker2, name) is not None


# -- errors: httpx2's and ours at once ------------------------------------------------


def test_errors_sit_in_both_exception_trees() -> None:
    """The refusal is an httpx2.TransportError and our CircuitOpenError; the timeout an
    httpx2.TimeoutException and our CircuitTimeoutError."""
    assert issubclass(breaker2.CircuitOpenError, httpx2.TransportError)
    assert issubclass(breaker2.CircuitOpenError, CircuitOpenError)
    assert not issubclass(breaker2.CircuitOpenError, httpx2.TimeoutException)
    assert issubclass(breaker2.CircuitTimeoutError, httpx2.TimeoutException)
    assert issubclass(breaker2.CircuitTimeoutError, CircuitTimeoutError)
    for name in ("RequestRejected", "BulkheadFullError"):
        twin = getattr(breaker2, name)
        assert issubclass(twin, httpx2.TransportError)
        assert issubclass(twin, getattr(httpx_breaker, name))
        assert issubclass(twin, httpx_breaker.RequestRejected)
    assert issubclass(breaker2.CircuitOpenError, breaker2.RequestRejected)
    assert issubclass(breaker2.BulkheadFullError, breaker2.RequestRejected)


def test_every_error_of_ours_has_an_httpx2_twin() -> None:
    """Each error httpx_breaker exports has a twin here that subclasses it and httpx2's
    tree, and that the httpx2 transports turn the shared code's errors into."""
    for name in _errors.__all__:
        ours = getattr(_errors, name)
        twin = getattr(breaker2, name, None)
        assert twin is not None, f"httpx_breaker.httpx2 has no twin of {name}"
        assert issubclass(twin, ours)
        assert issubclass(twin, httpx2.HTTPError)
        assert twins._TWINS[ours] is twin


def test_errors_carry_their_facts_and_pickle() -> None:
    """The twins keep key, state, retry_after, timeout and the httpx2 request; pickling
    gives back the twin."""
    request = httpx2.Request("GET", URL)
    refused = breaker2.CircuitOpenError(KEY, CircuitState.OPEN, 1.5, request=request)
    assert (refused.key, refused.state, refused.retry_after) == (KEY, CircuitState.OPEN, 1.5)
    assert refused.request is request
    assert str(refused) == "circuit breaker 'api.example.com' is open; retry after 1.500s"
    copy = pickle.loads(pickle.dumps(refused))
    assert type(copy) is breaker2.CircuitOpenError
    assert (copy.key, copy.state, copy.retry_after) == (KEY, CircuitState.OPEN, 1.5)
    late = breaker2.CircuitTimeoutError(KEY, 0.5, request=request)
    assert (late.key, late.timeout, late.request) == (KEY, 0.5, request)
    copy = pickle.loads(pickle.dumps(late))
    assert type(copy) is breaker2.CircuitTimeoutError
    assert (copy.key, copy.timeout) == (KEY, 0.5)


def test_adopt_makes_the_shared_codes_error_the_twin_in_place() -> None:
    """The engine's CircuitOpenError leaves an httpx2 transport as the same object, now
    the twin, with its request and its traceback."""

    def engine() -> None:
        raise CircuitOpenError(KEY, CircuitState.OPEN, 2.0)

    request = httpx2.Request("GET", URL)
    try:
        engine()
    except CircuitOpenError as exc:
        raised = exc
        twins.adopt(exc, request)
    assert type(raised) is breaker2.CircuitOpenError
    assert raised.request is request
    assert raised.retry_after == 2.0
    assert "engine" in "".join(traceback.format_tb(raised.__traceback__))
    already = breaker2.CircuitTimeoutError(KEY, 1.0)
    twins.adopt(already, request)
    assert type(already) is breaker2.CircuitTimeoutError
    assert already.request is request


async def test_a_refusal_is_caught_as_httpx2_and_as_ours() -> None:
    """`except httpx2.TransportError` and `except httpx_breaker.CircuitOpenError` both catch
    a refusal; it carries the httpx2 request, and the handler was not called."""
    calls = []

    def handler(request: Any) -> Any:
        calls.append(request)
        return httpx2.Response(200)

    transport = breaker2.AsyncCircuitBreakerTransport(httpx2.MockTransport(handler))
    set_state(transport, KEY, CircuitState.OPEN)
    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx2.TransportError) as as_httpx2:
            await client.get(URL)
        try:
            await client.get(URL)
        except httpx_breaker.CircuitOpenError as exc:
            as_ours = exc
    assert isinstance(as_httpx2.value.request, httpx2.Request)
    assert as_ours.request.url == httpx2.URL(URL)
    assert calls == []


# -- transports --------------------------------------------------------------------------


def test_the_transports_wrap_httpx2_transports_only() -> None:
    """The default inner transport is httpx2's own; an httpx transport is a TypeError (and
    an httpx2 one under the httpx transports)."""
    assert isinstance(breaker2.AsyncCircuitBreakerTransport().transport, httpx2.AsyncHTTPTransport)
    assert isinstance(breaker2.CircuitBreakerTransport().transport, httpx2.HTTPTransport)
    assert_every_mix_up_is_refused()


@pytest.mark.parametrize("library", [httpx, httpx2])
def test_a_mix_up_is_refused_though_an_sdk_renamed_the_base_classes_module(
    library: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """openai 3.x sets `__module__ = "openai"` on the httpx2 classes it re-exports, for
    good, once imported: the mix-up check compares classes, not their module's name."""
    for name in ("BaseTransport", "AsyncBaseTransport"):
        monkeypatch.setattr(getattr(library, name), "__module__", "openai")
    assert_every_mix_up_is_refused()


def assert_every_mix_up_is_refused() -> None:
    """Each library's transport under the other's wrappers is a TypeError naming the base."""
    with pytest.raises(
        TypeError,
        match=r"must be an httpx2\.BaseTransport .*, an httpx\.BaseTransport: "
        r"httpx_breaker\.CircuitBreakerTransport takes it$",
    ):
        breaker2.CircuitBreakerTransport(httpx.HTTPTransport())
    with pytest.raises(
        TypeError,
        match=r"must be an httpx2\.AsyncBaseTransport .*, an httpx\.AsyncBaseTransport: "
        r"httpx_breaker\.AsyncCircuitBreakerTransport takes it$",
    ):
        breaker2.AsyncCircuitBreakerTransport(httpx.AsyncHTTPTransport())
    with pytest.raises(
        TypeError,
        match=r"must be an httpx\.BaseTransport .*, an httpx2\.BaseTransport: "
        r"httpx_breaker\.httpx2\.CircuitBreakerTransport takes it$",
    ):
        httpx_breaker.CircuitBreakerTransport(httpx2.HTTPTransport())
    with pytest.raises(
        TypeError,
        match=r"must be an httpx\.AsyncBaseTransport .*, an httpx2\.AsyncBaseTransport: "
        r"httpx_breaker\.httpx2\.AsyncCircuitBreakerTransport takes it$",
    ):
        httpx_breaker.AsyncCircuitBreakerTransport(httpx2.AsyncHTTPTransport())


@pytest.mark.parametrize(
    ("client", "transport", "advice"),
    [
        ("httpx2", httpx_breaker, r"httpx_breaker\.httpx2\.AsyncCircuitBreakerTransport$"),
        ("httpx", breaker2, r"httpx_breaker\.AsyncCircuitBreakerTransport$"),
    ],
)
async def test_a_client_of_the_other_library_gets_a_type_error_naming_the_transport(
    client: str, transport: Any, advice: str
) -> None:
    """Our transport in a client of the other library (openai 3.x's
    `DefaultAsyncHttpxClient` is an httpx2 client) reaches the wrapped transport, which
    refuses the request with a bare AssertionError before any I/O: it comes out as a
    TypeError that names the transport to use, the AssertionError as its cause."""
    library = httpx2 if client == "httpx2" else httpx
    wrapper = transport.AsyncCircuitBreakerTransport()
    async with library.AsyncClient(transport=wrapper) as sender:
        with pytest.raises(TypeError, match=advice) as raised:
            await sender.get("http://127.0.0.1:9/")
    assert isinstance(raised.value.__cause__, AssertionError)
    assert wrapper.registry["127.0.0.1:9"].get_metrics().ignored_requests == 1


@pytest.mark.parametrize(
    ("client", "transport", "advice"),
    [
        ("httpx2", httpx_breaker, r"httpx_breaker\.httpx2\.CircuitBreakerTransport$"),
        ("httpx", breaker2, r"httpx_breaker\.CircuitBreakerTransport$"),
    ],
)
def test_a_sync_client_of_the_other_library_gets_a_type_error_naming_the_transport(
    client: str, transport: Any, advice: str
) -> None:
    """The same through the sync transports."""
    library = httpx2 if client == "httpx2" else httpx
    wrapper = transport.CircuitBreakerTransport()
    with (
        library.Client(transport=wrapper) as sender,
        pytest.raises(TypeError, match=advice) as raised,
    ):
        sender.get("http://127.0.0.1:9/")
    assert isinstance(raised.value.__cause__, AssertionError)


async def test_the_wrapped_body_is_an_httpx2_stream() -> None:
    """The breaker's body wrapper is the byte stream httpx2's client asserts it gets."""

    async def body() -> Any:
        yield b"streamed"

    inner = httpx2.MockTransport(lambda request: httpx2.Response(200, content=body()))
    client = httpx2.AsyncClient(transport=breaker2.AsyncCircuitBreakerTransport(inner))
    async with client, client.stream("GET", URL) as response:
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        assert await response.aread() == b"streamed"


def test_breaker_for_url_takes_httpx2_urls_and_requests() -> None:
    """breaker_for_url accepts a str, an httpx2.URL or an httpx2.Request."""
    transport = breaker2.CircuitBreakerTransport()
    breaker = transport.breaker_for_url(URL)
    assert transport.breaker_for_url(httpx2.URL(URL)) is breaker
    assert transport.breaker_for_url(httpx2.Request("GET", URL)) is breaker
    with pytest.raises(TypeError, match=r"httpx2\.URL"):
        transport.breaker_for_url(httpx.URL(URL))


# -- keys and one registry for both libraries -------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v1",
        "https://API.Example.COM:443/v1",
        "http://api.example.com:80/",
        "https://api.example.com:8443/",
        "https://user:secret@api.example.com/path?q=1#frag",
        "https://bücher.example/",
        "http://127.0.0.1:8080/",
        "http://[::1]:8080/",
        "http://[2001:DB8:0::1]/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_keys_are_the_same_in_both_libraries(url: str) -> None:
    """The same URL gives the same breaker key through httpx and through httpx2."""
    key = default_key(httpx.Request("GET", url))
    assert breaker2.default_key(httpx2.Request("GET", url)) == key
    transport = breaker2.CircuitBreakerTransport()
    assert transport.breaker_for_url(url).name == key


async def test_one_registry_serves_httpx_and_httpx2_clients(upstream: Upstream) -> None:
    """A host reached through an httpx client and an httpx2 client has one breaker: failures
    through either open it for both, and a probe through either closes it."""
    clock = FakeClock()
    registry = BreakerRegistry(
        default=CircuitBreakerConfig(
            failure_threshold=2, reset_timeout=5.0, half_open_max_requests=1
        ),
        clock=clock,
    )
    one = httpx.AsyncClient(transport=httpx_breaker.AsyncCircuitBreakerTransport(registry=registry))
    two = httpx2.AsyncClient(transport=breaker2.AsyncCircuitBreakerTransport(registry=registry))
    async with one, two:
        assert (await one.get(f"{upstream.url}/status/503")).status_code == 503
        assert (await two.get(f"{upstream.url}/status/503")).status_code == 503
        assert upstream.request_count == 2
        assert len(registry) == 1
        breaker = registry[f"127.0.0.1:{upstream.port}"]
        assert breaker.state is CircuitState.OPEN
        with pytest.raises(httpx.TransportError) as refused_httpx:
            await one.get(f"{upstream.url}/ok")
        with pytest.raises(httpx2.TransportError) as refused_httpx2:
            await two.get(f"{upstream.url}/ok")
        assert upstream.request_count == 2
        assert type(refused_httpx.value) is CircuitOpenError
        assert type(refused_httpx2.value) is breaker2.CircuitOpenError
        clock.advance(5.0)
        assert (await two.get(f"{upstream.url}/ok")).status_code == 200
        assert breaker.state is CircuitState.CLOSED
        assert (await one.get(f"{upstream.url}/ok")).status_code == 200
    metrics = breaker.get_metrics()
    assert (metrics.failed_requests, metrics.successful_requests) == (2, 2)
    assert metrics.rejected_requests == 2
    assert len(registry) == 1


def test_one_registry_serves_httpx_and_httpx2_clients_from_threads() -> None:
    """Threads with an httpx.Client and threads with an httpx2.Client share one breaker per
    host: every request is counted once, admitted or rejected, on that breaker."""
    threads, per_thread = 8, 25
    registry = BreakerRegistry(
        default=CircuitBreakerConfig(failure_threshold=3, reset_timeout=0.01)
    )
    rejected = [0] * threads
    with Upstream(mode="flaky", failure_rate=0.5, seed=11) as upstream:
        one = httpx.Client(transport=httpx_breaker.CircuitBreakerTransport(registry=registry))
        two = httpx2.Client(transport=breaker2.CircuitBreakerTransport(registry=registry))

        def send(index: int) -> None:
            client: Any = one if index % 2 else two
            try:
                client.get(f"{upstream.url}/any")
            except CircuitOpenError:
                rejected[index] += 1

        def worker(index: int) -> None:
            for _ in range(per_thread):
                send(index)

        with one, two:
            workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join()
        reached = upstream.request_count
        key = f"127.0.0.1:{upstream.port}"
    assert list(registry) == [key]
    metrics = registry[key].get_metrics()
    assert metrics.total_requests + metrics.rejected_requests == threads * per_thread
    assert metrics.rejected_requests == sum(rejected)
    assert metrics.total_requests == reached


# -- testing code that uses httpx2 -------------------------------------------------------


async def test_httpx2_mocktransport_under_the_breaker() -> None:
    """httpx2.MockTransport as the wrapped transport: the breaker judges its answers, and
    the testing helpers move the breaker without waiting."""
    statuses = iter([503, 503, 200])
    inner = httpx2.MockTransport(lambda request: httpx2.Response(next(statuses)))
    transport = breaker2.AsyncCircuitBreakerTransport(
        inner,
        default=CircuitBreakerConfig(
            failure_threshold=2, reset_timeout=30.0, half_open_max_requests=1
        ),
    )
    with breaker_testing(transport) as clock:
        async with httpx2.AsyncClient(transport=transport) as client:
            await client.get(URL)
            await client.get(URL)
            with pytest.raises(breaker2.CircuitOpenError) as info:
                await client.get(URL)
            assert info.value.retry_after == 30.0
            clock.advance(30.0)
            assert (await client.get(URL)).status_code == 200
    assert transport.registry[KEY].state is CircuitState.CLOSED


def test_httpx2_mocktransport_under_the_sync_breaker() -> None:
    """The same with httpx2.Client and the sync transport."""
    inner = httpx2.MockTransport(lambda request: httpx2.Response(200))
    transport = breaker2.CircuitBreakerTransport(inner)
    with httpx2.Client(transport=transport) as client:
        assert client.get(URL).status_code == 200
        set_state(transport, KEY, CircuitState.OPEN)
        with pytest.raises(breaker2.CircuitOpenError):
            client.get(URL)


async def test_pytest_httpx2_mocks_httpcore2_under_the_breaker(httpx2_mock: Any) -> None:
    """pytest-httpx2's `httpx2_mock` (respx on httpcore2) answers below httpx2's own
    transport, so the breaker's default inner transport runs; an open breaker never
    reaches the route."""
    route = httpx2_mock.get(URL).respond(503)
    transport = breaker2.AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(failure_threshold=1)
    )
    async with httpx2.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == 503
        with pytest.raises(breaker2.CircuitOpenError):
            await client.get(URL)
    assert route.call_count == 1


async def test_pytest_httpx2_network_errors_are_httpcore2_errors(httpx2_mock: Any) -> None:
    """To simulate a network error under httpx2, raise httpcore2's (httpx2 maps it to its
    own); respx's usual httpx errors pass through httpx2 unmapped, as httpx errors, which
    httpx2's rules do not judge."""
    httpx2_mock.get("https://down.example.com/").mock(side_effect=httpcore2.ConnectError("refused"))
    httpx2_mock.get("https://other.example.com/").mock(side_effect=httpx.ConnectError("refused"))
    transport = breaker2.AsyncCircuitBreakerTransport(
        default=CircuitBreakerConfig(failure_threshold=1)
    )
    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx2.ConnectError):
            await client.get("https://down.example.com/")
        with pytest.raises(httpx.ConnectError):
            await client.get("https://other.example.com/")
    assert transport.registry["down.example.com"].state is CircuitState.OPEN
    other = transport.registry["other.example.com"]
    assert other.state is CircuitState.CLOSED
    assert other.get_metrics().ignored_requests == 1


# -- types ---------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_the_httpx2_modules_type_check_as_python_311(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """mypy --strict is clean on the httpx2 modules checked as the 3.11 code they are.

    pyproject's mypy runs as Python 3.10 (the oldest supported), where httpx2's own
    `typing.Self` does not exist and its methods that return Self degrade to Any
    silently, so it leaves these modules out; here they are checked as 3.11 code,
    without pyproject's settings (`--config-file=`).
    """
    config_cache = getattr(request.config, "cache", None)
    cache = config_cache.mkdir("mypy-311") if config_cache else tmp_path / "cache"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file=",
            "--strict",
            "--python-version=3.11",
            "--no-error-summary",
            "--cache-dir",
            str(cache),
            "-p",
            "httpx_breaker._httpx2",
            "-m",
            "httpx_breaker.httpx2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

