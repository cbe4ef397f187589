"""A classifier that reads the body: GraphQL's "200 with errors", over real servers.

httpx stores a response's content only after its body is closed, and the outcome is
judged at that close: the transports keep the chunks of a body read to the end (up to
`BODY_KEPT` bytes) for a classifier that may read it, and hand it a response whose
`json()` works, without touching the caller's. Routing cases use respx; the rest a real
uvicorn server (tests/servers.py, ``/json``), for httpx and httpx2, async and sync.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitState,
)
from httpx_breaker._classify import reads_body
from httpx_breaker._transport import (
    BODY_KEPT,
    _AsyncKeptStream,
    _AsyncTrackedStream,
    _SyncKeptStream,
    _SyncTrackedStream,
)
from httpx_breaker.classifiers import default_classifier, make_classifier

from .libraries import Library
from .servers import SSL_CONTEXT, Server

pytestmark = pytest.mark.anyio

CLOSED, OPEN = CircuitState.CLOSED, CircuitState.OPEN
ONE = CircuitBreakerConfig(failure_threshold=1)
GENEROUS = 30.0  # httpx's own timeouts, out of the way
# trio warns about the async generators httpx itself leaves when a body is left early,
# with or without a breaker (tests/test_real_traffic.py says more).
ABANDONED_GENERATORS = pytest.mark.filterwarnings(
    "ignore:Async generator .* was garbage collected before it had been exhausted:ResourceWarning"
)


class GraphQL:
    """A classifier for a GraphQL API: a 200 whose JSON body lists errors is a failure.
    It records what it saw: the body's error count, or "unread" when the body was not
    there to read (it then leaves the verdict to the default rules)."""

    def __init__(self, lib: Library) -> None:
        self.lib = lib
        self.seen: list[object] = []

    def __call__(self, request: Any, response: Any, exc: BaseException | None) -> bool | None:
        if response is not None and exc is None and response.status_code == 200:
            try:
                body = response.json()
            except self.lib.ResponseNotRead:
                self.seen.append("unread")
            else:
                self.seen.append(len(body["errors"]))
                return bool(body["errors"])
        verdict: bool | None = self.lib.default_classifier(request, response, exc)
        return verdict


# -- routing cases, with respx (httpx) ---------------------------------------------------


def graphql_route(mock: respx.MockRouter) -> None:
    mock.post("https://graphql.example.com/", json={"query": "ok"}).respond(json={"data": 1, "errors": []})
    mock.post("https://graphql.example.com/", json={"query": "bad"}).respond(
        json={"data": None, "errors": [{"message": "boom"}]}
    )


async def test_a_200_listing_errors_opens_the_breaker_through_respx() -> None:
    """respx answers as a real server does, with a body still to read: the classifier
    reads it all the same, a 200 without errors is a success, one with errors a failure."""
    classifier = GraphQL(Library("httpx"))
    transport = AsyncCircuitBreakerTransport(default=ONE, classifier=classifier)
    with respx.mock(assert_all_called=True) as mock:
        graphql_route(mock)
        async with httpx.AsyncClient(transport=transport) as client:
            good = await client.post("https://graphql.example.com/", json={"query": "ok"})
            breaker = transport.registry["graphql.example.com"]
            assert breaker.state is CLOSED
            bad = await client.post("https://graphql.example.com/", json={"query": "bad"})
    assert (good.json()["data"], bad.json()["errors"]) == (1, [{"message": "boom"}])
    assert classifier.seen == [0, 1]
    assert breaker.state is OPEN
    metrics = breaker.get_metrics()
    assert (metrics.successful_requests, metrics.failed_requests, metrics.ignored_requests) == (1, 1, 0)


def test_sync_a_200_listing_errors_opens_the_breaker_through_respx() -> None:
    classifier = GraphQL(Library("httpx"))
    transport = CircuitBreakerTransport(default=ONE, classifier=classifier)
    with respx.mock(assert_all_called=True) as mock:
        graphql_route(mock)
        with httpx.Client(transport=transport) as client:
            good = client.post("https://graphql.example.com/", json={"query": "ok"})
            bad = client.post("https://graphql.example.com/", json={"query": "bad"})
    assert (good.json()["data"], bad.json()["errors"]) == (1, [{"message": "boom"}])
    assert classifier.seen == [0, 1]
    assert transport.registry["graphql.example.com"].state is OPEN


def test_only_classifiers_that_may_read_the_body_have_it_kept() -> None:
    """The default rules and `make_classifier`'s judge without the body: no chunk is
    kept for them. Any other callable may read it, unhashable ones included."""

    @dataclasses.dataclass
    class Unhashable:  # eq=True without frozen: no __hash__
        name: str = "x"

        def __call__(self, request: Any, response: Any, exc: Any) -> bool | None:
            return None

    assert not reads_body(default_classifier)
    assert not reads_body(make_classifier(failure_statuses=range(500, 600)))
    assert reads_body(GraphQL(Library("httpx")))
    assert reads_body(lambda request, response, exc: None)
    assert reads_body(Unhashable())
    transport = CircuitBreakerTransport(httpx.MockTransport(lambda r: httpx.Response(200)), classifier=Unhashable())
    with httpx.Client(transport=transport) as client:
        assert client.get("https://a.example.com/").status_code == 200
    # And the transports follow that choice: the body-keeping stream only where asked.
    for classifier, keeps in (
        (None, False),
        (make_classifier(failure_statuses=range(500, 600)), False),
        (GraphQL(Library("httpx")), True),
    ):
        for transport_cls in (CircuitBreakerTransport, AsyncCircuitBreakerTransport):
            core = transport_cls(classifier=classifier)._core
            kinds = (core.sync_stream, core.async_stream)
            expected = (_SyncKeptStream, _AsyncKeptStream) if keeps else (_SyncTrackedStream, _AsyncTrackedStream)
            assert kinds == expected, (classifier, transport_cls)


# -- real servers ------------------------------------------------------------------------


def async_client(lib: Library, server: Server, classifier: object, **config: object) -> tuple[Any, Any]:
    transport = lib.AsyncCircuitBreakerTransport(
        lib.AsyncHTTPTransport(verify=SSL_CONTEXT),
        default=CircuitBreakerConfig(failure_threshold=1, **config),  # type: ignore[arg-type]
        classifier=classifier,
    )
    client = lib.AsyncClient(transport=transport, base_url=server.base, timeout=GENEROUS, trust_env=False)
    return client, transport


def sync_client(lib: Library, server: Server, classifier: object, **config: object) -> tuple[Any, Any]:
    transport = lib.CircuitBreakerTransport(
        lib.HTTPTransport(verify=SSL_CONTEXT),
        default=CircuitBreakerConfig(failure_threshold=1, **config),  # type: ignore[arg-type]
        classifier=classifier,
    )
    client = lib.Client(transport=transport, base_url=server.base, timeout=GENEROUS, trust_env=False)
    return client, transport


async def leave_after_the_first_part(client: Any, path: str) -> None:
    """Read the first part of `path`'s body, then leave."""
    async with (
        client.stream("GET", path) as response,
        contextlib.aclosing(response.aiter_raw()) as chunks,
    ):
        assert await chunks.__anext__()


