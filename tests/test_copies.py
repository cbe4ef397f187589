"""Pickling and deep-copying: a transport that does without the breaker does with it.

httpx's in-process transports (ASGI, WSGI, mock) pickle and deep-copy, and code leans
on it: sanic-testing pickles an app whose test client sits on an ASGI transport. A
copy takes the breakers' configuration and starts without breakers, since their state
(permits in flight, times on this process's clock) belongs to the original.
"""

from __future__ import annotations

import copy
import gc
import importlib
import pickle
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from httpx_breaker import (
    BreakerRegistry,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitState,
    get_all_circuit_breakers,
)
from httpx_breaker.events import BreakerEvent
from httpx_breaker.testing import FakeClock

from .libraries import Library
from .store_double import RecordingStore

pytestmark = pytest.mark.anyio

COPIES: dict[str, Callable[[Any], Any]] = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "deepcopy": copy.deepcopy,
}

HEARD: list[tuple[str, CircuitState]] = []


def ok(request: Any) -> Any:
    """A mock upstream that pickles (a module-level function), for either library."""
    http = importlib.import_module(type(request).__module__.split(".")[0])
    return http.Response(200, text="ok")


def hear(event: BreakerEvent) -> None:
    """A listener that pickles (by reference) and records what it heard."""
    if event.new_state is not None:
        HEARD.append((event.name, event.new_state))


@pytest.fixture(params=sorted(COPIES))
def copied(request: pytest.FixtureRequest) -> Callable[[Any], Any]:
    return COPIES[request.param]


def test_a_wrapped_mock_transport_copies_and_its_copy_serves(
    lib: Library, copied: Callable[[Any], Any]
) -> None:
    inner = lib.MockTransport(ok)
    copied(inner)  # the plain transport copies: so must the wrapped one
    transport = lib.CircuitBreakerTransport(inner)
    clone = copied(transport)
    assert type(clone) is type(transport)
    assert type(clone.transport) is type(inner) and clone.transport is not inner
    with lib.Client(transport=clone) as client:
        response = client.get("http://a.test/")
    assert (response.status_code, response.text) == (200, "ok")
    assert list(clone.registry) == ["a.test"] and len(transport.registry) == 0


async def test_a_wrapped_async_mock_transport_copies_and_its_copy_serves(
    lib: Library, copied: Callable[[Any], Any]
) -> None:
    transport = lib.AsyncCircuitBreakerTransport(lib.MockTransport(ok))
    clone = copied(transport)
    async with lib.AsyncClient(transport=clone) as client:
        response = await client.get("http://a.test/")
    assert (response.status_code, response.text) == (200, "ok")
    assert list(clone.registry) == ["a.test"] and len(transport.registry) == 0


def test_a_copy_has_the_policies_and_no_breakers_and_the_original_keeps_its(
    lib: Library, copied: Callable[[Any], Any]
) -> None:
    slow = CircuitBreakerConfig(failure_threshold=2, reset_timeout=5.0)
    registry = BreakerRegistry(
        default=CircuitBreakerConfig(failure_threshold=7),
        policies={"*.slow.test": slow},
        max_size=9,
    )
    transport = lib.CircuitBreakerTransport(lib.MockTransport(ok), registry=registry)
    transport.breaker_for_url("http://a.slow.test/").force_open()
    clone = copied(transport)
    assert clone.registry is not registry and len(clone.registry) == 0
    assert clone.registry.default == registry.default
    assert dict(clone.registry.policies) == {"*.slow.test": slow}
    assert clone.registry.max_size == 9
    with lib.Client(transport=clone) as client:
        assert client.get("http://a.slow.test/").status_code == 200  # a breaker of its own
    assert clone.breaker_for_url("http://a.slow.test/").config == slow
    with lib.Client(transport=transport) as client, pytest.raises(lib.CircuitOpenError):
        client.get("http://a.slow.test/")  # the original still refuses


def test_transports_sharing_a_registry_share_its_copy() -> None:
    registry = BreakerRegistry()
    pair = (
        CircuitBreakerTransport(httpx.MockTransport(ok), registry=registry),
        CircuitBreakerTransport(httpx.MockTransport(ok), registry=registry),
    )
    for copied in COPIES.values():
        first, second = copied(pair)
        assert first.registry is second.registry is not registry


