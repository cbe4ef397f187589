"""OpenTelemetry's httpx instrumentation over a client whose transport is the breaker.

What docs/monitoring.md ("Tracing") tells users, with the real instrumentation:
`HTTPXClientInstrumentor().instrument()` patches httpx's own transport classes, below
the breaker, so a refused request makes no span; `instrument_client(client)` wraps the
client's transport (the breaker), so a refusal makes an ERROR span; and
`uninstrument_client(client)` after `instrument()` cannot reach the transport inside the
breaker, which `unwrap(transport.transport, ...)` does.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from httpx_breaker import AsyncCircuitBreakerTransport, CircuitBreakerTransport, CircuitOpenError

pytestmark = pytest.mark.anyio

URL = "http://api.test/items"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(spans: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider
    provider.shutdown()


@pytest.fixture
def instrumented(provider: TracerProvider) -> Iterator[HTTPXClientInstrumentor]:
    """The global instrumentation (httpx's transport classes patched), undone after."""
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.get(URL).respond(200, text="ok")
        yield router


def _described(found: tuple[ReadableSpan, ...]) -> list[tuple[StatusCode, object, list[str]]]:
    return [
        (
            span.status.status_code,
            (span.attributes or {}).get("http.status_code"),
            [str((event.attributes or {}).get("exception.type")) for event in span.events],
        )
        for span in found
    ]


def test_global_instrumentation_traces_what_reaches_the_host_and_no_refusal(
    instrumented: HTTPXClientInstrumentor,
    spans: InMemorySpanExporter,
    upstream: respx.MockRouter,
) -> None:
    transport = CircuitBreakerTransport(httpx.HTTPTransport())
    with httpx.Client(transport=transport) as client:
        assert client.get(URL).status_code == 200
        assert "traceparent" in upstream.calls.last.request.headers
        assert _described(spans.get_finished_spans()) == [(StatusCode.UNSET, 200, [])]
        spans.clear()
        transport.breaker_for_url(URL).force_open()
        with pytest.raises(CircuitOpenError):
            client.get(URL)
    assert spans.get_finished_spans() == ()  # refused above the patched transport
    assert upstream.calls.call_count == 1


async def test_global_instrumentation_traces_no_refusal_async(
    instrumented: HTTPXClientInstrumentor,
    spans: InMemorySpanExporter,
    upstream: respx.MockRouter,
) -> None:
    transport = AsyncCircuitBreakerTransport(httpx.AsyncHTTPTransport())
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == 200
        transport.breaker_for_url(URL).force_open()
        with pytest.raises(CircuitOpenError):
            await client.get(URL)
    assert _described(spans.get_finished_spans()) == [(StatusCode.UNSET, 200, [])]


def test_an_instrumented_client_traces_a_refusal_as_an_error(
    provider: TracerProvider, spans: InMemorySpanExporter, upstream: respx.MockRouter
) -> None:
    transport = CircuitBreakerTransport(httpx.HTTPTransport())
    with httpx.Client(transport=transport) as client:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
        try:
            assert client.get(URL).status_code == 200
            transport.breaker_for_url(URL).force_open()
            with pytest.raises(CircuitOpenError):
                client.get(URL)
        finally:
            HTTPXClientInstrumentor.uninstrument_client(client)
    assert _described(spans.get_finished_spans()) == [
        (StatusCode.UNSET, 200, []),
        (StatusCode.ERROR, None, ["httpx_breaker._errors.CircuitOpenError"]),
    ]
    assert upstream.calls.call_count == 1


def test_uninstrumenting_a_client_over_the_breaker_needs_the_inner_transport_unwrapped(
    instrumented: HTTPXClientInstrumentor,
    spans: InMemorySpanExporter,
    upstream: respx.MockRouter,
) -> None:
    transport = CircuitBreakerTransport(httpx.HTTPTransport())
    with httpx.Client(transport=transport) as client:
        HTTPXClientInstrumentor.uninstrument_client(client)
        client.get(URL)
        assert len(spans.get_finished_spans()) == 1  # the transport inside still traces
        spans.clear()
        unwrap(transport.transport, "handle_request")  # what docs/monitoring.md says to do
        client.get(URL)
        assert spans.get_finished_spans() == ()
    with httpx.Client() as other:  # other clients stay instrumented
        other.get(URL)
    assert len(spans.get_finished_spans()) == 1
