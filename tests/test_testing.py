"""httpx_breaker.testing: FakeClock, set_state and breaker_testing, under anyio's plugin."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import respx

import httpx_breaker.testing
from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
    CircuitState,
    circuit_breaker,
)
from httpx_breaker.events import BreakerEvent
from httpx_breaker.testing import FakeClock, breaker_testing, set_state

pytestmark = pytest.mark.anyio

CONFIG = CircuitBreakerConfig(failure_threshold=2, reset_timeout=30.0, half_open_max_requests=1)
HOST = "api.example.com"


def test_fake_clock_moves_only_forward() -> None:
    """advance() takes seconds, timedelta or None, and refuses to go back."""
    clock = FakeClock(5.0)
    clock.advance(1.5)
    clock.advance(timedelta(seconds=2))
    clock.advance(None)
    assert clock() == clock.now == 8.5
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(float("nan"))
    assert clock() == 8.5


def test_set_state_open_is_natural_and_time_moves_it_on() -> None:
    """OPEN starts a real open period: rejected until reset_timeout, then a probe passes."""
    clock = FakeClock()
    breaker = CircuitBreaker("db", CONFIG, clock=clock)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    assert set_state(breaker, CircuitState.OPEN) is breaker
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == 30.0
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "no")
    clock.advance(breaker.retry_after)
    assert breaker.call(lambda: "probe") == "probe"
    assert breaker.state is CircuitState.CLOSED
    causes = [(e.old_state, e.new_state, e.cause) for e in events if e.kind == "state_change"]
    assert causes[0] == (CircuitState.CLOSED, CircuitState.OPEN, "testing")
    metrics = breaker.get_metrics()
    assert (metrics.failed_requests, metrics.successful_requests) == (0, 1)


def test_set_state_half_open_admits_exactly_the_probes() -> None:
    """HALF_OPEN admits half_open_max_requests probes; a failed probe opens again."""
    breaker = CircuitBreaker("db", CONFIG, clock=FakeClock())
    set_state(breaker, CircuitState.HALF_OPEN)
    assert breaker.state is CircuitState.HALF_OPEN
    token = breaker._acquire()
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)  # the one probe slot is taken
    breaker._release_abandoned(token)

    def boom() -> None:
        raise RuntimeError("still down")

    with pytest.raises(RuntimeError):
        breaker.call(boom)
    assert breaker.state is CircuitState.OPEN


def test_set_state_closed_resets_and_forced_holds() -> None:
    """CLOSED resets an open breaker; forced=True holds OPEN however far time moves."""
    clock = FakeClock()
    breaker = CircuitBreaker("db", CONFIG, clock=clock)
    set_state(breaker, CircuitState.OPEN)
    set_state(breaker, CircuitState.CLOSED)
    assert breaker.call(lambda: 1) == 1
    set_state(breaker, CircuitState.OPEN, forced=True)
    clock.advance(10_000)
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after is None
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    with pytest.raises(ValueError, match="HALF_OPEN"):
        set_state(breaker, CircuitState.HALF_OPEN, forced=True)


def test_set_state_argument_errors() -> None:
    """Wrong targets, a missing key and a non-state are TypeErrors that say what to pass."""
    registry = BreakerRegistry()
    with pytest.raises(TypeError, match="needs the key"):
        set_state(registry, CircuitState.OPEN)
    with pytest.raises(TypeError, match="takes a registry or a transport"):
        set_state(CircuitBreaker("x"), "x", CircuitState.OPEN)
    with pytest.raises(TypeError, match="CircuitState"):
        set_state(CircuitBreaker("x"), "open")
    with pytest.raises(TypeError, match="CircuitBreaker, a BreakerRegistry"):
        set_state(object(), CircuitState.OPEN)
    with pytest.raises(TypeError, match="at least one"), breaker_testing():
        pass


def test_set_state_on_a_decorated_function() -> None:
    """A function decorated with @circuit_breaker is a target too."""

    @circuit_breaker(name="testing-decorated", config=CONFIG)
    def fetch() -> str:
        return "data"

    with breaker_testing(fetch) as clock:
        set_state(fetch, CircuitState.OPEN)
        with pytest.raises(CircuitOpenError):
            fetch()
        clock.advance(30)
        assert fetch() == "data"


async def test_async_transport_open_host_without_waiting() -> None:
    """An open host is refused with no I/O, the other host is served; time heals it."""
    transport = AsyncCircuitBreakerTransport(default=CONFIG)
    with respx.mock(assert_all_called=False) as mock:
        api = mock.get(f"https://{HOST}/").respond(200)
        other = mock.get("https://other.example.com/").respond(200)
        async with httpx.AsyncClient(transport=transport) as client:
            with breaker_testing(transport) as clock:
                set_state(transport, HOST, CircuitState.OPEN)
                with pytest.raises(CircuitOpenError) as info:
                    await client.get(f"https://{HOST}/")
                assert info.value.key == HOST
                assert info.value.retry_after == 30.0  # exactly: see the test below
                assert api.call_count == 0
                assert (await client.get("https://other.example.com/")).status_code == 200
                clock.advance(info.value.retry_after)
                response = await client.get(f"https://{HOST}/")
                assert response.extensions["circuit_breaker"]["state"] is CircuitState.HALF_OPEN
                assert transport.registry[HOST].state is CircuitState.CLOSED
        assert (api.call_count, other.call_count) == (1, 1)


@pytest.mark.parametrize("uptime", [32_760.3, 65_500.77, 0.25, 1_000_000.123])
def test_whole_seconds_read_back_exactly_whatever_the_uptime(
    uptime: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default fake clock starts at a whole second, so a 60 s open period reads
    back as 60.0 even when the real clock is just below a power of two (from 32,760.3
    s it read 60.00000000000364, and a docs example comparing it failed)."""
    monkeypatch.setattr(httpx_breaker.testing.time, "monotonic", lambda: uptime)
    transport = AsyncCircuitBreakerTransport(default=CircuitBreakerConfig(reset_timeout=60.0))
    with breaker_testing(transport) as clock:
        assert clock() == float(int(uptime))
        breaker = set_state(transport, HOST, CircuitState.OPEN)
        assert breaker.retry_after == 60.0
        clock.advance(5)
        assert breaker.retry_after == 55.0
        clock.advance(0.5)
        assert breaker.retry_after == 54.5


