"""@circuit_breaker on async and sync functions, and get_all_circuit_breakers()."""

from __future__ import annotations

import functools
import gc
import inspect
import re
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import anyio
import pytest

from httpx_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    circuit_breaker,
    get_all_circuit_breakers,
)

from .conftest import FakeClock


class Boom(Exception):
    """The failure our test functions raise."""


@pytest.mark.anyio
async def test_async_function_goes_through_its_breaker(clock: FakeClock) -> None:
    """A decorated coroutine function stays async and opens after its failures."""

    @circuit_breaker(
        name="deco-async", config=CircuitBreakerConfig(failure_threshold=2), clock=clock
    )
    async def fetch(x: int, *, fail: bool = False) -> int:
        await anyio.lowlevel.checkpoint()
        if fail:
            raise Boom
        return x * 2

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(21) == 42
    for _ in range(2):
        with pytest.raises(Boom):
            await fetch(1, fail=True)
    breaker = fetch.circuit_breaker()
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.name == "deco-async"
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        await fetch(1)
    assert info.value.key == "deco-async"
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests, m.rejected_requests) == (1, 2, 1)


def test_sync_function_goes_through_its_breaker(clock: FakeClock) -> None:
    """A decorated plain function is called through `call` and keeps its metadata."""

    @circuit_breaker(
        name="deco-sync", config=CircuitBreakerConfig(failure_threshold=1), clock=clock
    )
    def parse(text: str) -> int:
        """Parse an int."""
        return int(text)

    assert not inspect.iscoroutinefunction(parse)
    assert parse.__name__ == "parse"
    assert parse.__doc__ == "Parse an int."
    assert parse("5") == 5
    with pytest.raises(ValueError, match="invalid literal"):
        parse("x")
    with pytest.raises(CircuitOpenError):
        parse("6")
    assert parse.circuit_breaker().get_metrics().failed_requests == 1


def test_name_defaults_to_module_and_qualified_name() -> None:
    """Without a name the breaker is named after the function's module and qualname."""

    @circuit_breaker()
    def helper() -> None: ...

    @circuit_breaker
    def bare() -> None: ...

    assert helper.circuit_breaker().name == f"{__name__}.{helper.__qualname__}"
    assert bare.circuit_breaker().name.endswith(
        "test_name_defaults_to_module_and_qualified_name.<locals>.bare"
    )


def test_name_may_be_positional() -> None:
    """`@circuit_breaker("name")` names the breaker; naming it twice is an error."""

    @circuit_breaker("positional")
    def f() -> int:
        return 1

    assert f.circuit_breaker().name == "positional"
    with pytest.raises(TypeError):
        circuit_breaker("a", name="b")  # type: ignore[call-overload]


def test_a_function_decorated_directly_takes_no_config_or_classifier() -> None:
    """`circuit_breaker(func, config=...)` would drop the config silently; it is refused,
    for either argument alone."""

    def f() -> int:
        return 1

    with pytest.raises(TypeError, match="takes no config or classifier"):
        circuit_breaker(f, config=CircuitBreakerConfig())  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="takes no config or classifier"):
        circuit_breaker(f, classifier=lambda result, exc: None)  # type: ignore[call-overload]


def test_a_class_whose_instances_are_awaited_is_decorated_as_sync() -> None:
    """Calling a class makes an instance, at once: the decorated class is sync even when
    its instances' `__call__` is a coroutine function."""

    class Handler:
        async def __call__(self) -> int:
            return 1

    made = circuit_breaker(Handler)()
    assert isinstance(made, Handler)


def test_decorator_classifier_sees_results(clock: FakeClock) -> None:
    """The decorator passes its classifier on, so returned failures trip the breaker."""

    @circuit_breaker(
        name="deco-result",
        config=CircuitBreakerConfig(failure_threshold=1),
        classifier=lambda result, exc: result == "error",
        clock=clock,
    )
    def lookup() -> str:
        return "error"

    assert lookup() == "error"
    assert lookup.circuit_breaker().state is CircuitState.OPEN


