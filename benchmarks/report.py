"""BENCHMARKS.md, its chart and the table of docs/performance.md, from one run's results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import behaviour
from .harness import YIELD_EVERY
from .targets import TARGETS, caveats, find

# Report tables, in order: key -> title.
TABLES = {
    "transport_async": "Async transport (asyncio), CLOSED",
    "transport_body_async": "Async transport (asyncio), body read",
    "transport_open_async": "Async transport (asyncio), OPEN: rejection",
    "transport_trio": "Async transport under trio",
    "engine_closed_async": "Engine, CLOSED, `call_async` (asyncio)",
    "engine_open_async": "Engine, OPEN: rejection, `call_async` (asyncio)",
    "transport_sync": "Sync transport, CLOSED",
    "transport_open_sync": "Sync transport, OPEN: rejection",
    "engine_closed_sync": "Engine, CLOSED, `call`",
    "engine_open_sync": "Engine, OPEN: rejection, `call`",
}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def _signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+,.0f}"


def _us(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 1000:+.2f} µs"


def _rows_of(results: dict[str, Any], table: str) -> list[dict[str, Any]]:
    return [
        row for sec in results.get("sections", []) for row in sec["rows"] if row["table"] == table
    ]


def _added(results: dict[str, Any], key: str) -> float | None:
    row, _ = find(results, key)
    return None if row is None else row.get("added_median")


def how_made(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    lines = [
        f"- Command: `{results['command']}` (mode `{results['mode']}`)",
        f"- Date: {results['started']}; wall time {results['elapsed_s']:.0f} s; "
        f"{results['reps']} shuffled interleaved rounds, ~{results['batch_ms']:g} ms of CPU per batch"
        + (" (quick mode: not for publishing)" if results["quick"] else ""),
        f"- Round order: `random.Random({results['seed']})`; add `--seed {results['seed']}` to repeat it",
        f"- Clock: {results['clock']}",
        f"- GC: {results['gc_policy']}",
        f"- Machine: {m['nproc']} CPUs, {m['cpu']}; {m['platform']}",
        f"- Python: {m['implementation']} {m['python']}",
        (
            f"- Load average (1/5/15 min) at start: {results['load_start']}; "
            f"at end: {results['load_end']} (the machine is shared: other processes were running)"
        ),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
    ]
    if results.get("missing_peers"):
        lines.append(f"- Not installed, skipped: {', '.join(results['missing_peers'])}")
    return lines


METHOD = f"""Method: every row is CPU time of the measuring thread (`time.thread_time_ns`), per
call or request, measured in batches of about the same CPU time. A round runs every
row of its runtime (asyncio, sync, trio) once, in a shuffled order; each row names its
*floor* (the bare baseline: a pass-through transport wrapper, a raising transport, a
direct call), measured in the same round. *Added* is, per round, the row's ns per call
minus its floor's in that round; the tables give its median over the rounds, its min
and max, and its interquartile range (IQR, the spread). Figures marked "=" are made of
two rows the same way (per round, then the median). CPU time rather than wall time:
the scheduler's gifts of our core to the other processes of a shared machine are not
counted. Async loops let the event loop run once every {YIELD_EVERY} requests in every row
alike. After the rounds, each of our rows checks that its breaker counted exactly one
success (or rejection) per call made and that the request was left as it was given:
a row that fails its check is marked, and is not a result. GC columns: collections that
ran during the row's batches, and the unreachable (cyclic) objects they found, per 1,000
calls; a hot path that makes reference cycles shows up there."""


def targets_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| What | Added, median | [min..max] | IQR | Target | |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for t in results.get("targets", []):
        target = "report" if t["target"] is None else f"≤ {t['target']:,.0f} ns"
        if t["value"] is None:
            lines.append(f"| {t['label']} | — | | | {target} | {t['verdict']} |")
            continue
        verdict = (
            f"**{t['verdict']}**"
            if "MISSED" in t["verdict"] or "CHECK" in t["verdict"]
            else t["verdict"]
        )
        lines.append(
            f"| {t['label']} | {_signed(t['value'])} ns | {_fmt(t['min'])}..{_fmt(t['max'])} | "
            f"{_fmt(t['iqr'])} | {target} | {verdict} |"
        )
    return lines


def _table_lines(results: dict[str, Any], table: str) -> list[str]:
    rows = _rows_of(results, table)
    if not rows:
        return []
    names = {row["key"]: row["name"] for row in rows}
    lines = [
        "| Row | added ns (median) | [min..max] | IQR | ns/call | over | GC runs / cyclic objs per 1k |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for row in sorted(rows, key=lambda r: r["group"] != "baseline"):
        name = f"**{row['name']}**" if row["group"] == "ours" else row["name"]
        for problem in row["problems"]:
            name += f" — **CHECK FAILED: {problem}**"
        gc = f"{row['gc_runs_per_1k']:.2f} / {row['gc_found_per_1k']:.1f}"
        if row["group"] == "baseline":
            lines.append(f"| {name} | — | | | {_fmt(row['median'])} | | {gc} |")
        else:
            lines.append(
                f"| {name} | {_signed(row['added_median'])} | {_fmt(row['added_min'])}..{_fmt(row['added_max'])} | "
                f"{_fmt(row['added_iqr'])} | {_fmt(row['median'])} | {names.get(row['floor'], row['floor'])} | {gc} |"
            )
    keys = {row["key"] for row in rows}
    sections = results.get("sections", [])
    lines += [
        f"| = {d['name']} | {_signed(d['added_median'])} | "
        f"{_fmt(d['added_min'])}..{_fmt(d['added_max'])} | {_fmt(d['added_iqr'])} | | | |"
        for sec in sections
        for d in sec.get("derived", [])
        if d["of"][0] in keys
    ]
    lines += [
        f"| {s['name']} | {s['why']} | | | | | |"
        for sec in sections
        for s in sec.get("skipped", [])
        if TABLE_OF_SKIPPED.get(s["key"]) == table
    ]
    if any(row["note"] for row in rows):
        lines += ["", *(f"- {row['name']}: {row['note']}" for row in rows if row["note"])]
    return lines


TABLE_OF_SKIPPED = {"transport_bulkhead": "transport_async"}


def markdown(results: dict[str, Any], chart: Path | None, base: Path) -> str:
    lines = [
        "# Benchmarks",
        "",
        (
            "Generated by `python -m benchmarks` (benchmarks/run.py); do not edit by hand. "
            "Rerun with the command below."
        ),
        "",
        "## How this run was made",
        "",
        *how_made(results),
        "",
        METHOD,
        "",
    ]
    if chart is not None:
        rel = os.path.relpath(chart, base)
        lines += [f"![Overhead added over each row's floor]({rel})", ""]

    if results.get("targets"):
        lines += ["## Targets (issue 12)", "", *targets_table(results), ""]
    if results.get("behaviour"):
        lines += ["## Behaviour behind the deadline and bulkhead rows", ""]
        lines += [f"- {behaviour.describe(row)}" for row in results["behaviour"]]
        lines.append(f"- {behaviour.describe_bulkhead(results.get('bulkhead_probe'))}")
        lines += [
            "",
            "A deadline row is only a result if its deadline fires (and a bulkhead row if its",
            "limit holds). The tracing transport calls",
            "the `trace` extension as httpcore does on a reused HTTP/1.1 connection (see",
            "`benchmarks/transports.py`); its wait before the first event stands for the wait",
            "for a pooled connection.",
            "",
        ]
    if results.get("profile"):
        from .profile import format_table

        lines += [
            "## Profile: the CLOSED async path, piece by piece",
            "",
            "CPU ns per request, same process (`python -m benchmarks profile`). Internal pieces",
            "are timed alone over an empty loop; whole-path figures over their floors (see",
            "`benchmarks/profile.py`).",
            "",
            *format_table(results["profile"]),
            "",
        ]
    for table, title in TABLES.items():
        body = _table_lines(results, table)
        if body:
            lines += [f"## {title}", "", *body, ""]

    if "client" in results:
        lines += _client_lines(results)
    if "memory" in results:
        lines += _scale_lines(results)
    lines += fleet_lines(base)
    if results.get("readme_table"):
        lines += [
            "## The performance table of docs/performance.md, from this run",
            "",
            "```markdown",
            results["readme_table"].rstrip("\n"),
            "```",
            "",
        ]
    return "\n".join(lines)


FLEET = Path(__file__).resolve().parent / "FLEET.md"


def fleet_lines(base: Path) -> list[str]:
    """A section that points to the fleet benchmark's own report, which this run does not
    make (it needs Redis servers and replica processes: `python -m benchmarks.fleet`)."""
    if not FLEET.exists():
        return []
    rel = os.path.relpath(FLEET, base)
    return [
        "## Fleet: shared state across replicas (issue 11)",
        "",
        "Staleness from the first open to every replica open, upstream hits and probes per",
        "round with and without a store, and the request-path cost with a store and a frozen",
        f"store: [{rel}]({rel}), written by `python -m benchmarks.fleet --out {rel}`",
        "(a separate run: it starts Valkey servers and replica processes).",
        "",
    ]


def _client_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "## Whole client against a real server on 127.0.0.1",
        "",
        "A minimal asyncio HTTP/1.1 server (`benchmarks/server.py`) in its own process answers",
        "every GET with a small 200; the client is the bottleneck. Ours wraps",
        "`httpx.AsyncHTTPTransport()` with the default config. Wall-clock requests per second",
        "(the server's time counts here), alternating bare and ours round after round.",
        "",
        "| Concurrency | Client | requests | req/s median | min | max | ratio ours/bare [min..max] |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for row in results["client"]:
        ratio = (
            f"{row['ratio']:.3f} [{row['ratio_min']:.3f}..{row['ratio_max']:.3f}]; "
            f"{row['added_us']:+.1f} µs/request"
            if "ratio" in row
            else ""
        )
        lines.append(
            f"| {row['concurrency']} | {row['name']} | {row['requests']} | {_fmt(row['median'])} | "
            f"{_fmt(row['min'])} | {_fmt(row['max'])} | {ratio} |"
        )
    lines.append("")
    return lines


def _scale_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "## Scale",
        "",
        "### Memory per idle breaker (tracemalloc)",
        "",
        "| Breaker | window | bytes each |",
        "|---|---:|---:|",
    ]
    for row in results["memory"]:
        name = f"**{row['name']}**" if row["group"] == "ours" else row["name"]
        lines.append(f"| {name} | {row['window'] or '—'} | {_fmt(row['bytes'])} |")
    lines += [
        "",
        "Ours includes the breaker's entry in the process-wide weak registry behind",
        "`get_all_circuit_breakers()`; the registry rows include the registry's own entry.",
        "",
        "### BreakerRegistry with many distinct hosts",
        "",
        "| hosts | max_size | kept | breaker_for, new key (ns) | breaker_for, existing key (ns) | memory retained |",
        "|---:|---:|---:|---|---|---:|",
    ]
    for row in results["registry"]:
        ins, hit = row["insert_ns"], row["hit_ns"]
        lines.append(
            f"| {_fmt(row['hosts'])} | {_fmt(row['max_size'])} | {_fmt(row['kept'])} | "
            f"{_fmt(ins[0])} [{_fmt(ins[1])}..{_fmt(ins[2])}] | {_fmt(hit[0])} [{_fmt(hit[1])}..{_fmt(hit[2])}] | "
            f"{row['retained_bytes'] / 1e6:.1f} MB ({_fmt(row['retained_bytes'] / max(row['kept'], 1))} B/kept host) |"
        )
    race = results["race"]
    lines += [
        "",
        '"New key" is the mean over all hosts in insertion order (with the cap, each insert past',
        "10,000 evicts the least-recently-used closed breaker). Wall-clock time.",
        "",
        "### Stampede into HALF_OPEN",
        "",
        (
            f"{_fmt(race['tasks'])} asyncio tasks call one breaker the moment its open period ends "
            f"(`half_open_max_requests={race['probes']}`, probes held in flight until all tasks "
            "arrived)."
        ),
        "",
        f"- Passed per run: {race['passed']}; rejected: {race['rejected']} — "
        + ("exactly `half_open_max_requests` every time." if race["exact"] else "**NOT exact**."),
        (
            f"- Time until every task was admitted or rejected: {race['admitted_ms'][0]:.1f} ms "
            f"[{race['admitted_ms'][1]:.1f}..{race['admitted_ms'][2]:.1f}]; whole run including "
            f"task creation and the probes finishing: {race['total_ms'][0]:.1f} ms "
            f"[{race['total_ms'][1]:.1f}..{race['total_ms'][2]:.1f}] "
            f"({_fmt(race['per_task_ns'])} ns per task)."
        ),
        f"- Final state: {race['final_state']}.",
        "",
    ]
    return lines


# -- the table of docs/performance.md -------------------------------------------------------


def _peers(results: dict[str, Any], table: str) -> str:
    return ", ".join(
        f"{row['name'].split()[0]} {row['added_median'] / 1000:+.2f}"
        for row in _rows_of(results, table)
        if row["group"] == "peer" and row.get("added_median") is not None
    )


def readme_table(results: dict[str, Any]) -> str:
    """docs/performance.md's paragraph head and table, in µs, from this run."""
    m = results["machine"]

    def a(key: str) -> float | None:
        return _added(results, key)

    trio_scope = a("trio_cancel_scope")
    split = not caveats(results, "transport_deadline_traced")
    rows = [
        (
            "async transport, CLOSED, default config",
            _us(a("transport_closed")),
            _peers(results, "transport_async"),
        ),
        (
            "async transport, `timeout` set",
            (
                f"{_us(a('transport_deadline'))}; {_us(a('transport_deadline_traced'))} with the "
                + (
                    "wait for a pooled connection kept outside the deadline"
                    if split
                    else "inner transport calling httpcore's trace hooks"
                )
            ),
            "",
        ),
        (
            "async transport, body read",
            f"{_us(a('transport_body'))} ({_us(a('body_part'))} for reading it through the wrapper)",
            "",
        ),
        (
            "async transport under trio",
            (
                f"{_us(a('trio_transport_closed'))}; {_us(a('trio_transport_deadline'))} with "
                f"`timeout` (trio's own cancel scope alone: {_us(trio_scope)})"
            ),
            "",
        ),
        (
            "async transport, rejection",
            f"{_us(a('transport_rejected'))} over a raising transport",
            _peers(results, "transport_open_async"),
        ),
        (
            "sync transport, CLOSED",
            _us(a("sync_transport_closed")),
            _peers(results, "transport_sync"),
        ),
        (
            "engine, CLOSED, `call_async`",
            _us(a("call_async")),
            _peers(results, "engine_closed_async"),
        ),
        ("engine, CLOSED, `call`", _us(a("call")), _peers(results, "engine_closed_sync")),
        (
            "engine, rejection",
            (
                f"{_us(a('call_rejected'))} (`call`), {_us(a('call_async_rejected'))} "
                "(`call_async`) over a bare raise-and-catch"
            ),
            _peers(results, "engine_open_sync"),
        ),
    ]
    if results.get("memory"):
        ours = [r for r in results["memory"] if r["group"] == "ours" and r["window"] == 10]
        theirs = [r for r in results["memory"] if r["group"] == "peer" and r["window"] == 10]
        if ours:
            rows.append(
                (
                    "idle breaker, window 10",
                    f"about {ours[0]['bytes']:,.0f} bytes",
                    ", ".join(f"{r['name'].split()[0]} {r['bytes']:,.0f} bytes" for r in theirs),
                )
            )
    head = (
        f"On the reference machine ({m['nproc']} CPUs, {m['cpu']}, {m['implementation']} "
        f"{m['python']}), CPU time added per call or request over its floor, median of "
        f"{results['reps']} shuffled interleaved rounds (`{results['command']}`, "
        f"{results['started']}):"
    )
    lines = [head, "", "| | httpx-breaker | peers |", "|---|---|---|"]
    lines += [f"| {what} | {ours} | {peers} |" for what, ours, peers in rows]
    return "\n".join(lines) + "\n"