def test_sync_transport_and_registry_targets() -> None:
    """The sync transport works the same; a registry can be the target directly."""
    transport = CircuitBreakerTransport(default=CONFIG)
    with respx.mock() as mock, httpx.Client(transport=transport) as client:
        mock.get(f"https://{HOST}/").respond(503)
        with breaker_testing(transport.registry) as clock:
            set_state(transport.registry, HOST, CircuitState.HALF_OPEN)
            assert client.get(f"https://{HOST}/").status_code == 503  # the failed probe
            assert transport.registry[HOST].state is CircuitState.OPEN
            clock.advance(29.9)
            with pytest.raises(CircuitOpenError):
                client.get(f"https://{HOST}/")


def test_breakers_made_inside_the_block_read_the_fake_clock() -> None:
    """A registry's breakers, old and new, use the fake clock inside and the real one after."""
    registry = BreakerRegistry(default=CONFIG)
    before = registry.breaker_for("old.example.com")
    with breaker_testing(registry) as clock:
        during = registry.breaker_for("new.example.com")
        assert before.clock is clock and during.clock is clock
        set_state(during, CircuitState.OPEN)
        clock.advance(20)
    assert registry.clock is None
    assert before.clock is time.monotonic and during.clock is time.monotonic
    # 10 s of the open period were left when the block ended; they still are.
    assert during.state is CircuitState.OPEN
    assert during.retry_after is not None and 9.0 < during.retry_after <= 10.0


def test_running_open_period_keeps_its_length_when_the_clock_is_swapped() -> None:
    """A breaker opened on the real clock stays open inside the block until advanced."""
    breaker = CircuitBreaker("testing-real", CONFIG)
    set_state(breaker, CircuitState.OPEN)
    with breaker_testing(breaker) as clock:
        assert breaker.state is CircuitState.OPEN
        clock.advance(30)
        assert breaker.state is CircuitState.HALF_OPEN