def test_each_decorated_function_has_its_own_breaker() -> None:
    """Two decorated functions never share a breaker."""

    @circuit_breaker(name="one")
    def a() -> None: ...

    @circuit_breaker(name="two")
    def b() -> None: ...

    assert a.circuit_breaker() is not b.circuit_breaker()


def test_get_all_lists_live_breakers_weakly() -> None:
    """Live breakers are listed by name; a dropped one disappears after collection."""
    kept = CircuitBreaker("registry-kept")
    dropped = CircuitBreaker("registry-dropped")

    @circuit_breaker(name="registry-decorated")
    def f() -> None: ...

    every = get_all_circuit_breakers()
    assert every["registry-kept"] is kept
    assert every["registry-dropped"] is dropped
    assert every["registry-decorated"] is f.circuit_breaker()
    del every, dropped
    gc.collect()
    every = get_all_circuit_breakers()
    assert "registry-dropped" not in every
    assert every["registry-kept"] is kept
    assert "registry-decorated" in every


def test_get_all_most_recent_wins_on_name_clash() -> None:
    """Of two breakers with one name, the newer is listed; drop it and the older returns."""
    older = CircuitBreaker("clash")
    newer = CircuitBreaker("clash")
    assert get_all_circuit_breakers()["clash"] is newer
    del newer
    gc.collect()
    assert get_all_circuit_breakers()["clash"] is older
    del older
    gc.collect()
    assert "clash" not in get_all_circuit_breakers()


def test_get_all_returns_a_copy() -> None:
    """Changing the returned dict does not change the process-wide view."""
    kept = CircuitBreaker("copy-me")
    every = get_all_circuit_breakers()
    every.clear()
    assert get_all_circuit_breakers()["copy-me"] is kept


TYPING_CHECK = """
from __future__ import annotations

import httpx

from httpx_breaker import BreakerMetrics, CircuitBreakerConfig, breaker_info, circuit_breaker


@circuit_breaker
def bare(x: int, *, label: str = "") -> str:
    return label * x


@circuit_breaker("positional")
async def fetch(url: str) -> bytes:
    return url.encode()


@circuit_breaker(name="named", config=CircuitBreakerConfig(), classifier=None, clock=None)
def named(a: float, b: float) -> float:
    return a + b


class Client:
    @circuit_breaker(name="method")
    def get(self, path: str) -> int:
        return len(path)


async def main() -> None:
    metrics: BreakerMetrics = bare.circuit_breaker().get_metrics()
    reveal_type(fetch.circuit_breaker().get_metrics())
    reveal_type(bare(2, label="a"))
    reveal_type(await fetch("https://example.com"))
    reveal_type(named(1.0, 2))
    reveal_type(Client().get("/x"))
    reveal_type(Client().get.circuit_breaker())
    bare("2")  # error: arg-type
    bare(2, label=3)  # error: arg-type
    await fetch(b"https://example.com")  # error: arg-type
    named(1.0)  # error: call-arg
    Client().get(42)  # error: arg-type
    print(metrics)
    info = breaker_info(httpx.Response(200))
    if info is not None:
        reveal_type(info["state"])
        reveal_type(info["breaker"].get_metrics().availability)
        info["nope"]  # error: typeddict-item
"""


