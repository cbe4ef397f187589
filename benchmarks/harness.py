"""Timing machinery: interleaved rounds, per-call nanoseconds, median / min / max.

A variant is a named runner that performs its operation `n` times and returns the
elapsed nanoseconds (a plain function, or a coroutine function for async variants).
Every round runs every variant of a section once, in a rotated order, so the
baseline and the subjects see the same machine load; the per-call figure of a
variant in a round is compared with the baseline of the same round.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Runner = Callable[[int], Any]  # (n) -> elapsed ns, or an awaitable of it


@dataclass
class Variant:
    name: str
    run: Runner
    group: str = "peer"  # "baseline", "ours" or "peer"
    note: str = ""


@dataclass
class Row:
    name: str
    group: str
    note: str
    n: int
    samples: list[float]  # ns per call, one per round
    added: list[float]  # ns per call above the baseline of the same round

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def added_median(self) -> float:
        return statistics.median(self.added)

    def as_dict(self, baseline_median: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "note": self.note,
            "n": self.n,
            "median": self.median,
            "min": min(self.samples),
            "max": max(self.samples),
            "added_median": self.added_median,
            "added_min": min(self.added),
            "added_max": max(self.added),
            "ratio": self.median / baseline_median if baseline_median > 0 else float("nan"),
        }

    def with_best(self, row: dict[str, Any], baseline: Row) -> dict[str, Any]:
        """Add "added_best": best round minus the baseline's best round (least load)."""
        row["added_best"] = min(self.samples) - min(baseline.samples)
        return row


@dataclass
class Section:
    key: str
    title: str
    baseline: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unit: str = "ns/call"


def _clamp(value: float, low: int, high: int) -> int:
    return max(low, min(high, int(value)))


def _plan(per_call: float, batch_ns: float) -> int:
    """Calls per batch: about `batch_ns` worth, a multiple of 64 (async loops yield every 64)."""
    return _clamp(batch_ns / max(per_call, 1.0), 128, 5_000_000) // 64 * 64


def measure_sync(variants: list[Variant], reps: int, batch_ns: float) -> list[Row]:
    """Run sync variants in interleaved rounds; return one Row per variant."""
    sizes = []
    for v in variants:
        v.run(64)  # warm up caches and lazy state
        sizes.append(_plan(v.run(256) / 256, batch_ns))
    samples: list[list[float]] = [[] for _ in variants]
    for r in range(reps):
        order = list(range(len(variants)))
        order = order[r % len(order) :] + order[: r % len(order)]
        gc.collect()
        for i in order:
            n = sizes[i]
            samples[i].append(variants[i].run(n) / n)
    return _rows(variants, sizes, samples)


async def measure_async(variants: list[Variant], reps: int, batch_ns: float) -> list[Row]:
    """The async twin of `measure_sync`; must run inside the event loop."""
    sizes = []
    for v in variants:
        await v.run(64)
        sizes.append(_plan(await v.run(256) / 256, batch_ns))
    samples: list[list[float]] = [[] for _ in variants]
    for r in range(reps):
        order = list(range(len(variants)))
        order = order[r % len(order) :] + order[: r % len(order)]
        gc.collect()
        for i in order:
            n = sizes[i]
            elapsed: float = await variants[i].run(n)
            samples[i].append(elapsed / n)
    return _rows(variants, sizes, samples)


def _rows(variants: list[Variant], sizes: list[int], samples: list[list[float]]) -> list[Row]:
    base = samples[0]  # the first variant is the section's baseline
    rows = []
    for v, n, s in zip(variants, sizes, samples, strict=True):
        rows.append(
            Row(v.name, v.group, v.note, n, s, [x - b for x, b in zip(s, base, strict=True)])
        )
    return rows


def section_from_rows(key: str, title: str, rows: list[Row]) -> Section:
    baseline = rows[0]
    sec = Section(key, title, baseline.name)
    sec.rows = [row.with_best(row.as_dict(baseline.median), baseline) for row in rows]
    return sec


def now_ns() -> int:
    return time.perf_counter_ns()


async def run_awaitable(aw: Awaitable[Any]) -> Any:
    return await aw
