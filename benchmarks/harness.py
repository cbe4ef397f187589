"""Timing machinery: CPU time per call, shuffled interleaved rounds, per-row floors.

A variant is a named runner that performs its operation `n` times and returns the CPU
time it took, in nanoseconds (a plain function, or a coroutine function for async
variants; it reads `clock()` itself, around its own loop and nothing else).

How a section is measured:

- **CPU time, of this thread only** (`time.thread_time_ns`, CLOCK_THREAD_CPUTIME_ID).
  Two cores serve up to eight busy processes here: wall time (`perf_counter`) counts
  every moment the scheduler gives our core to someone else, CPU time does not.
  `thread_time` rather than `process_time` because the latter also counts every other
  thread of this process (asyncio's default executor, anything a peer library starts),
  which is not the cost of the call being measured. What CPU time still sees: cache and
  frequency effects of the neighbours, and host steal time if the hypervisor charges it
  to the guest. Where `thread_time` does not exist, `process_time` is used and said.
- **Shuffled interleaved rounds.** Every round runs every variant of the section once,
  each with its own batch size (about `batch_ns` of work), in an order drawn from a
  `random.Random(seed)`; the seed is reported, and `--seed` reproduces the order.
- **Floors measured in the same round.** Each variant names its floor (the bare
  baseline it is compared with); its figure is the median over rounds of
  (variant's ns per call in round r) - (its floor's ns per call in round r), with the
  min, max and interquartile range of those per-round differences.
- **GC.** Left enabled during a batch: a collection that a variant's own allocations
  trigger is part of what that variant costs an application. But everything that exists
  before the rounds start is frozen (`gc.freeze()`: the harness, the peers, the other
  variants' objects are never traversed), and `gc.collect()` runs before every batch,
  so a batch never pays for garbage another batch left, and starts with empty young
  generations. Collections during each variant's batches are counted and reported, with
  the number of unreachable (cyclic) objects they found: a change that makes the hot
  path create reference cycles shows up there before it shows up in the timings.
- **Checks.** A variant may carry a `check(calls)` run after the rounds, given how many
  calls it made in total (warm-up included): ours check that the breaker recorded
  exactly that many successes (or rejections) and that the request was left as it was
  given, so an optimisation that stops recording cannot look like a speed-up.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Runner = Callable[[int], Any]  # (n) -> CPU ns, or an awaitable of it
Check = Callable[[int], list[str]]  # (calls made) -> problems found (empty: all good)

if hasattr(time, "thread_time_ns"):
    clock = time.thread_time_ns
    CLOCK = "time.thread_time_ns (CPU time of the measuring thread)"
else:  # pragma: no cover (every platform this project supports has it)
    clock = time.process_time_ns
    CLOCK = "time.process_time_ns (CPU time of the process; thread_time is missing here)"

GC_POLICY = (
    "GC enabled during batches (a variant pays for the collections its own allocations "
    "trigger); objects made before the rounds frozen (gc.freeze); gc.collect() before "
    "every batch"
)

# Async loops let the event loop run once every YIELD_EVERY calls, identically in every
# variant: a real request always yields, and a loop that never runs would let the
# cancelled deadline timers of the deadline variants pile up in its heap.
YIELD_EVERY = 64


@dataclass
class Variant:
    key: str
    name: str
    run: Runner
    group: str = "peer"  # "baseline" (a floor), "ours", "peer" or "reference"
    floor: str | None = None  # key of the floor it is compared with; None for floors
    table: str = ""  # which report table it belongs to
    note: str = ""
    check: Check | None = None


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and quartiles (linear interpolation) of `values`."""
    xs = sorted(values)
    if not xs:
        nan = float("nan")
        return {"median": nan, "min": nan, "max": nan, "q1": nan, "q3": nan, "iqr": nan}

    def quantile(p: float) -> float:
        pos = p * (len(xs) - 1)
        low = int(pos)
        high = min(low + 1, len(xs) - 1)
        return xs[low] + (xs[high] - xs[low]) * (pos - low)

    q1, q3 = quantile(0.25), quantile(0.75)
    return {
        "median": statistics.median(xs),
        "min": xs[0],
        "max": xs[-1],
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
    }


@dataclass
class Row:
    variant: Variant
    n: int  # calls per batch
    samples: list[float] = field(default_factory=list)  # ns per call, one per round
    calls: int = 0  # every call made, warm-up included
    gc_runs: int = 0
    gc_found: int = 0  # unreachable objects the collections during its batches found
    added: list[float] | None = None  # per round: sample - floor's sample
    problems: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # its place in each round's order

    def as_dict(self) -> dict[str, Any]:
        v = self.variant
        raw = summary(self.samples)
        out: dict[str, Any] = {
            "key": v.key,
            "name": v.name,
            "group": v.group,
            "floor": v.floor,
            "table": v.table,
            "note": v.note,
            "n": self.n,
            "calls": self.calls,
            "rounds": len(self.samples),
            "median": raw["median"],
            "min": raw["min"],
            "max": raw["max"],
            "samples": list(self.samples),
            "positions": list(self.positions),
            "gc_runs_per_1k": 1000 * self.gc_runs / max(self.calls, 1),
            "gc_found_per_1k": 1000 * self.gc_found / max(self.calls, 1),
            "problems": list(self.problems),
        }
        if self.added is not None:
            s = summary(self.added)
            out.update(
                added=list(self.added),
                added_median=s["median"],
                added_min=s["min"],
                added_max=s["max"],
                added_q1=s["q1"],
                added_q3=s["q3"],
                added_iqr=s["iqr"],
            )
        return out