@pytest.mark.timeout(120)
def test_decorated_functions_type_check_under_mypy_strict(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """mypy --strict keeps the wrapped signature, knows `.circuit_breaker()`, and flags bad
    calls; `breaker_info` gives a typed view of the response extension."""
    source = tmp_path / "uses_decorator.py"
    source.write_text(TYPING_CHECK)
    # pytest -p no:cacheprovider leaves no config.cache: fall back to a fresh folder.
    config_cache = getattr(request.config, "cache", None)
    cache = config_cache.mkdir("mypy") if config_cache else tmp_path / "cache"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--python-version=3.10",
            "--no-error-summary",
            "--show-error-codes",
            "--cache-dir",
            str(cache),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    lines = TYPING_CHECK.splitlines()
    expected_errors = {
        (number, line.split("# error: ")[1])
        for number, line in enumerate(lines, 1)
        if "# error: " in line
    }
    errors: set[tuple[int, str]] = set()
    revealed: list[str] = []
    for out in done.stdout.splitlines():
        match = re.match(r".*?:(\d+): (error|note): (.*?)(?:  \[([a-z-]+)\])?$", out)
        assert match, out
        number, kind, message, code = int(match[1]), match[2], match[3], match[4]
        if kind == "error":
            errors.add((number, code))
        elif message.startswith("Revealed type is"):
            revealed.append(message.removeprefix("Revealed type is ").strip('"').split(".")[-1])
    assert errors == expected_errors, done.stdout + done.stderr
    assert revealed == [
        "BreakerMetrics", "str", "bytes", "float", "int", "CircuitBreaker", "CircuitState", "float"
    ]


# -- callables that are async without being `async def` (defect 6 of issue 10) ------


class AsyncCallable:
    """An object whose `__call__` is a coroutine function (as many SDK clients are)."""

    async def __call__(self, fail: bool = False) -> str:
        await anyio.lowlevel.checkpoint()
        if fail:
            raise Boom
        return "ok"


async def fetch_or_fail(fail: bool = False) -> str:
    await anyio.lowlevel.checkpoint()
    if fail:
        raise Boom
    return "ok"


def one_shot_config() -> CircuitBreakerConfig:
    return CircuitBreakerConfig(failure_threshold=1, reset_timeout=10.0, half_open_max_requests=1)


@pytest.mark.anyio
async def test_object_with_async_call_is_judged_when_awaited(clock: FakeClock) -> None:
    """An object with `async def __call__` gets an async wrapper: failures are seen."""
    fetch = circuit_breaker(config=one_shot_config(), clock=clock)(AsyncCallable())
    assert inspect.iscoroutinefunction(fetch)
    assert await fetch() == "ok"
    with pytest.raises(Boom):
        await fetch(fail=True)
    breaker = fetch.circuit_breaker()
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests) == (1, 1)
    assert breaker.state is CircuitState.OPEN
    assert breaker.name == f"{__name__}.AsyncCallable"


@pytest.mark.anyio
async def test_partial_of_a_coroutine_function_is_judged_when_awaited(clock: FakeClock) -> None:
    """A functools.partial of an `async def` (or of an async callable) is async, and named
    after what it wraps."""
    fail = circuit_breaker(config=one_shot_config(), clock=clock)(
        functools.partial(fetch_or_fail, True)
    )
    assert inspect.iscoroutinefunction(fail)
    assert fail.circuit_breaker().name == f"{__name__}.fetch_or_fail"
    with pytest.raises(Boom):
        await fail()
    assert fail.circuit_breaker().get_metrics().failed_requests == 1
    assert fail.circuit_breaker().state is CircuitState.OPEN

    of_object = circuit_breaker(name="partial-object", config=one_shot_config(), clock=clock)(
        functools.partial(AsyncCallable(), fail=True)
    )
    with pytest.raises(Boom):
        await of_object()
    m = of_object.circuit_breaker().get_metrics()
    assert (m.successful_requests, m.failed_requests) == (0, 1)


