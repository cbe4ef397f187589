"""The sliding window: count and time expiry, O(1) running counts, fixed memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from httpx_breaker._window import FAILED, SLOW, SlidingWindow


def test_empty_window_counts_nothing() -> None:
    """A new window holds no outcomes."""
    window = SlidingWindow(3, 10.0)
    assert (window.count, window.failures, window.slow) == (0, 0, 0)


def test_window_keeps_only_the_last_size_outcomes() -> None:
    """Past `size` outcomes the oldest leaves, with its flags."""
    window = SlidingWindow(3, 100.0)
    window.record(0.0, FAILED)
    window.record(0.0, FAILED | SLOW)
    window.record(0.0, 0)
    assert (window.count, window.failures, window.slow) == (3, 2, 1)
    window.record(0.0, 0)  # evicts the first FAILED
    assert (window.count, window.failures, window.slow) == (3, 1, 1)
    window.record(0.0, 0)  # evicts FAILED | SLOW
    assert (window.count, window.failures, window.slow) == (3, 0, 0)


def test_outcomes_older_than_duration_expire() -> None:
    """`expire(now)` drops outcomes older than `duration`, keeping those exactly that old."""
    window = SlidingWindow(10, 5.0)
    window.record(0.0, FAILED)
    window.record(1.0, SLOW)
    window.record(2.0, 0)
    window.expire(5.0)  # the first is exactly 5 s old: not older, stays
    assert (window.count, window.failures, window.slow) == (3, 1, 1)
    window.expire(6.5)
    assert (window.count, window.failures, window.slow) == (1, 0, 0)
    window.expire(100.0)
    assert (window.count, window.failures, window.slow) == (0, 0, 0)


def test_clear_empties_the_window() -> None:
    """`clear()` forgets every outcome and new ones count from zero."""
    window = SlidingWindow(2, 10.0)
    window.record(0.0, FAILED)
    window.record(0.0, FAILED)
    window.clear()
    assert (window.count, window.failures, window.slow) == (0, 0, 0)
    window.record(1.0, SLOW)
    window.record(1.0, FAILED)
    window.record(1.0, 0)
    assert (window.count, window.failures, window.slow) == (2, 1, 0)


def test_memory_is_fixed() -> None:
    """The ring buffers never grow, whatever is recorded (the flags are made once)."""
    window = SlidingWindow(4, 1.0)
    window.record(0.0, FAILED)
    times, flags = window._times, window._flags
    for i in range(1000):
        window.record(i * 0.1, i % 4)
        window.expire(i * 0.1)
    assert window._times is times and window._flags is flags
    assert flags is not None and len(times) == len(flags) == 4


def _contents(window: SlidingWindow) -> list[tuple[float, int]]:
    """The outcomes in the ring, oldest first, as (time, flags)."""
    size, flags = window._size, window._flags
    slots = [(window._head + k) % size for k in range(window.count)]
    return [(window._times[i], 0 if flags is None else flags[i]) for i in slots]


operation = st.one_of(
    st.tuples(st.just("record"), st.floats(0, 3, allow_nan=False), st.integers(0, 3)),
    st.tuples(st.just("expire"), st.floats(0, 3, allow_nan=False), st.just(0)),
    st.tuples(st.just("clear"), st.just(0.0), st.just(0)),
    st.tuples(st.just("push"), st.floats(0, 3, allow_nan=False), st.just(0)),
    st.tuples(st.just("shift"), st.floats(-1000, 1000, allow_nan=False), st.just(0)),
)


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 6),
    duration=st.floats(0.5, 5.0),
    ops=st.lists(operation, max_size=60),
)
def test_running_counts_match_a_brute_force_recount(
    size: int, duration: float, ops: list[tuple[str, float, int]]
) -> None:
    """After any sequence of operations the running counts equal a recount of a plain list."""
    window = SlidingWindow(size, duration)
    reference: list[tuple[float, int]] = []
    now = 0.0
    for kind, step, flags in ops:
        now += step  # time only moves forward, but for a clock swap (shift)
        if kind == "record":
            window.expire(now)
            window.record(now, flags)
            reference = [(t, f) for t, f in reference if t >= now - duration]
            reference = [*reference, (now, flags)][-size:]
        elif kind == "expire":
            window.expire(now)
            reference = [(t, f) for t, f in reference if t >= now - duration]
        elif kind == "push" and not (window.failures or window.slow):
            # The breaker's hot path: a success while no failed or slow outcome is in
            # the window, with no expiry.
            window.push_success(now)
            reference = [*reference, (now, 0)][-size:]
        elif kind == "shift":
            # The breaker's clock was swapped: every time moves by `step` (either way),
            # and `now` with them.
            window.shift(step)
            reference = [(t + step, f) for t, f in reference]
        elif kind == "clear":
            window.clear()
            reference = []
        assert window.count == len(reference)
        assert _contents(window) == reference  # the same outcomes, oldest first
        assert window.failures == sum(1 for _, f in reference if f & FAILED)
        assert window.slow == sum(1 for _, f in reference if f & SLOW)
        assert window.count <= size


def test_flags_are_kept_only_once_an_outcome_has_one() -> None:
    """A window of successes keeps no flags; the first failure makes them, and the
    successes recorded before it still read as successes when they leave."""
    window = SlidingWindow(3, 100.0)
    window.record(0.0, 0)
    window.push_success(1.0)
    assert window._flags is None
    window.record(2.0, FAILED)
    assert window._flags is not None
    window.record(3.0, SLOW)  # evicts the first success
    assert (window.count, window.failures, window.slow) == (3, 1, 1)
    window.clear()
    window.push_success(4.0)  # over the old FAILED slot: reads as a success
    window.push_success(5.0)
    window.push_success(6.0)
    window.record(7.0, 0)
    assert (window.count, window.failures, window.slow) == (3, 0, 0)


def test_a_success_pushed_after_expiry_wraps_around_the_ring() -> None:
    """With the oldest outcomes expired, the head has moved on: the next success goes
    in the slot after the newest, wrapping to the front of the ring."""
    window = SlidingWindow(3, 1.0)
    for now in (0.0, 0.5, 1.2):
        window.push_success(now)
    window.expire(1.8)  # drops 0.0 and 0.5: head at slot 2, one outcome left
    window.push_success(1.9)  # slot 0, after the newest in slot 2
    window.push_success(2.0)  # slot 1: full again
    assert _contents(window) == [(1.2, 0), (1.9, 0), (2.0, 0)]
    window.push_success(2.1)  # full: replaces the oldest
    assert _contents(window) == [(1.9, 0), (2.0, 0), (2.1, 0)]
    window.expire(3.05)  # 1.9 and 2.0 are more than a second old
    assert _contents(window) == [(2.1, 0)]
