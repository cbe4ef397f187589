"""Run every benchmark in one process and write BENCHMARKS.md and the chart.

    .venv-bench/bin/python -m benchmarks                 # full run (~5 minutes)
    .venv-bench/bin/python -m benchmarks --quick         # a few seconds, prints only
    .venv-bench/bin/python -m benchmarks --reps 15       # more rounds on a noisy machine

Every section interleaves its baseline with its subjects round after round; figures
are medians over the rounds with min and max, in nanoseconds per call; "added" is the
per-round difference to the section's baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from . import client, scale, variants
from .harness import Section, measure_async, measure_sync, section_from_rows

ROOT = Path(__file__).resolve().parent.parent

TARGETS = {
    "engine": 400.0,
    "transport_none": 500.0,
    "transport_default": 2000.0,
    "rejection": 1000.0,
    "memory": 1024.0,
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
    versions = {}
    for dist in (
        "httpx-breaker",
        "httpx",
        "anyio",
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
        except metadata.PackageNotFoundError:  # noqa: PERF203 (runs once, ten times)
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


def _print_section(sec: Section) -> None:
    print(f"\n== {sec.title} (baseline: {sec.baseline})")
    for row in sec.rows:
        print(
            f"  {row['name']:<52} {row['median']:9.0f} ns  "
            f"[{row['min']:.0f}..{row['max']:.0f}]  added {row['added_median']:+8.0f} ns  "
            f"(best {row['added_best']:+.0f})  x{row['ratio']:.2f}"
        )


async def _async_sections(reps: int, batch_ns: float) -> list[Section]:
    out = []
    for key, title, make in (
        ("engine_closed_async", "Engine, CLOSED, async", variants.engine_closed_async),
        ("engine_open_async", "Engine, OPEN (rejection), async", variants.engine_open_async),
        ("transport_closed_async", "Transport, CLOSED, async", variants.transport_closed_async),
        ("transport_open_async", "Transport, OPEN (rejection), async", variants.transport_open_async),
    ):
        vs = await make()
        sec = section_from_rows(key, title, await measure_async(vs, reps, batch_ns))
        _print_section(sec)
        out.append(sec)
    return out


def _sync_sections(reps: int, batch_ns: float) -> list[Section]:
    out = []
    for key, title, make in (
        ("engine_closed_sync", "Engine, CLOSED, sync", variants.engine_closed_sync),
        ("engine_open_sync", "Engine, OPEN (rejection), sync", variants.engine_open_sync),
        ("transport_closed_sync", "Transport, CLOSED, sync", variants.transport_closed_sync),
        ("transport_open_sync", "Transport, OPEN (rejection), sync", variants.transport_open_sync),
    ):
        sec = section_from_rows(key, title, measure_sync(make(), reps, batch_ns))
        _print_section(sec)
        out.append(sec)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    reps = args.reps or (3 if quick else 15)
    batch_ns = (args.batch_ms or (4 if quick else 25)) * 1e6
    results: dict[str, Any] = {
        "command": args.command,
        "quick": quick,
        "reps": reps,
        "batch_ms": batch_ns / 1e6,
        "machine": machine(),
        "load_start": loadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "missing_peers": variants.missing_peers(),
    }
    t0 = time.perf_counter()
    sections = asyncio.run(_async_sections(reps, batch_ns))
    sections += _sync_sections(reps, batch_ns)
    order = [
        "engine_closed_async",
        "engine_closed_sync",
        "engine_open_async",
        "engine_open_sync",
        "transport_closed_async",
        "transport_closed_sync",
        "transport_open_async",
        "transport_open_sync",
    ]
    sections.sort(key=lambda s: order.index(s.key))
    results["sections"] = [s.__dict__ for s in sections]

    if not args.no_client:
        if args.smoke:
            plan = [(1, 30), (10, 100)]
        elif quick:
            plan = [(1, 100), (100, 500)]
        else:
            plan = [(1, 2000), (100, 2000)]
        results["client"] = client.client_rows(max(2, reps if quick else min(reps, 5)), plan)
        for row in results["client"]:
            extra = f"  ratio {row['ratio']:.3f}" if "ratio" in row else ""
            print(
                f"  client c={row['concurrency']:<3} {row['name']:<36} "
                f"{row['median']:8.0f} req/s [{row['min']:.0f}..{row['max']:.0f}]{extra}"
            )
    results["memory"] = scale.memory_rows(100 if args.smoke else 200 if quick else 2000)
    for row in results["memory"]:
        print(f"  memory {row['name']:<60} {row['bytes']:8.0f} B")
    hosts = 2_000 if args.smoke else 5_000 if quick else 100_000
    results["registry"] = scale.registry_rows(hosts, 1 if quick else 3)
    for row in results["registry"]:
        print(f"  registry {row}")
    results["race"] = scale.race_rows(1_000 if quick else 10_000, 2 if quick else 5)
    print(f"  race {results['race']}")
    results["elapsed_s"] = time.perf_counter() - t0
    results["load_end"] = loadavg()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds; prints, writes nothing unless --out")
    parser.add_argument("--reps", type=int, default=None, help="rounds per section (default 15; quick 3)")
    parser.add_argument("--batch-ms", type=float, default=None, help="target ms per batch (default 25; quick 4)")
    parser.add_argument("--out", type=Path, default=None, help="markdown report (default BENCHMARKS.md; none in quick mode)")
    parser.add_argument("--chart", type=Path, default=None, help="chart PNG (default benchmarks/results.png next to --out)")
    parser.add_argument("--json", type=Path, default=None, help="also dump raw results as JSON")
    parser.add_argument("--smoke", action="store_true", help="with --quick: smaller still (the test suite's smoke test)")
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

    out = args.out if args.out is not None else (None if args.quick else ROOT / "BENCHMARKS.md")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if out is not None:
        from . import report

        chart = args.chart or (
            ROOT / "benchmarks" / "results.png" if out == ROOT / "BENCHMARKS.md" else out.with_suffix(".png")
        )
        drawn = report.chart(results, chart)
        out.write_text(report.markdown(results, chart if drawn else None, out.parent))
        print(f"\nwrote {out}" + (f" and {chart}" if drawn else " (no chart: matplotlib missing)"))
    return results


if __name__ == "__main__":
    main()
