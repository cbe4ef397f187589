"""Smoke test of the benchmark suite: its quickest mode runs end to end and reports
everything issue 12 asks for, in the structure the report and the README table need.

It checks structure and correctness only, never a timing: which sections, rows and
targets exist, that every row names a floor measured in the same rounds, that our rows'
breakers counted every call, that a seed repeats the round order, that a missing
internal is "n/a" in the profile. Peers that are not installed are skipped by the suite.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

run = pytest.importorskip("benchmarks.run")

from benchmarks import harness, instructions, profile, report, targets, variants
from benchmarks.transports import InnerAsync, make_request

RUNTIMES = {"asyncio", "sync", "trio"}

# The hot path rows of issue 12.
HOT_ROWS = {
    "transport_closed",
    "transport_closed_traced",
    "transport_deadline",
    "transport_deadline_traced",
    "transport_body",
    "transport_rejected",
    "call_async",
    "call",
    "sync_transport_closed",
    "trio_transport_closed",
    "trio_transport_deadline",
    "trio_cancel_scope",
}

PIECES = {
    "key",
    "lookup",
    "url_cache",
    "admit",
    "wrapper",
    "record",
    "lock",
    "annotate",
    "leftover",
    "whole",
}


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path]:
    """The whole suite in its smallest size, writing its report and README table."""
    tmp = tmp_path_factory.mktemp("bench")
    out, table = tmp / "BENCHMARKS.md", tmp / "README-table.md"
    argv = ["--smoke", "--seed", "12", "--out", str(out), "--readme-table", str(table)]
    return run.main(argv), out, table


@pytest.fixture(scope="module")
def hotpath(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("hot")
    argv = ["hotpath", "--smoke", "--seed", "12", "--json", str(tmp / "hot.json")]
    return run.main(argv), tmp / "hot.json"


def _rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for sec in results["sections"] for row in sec["rows"]}


def test_every_row_is_measured_against_a_floor_of_the_same_rounds(
    full: tuple[dict[str, Any], Path, Path],
) -> None:
    """One section per runtime; every non-floor row names a floor of its own section and
    has one difference per round."""
    res = full[0]
    assert {sec["runtime"] for sec in res["sections"]} == RUNTIMES
    for sec in res["sections"]:
        keys = {row["key"]: row for row in sec["rows"]}
        for row in sec["rows"]:
            assert row["median"] > 0 and row["min"] <= row["median"] <= row["max"]
            assert len(row["samples"]) == res["reps"]
            if row["group"] == "baseline":
                assert row["floor"] is None
                continue
            assert keys[row["floor"]]["group"] == "baseline", row["key"]
            assert len(row["added"]) == res["reps"]
            assert row["added_min"] <= row["added_median"] <= row["added_max"]
            assert row["added_iqr"] >= 0


def test_the_hot_path_mode_runs_issue_12s_rows_and_no_peers(
    hotpath: tuple[dict[str, Any], Path],
) -> None:
    res, dumped = hotpath
    rows = _rows(res)
    assert set(rows) >= HOT_ROWS
    assert not [row for row in rows.values() if row["group"] == "peer"]
    skipped = {s["key"]: s["why"] for sec in res["sections"] for s in sec["skipped"]}
    assert "transport_bulkhead" in rows, skipped.get("transport_bulkhead")
    assert json.loads(dumped.read_text())["seed"] == 12


def test_our_rows_counted_every_call_and_left_the_request_alone(
    full: tuple[dict[str, Any], Path, Path],
) -> None:
    """Each of our rows checked its breaker's counters after the rounds: no problems."""
    ours = [row for row in _rows(full[0]).values() if row["group"] == "ours"]
    assert len(ours) >= len(HOT_ROWS) - 1  # trio_cancel_scope is a reference
    assert {row["key"]: row["problems"] for row in ours if row["problems"]} == {}
    assert full[0]["profile"]["problems"] == []