@dataclass
class Section:
    key: str
    title: str
    runtime: str  # "asyncio", "trio" or "sync"
    rows: list[dict[str, Any]] = field(default_factory=list)
    derived: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"key", "name", "why"}
    order_seed: int = 0

    def row(self, key: str) -> dict[str, Any] | None:
        for row in self.rows:
            if row["key"] == key:
                return row
        return None


def _plan(per_call: float, batch_ns: float) -> int:
    """Calls per batch: about `batch_ns` worth, a multiple of YIELD_EVERY, at least 128."""
    n = int(batch_ns / max(per_call, 1.0))
    return max(128, min(5_000_000, n)) // YIELD_EVERY * YIELD_EVERY


def _gc_totals() -> tuple[int, int]:
    stats = gc.get_stats()
    return sum(s["collections"] for s in stats), sum(s["collected"] for s in stats)


def _check_floors(variants: list[Variant]) -> None:
    keys = [v.key for v in variants]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate variant keys: {keys}")
    for v in variants:
        if v.floor is not None and v.floor not in keys:
            raise ValueError(f"variant {v.key!r} names floor {v.floor!r}, not in the section")


class _Schedule:
    """The batches of every round, shuffled, and each row's per-round difference.

    Every variant runs once per round, in an order drawn from `rng`; a row's floor is
    its floor's batch of the same round. (Rows that share a floor share that batch, so
    a figure made of two such rows, `derive`, cancels the floor exactly.)
    """

    def __init__(self, rows: list[Row], rng: random.Random) -> None:
        self.rows = rows
        self.rng = rng
        index = {row.variant.key: i for i, row in enumerate(rows)}
        self.floor_of = {
            i: index[row.variant.floor]
            for i, row in enumerate(rows)
            if row.variant.floor is not None
        }

    def round(self) -> list[int]:
        order = list(range(len(self.rows)))
        self.rng.shuffle(order)
        return order

    def finish(self) -> list[Row]:
        rows = self.rows
        for j, floor in self.floor_of.items():
            base = rows[floor].samples
            rows[j].added = [x - b for x, b in zip(rows[j].samples, base, strict=True)]
        for row in rows:
            check = row.variant.check
            if check is not None:
                try:
                    row.problems = check(row.calls)
                except Exception as exc:  # noqa: BLE001 (a broken check is a finding, not a crash)
                    row.problems = [f"the check raised {type(exc).__name__}: {exc}"]
        return rows


def measure_sync(
    variants: list[Variant], reps: int, batch_ns: float, rng: random.Random
) -> list[Row]:
    """Run sync variants in shuffled interleaved rounds; one Row per variant."""
    _check_floors(variants)
    rows = []
    for v in variants:
        v.run(YIELD_EVERY)  # warm up caches and lazy state
        per_call = v.run(4 * YIELD_EVERY) / (4 * YIELD_EVERY)
        rows.append(Row(v, _plan(per_call, batch_ns), calls=5 * YIELD_EVERY))
    schedule = _Schedule(rows, rng)
    gc.collect()
    gc.freeze()
    try:
        for _ in range(reps):
            for position, i in enumerate(schedule.round()):
                row = rows[i]
                row.positions.append(position)
                gc.collect()
                runs, found = _gc_totals()
                elapsed = row.variant.run(row.n)
                runs2, found2 = _gc_totals()
                row.samples.append(elapsed / row.n)
                row.calls += row.n
                row.gc_runs += runs2 - runs
                row.gc_found += found2 - found
    finally:
        gc.unfreeze()
    return schedule.finish()


async def measure_async(
    variants: list[Variant], reps: int, batch_ns: float, rng: random.Random
) -> list[Row]:
    """The async twin of `measure_sync` (asyncio or trio); must run inside the loop."""
    _check_floors(variants)
    rows = []
    for v in variants:
        await v.run(YIELD_EVERY)
        per_call = await v.run(4 * YIELD_EVERY) / (4 * YIELD_EVERY)
        rows.append(Row(v, _plan(per_call, batch_ns), calls=5 * YIELD_EVERY))
    schedule = _Schedule(rows, rng)
    gc.collect()
    gc.freeze()
    try:
        for _ in range(reps):
            for position, i in enumerate(schedule.round()):
                row = rows[i]
                row.positions.append(position)
                gc.collect()
                runs, found = _gc_totals()
                elapsed = await row.variant.run(row.n)
                runs2, found2 = _gc_totals()
                row.samples.append(elapsed / row.n)
                row.calls += row.n
                row.gc_runs += runs2 - runs
                row.gc_found += found2 - found
    finally:
        gc.unfreeze()
    return schedule.finish()


def derive(
    section: Section,
    key: str,
    name: str,
    minuend: str,
    subtrahend: str,
    note: str = "",
) -> dict[str, Any] | None:
    """A figure made of two rows of one section: per round, minuend's added minus
    subtrahend's added, then median/min/max/IQR over the rounds. None if either is missing.
    """
    a, b = section.row(minuend), section.row(subtrahend)
    if a is None or b is None or "added" not in a or "added" not in b:
        return None
    diffs = [x - y for x, y in zip(a["added"], b["added"], strict=True)]
    s = summary(diffs)
    out = {
        "key": key,
        "name": name,
        "of": [minuend, subtrahend],
        "note": note,
        "added": diffs,
        "added_median": s["median"],
        "added_min": s["min"],
        "added_max": s["max"],
        "added_q1": s["q1"],
        "added_q3": s["q3"],
        "added_iqr": s["iqr"],
    }
    section.derived.append(out)
    return out