# -- the chart -----------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> bool:
    """Draw the comparison chart; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False

    target_of = {t.key: t.ns for t in TARGETS if t.ns is not None}
    panels = [
        (
            "Async transport, CLOSED (asyncio; trio marked)",
            ["transport_async", "transport_body_async", "transport_trio"],
        ),
        ("Engine, CLOSED", ["engine_closed_async", "engine_closed_sync"]),
        (
            "Rejection",
            [
                "transport_open_async",
                "transport_open_sync",
                "engine_open_async",
                "engine_open_sync",
            ],
        ),
        ("Sync transport, CLOSED", ["transport_sync"]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(16, 13))
    for ax, (title, tables) in zip(axes.ravel(), panels, strict=True):
        labels, values, colors, targets = [], [], [], []
        for table in tables:
            for row in _rows_of(results, table):
                if row["group"] == "baseline" or row.get("added_median") is None:
                    continue
                labels.append(("trio: " if table == "transport_trio" else "") + row["name"])
                values.append(row["added_median"])
                colors.append(
                    {"ours": "#d62728", "reference": "#1f77b4"}.get(row["group"], "#7f7f7f")
                )
                if row["key"] in target_of:
                    targets.append((len(labels) - 1, target_of[row["key"]]))
        _bars(ax, labels, values, colors, title + ": CPU ns added per call", "ns (log scale)")
        for y, target in targets:
            ax.plot([target, target], [y - 0.45, y + 0.45], color="#1f77b4", linewidth=2)
    m = results["machine"]
    fig.suptitle(
        f"httpx-breaker (red) vs peers (grey); blue ticks: issue 12's targets. Median of "
        f"{results['reps']} shuffled rounds; CPython {m['python']}, {m['nproc']} CPUs, {m['cpu']}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def _bars(
    ax: Any, labels: list[str], values: list[float], colors: list[str], title: str, xlabel: str
) -> None:
    shown = [max(v, 1.0) for v in values]  # a log axis cannot show <= 0 (noise around zero)
    ys = range(len(labels))
    ax.barh(list(ys), shown, color=colors)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    top = max(shown, default=10.0)
    ax.set_xlim(10, top * 4)
    for y, v, s in zip(ys, values, shown, strict=True):
        ax.text(s * 1.05, y, f"{v:,.0f}", va="center", fontsize=8)