async def test_a_gzipped_body_in_parts_reaches_the_classifier_decoded(
    lib: Library, http1_server: Server
) -> None:
    """A gzip-compressed JSON body in four parts: the classifier reads it decoded, and
    the caller gets the same body as a client without the breaker."""
    classifier = GraphQL(lib)
    client, transport = async_client(lib, http1_server, classifier)
    path = "/json?errors=2&pad=3000&parts=4&gzip=1"
    async with client, lib.AsyncClient(base_url=http1_server.base, trust_env=False) as bare:
        response = await client.get(path)
        expected = (await bare.get(path)).json()
    assert response.headers["content-encoding"] == "gzip"
    assert response.json() == expected and len(expected["errors"]) == 2
    assert classifier.seen == [2]
    assert transport.registry[http1_server.key].state is OPEN


def test_sync_a_gzipped_body_in_parts_reaches_the_classifier_decoded(
    lib: Library, http1_server: Server
) -> None:
    classifier = GraphQL(lib)
    client, transport = sync_client(lib, http1_server, classifier)
    with client:
        response = client.get("/json?errors=0&pad=3000&parts=4&gzip=1")
        assert classifier.seen == [0]
        assert transport.registry[http1_server.key].state is CLOSED
        response = client.get("/json?errors=1&parts=3&gzip=1")
    assert response.json()["errors"] == [{"message": "error 0"}]
    assert classifier.seen == [0, 1]
    assert transport.registry[http1_server.key].state is OPEN


async def test_a_body_streamed_to_its_end_is_read_by_the_classifier_and_not_by_the_caller(
    lib: Library, http1_server: Server
) -> None:
    """A caller who streams the body to its end without `aread()`: the classifier reads
    it, and the caller's response is left as httpx leaves it (its `content` unread)."""
    classifier = GraphQL(lib)
    client, transport = async_client(lib, http1_server, classifier)
    path = "/json?errors=1&pad=2000&parts=5"
    async with client, lib.AsyncClient(base_url=http1_server.base, trust_env=False) as bare:
        for sender in (bare, client):
            async with sender.stream("GET", path) as response:
                data = b"".join([chunk async for chunk in response.aiter_bytes()])
            assert json.loads(data)["errors"] == [{"message": "error 0"}]
            with pytest.raises(lib.ResponseNotRead):
                response.content  # noqa: B018 (as without the breaker)
            assert not hasattr(response, "_text")
    assert classifier.seen == [1]
    assert transport.registry[http1_server.key].state is OPEN


