"""Run the benchmarks; write BENCHMARKS.md, its chart and docs/performance.md's table, one run.

    .venv-bench/bin/python -m benchmarks                 # everything (~3 minutes); writes
                                                         # BENCHMARKS.md, benchmarks/results.png
    .venv-bench/bin/python -m benchmarks hotpath         # issue 12's rows and targets (~1 minute)
    .venv-bench/bin/python -m benchmarks profile         # the CLOSED async path, piece by piece
    .venv-bench/bin/python -m benchmarks --quick         # everything, small; prints only
    .venv-bench/bin/python -m benchmarks hotpath --seed 7 --reps 31   # repeat an order, more rounds

Figures are CPU time of the measuring thread per call, in ns: for each row, the median
over shuffled interleaved rounds of (row - its floor measured in the same round), with
min, max and interquartile range. See benchmarks/harness.py for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from . import behaviour, variants
from .harness import CLOCK, GC_POLICY, Section, derive, measure_async, measure_sync
from .targets import evaluate

ROOT = Path(__file__).resolve().parent.parent

MODES = ("all", "hotpath", "profile")

# (reps, batch ms) per mode and size.
DEFAULTS = {
    ("all", "normal"): (21, 20.0),
    ("hotpath", "normal"): (31, 20.0),
    ("profile", "normal"): (21, 10.0),
    ("all", "quick"): (5, 3.0),
    ("hotpath", "quick"): (5, 3.0),
    ("profile", "quick"): (5, 3.0),
    ("all", "smoke"): (2, 0.3),
    ("hotpath", "smoke"): (2, 0.3),
    ("profile", "smoke"): (2, 0.3),
}

# Figures derived from two rows of one section (per round, then the median).
DERIVED = {
    "asyncio": [
        (
            "deadline_part",
            "the deadline over the default path",
            "transport_deadline",
            "transport_closed",
        ),
        (
            "trace_part",
            "keeping the pool wait outside, on top of the deadline",
            "transport_deadline_traced",
            "transport_deadline",
        ),
        (
            "deadline_traced_part",
            "the deadline with the pool wait kept outside, over the default path",
            "transport_deadline_traced",
            "transport_closed",
        ),
        ("body_part", "reading the body, on top of CLOSED", "transport_body", "transport_closed"),
        (
            "bulkhead_part",
            "max_concurrent set, over the same config without it",
            "transport_bulkhead",
            "transport_closed",
        ),
    ],
    "trio": [
        (
            "trio_deadline_part",
            "trio: the deadline over the default path",
            "trio_transport_deadline",
            "trio_transport_closed",
        ),
        (
            "trio_trace_part",
            "trio: keeping the pool wait outside, on top of the deadline",
            "trio_transport_deadline_traced",
            "trio_transport_deadline",
        ),
        (
            "trio_deadline_over_scope",
            "trio: our deadline over trio's own cancel scope",
            "trio_transport_deadline",
            "trio_cancel_scope",
        ),
    ],
    "sync": [],
}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in (
        "httpx-breaker",
        "httpx",
        "httpcore",
        "anyio",
        "trio",
        "circuitbreaker",
        "aiobreaker",
        "pybreaker",
        "purgatory",
        "interlock-cb",
        "httpx-retries",
        "matplotlib",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # noqa: PERF203 (runs once, a dozen times)
            versions[dist] = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
    }


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _fmt_ns(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+,.0f}"


def print_section(sec: Section) -> None:
    print(f"\n== {sec.title}  (CPU ns per call; added = median over rounds of row - its floor)")
    for row in sec.rows:
        if row["group"] == "baseline":
            line = f"  {row['name']:<70} floor {row['median']:8,.0f} ns"
        else:
            line = (
                f"  {row['name']:<70} {_fmt_ns(row['added_median']):>7} ns "
                f"[{row['added_min']:,.0f}..{row['added_max']:,.0f}] IQR {row['added_iqr']:,.0f}"
            )
        if row["gc_runs_per_1k"]:
            line += f"  gc {row['gc_runs_per_1k']:.2f}/1k calls, {row['gc_found_per_1k']:.1f} cyclic objects/1k"
        print(line)
        for problem in row["problems"]:
            print(f"    !! CHECK FAILED: {problem}")
    for d in sec.derived:
        print(
            f"  = {d['name']:<68} {_fmt_ns(d['added_median']):>7} ns "
            f"[{d['added_min']:,.0f}..{d['added_max']:,.0f}] IQR {d['added_iqr']:,.0f}"
        )
    for s in sec.skipped:
        print(f"  - {s['name']}: {s['why']}")


def _section(
    key: str, title: str, runtime: str, rows: list[Any], built: variants.Built, seed: int
) -> Section:
    sec = Section(key, title, runtime, rows=[r.as_dict() for r in rows], order_seed=seed)
    sec.skipped = built.skipped
    sec.notes = built.notes
    for dkey, name, a, b in DERIVED[runtime]:
        derive(sec, dkey, name, a, b)
    return sec


def measure_sections(full: bool, reps: int, batch_ns: float, seed: int) -> list[Section]:
    """The asyncio, sync and trio sections (hot path rows; with the peers when `full`)."""
    rng = random.Random(seed)
    sections = []

    async def in_asyncio() -> tuple[variants.Built, list[Any]]:
        built = await variants.asyncio_variants(full)
        return built, await measure_async(built.variants, reps, batch_ns, rng)

    built, rows = asyncio.run(in_asyncio())
    sections.append(_section("asyncio", "asyncio", "asyncio", rows, built, seed))
    print_section(sections[-1])

    built = variants.sync_variants(full)
    rows = measure_sync(built.variants, reps, batch_ns, rng)
    sections.append(_section("sync", "sync (httpx.Client side)", "sync", rows, built, seed))
    print_section(sections[-1])

    if variants.installed("trio"):
        import trio

        async def in_trio() -> tuple[variants.Built, list[Any]]:
            built = await variants.trio_variants(full)
            return built, await measure_async(built.variants, reps, batch_ns, rng)

        built, rows = trio.run(in_trio)
        sections.append(_section("trio", "trio", "trio", rows, built, seed))
    else:
        sections.append(
            Section(
                "trio",
                "trio",
                "trio",
                skipped=[
                    {"key": "trio", "name": "trio rows", "why": "skipped: trio is not installed"}
                ],
            )
        )
    print_section(sections[-1])
    return sections


def probe_behaviour() -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    rows = asyncio.run(behaviour.probe("asyncio"))
    if variants.installed("trio"):
        import trio

        rows += trio.run(behaviour.probe, "trio")
    bulkhead = asyncio.run(behaviour.probe_bulkhead())
    print("\n== Behaviour behind the deadline and bulkhead rows")
    for row in rows:
        print("  " + behaviour.describe(row))
    print("  " + behaviour.describe_bulkhead(bulkhead))
    return rows, bulkhead


def print_targets(results: dict[str, Any]) -> None:
    print("\n== Targets (issue 12): median added ns per call [min..max]")
    for t in results["targets"]:
        target = "report" if t["target"] is None else f"<= {t['target']:,.0f}"
        value = (
            "—"
            if t["value"] is None
            else f"{t['value']:+,.0f} [{t['min']:,.0f}..{t['max']:,.0f}] IQR {t['iqr']:,.0f}"
        )
        print(f"  {t['label']:<92} {value:<32} {target:>9}  {t['verdict']}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    mode = args.mode
    size = "smoke" if args.smoke else "quick" if args.quick else "normal"
    reps_default, batch_default = DEFAULTS[(mode, size)]
    reps = args.reps or reps_default
    batch_ns = (args.batch_ms or batch_default) * 1e6
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    results: dict[str, Any] = {
        "mode": mode,
        "command": args.command,
        "quick": size != "normal",
        "size": size,
        "reps": reps,
        "batch_ms": batch_ns / 1e6,
        "seed": seed,
        "clock": CLOCK,
        "gc_policy": GC_POLICY,
        "machine": machine(),
        "load_start": loadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "missing_peers": variants.missing_peers() if mode == "all" else [],
        "sections": [],
    }
    print(
        f"mode {mode}, {reps} rounds, ~{batch_ns / 1e6:g} ms per batch, order seed {seed}; clock {CLOCK}"
    )
    t0 = time.perf_counter()
    if mode in ("all", "hotpath"):
        sections = measure_sections(mode == "all", reps, batch_ns, seed)
        results["sections"] = [s.__dict__ for s in sections]
        results["behaviour"], results["bulkhead_probe"] = probe_behaviour()
        results["targets"] = evaluate(results)
        print_targets(results)
    if mode in ("all", "profile"):
        from . import profile

        results["profile"] = profile.run(reps, batch_ns, seed)
        print("\n== Profile: the CLOSED async path, piece by piece (CPU ns per request)")
        for line in profile.format_table(results["profile"]):
            print("  " + line)
        for problem in results["profile"]["problems"]:
            print(f"    !! CHECK FAILED: {problem}")
    if mode == "all":
        _scale_and_client(args, results, size)
    results["elapsed_s"] = time.perf_counter() - t0
    results["load_end"] = loadavg()
    return results


def _scale_and_client(args: argparse.Namespace, results: dict[str, Any], size: str) -> None:
    from . import client, scale

    if not args.no_client:
        plan = {"smoke": [(1, 20), (10, 40)], "quick": [(1, 100), (100, 500)]}.get(
            size, [(1, 2000), (100, 2000)]
        )
        results["client"] = client.client_rows(2 if size != "normal" else 5, plan)
        for row in results["client"]:
            extra = f"  ratio {row['ratio']:.3f}" if "ratio" in row else ""
            print(
                f"  client c={row['concurrency']:<3} {row['name']:<36} "
                f"{row['median']:8.0f} req/s [{row['min']:.0f}..{row['max']:.0f}]{extra}"
            )
    results["memory"] = scale.memory_rows({"smoke": 100, "quick": 200}.get(size, 2000))
    for row in results["memory"]:
        print(f"  memory {row['name']:<60} {row['bytes']:8.0f} B")
    hosts = {"smoke": 2_000, "quick": 5_000}.get(size, 100_000)
    results["registry"] = scale.registry_rows(hosts, 1 if size != "normal" else 3)
    for row in results["registry"]:
        print(f"  registry {row}")
    results["race"] = scale.race_rows(
        1_000 if size != "normal" else 10_000, 2 if size != "normal" else 5
    )
    print(f"  race {results['race']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "mode", nargs="?", default="all", choices=MODES, help="what to run (default: all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small and fast; writes nothing unless --out"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="smaller still: the test suite's smoke test"
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=None,
        help="rounds (default: all 21, hotpath 31, profile 21; quick 5)",
    )
    parser.add_argument(
        "--batch-ms",
        type=float,
        default=None,
        help="CPU ms per batch (default 20; profile 10; quick 3)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the round order (default: fresh, reported)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown report (default: BENCHMARKS.md for a full run)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        default=None,
        help="chart PNG (default: benchmarks/results.png beside BENCHMARKS.md)",
    )
    parser.add_argument(
        "--readme-table",
        type=Path,
        default=None,
        help="also write docs/performance.md's table to this file",
    )
    parser.add_argument("--json", type=Path, default=None, help="also dump the raw results as JSON")
    parser.add_argument("--no-client", action="store_true", help="skip the whole-client section")
    args = parser.parse_args(argv)
    if args.smoke:
        args.quick = True
    raw = sys.argv[1:] if argv is None else argv
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):  # shown relative to the checkout when inside it
        exe = exe.relative_to(Path.cwd())
    args.command = shlex.join([str(exe), "-m", "benchmarks", *raw])

    results = run(args)

    from . import report

    default_out = args.mode == "all" and not args.quick
    out = args.out if args.out is not None else (ROOT / "BENCHMARKS.md" if default_out else None)
    if args.mode == "all":
        table = report.readme_table(results)
        results["readme_table"] = table
        print("\n== The table of docs/performance.md (paste as is)\n")
        print(table)
        if args.readme_table is not None:
            args.readme_table.write_text(table)
    if out is not None:
        chart = None
        if args.mode == "all":
            chart = args.chart or (
                ROOT / "benchmarks" / "results.png"
                if out == ROOT / "BENCHMARKS.md"
                else out.with_suffix(".png")
            )
            if not report.chart(results, chart):
                chart = None
        out.write_text(report.markdown(results, chart, out.parent))
        print(f"\nwrote {out}" + (f" and {chart}" if chart else ""))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
