"""Logging of state changes and rejections, and listener events for users' own systems."""

from __future__ import annotations

import logging

import httpx
import pytest
import respx

import httpx_breaker._breaker as engine
from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
)
from httpx_breaker.events import BreakerEvent

from .conftest import FakeClock

LOGGER = "httpx_breaker"


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def _fail(breaker: CircuitBreaker, clock: FakeClock, duration: float = 0.0) -> None:
    def boom() -> None:
        clock.advance(duration)
        raise RuntimeError("boom")

    with pytest.raises((RuntimeError, CircuitOpenError)):
        breaker.call(boom)


def _succeed(breaker: CircuitBreaker, clock: FakeClock, duration: float = 0.0) -> None:
    breaker.call(clock.advance, duration)


def _config(**overrides: object) -> CircuitBreakerConfig:
    fields: dict[str, object] = {
        "failure_threshold": 2,
        "reset_timeout": 30.0,
        "half_open_max_requests": 1,
        "timeout": None,
    }
    fields.update(overrides)
    return CircuitBreakerConfig(**fields)  # type: ignore[arg-type]


def test_opening_is_a_warning_with_structured_fields(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """closed -> open is logged at WARNING with the key, both states, cause and retry_after."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    breaker = CircuitBreaker("payments.internal", _config(), clock=clock)
    _fail(breaker, clock)
    _fail(breaker, clock)
    (record,) = _records(caplog)
    assert record.levelno == logging.WARNING
    assert record.circuit_breaker == "payments.internal"  # type: ignore[attr-defined]
    assert record.from_state == "closed"  # type: ignore[attr-defined]
    assert record.to_state == "open"  # type: ignore[attr-defined]
    assert record.cause == "failure_threshold"  # type: ignore[attr-defined]
    assert record.retry_after == 30.0  # type: ignore[attr-defined]
    assert record.getMessage() == (
        "circuit breaker 'payments.internal': closed -> open (failure_threshold)"
    )


def test_every_transition_is_logged_with_its_cause(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Recovery steps are INFO, reopening is WARNING, and each names its cause."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    breaker = CircuitBreaker("svc", _config(), clock=clock)
    _fail(breaker, clock)
    _fail(breaker, clock)
    clock.advance(30.0)
    _fail(breaker, clock)  # the probe fails
    clock.advance(30.0)
    _succeed(breaker, clock)  # the probe succeeds
    breaker.force_open()
    breaker.reset()
    seen = [
        (r.levelname, r.from_state, r.to_state, r.cause)  # type: ignore[attr-defined]
        for r in _records(caplog)
    ]
    assert seen == [
        ("WARNING", "closed", "open", "failure_threshold"),
        ("INFO", "open", "half_open", "reset_timeout"),
        ("WARNING", "half_open", "open", "probe_failed"),
        ("INFO", "open", "half_open", "reset_timeout"),
        ("INFO", "half_open", "closed", "probes_succeeded"),
        ("WARNING", "closed", "open", "forced"),
        ("INFO", "open", "closed", "reset"),
    ]


def test_rejections_are_logged_at_debug_only(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused call is a DEBUG record with the key and state; nothing at INFO or above."""
    breaker = CircuitBreaker("svc", _config(), clock=clock)
    breaker.force_open()
    caplog.set_level(logging.INFO, logger=LOGGER)
    caplog.clear()
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    assert _records(caplog) == []
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    (record,) = _records(caplog)
    assert record.levelno == logging.DEBUG
    assert record.circuit_breaker == "svc"  # type: ignore[attr-defined]
    assert record.state == "open"  # type: ignore[attr-defined]


def test_no_log_line_per_request(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """Successes and failures that change no state log nothing, even at DEBUG."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    breaker = CircuitBreaker(
        "quiet", _config(failure_threshold=1000, failure_rate_threshold=1.0), clock=clock
    )
    for _ in range(50):
        _succeed(breaker, clock, 0.01)
        _fail(breaker, clock, 0.01)
    assert breaker.get_metrics().total_requests == 100
    assert _records(caplog) == []


def test_the_library_adds_only_a_null_handler() -> None:
    """The library never decides where records go: its logger has a NullHandler only."""
    handlers = logging.getLogger(LOGGER).handlers
    assert handlers and all(isinstance(h, logging.NullHandler) for h in handlers)


def test_transport_logs_carry_only_the_host_key(caplog: pytest.LogCaptureFixture) -> None:
    """A transport breaker's records name the host key, never userinfo, path or query."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    transport = CircuitBreakerTransport(default=_config(failure_threshold=1))
    with respx.mock(assert_all_called=True) as mock:
        mock.get(url__startswith="https://api.example.com").respond(503)
        with httpx.Client(transport=transport) as client:
            client.get("https://bob:hunter2@api.example.com/accounts/7?session=xyz")
            with pytest.raises(CircuitOpenError):
                client.get("https://bob:hunter2@api.example.com/accounts/8?session=xyz")
    records = _records(caplog)
    assert [r.levelname for r in records] == ["WARNING", "DEBUG"]
    for record in records:
        assert record.circuit_breaker == "api.example.com"  # type: ignore[attr-defined]
        extras = ("circuit_breaker", "from_state", "to_state", "cause", "state")
        text = record.getMessage() + repr([getattr(record, name, None) for name in extras])
        for secret in ("bob", "hunter2", "/accounts", "session", "xyz"):
            assert secret not in text


# -- listener events --------------------------------------------------------------


def test_listeners_see_every_kind_of_event(clock: FakeClock) -> None:
    """success, failure, ignored, state_change and rejected events, with their facts."""
    config = _config(exclude_exceptions=(KeyError,))
    breaker = CircuitBreaker("events", config, clock=clock)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)

    _succeed(breaker, clock, 0.5)

    def ignored() -> None:
        raise KeyError("excluded")

    with pytest.raises(KeyError):
        breaker.call(ignored)
    _fail(breaker, clock, 0.25)
    _fail(breaker, clock, 0.25)  # opens
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)

    assert [e.kind for e in events] == [
        "success",
        "ignored",
        "failure",
        "failure",
        "state_change",
        "rejected",
    ]
    assert all(e.name == "events" for e in events)
    assert events[0].duration == 0.5
    assert events[0].state is CircuitState.CLOSED
    change = events[4]
    assert (change.old_state, change.new_state, change.cause) == (
        CircuitState.CLOSED,
        CircuitState.OPEN,
        "failure_threshold",
    )
    assert change.retry_after == 30.0
    rejected = events[5]
    assert rejected.state is CircuitState.OPEN
    assert rejected.retry_after == 30.0
    assert rejected.time == clock.now