def test_the_check_catches_a_breaker_that_did_not_count_every_call() -> None:
    """The check behind the previous test is not vacuous."""
    from httpx_breaker import CircuitBreaker

    breaker = CircuitBreaker("bench-smoke-check")
    check = variants.counts(lambda: breaker, "successful_requests")
    for _ in range(3):
        breaker.call(variants.work_sync)
    assert check(3) == []
    assert check(5) == ["5 calls made, but the breaker counted 3 successful_requests"]


def test_a_check_sees_a_transport_that_changes_the_request() -> None:
    from httpx_breaker import CircuitBreaker

    breaker = CircuitBreaker("bench-smoke-request")
    request = make_request()
    check = variants.counts(lambda: breaker, "successful_requests", request)
    request.extensions["trace"] = lambda *args: None
    (problem,) = check(0)
    assert "request.extensions changed (added ['trace']" in problem


def test_a_seed_repeats_the_round_order() -> None:
    """Same seed, same order in every round; another seed, another order."""

    def positions(seed: int) -> list[list[int]]:
        vs = [
            harness.Variant(f"v{i}", f"v{i}", lambda n: n + 1, floor=None if i == 0 else "v0")
            for i in range(6)
        ]
        rows = harness.measure_sync(vs, 3, 1e3, random.Random(seed))
        return [row.positions for row in rows]

    assert positions(7) == positions(7)
    assert positions(7) != positions(8)


def test_targets_are_all_judged_or_skipped_with_a_reason(
    full: tuple[dict[str, Any], Path, Path],
) -> None:
    res, out, _ = full
    judged = {t["key"]: t for t in res["targets"]}
    assert set(judged) == {t.key for t in targets.TARGETS}
    for t in judged.values():
        if t["value"] is None:
            assert t["verdict"].startswith("skipped:"), t
        elif t["target"] is None:
            assert t["verdict"].split(";")[0] == "reported"
        else:
            assert t["verdict"].split(";")[0] in {"met", "MISSED"}
    text = out.read_text()
    assert "## Targets (issue 12)" in text
    for t in targets.TARGETS:
        assert t.label in text


def test_the_deadline_and_bulkhead_rows_are_backed_by_behaviour_probes(
    full: tuple[dict[str, Any], Path, Path],
) -> None:
    probes = full[0]["behaviour"]
    assert {(p["backend"], p["inner"]) for p in probes} == {
        (backend, inner)
        for backend in ("asyncio", "trio")
        for inner in ("does not trace", "tracing like httpcore")
    }
    for p in probes:
        assert p["fires"] in {"yes", "NO"}, p
        if p["inner"] == "tracing like httpcore":
            assert p["pool_wait"] in {"inside", "outside"}, p
    # The bulkhead's probe involves no timing: the limit must hold.
    assert full[0]["bulkhead_probe"] == {
        "backend": "asyncio",
        "refused": "yes (BulkheadFullError)",
        "freed": "yes",
    }


def test_a_target_is_qualified_when_its_behaviour_probe_disagrees() -> None:
    """A deadline row whose deadline did not fire, or whose pool wait is still inside
    the deadline, is not what its label says: the verdict says so."""
    probe = {"backend": "asyncio", "inner": "tracing like httpcore", "fires": "yes"}
    results: dict[str, Any] = {"behaviour": [{**probe, "pool_wait": "outside"}]}
    assert targets.caveats(results, "transport_deadline_traced") == []
    results["behaviour"] = [{**probe, "pool_wait": "inside"}]
    assert targets.caveats(results, "trace_part") == [
        "the pooled-connection wait is inside the deadline: not yet the split this row is for"
    ]
    results["behaviour"] = [{**probe, "fires": "NO", "pool_wait": "outside"}]
    assert targets.caveats(results, "transport_deadline_traced") == [
        "the deadline did not fire in the probe (NO)"
    ]
    results["bulkhead_probe"] = {"backend": "asyncio", "refused": "NO", "freed": "yes"}
    assert targets.caveats(results, "bulkhead_part") == [
        "the limit did not hold in the probe (refused: NO, freed: yes)"
    ]


