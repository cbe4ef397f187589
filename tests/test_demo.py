"""`python -m httpx_breaker demo`: it runs, shows every transition, and its check is real."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from httpx_breaker._demo import _Demo, _Host, _Screen, run_demo

TRANSITIONS = (
    "CLOSED -> OPEN",
    "OPEN -> HALF_OPEN",
    "HALF_OPEN -> OPEN",
    "HALF_OPEN -> CLOSED",
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
INVARIANT = "Requests that reached an upstream while its breaker was open: 0"


def _run(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "httpx_breaker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_explains_the_options() -> None:
    """`demo --help` names every option and exits 0."""
    result = _run("demo", "--help")
    assert result.returncode == 0
    for option in ("--duration", "--failure-rate", "--seed", "--plain"):
        assert option in result.stdout
    assert "127.0.0.1" in result.stdout


def test_top_level_help_lists_the_demo() -> None:
    """`python -m httpx_breaker --help` lists the demo command."""
    result = _run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_version_is_the_installed_distributions() -> None:
    """`python -m httpx_breaker --version` prints the version pip installed and exits 0."""
    from importlib.metadata import version

    result = _run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"python -m httpx_breaker {version('httpx-breaker')}"


def test_bad_option_values_are_refused() -> None:
    """A failure rate outside (0, 1] is an argparse error (exit 2) naming the range."""
    result = _run("demo", "--failure-rate", "1.5")
    assert result.returncode == 2
    assert "(0, 1]" in result.stderr


def test_short_demo_shows_every_transition_and_no_leak() -> None:
    """A 3 s run exits 0, prints plain lines, every transition, and zero requests while open."""
    result = _run("demo", "--duration", "3", "--seed", "1", timeout=40.0)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "\x1b[" not in out  # not a terminal: plain lines
    for transition in TRANSITIONS:
        assert transition in out
    assert INVARIANT in out
    assert out.count("reached the server while its breaker was open: 0") == 2
    assert "catalog" in out and "breaker: CLOSED (no state change)" in out
    assert "rejected by the breaker without any I/O" in out
    # The seed's other two core metrics, per host: the healthy one was never open.
    assert out.count("calls/s (averaged over the last 60 s, longer than this run)") == 2
    assert "availability 100.0% (share of its life not OPEN)" in out


@dataclass
class _Log:
    """Stands in for `Upstream`: a request log and nothing else."""

    requests: list[tuple[float, str, str]]


def test_audit_counts_arrivals_while_open_and_in_flight_apart() -> None:
    """An arrival in an open interval is a leak unless it was passed on before the opening."""
    log = _Log(
        [
            (1.0, "GET", "/a"),  # before the breaker opened
            (2.5, "GET", "/b"),  # while open, passed on before it opened: in flight
            (3.0, "GET", "/c"),  # while open, passed on after it opened: a leak
            (4.5, "GET", "/d"),  # after it closed again
            (6.0, "GET", "/e"),  # in the second, still running open interval: a leak
        ]
    )
    host = _Host("orders", "test", log)  # type: ignore[arg-type]
    host.open_intervals = [[2.0, 4.0], [5.0, None]]
    host.dispatched = {"/a": 0.9, "/b": 1.9, "/c": 2.9, "/d": 4.4, "/e": 5.9}
    host.audit()
    assert (host.reached_while_open, host.in_flight_at_open) == (2, 1)
    host.audit()  # entries already checked are not counted twice
    assert host.reached_while_open == 2


def test_a_breaker_that_lets_requests_through_while_open_fails_the_demo() -> None:
    """With a dry-run breaker (never rejects) the check finds the leaks and exits 1."""
    out = io.StringIO()
    demo = _Demo(duration=2.0, failure_rate=1.0, seed=5, screen=_Screen(out, live=False))
    demo.config = demo.config.replace(dry_run=True)
    status = asyncio.run(demo.run())
    text = out.getvalue()
    assert status == 1, text
    assert demo.hosts[0].reached_while_open > 0
    assert "FAILED" in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_output_is_a_live_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the block is redrawn in place, coloured, and the cursor comes back."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("LINES", "40")
    out = _Terminal()
    status = run_demo(duration=2.0, failure_rate=1.0, seed=2, out=out)
    text = out.getvalue()
    assert status == 0, text
    assert "\x1b[2K" in text and "F\x1b[2K" in text  # lines cleared and rewritten
    assert "\x1b[31mOPEN" in text  # the open state in red
    assert text.rstrip().endswith("(checked against the servers' own request logs)")
    assert "\x1b[?25h" in text
    live = text.split("\x1b[?25h")[0]
    for row in live.split("\n")[4:]:  # the live block, after the intro lines
        assert len(ANSI.sub("", row)) <= 59  # cut to the terminal's width