def test_pytest_plugin_fixture(tmp_path: Path) -> None:
    """`-p httpx_breaker.testing` gives any suite the breaker_clock fixture."""
    (tmp_path / "test_user.py").write_text(
        "from httpx_breaker import CircuitBreaker, CircuitState\n"
        "from httpx_breaker.testing import set_state\n"
        "\n"
        "def test_clock(breaker_clock):\n"
        "    breaker = CircuitBreaker('plugin', clock=breaker_clock)\n"
        "    set_state(breaker, CircuitState.OPEN)\n"
        "    breaker_clock.advance(breaker.retry_after)\n"
        "    assert breaker.state is CircuitState.HALF_OPEN\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "httpx_breaker.testing",
            "-p",
            "no:cacheprovider",
            "test_user.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


SUITE = Path(__file__).parent / "pytest_asyncio_suite"


def test_helpers_work_under_pytest_asyncio() -> None:
    """The same helpers pass in a suite driven by pytest-asyncio (run on its own config)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(SUITE / "pytest.ini"),
            "--rootdir",
            str(SUITE),
            "-q",
            str(SUITE / "asyncio_suite.py"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


async def test_upstream_is_exported_for_real_server_tests() -> None:
    """`httpx_breaker.testing.Upstream` serves real requests and shows none pass an open host."""
    assert "Upstream" in httpx_breaker.testing.__all__
    transport = AsyncCircuitBreakerTransport(default=CONFIG)
    with httpx_breaker.testing.Upstream(mode="failing") as upstream:
        async with httpx.AsyncClient(transport=transport) as client:
            with breaker_testing(transport) as clock:
                for _ in range(2):
                    assert (await client.get(f"{upstream.url}/anything")).status_code == 503
                assert upstream.request_count == 2
                with pytest.raises(CircuitOpenError) as info:
                    await client.get(f"{upstream.url}/anything")
                assert upstream.request_count == 2  # refused before any I/O
                upstream.mode = "healthy"
                assert info.value.retry_after is not None
                clock.advance(info.value.retry_after)
                response = await client.get(f"{upstream.url}/anything")
                assert response.status_code == 200
                assert transport.registry[info.value.key].state is CircuitState.CLOSED
        assert [path for _, _, path in upstream.requests] == ["/anything"] * 3


def test_breaker_testing_moves_the_windows_outcomes_back_to_the_real_clock() -> None:
    """Outcomes recorded on the fake clock keep their age when the real clock returns:
    they leave the window window_duration later, not never (nor at once)."""
    real = FakeClock(1000.0)  # stands for time.monotonic, which a test cannot move
    config = CircuitBreakerConfig(failure_threshold=100, window_duration=60.0)
    breaker = CircuitBreaker("testing-window", config, clock=real)
    with breaker_testing(breaker, clock=FakeClock(50_000.0)) as fake:
        breaker.call(lambda: None)
        fake.advance(10.0)
    assert breaker.clock is real
    assert breaker.get_metrics().window_requests == 1  # 10 s old: still in
    real.advance(49.0)
    assert breaker.get_metrics().window_requests == 1  # 59 s old
    real.advance(2.0)
    assert breaker.get_metrics().window_requests == 0  # 61 s old: gone

    with breaker_testing(breaker, clock=FakeClock(0.0)):
        breaker.call(lambda: None)
    assert breaker.get_metrics().window_requests == 1  # not 1,051 s old at once


def test_breaker_testing_with_any_fake_clock_keeps_a_running_open_period() -> None:
    """A fake clock that starts anywhere (here at 0) still sees the period's remainder."""
    breaker = CircuitBreaker("testing-any-clock", CONFIG, clock=FakeClock(1000.0))
    set_state(breaker, CircuitState.OPEN)
    with breaker_testing(breaker, clock=FakeClock(0.0)) as clock:
        assert breaker.retry_after == 30.0
        clock.advance(29.0)
        assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == 1.0


def test_the_helpers_touch_no_private_attribute() -> None:
    """set_state and breaker_testing are ordinary clients of the breaker's and the
    registry's documented seams."""
    source = Path(httpx_breaker.testing.__file__).read_text()
    private = sorted(set(re.findall(r"\b(?:breaker|registry|target)\._[a-z]\w*", source)))
    assert private == []