def test_a_raising_listener_is_logged_and_never_reaches_the_call(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in a listener or on_state_change is logged with the key; the call is fine."""
    caplog.set_level(logging.ERROR, logger=LOGGER)
    breaker = CircuitBreaker("fragile", _config(failure_threshold=1), clock=clock)

    def bad_listener(event: BreakerEvent) -> None:
        raise ValueError("listener bug")

    def bad_callback(old: CircuitState, new: CircuitState) -> None:
        raise ValueError("callback bug")

    breaker.add_listener(bad_listener)
    breaker.on_state_change = bad_callback
    assert breaker.call(lambda: 42) == 42
    _fail(breaker, clock)
    assert breaker.state is CircuitState.OPEN
    messages = [(r.getMessage(), r.circuit_breaker) for r in _records(caplog)]  # type: ignore[attr-defined]
    assert messages == [
        ("listener of circuit breaker 'fragile' raised", "fragile"),  # success
        ("listener of circuit breaker 'fragile' raised", "fragile"),  # failure
        ("on_state_change of circuit breaker 'fragile' raised", "fragile"),
        ("listener of circuit breaker 'fragile' raised", "fragile"),  # state change
    ]
    assert all(r.exc_info for r in _records(caplog))


def test_removed_listeners_hear_nothing(clock: FakeClock) -> None:
    """remove_listener stops the calls; removing an unknown listener is harmless."""
    breaker = CircuitBreaker("removal", _config(), clock=clock)
    events: list[BreakerEvent] = []

    def listener(event: BreakerEvent) -> None:
        events.append(event)

    breaker.add_listener(listener)
    _succeed(breaker, clock)
    breaker.remove_listener(listener)
    breaker.remove_listener(print)
    _succeed(breaker, clock)
    assert [e.kind for e in events] == ["success"]


def test_a_bound_method_listener_can_be_removed(clock: FakeClock) -> None:
    """`remove_listener(events.append)` removes what `add_listener(events.append)` added."""
    breaker = CircuitBreaker("bound", _config(), clock=clock)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    breaker.remove_listener(events.append)
    _succeed(breaker, clock)
    assert events == []


def test_no_events_are_built_when_nobody_listens(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without listeners, calls and rejections build no event objects at all."""
    built: list[str] = []
    real = engine.BreakerEvent

    def counting(kind: str, *args: object, **kwargs: object) -> BreakerEvent:
        built.append(kind)
        return real(kind, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "BreakerEvent", counting)
    breaker = CircuitBreaker(
        "silent", _config(failure_threshold=1000, failure_rate_threshold=1.0), clock=clock
    )
    for _ in range(20):
        _succeed(breaker, clock)
        _fail(breaker, clock)
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    # Only the state change is built (the log needs it); no per-call or rejection events.
    assert built == ["state_change"]
    built.clear()
    breaker.add_listener(lambda event: None)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    assert built == ["rejected"]


@pytest.mark.anyio
async def test_async_transport_rejection_reaches_listeners_and_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the async transport an open breaker fires a rejected event and a DEBUG record."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    transport = AsyncCircuitBreakerTransport(default=_config(failure_threshold=1))
    events: list[BreakerEvent] = []
    with respx.mock(assert_all_called=True) as mock:
        mock.get("https://api.example.com/fail").respond(500)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get("https://api.example.com/fail")
            assert response.status_code == 500
            transport.registry["api.example.com"].add_listener(events.append)
            with pytest.raises(CircuitOpenError):
                await client.get("https://api.example.com/fail")
    assert [e.kind for e in events] == ["rejected"]
    assert [(r.levelname, r.circuit_breaker) for r in _records(caplog)] == [  # type: ignore[attr-defined]
        ("WARNING", "api.example.com"),
        ("DEBUG", "api.example.com"),
    ]