def test_a_copy_keeps_the_clock_and_the_listeners(copied: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    registry = BreakerRegistry(default=CircuitBreakerConfig(failure_threshold=1), clock=clock)
    registry.add_listener(hear)
    clone = copied(registry)
    breaker = clone.breaker_for("a.test")
    HEARD.clear()
    breaker.force_open()
    assert HEARD == [("a.test", CircuitState.OPEN)]
    if copied is copy.deepcopy:  # the same clock, which the test goes on advancing
        assert clone.clock is clock and breaker.clock is clock
    else:
        assert isinstance(clone.clock, FakeClock) and clone.clock() == clock()


@pytest.mark.parametrize("how", [*COPIES.values(), copy.copy], ids=[*COPIES, "copy"])
def test_a_registry_with_a_store_is_not_copied(how: Callable[[Any], Any]) -> None:
    registry = BreakerRegistry(store=RecordingStore())
    targets: list[object] = [registry]
    if how is not copy.copy:  # a shallow copy of a transport shares its registry
        targets.append(CircuitBreakerTransport(httpx.MockTransport(ok), registry=registry))
    for target in targets:
        with pytest.raises(TypeError, match="with a store cannot be pickled or copied"):
            how(target)


def test_a_shallow_copy_of_a_transport_shares_its_breakers() -> None:
    transport = CircuitBreakerTransport(httpx.MockTransport(ok))
    assert copy.copy(transport).registry is transport.registry


class Registry(BreakerRegistry):
    """A registry of the user's own kind."""


def test_a_copy_of_a_registry_subclass_is_of_that_class(copied: Callable[[Any], Any]) -> None:
    assert type(copied(Registry(max_size=3))) is Registry


# -- a breaker on its own ----------------------------------------------------------------


def fails_on_none(result: object, exc: BaseException | None) -> bool:
    """A classifier that pickles (a module-level function): a None result is a failure."""
    return exc is not None or result is None


CHANGES: list[tuple[CircuitState, CircuitState]] = []


def note_change(old: CircuitState, new: CircuitState) -> None:
    CHANGES.append((old, new))


@pytest.mark.parametrize("how", [*COPIES.values(), copy.copy], ids=[*COPIES, "copy"])
def test_a_copied_breaker_is_a_new_one_with_the_same_configuration(
    how: Callable[[Any], Any],
) -> None:
    """What the copy keeps is the configuration; its state and counts are its own, so
    calls through either count in that one alone (a copy of the fields would share the
    lock and the failure window with the original, but not its state)."""
    clock = FakeClock()
    config = CircuitBreakerConfig(failure_threshold=2, reset_timeout=9.0, jitter=0.0)
    original = CircuitBreaker("payments", config, classifier=fails_on_none, clock=clock)
    original.add_listener(hear)
    original.on_state_change = note_change
    original.call(lambda: "paid")
    original.force_open()
    clone = how(original)
    assert type(clone) is CircuitBreaker and clone is not original
    assert (clone.name, clone.config, clone.state) == ("payments", config, CircuitState.CLOSED)
    assert clone.get_metrics().total_requests == 0
    assert original.get_metrics().total_requests == 1 and original.is_open()

    HEARD.clear()
    CHANGES.clear()
    for _ in range(2):
        assert clone.call(lambda: None) is None  # a failure, by the classifier it kept
    assert clone.is_open() and original.get_metrics().failed_requests == 0
    assert HEARD == [("payments", CircuitState.OPEN)]
    assert CHANGES == [(CircuitState.CLOSED, CircuitState.OPEN)]
    if how is COPIES["pickle"]:
        assert isinstance(clone.clock, FakeClock) and clone.clock() == clock()
    else:  # the same clock, which the test goes on advancing
        assert clone.clock is clock
        clock.advance(9.0)
        assert clone.state is CircuitState.HALF_OPEN


@pytest.mark.parametrize("how", [*COPIES.values(), copy.copy], ids=[*COPIES, "copy"])
def test_a_breaker_sharing_its_state_through_a_store_is_not_copied(
    how: Callable[[Any], Any],
) -> None:
    breaker = BreakerRegistry(store=RecordingStore()).breaker_for("a.test")
    with pytest.raises(TypeError, match=r"'a\.test' shares its state through a store"):
        how(breaker)


def test_a_live_copy_is_the_one_listed_under_the_name() -> None:
    original = CircuitBreaker("listed-copy")
    clone = copy.deepcopy(original)
    assert get_all_circuit_breakers()["listed-copy"] is clone
    del clone
    gc.collect()
    assert get_all_circuit_breakers()["listed-copy"] is original