@pytest.mark.anyio
async def test_sync_function_returning_a_coroutine_is_judged_when_awaited(
    clock: FakeClock,
) -> None:
    """A plain function that returns an awaitable: admitted when called, judged when the
    awaitable is awaited, which the wrapper hands back as a real coroutine."""
    calls: list[bool] = []

    @circuit_breaker(name="returns-awaitable", config=one_shot_config(), clock=clock)
    def fetch(fail: bool = False) -> Coroutine[Any, Any, str]:
        calls.append(fail)
        return fetch_or_fail(fail)

    pending = fetch()
    assert inspect.iscoroutine(pending)  # so asyncio.create_task() and gather() take it
    breaker = fetch.circuit_breaker()
    assert breaker.get_metrics().total_requests == 0  # nothing judged before the await
    clock.advance(2.0)
    assert await pending == "ok"
    m = breaker.get_metrics()
    assert (m.successful_requests, m.failed_requests, m.total_response_time) == (1, 0, 2.0)
    with pytest.raises(Boom):
        await fetch(fail=True)
    assert breaker.get_metrics().failed_requests == 1
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        fetch()  # refused when called: the function does not run
    assert calls == [False, True]


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_an_awaitable_never_awaited_returns_its_probe_permit(clock: FakeClock) -> None:
    """A probe whose awaitable is dropped unawaited gives its permit back when collected."""

    @circuit_breaker(name="dropped-awaitable", config=one_shot_config(), clock=clock)
    def fetch() -> Coroutine[Any, Any, str]:
        return fetch_or_fail()

    breaker = fetch.circuit_breaker()
    with pytest.raises(Boom):  # open it the ordinary way
        breaker.call(lambda: (_ for _ in ()).throw(Boom()))
    clock.advance(10.0)
    assert breaker.state is CircuitState.HALF_OPEN
    fetch()  # the one probe slot, dropped at once
    gc.collect()
    assert breaker.get_metrics().ignored_requests == 1
    pending = fetch()  # the slot is free again
    pending.close()


def test_a_sync_call_that_lasts_exactly_the_timeout_has_not_overrun(clock: FakeClock) -> None:
    """A decorated sync function fails by time only when it outlives `timeout`: one that
    lasts exactly `timeout`, or less, is a success; one that lasts longer is a failure
    (its result still returned)."""

    @circuit_breaker(name="timed-sync", config=CircuitBreakerConfig(timeout=2.0), clock=clock)
    def work(seconds: float) -> str:
        clock.advance(seconds)
        return "done"

    assert work(0.5) == "done"
    assert work(2.0) == "done"
    m = work.circuit_breaker().get_metrics()
    assert (m.successful_requests, m.failed_requests) == (2, 0)
    assert work(2.5) == "done"
    assert work.circuit_breaker().get_metrics().failed_requests == 1


def test_a_sync_call_that_raises_an_excluded_exception_late_stays_ignored(
    clock: FakeClock,
) -> None:
    """An excluded exception is ignored even when the call outlived `timeout`; any
    other exception that late is a failure."""
    config = CircuitBreakerConfig(timeout=2.0, exclude_exceptions=(KeyError,))

    @circuit_breaker(name="timed-excluded", config=config, clock=clock)
    def work(exc: type[Exception]) -> None:
        clock.advance(3.0)
        raise exc

    with pytest.raises(KeyError):
        work(KeyError)
    with pytest.raises(Boom):
        work(Boom)
    m = work.circuit_breaker().get_metrics()
    assert (m.ignored_requests, m.failed_requests) == (1, 1)


@pytest.mark.anyio
async def test_an_awaited_awaitable_settles_its_permit_once(clock: FakeClock) -> None:
    """Once awaited, the awaitable's permit is settled: when it is collected, nothing more
    is counted (no extra ignored call), whether the await returned or raised."""

    @circuit_breaker(name="settled-once", clock=clock)
    def fetch(fail: bool = False) -> Coroutine[Any, Any, str]:
        return fetch_or_fail(fail)

    assert await fetch() == "ok"
    with pytest.raises(Boom):
        await fetch(fail=True)
    gc.collect()
    m = fetch.circuit_breaker().get_metrics()
    assert (m.successful_requests, m.failed_requests, m.ignored_requests) == (1, 1, 0)
    assert m.total_requests == 2
