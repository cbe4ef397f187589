"""Smoke test of the benchmark suite: quick mode runs end to end and reports every section.

It checks structure and correctness only (which sections and rows exist, that the
HALF_OPEN stampede let exactly `half_open_max_requests` through); never timings.
Peers that are not installed in the test environment are skipped by the suite itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

run = pytest.importorskip("benchmarks.run")

SECTIONS = {
    "engine_closed_async",
    "engine_closed_sync",
    "engine_open_async",
    "engine_open_sync",
    "transport_closed_async",
    "transport_closed_sync",
    "transport_open_async",
    "transport_open_sync",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
    return run.main(["--quick", "--reps", "2", "--batch-ms", "1", "--smoke", "--out", str(out)]), out


def test_every_section_has_a_baseline_and_our_variants(results: tuple[dict, Path]) -> None:
    """Each timing section starts with its baseline and measures at least one of ours."""
    res, _ = results
    sections = {s["key"]: s for s in res["sections"]}
    assert set(sections) == SECTIONS
    for sec in sections.values():
        groups = [row["group"] for row in sec["rows"]]
        assert groups[0] == "baseline"
        assert "ours" in groups
        for row in sec["rows"]:
            assert row["median"] > 0 and row["min"] <= row["median"] <= row["max"]


def test_the_half_open_stampede_admits_exactly_the_probe_limit(results: tuple[dict, Path]) -> None:
    """Every run of the race lets exactly half_open_max_requests tasks through."""
    race = results[0]["race"]
    assert race["exact"] is True
    assert all(p == race["probes"] for p in race["passed"])
    assert all(r == race["tasks"] - race["probes"] for r in race["rejected"])


def test_client_memory_and_registry_sections_are_reported(results: tuple[dict, Path]) -> None:
    """The whole-client ratio, the memory figures and both registry caps are present."""
    res, _ = results
    assert {row["concurrency"] for row in res["client"]} == {1, 10}
    assert any("ratio" in row for row in res["client"])
    assert all(row["bytes"] > 0 for row in res["memory"])
    caps = {row["max_size"]: row for row in res["registry"]}
    assert set(caps) == {10_000, 200_000}
    for row in caps.values():
        assert row["kept"] == min(row["hosts"], row["max_size"])


def test_the_report_is_written_with_targets_and_command(results: tuple[dict, Path]) -> None:
    """The markdown names the command, the machine and the targets table."""
    _, out = results
    text = out.read_text()
    assert "-m benchmarks --quick" in text
    assert "## Targets" in text
    assert "Python:" in text