def test_the_profile_reports_every_piece(full: tuple[dict[str, Any], Path, Path]) -> None:
    table = {p["key"]: p for p in full[0]["profile"]["table"]}
    assert set(table) >= PIECES
    for p in table.values():
        assert p["ns"] is not None or p["na"], p
    assert table["whole"]["ns"] is not None and table["leftover"]["ns"] is not None


@pytest.mark.anyio
async def test_a_missing_internal_is_reported_as_na_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from httpx_breaker import AsyncCircuitBreakerTransport

    monkeypatch.setitem(profile.CANDIDATES, "record", [("breaker", "_no_such_method")])
    monkeypatch.setitem(profile.CANDIDATES, "annotate", [("module", "_annotate_renamed")])
    ours = AsyncCircuitBreakerTransport(InnerAsync())
    request = make_request()
    response = await ours.handle_async_request(request)
    await response.aclose()
    variants_, info = profile.internal_pieces(ours, request)
    assert info["record"] == {"na": "none of breaker._no_such_method exists"}
    assert info["annotate"] == {"na": "none of module._annotate_renamed exists"}
    assert "record" not in {v.key for v in variants_}
    assert "key" in {v.key for v in variants_}


def test_the_readme_table_is_the_one_in_the_report(full: tuple[dict[str, Any], Path, Path]) -> None:
    """Printed, written to --readme-table, and quoted whole in BENCHMARKS.md: one text."""
    res, out, table = full
    text = table.read_text()
    assert text == res["readme_table"] == report.readme_table(res)
    assert text in out.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("On the reference machine (")
    assert "| | httpx-breaker | peers |" in lines
    for what in (
        "async transport, CLOSED, default config",
        "async transport, `timeout` set",
        "async transport, body read",
        "async transport under trio",
        "async transport, rejection",
        "sync transport, CLOSED",
        "engine, CLOSED, `call_async`",
        "engine, CLOSED, `call`",
        "engine, rejection",
        "idle breaker, window 10",
    ):
        assert any(line.startswith(f"| {what} |") for line in lines), what


def test_the_report_says_how_it_was_made(full: tuple[dict[str, Any], Path, Path]) -> None:
    text = full[1].read_text()
    assert "-m benchmarks --smoke --seed 12" in text
    assert "`random.Random(12)`" in text
    assert "time.thread_time_ns" in text and "GC:" in text
    assert "Python:" in text


def test_the_half_open_stampede_admits_exactly_the_probe_limit(
    full: tuple[dict[str, Any], Path, Path],
) -> None:
    race = full[0]["race"]
    assert race["exact"] is True
    assert all(p == race["probes"] for p in race["passed"])
    assert all(r == race["tasks"] - race["probes"] for r in race["rejected"])


def test_client_memory_and_registry_sections_are_reported(
    full: tuple[dict[str, Any], Path, Path],
) -> None:
    res = full[0]
    assert {row["concurrency"] for row in res["client"]} == {1, 10}
    assert any("ratio" in row for row in res["client"])
    assert all(row["bytes"] > 0 for row in res["memory"])
    caps = {row["max_size"]: row for row in res["registry"]}
    assert set(caps) == {10_000, 200_000}
    for row in caps.values():
        assert row["kept"] == min(row["hosts"], row["max_size"])


@pytest.mark.parametrize("row", [row for row, (_, floor) in instructions.ROWS.items() if floor])
def test_every_instruction_count_row_records_one_success_per_request(row: str) -> None:
    """`benchmarks.instructions` (run under valgrind, never here) counts what its rows
    say: each of our rows has its breaker record one success per request. Run here
    in-process, without valgrind."""
    assert instructions._run(row, 7) == 7
