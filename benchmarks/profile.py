"""`python -m benchmarks profile`: the CLOSED async path, piece by piece.

Two kinds of figures, all CPU time in this process:

1. **Whole-path differences**, interleaved under asyncio like the hot path rows: the
   whole CLOSED path (ours - floor); the stream wrapper, as (ours over a transport
   whose responses arrive open) - (ours over one whose responses arrive already read,
   which the transport records at once without wrapping), each over its own floor; and
   what the deadline, the trace hook and reading the body add on top.
2. **Internal pieces**, each called in a tight loop of its own (interleaved with the
   others and an empty loop, the floor), with the arguments the transport would pass:
   key from the URL, registry lookup, URL-keyed cache, permit, success record (and the
   bare lock inside it), the `response.extensions` entry.

The leftover is the whole path minus the pieces on it (medians): the transport's own
structure, clock reads, the calls between the pieces.

The internals are being rewritten. Every piece is looked up by name from the list in
`CANDIDATES` (edit it when a name changes), called once and checked before it is
timed; a piece that is missing, takes other arguments or does not do what it should
is reported as "n/a" with the reason, and its cost falls into the leftover.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from itertools import repeat
from typing import Any

import httpx

import httpx_breaker._registry as registry_module
import httpx_breaker._transport as transport_module
from httpx_breaker import AsyncCircuitBreakerTransport, CircuitBreaker

from .harness import Section, Variant, clock, derive, measure_async, measure_sync
from .transports import BODY, KEY, InnerAsync, PassAsync, TracingInnerAsync, make_request
from .variants import WITH_DEADLINE, _pause_asyncio, a_requests, a_requests_read, counts

# Where each internal piece may live, in the order tried: (holder, attribute name).
# Holders: "registry" (BreakerRegistry), "core" (the transport's `_core`), "transport",
# "breaker", "module" (httpx_breaker._transport), "registry_module" (httpx_breaker._registry).
CANDIDATES: dict[str, list[tuple[str, str]]] = {
    "key": [("core", "key"), ("module", "default_key"), ("registry_module", "default_key")],
    "lookup": [("registry", "breaker_for")],
    "url_cache": [
        ("registry", "_breaker_for_url"),
        ("core", "_breaker_for_url"),
        ("transport", "_breaker_for_url"),
    ],
    "admit": [("breaker", "_admit"), ("breaker", "_acquire")],
    "record": [("breaker", "_record_success")],
    "annotate": [("module", "_annotate")],
}


class NotAvailable(Exception):
    """This piece cannot be timed on this code; the message says why."""


def _find(holders: dict[str, Any], piece: str) -> list[tuple[str, Callable[..., Any]]]:
    found = []
    for holder, name in CANDIDATES[piece]:
        obj = holders.get(holder)
        fn = getattr(obj, name, None) if obj is not None else None
        if callable(fn):
            owner = obj.__name__.rsplit(".", 1)[-1] if "module" in holder else type(obj).__name__
            found.append((f"{owner}.{name}", fn))
    return found


def _first_working(
    holders: dict[str, Any], piece: str, attempts: list[tuple[Any, ...]], ok: Callable[[Any], bool]
) -> tuple[str, Callable[..., Any], tuple[Any, ...]]:
    """The first candidate and argument tuple whose call returns something `ok`."""
    candidates = _find(holders, piece)
    if not candidates:
        names = ", ".join(f"{h}.{n}" for h, n in CANDIDATES[piece])
        raise NotAvailable(f"none of {names} exists")
    reasons = []
    for label, fn in candidates:
        for args in attempts:
            try:
                result = fn(*args)
            except Exception as exc:  # noqa: BLE001 (any failure makes the piece n/a)
                reasons.append(f"{label}{_arity(args)}: {type(exc).__name__}: {exc}")
                continue
            if ok(result):
                return label, fn, args
            reasons.append(
                f"{label}{_arity(args)} returned {type(result).__name__}, not what the transport uses"
            )
    raise NotAvailable("; ".join(reasons))


def _arity(args: tuple[Any, ...]) -> str:
    return "(" + ", ".join(type(a).__name__ for a in args) + ")"


def _loop(fn: Callable[..., Any], args: tuple[Any, ...]) -> Callable[[int], int]:
    # Specialised by arity: a star-call would add its own cost to every piece.
    if len(args) == 0:

        def run(n: int) -> int:
            t = clock()
            for _ in repeat(None, n):
                fn()
            return clock() - t
    elif len(args) == 1:
        (a,) = args

        def run(n: int) -> int:
            t = clock()
            for _ in repeat(None, n):
                fn(a)
            return clock() - t
    elif len(args) == 3:
        a, b, c = args

        def run(n: int) -> int:
            t = clock()
            for _ in repeat(None, n):
                fn(a, b, c)
            return clock() - t
    elif len(args) == 4:
        a, b, c, d = args

        def run(n: int) -> int:
            t = clock()
            for _ in repeat(None, n):
                fn(a, b, c, d)
            return clock() - t
    else:

        def run(n: int) -> int:
            t = clock()
            for _ in repeat(None, n):
                fn(*args)
            return clock() - t

    return run


def _empty(n: int) -> int:
    t = clock()
    for _ in repeat(None, n):
        pass
    return clock() - t


def _lock_round_trip(lock: Any) -> Callable[[int], int]:
    acquire, release = lock.acquire, lock.release

    def run(n: int) -> int:
        t = clock()
        for _ in repeat(None, n):
            acquire()
            release()
        return clock() - t

    return run


def _successes(breaker: CircuitBreaker) -> int:
    return int(breaker.get_metrics().successful_requests)


def internal_pieces(
    ours: AsyncCircuitBreakerTransport, request: httpx.Request
) -> tuple[list[Variant], dict[str, dict[str, str]]]:
    """Variants timing each internal piece, and {piece: {"how" | "na": text}}."""
    registry = ours.registry
    breaker = registry[KEY]
    core = getattr(ours, "_core", None)
    holders = {
        "registry": registry,
        "core": core,
        "transport": ours,
        "breaker": breaker,
        "module": transport_module,
        "registry_module": registry_module,
    }
    url = request.url
    info: dict[str, dict[str, str]] = {}
    variants = [Variant("empty", "empty loop (floor)", _empty, "baseline")]

    def add(piece: str, name: str, make: Callable[[], tuple[str, Callable[[int], int]]]) -> None:
        try:
            how, run = make()
        except NotAvailable as exc:
            info[piece] = {"na": str(exc)}
            return
        info[piece] = {"how": how}
        check = counts(lambda: breaker, "successful_requests") if piece == "record" else None
        variants.append(Variant(piece, name, run, "ours", "empty", check=check))

    def key() -> tuple[str, Callable[[int], int]]:
        label, fn, args = _first_working(holders, "key", [(request,)], lambda k: k == KEY)
        return f"`{label}(request)`", _loop(fn, args)

    def lookup() -> tuple[str, Callable[[int], int]]:
        label, fn, args = _first_working(holders, "lookup", [(KEY,)], lambda b: b is breaker)
        return f"`{label}(key)`, an existing key", _loop(fn, args)

    def url_cache() -> tuple[str, Callable[[int], int]]:
        label, fn, args = _first_working(
            holders, "url_cache", [(url,), (request,)], lambda b: b is breaker
        )
        what = "url" if args[0] is url else "request"
        return f"`{label}({what})`, a cached URL", _loop(fn, args)

    token_box: list[Any] = []

    def admit() -> tuple[str, Callable[[int], int]]:
        label, fn, args = _first_working(holders, "admit", [()], lambda tok: tok is not None)
        token_box.append(fn())
        return f"`{label}()`, CLOSED", _loop(fn, args)

    def record() -> tuple[str, Callable[[int], int]]:
        token = token_box[0] if token_box else getattr(breaker, "_epoch", 0)
        before = _successes(breaker)
        attempts = [(token, 1.0, 1.001, 1.001), (token, 1.0, 1.001)]

        def counted(_: Any) -> bool:
            return _successes(breaker) > before

        label, fn, args = _first_working(holders, "record", attempts, counted)
        return f"`{label}(token, start, end{', now' if len(args) == 4 else ''})`", _loop(fn, args)

    def lock() -> tuple[str, Callable[[int], int]]:
        lk = getattr(breaker, "_lock", None)
        if lk is None or not hasattr(lk, "acquire"):
            raise NotAvailable("the breaker has no `_lock`")
        return (
            "`lock.acquire(); lock.release()` of the breaker's lock (part of the record)",
            _lock_round_trip(lk),
        )

    def annotate() -> tuple[str, Callable[[int], int]]:
        response = httpx.Response(200)
        state = getattr(breaker, "_state", None) or breaker.state

        def written(_: Any) -> bool:
            entry = response.extensions.get("circuit_breaker")
            return isinstance(entry, dict) and entry.get("breaker") is breaker

        label, fn, args = _first_working(holders, "annotate", [(response, breaker, state)], written)
        return f"`{label}(response, breaker, state)`", _loop(fn, args)

    add("key", "key from the URL", key)
    add("lookup", "registry lookup and LRU touch", lookup)
    add("url_cache", "URL-keyed cache lookup", url_cache)
    add("admit", "permit (admission, CLOSED)", admit)
    add("record", "success record", record)
    add("lock", "of which the lock round trip", lock)
    add("annotate", "`response.extensions` entry", annotate)
    return variants, info


async def whole_path() -> tuple[list[Variant], dict[str, str]]:
    """Variants of the whole path (asyncio), and notes on what could not be isolated."""
    pause = _pause_asyncio
    plain, closed, traced, body = (
        InnerAsync(),
        InnerAsync(closed=True),
        TracingInnerAsync(),
        InnerAsync(BODY),
    )
    notes: dict[str, str] = {}

    def ours_row(
        key: str, name: str, t: AsyncCircuitBreakerTransport, floor: str, read: bool = False
    ) -> Variant:
        request = make_request()
        loop = a_requests_read if read else a_requests
        return Variant(
            key,
            name,
            loop(t, request, pause),
            "ours",
            floor,
            check=counts(lambda: t.registry[KEY], "successful_requests", request),
        )

    ours_closed = AsyncCircuitBreakerTransport(closed)
    probe = await ours_closed.handle_async_request(make_request())
    await probe.aclose()
    if not isinstance(probe.stream, httpx.ByteStream):
        notes["wrapper"] = (
            "n/a: the transport wraps responses that arrive already read too, so the "
            "wrapper cannot be isolated this way"
        )
    variants = [
        Variant(
            "floor",
            "pass-through wrapper (floor)",
            a_requests(PassAsync(plain), make_request(), pause),
            "baseline",
        ),
        Variant(
            "floor_closed",
            "pass-through, responses already read (floor)",
            a_requests(PassAsync(closed), make_request(), pause),
            "baseline",
        ),
        Variant(
            "floor_traced",
            "pass-through over the tracing transport (floor)",
            a_requests(PassAsync(traced), make_request(), pause),
            "baseline",
        ),
        Variant(
            "floor_body",
            "pass-through, body read (floor)",
            a_requests_read(PassAsync(body), make_request(), pause),
            "baseline",
        ),
        ours_row("whole", "CLOSED, default config", AsyncCircuitBreakerTransport(plain), "floor"),
        ours_row(
            "whole_closed",
            "CLOSED, responses already read (no wrapper)",
            ours_closed,
            "floor_closed",
        ),
        ours_row(
            "deadline",
            f"timeout={WITH_DEADLINE.timeout:g}",
            AsyncCircuitBreakerTransport(plain, default=WITH_DEADLINE),
            "floor",
        ),
        ours_row(
            "deadline_traced",
            f"timeout={WITH_DEADLINE.timeout:g}, tracing transport",
            AsyncCircuitBreakerTransport(traced, default=WITH_DEADLINE),
            "floor_traced",
        ),
        ours_row(
            "body", "CLOSED, body read", AsyncCircuitBreakerTransport(body), "floor_body", read=True
        ),
    ]
    return variants, notes


def _median(section: Section, key: str) -> float | None:
    row = section.row(key)
    return None if row is None else row.get("added_median")


def run(reps: int, batch_ns: float, seed: int) -> dict[str, Any]:
    """Measure both kinds and assemble the table."""
    rng = random.Random(seed)

    async def measure_whole() -> tuple[Section, dict[str, str]]:
        variants, notes = await whole_path()
        sec = Section("profile_whole", "Profile: whole path (asyncio)", "asyncio")
        sec.rows = [r.as_dict() for r in await measure_async(variants, reps, batch_ns, rng)]
        return sec, notes

    whole, notes = asyncio.run(measure_whole())
    derive(whole, "wrapper", "stream wrapper", "whole", "whole_closed")
    derive(whole, "deadline_extra", "deadline", "deadline", "whole")
    derive(whole, "trace_extra", "trace hook", "deadline_traced", "deadline")
    derive(whole, "body_extra", "body read", "body", "whole")

    async def setup() -> tuple[AsyncCircuitBreakerTransport, httpx.Request]:
        ours = AsyncCircuitBreakerTransport(InnerAsync())
        request = make_request()
        response = await ours.handle_async_request(request)
        await response.aclose()
        return ours, request

    ours, request = asyncio.run(setup())
    variants, info = internal_pieces(ours, request)
    pieces = Section("profile_pieces", "Profile: internal pieces", "sync")
    pieces.rows = [r.as_dict() for r in measure_sync(variants, reps, batch_ns, rng)]

    def derived(key: str) -> float | None:
        for d in whole.derived:
            if d["key"] == key:
                return float(d["added_median"])
        return None

    has_cache = "how" in info.get("url_cache", {})
    table: list[dict[str, Any]] = []

    def piece(
        key: str,
        label: str,
        on_path: bool,
        *,
        value: float | None = None,
        how: str = "",
        na: str = "",
    ) -> None:
        if value is None and not na and key in info:
            value = _median(pieces, key)
            how = info[key].get("how", "")
            na = info[key].get("na", "")
        table.append(
            {"key": key, "piece": label, "ns": value, "how": how, "na": na, "on_path": on_path}
        )

    cold = " (only on a URL-cache miss)" if has_cache else ""
    piece("key", "key from the URL" + cold, not has_cache)
    piece("lookup", "registry lookup and LRU touch" + cold, not has_cache)
    piece("url_cache", "URL-keyed cache lookup", has_cache)
    piece("admit", "permit (admission)", True)
    wrapper_na = notes.get("wrapper", "")
    piece(
        "wrapper",
        "stream wrapper (object, aclose, settle)",
        True,
        value=None if wrapper_na else derived("wrapper"),
        how="whole path: (open response - its floor) - (already-read response - its floor)",
        na=wrapper_na,
    )
    piece("record", "success record", True)
    piece("lock", "of which the lock round trip", False)
    piece("annotate", "`response.extensions` entry", True)
    whole_ns = _median(whole, "whole")
    on_path = [p["ns"] for p in table if p["on_path"] and p["ns"] is not None]
    leftover = None if whole_ns is None else whole_ns - sum(on_path)
    missing = [p["piece"] for p in table if p["on_path"] and p["ns"] is None]
    table.append(
        {
            "key": "leftover",
            "piece": "leftover (structure, clock reads, calls between pieces)",
            "ns": leftover,
            "how": "whole path - the pieces above that are on it"
            + (f"; includes the n/a pieces: {', '.join(missing)}" if missing else ""),
            "na": "",
            "on_path": True,
        }
    )
    table.append(
        {
            "key": "whole",
            "piece": "**whole CLOSED path, default config**",
            "ns": whole_ns,
            "how": "ours - pass-through floor, interleaved",
            "na": "",
            "on_path": False,
        }
    )
    extra = [
        (
            "deadline_extra",
            f"deadline (timeout={WITH_DEADLINE.timeout:g}), on top",
            "timeout set - default config, inner transport not tracing",
        ),
        (
            "trace_extra",
            "trace hook (deadline started from httpcore's trace), on top",
            "tracing transport - plain one, both with timeout, each over its floor",
        ),
        (
            "body_extra",
            "reading the body through the wrapper, on top",
            "body read (aread) - closed unread, each over its floor",
        ),
    ]
    for key, label, how in extra:
        table.append(
            {"key": key, "piece": label, "ns": derived(key), "how": how, "na": "", "on_path": False}
        )
    problems = [
        f"{row['name']}: {p}"
        for sec in (whole, pieces)
        for row in sec.rows
        for p in row["problems"]
    ]
    return {
        "seed": seed,
        "reps": reps,
        "table": table,
        "sections": [whole.__dict__, pieces.__dict__],
        "problems": problems,
    }


def format_table(profile: dict[str, Any]) -> list[str]:
    lines = ["| piece | ns | how measured |", "|---|---:|---|"]
    for p in profile["table"]:
        ns = "n/a" if p["ns"] is None else f"{p['ns']:,.0f}"
        how = p["how"] if p["ns"] is not None or not p["na"] else f"n/a: {p['na']}"
        lines.append(f"| {p['piece']} | {ns} | {how} |")
    return lines