@ABANDONED_GENERATORS
async def test_a_body_left_early_reaches_the_classifier_unread(
    lib: Library, http1_server: Server
) -> None:
    """A body the caller leaves after its first part was not read: the classifier gets
    it unread (and here leaves the verdict to the default rules: a success)."""
    classifier = GraphQL(lib)
    client, transport = async_client(lib, http1_server, classifier)
    async with client:
        await leave_after_the_first_part(client, "/json?errors=1&pad=20000&parts=4")
    assert classifier.seen == ["unread"]
    breaker = transport.registry[http1_server.key]
    assert breaker.state is CLOSED
    assert breaker.get_metrics().successful_requests == 1


def test_sync_a_body_longer_than_what_is_kept_reaches_the_classifier_unread(
    lib: Library, http1_server: Server
) -> None:
    """Past `BODY_KEPT` bytes, nothing is kept: the classifier gets the body unread,
    and the caller still reads it whole."""
    classifier = GraphQL(lib)
    client, transport = sync_client(lib, http1_server, classifier)
    with client:
        response = client.get(f"/json?errors=1&pad={BODY_KEPT}&parts=8")
        within = client.get(f"/json?errors=0&pad={BODY_KEPT - 1000}&parts=8")
    assert len(response.json()["pad"]) == BODY_KEPT
    assert len(within.json()["pad"]) == BODY_KEPT - 1000
    assert classifier.seen == ["unread", 0]
    assert transport.registry[http1_server.key].get_metrics().successful_requests == 2


async def test_with_outcome_at_headers_the_classifier_gets_the_body_unread(
    lib: Library, http1_server: Server
) -> None:
    """`outcome_at="headers"` judges before the body exists."""
    classifier = GraphQL(lib)
    client, _ = async_client(lib, http1_server, classifier, outcome_at="headers")
    async with client:
        response = await client.get("/json?errors=1")
    assert response.json()["errors"] == [{"message": "error 0"}]
    assert classifier.seen == ["unread"]


@ABANDONED_GENERATORS
async def test_a_classifier_that_reads_a_body_that_is_not_there_is_told_why(
    lib: Library, http1_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A classifier that does not catch `ResponseNotRead` is logged as any raising
    classifier, and the log says when a body can be read."""

    def careless(request: Any, response: Any, exc: BaseException | None) -> bool | None:
        return bool(response.json()["errors"])

    client, transport = async_client(lib, http1_server, careless)
    with caplog.at_level(logging.ERROR, logger="httpx_breaker"):
        async with client:
            await leave_after_the_first_part(client, "/json?errors=1&pad=20000&parts=4")
            assert "classifier raised" in caplog.text
            assert f"catch {lib.name}.ResponseNotRead for the others" in caplog.text
            await client.get("/json?errors=1")  # read whole: judged, nothing logged
    assert caplog.text.count("classifier raised") == 1
    metrics = transport.registry[http1_server.key].get_metrics()
    assert (metrics.ignored_requests, metrics.failed_requests) == (1, 1)



class _Pieces(httpx.SyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces


def test_a_small_body_that_decodes_past_the_limit_reaches_the_classifier_unread() -> None:
    """64 KiB of gzip that decode to 64 MiB, forwarded raw by a caller who never
    decodes them: the classifier gets the body unread, and decoding it for the
    classifier stops at the limit rather than holding 64 MiB nobody asked for."""
    squeezer = zlib.compressobj(wbits=31)  # gzip
    zeros = bytes(1 << 20)
    raw = b"".join(squeezer.compress(zeros) for _ in range(64)) + squeezer.flush()
    assert len(raw) < BODY_KEPT // 8

    def answer(request: httpx.Request) -> httpx.Response:
        pieces = [raw[i : i + 8192] for i in range(0, len(raw), 8192)]
        return httpx.Response(200, headers={"content-encoding": "gzip"}, stream=_Pieces(pieces))

    classifier = GraphQL(Library("httpx"))
    transport = CircuitBreakerTransport(httpx.MockTransport(answer), classifier=classifier)
    with httpx.Client(transport=transport) as client:
        tracemalloc.start()
        try:
            with client.stream("GET", "https://bomb.example.com/") as response:
                forwarded = sum(len(chunk) for chunk in response.iter_raw())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert forwarded == len(raw)
    assert classifier.seen == ["unread"]
    assert peak < 16 * BODY_KEPT  # 64 MiB and more before the decoding was bounded
