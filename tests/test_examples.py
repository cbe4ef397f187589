"""Every script in examples/ runs to the end and prints the transitions it claims."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))

# What each example says it shows, as lines of its output, in the order they appear.
EXPECTED: dict[str, list[str]] = {
    "decorator_external_api.py": [
        "call  2: success",
        "call  3: failure",
        "breaker external_api: CLOSED -> OPEN",
        "rejected by the breaker, no request sent",
        "breaker external_api: OPEN -> HALF_OPEN",
        "breaker external_api: HALF_OPEN -> CLOSED",
        "state: CLOSED",
        "the API received 8 requests",
    ],
    "database_fallback.py": [
        "from the primary",
        "from the replica",
        "breaker primary_db: CLOSED -> OPEN",
        "primary skipped (breaker open), replica failed",
        "breaker replica_db: CLOSED -> OPEN",
        "primary skipped (breaker open), replica skipped (breaker open)",
        "breaker primary_db: OPEN -> HALF_OPEN",
        "breaker primary_db: HALF_OPEN -> CLOSED",
        "from the primary",
        "breaker replica_db: OPEN -> HALF_OPEN",
        "'replica_db': 'HALF_OPEN'",
    ],
    "microservices.py": [
        "notification failed",
        "order  2: created",
        "system health: healthy",
        "breaker payment: CLOSED -> OPEN",
        "payment: breaker open, not called; order-5 cancelled",
        "system health: degraded",
        "breaker user: CLOSED -> OPEN",
        "system health: unhealthy",
        "breaker user: HALF_OPEN -> CLOSED",
        "breaker payment: HALF_OPEN -> CLOSED",
        "order 10: created",
        "system health: healthy",
        "cancellations for: order-3, order-4, order-5",
        "the payment service received 6 charge requests",
    ],
    "presets.py": [
        "users.db.internal      database          CLOSED -> OPEN after 3 failures",
        "maps.partner-api.com   external_api      CLOSED -> OPEN after 5 failures",
        "payments.internal      critical_service  CLOSED -> OPEN after 2 failures",
        "search.internal        (default)         CLOSED -> OPEN after 5 failures",
        "t+  15 s  payments.internal      OPEN -> HALF_OPEN -> CLOSED",
        "t+  30 s  users.db.internal      OPEN -> HALF_OPEN -> CLOSED",
        "t+  60 s  maps.partner-api.com   OPEN -> HALF_OPEN -> CLOSED",
        "t+  60 s  search.internal        OPEN -> HALF_OPEN -> CLOSED",
    ],
    "fallback_chain.py": [
        "user 1: service",
        "user 1: cache",
        "breaker: CLOSED -> OPEN",
        "(breaker open, service not called)",
        "user 3: default",
        "breaker: OPEN -> HALF_OPEN",
        "breaker: HALF_OPEN -> CLOSED",
        "user 3: service",
    ],
    "with_retries.py": [
        "[retries outside, breaker inside] breaker: CLOSED -> OPEN",
        "request 1: CircuitOpenError (not retried); 3 attempts reached the upstream",
        "request 2: CircuitOpenError (not retried); 0 attempts reached the upstream",
        "received 3 requests in all",
        "request 1: HTTP 503 after the retries ran out; 4 attempts reached the upstream",
        "[breaker outside, retries inside] breaker: CLOSED -> OPEN",
        "received 12 requests in all",
        "[stamina] breaker: CLOSED -> OPEN",
        "request 1: CircuitOpenError (not retried); 3 attempts reached the upstream",
        "request 2: CircuitOpenError (not retried); 0 attempts reached the upstream",
        "received 3 requests in all",
    ],
    "monitoring.py": [
        "closed -> open",
        "OPEN: 1",
        "[CRITICAL] circuit breaker 'payments' is OPEN",
        "[WARNING] circuit breaker 'search'",
    ],
}


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Start every example at once (each takes about a second), collect them per test."""
    processes = {
        script.name: subprocess.Popen(
            [sys.executable, "-W", "error", str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=EXAMPLES.parent,
        )
        for script in SCRIPTS
    }
    yield processes
    for process in processes.values():
        if process.poll() is None:
            process.kill()
        process.communicate()  # also closes the pipes of runs no test read (-k)


def _assert_in_order(out: str, expected: list[str]) -> None:
    position = 0
    for text in expected:
        found = out.find(text, position)
        assert found != -1, f"{text!r} missing (in this order) from:\n{out}"
        position = found + len(text)


def test_there_are_examples() -> None:
    """The glob finds the examples, and every one has its expected output listed."""
    names = {script.name for script in SCRIPTS}
    assert set(EXPECTED) - {"monitoring.py"} <= names
    assert names <= set(EXPECTED), f"add the expected output of {names - set(EXPECTED)}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_example_runs_and_shows_what_it_claims(
    script: Path, runs: dict[str, subprocess.Popen[str]]
) -> None:
    """The example exits 0 within 30 s, quietly, and prints its transitions in order."""
    docstring = ast.get_docstring(ast.parse(script.read_text()))
    assert docstring, f"{script.name} needs a module docstring saying what it shows"
    process = runs[script.name]
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"{script.name} did not finish within 30 s")
    assert process.returncode == 0, out + err
    assert err == ""  # no traceback, no warning
    _assert_in_order(out, EXPECTED[script.name])


# examples/fleet/: two replica processes sharing their breakers through Valkey.
FLEET = EXAMPLES / "fleet" / "run.py"
FLEET_EXPECTED = [
    "A: breaker CLOSED -> OPEN (failure_threshold)",
    "B: breaker CLOSED -> OPEN (fleet)",
    "B: refused before any I/O (OPEN",
    "the upstream received 3 failing requests: 3 from A, 0 from B",
    "in the half-open round: 1 (",
]


def test_the_fleet_example_shares_one_breaker_between_two_processes() -> None:
    """examples/fleet/run.py starts Valkey and two replicas: B opens from A's failures
    without sending any, one probe goes out for both, and both close."""
    from .redis_servers import binary_or_skip

    binary_or_skip("valkey")
    assert ast.get_docstring(ast.parse(FLEET.read_text()))
    process = subprocess.run(
        [sys.executable, "-W", "error", str(FLEET)],
        capture_output=True,
        text=True,
        cwd=EXAMPLES.parent,
        timeout=60,
        check=False,  # the return code is asserted with the output, below
    )
    assert process.returncode == 0, process.stdout + process.stderr
    assert process.stderr == ""
    _assert_in_order(process.stdout, FLEET_EXPECTED)
    for name in ("A", "B"):
        assert f"{name}: breaker HALF_OPEN -> CLOSED" in process.stdout
