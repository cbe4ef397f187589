"""CircuitBreakerConfig: defaults, immutability and validation."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from httpx_breaker import CircuitBreakerConfig
from httpx_breaker._config import ConfigTypeError

DEFAULTS: dict[str, Any] = {
    "failure_threshold": 5,
    "failure_rate_threshold": 0.5,
    "timeout": None,
    "reset_timeout": 60.0,
    "half_open_max_requests": 3,
    "window_size": 10,
    "window_duration": 60.0,
    "exclude_exceptions": (),
    "minimum_requests": None,
    "slow_call_duration": None,
    "slow_call_rate_threshold": 1.0,
    "reset_timeout_multiplier": 1.0,
    "max_reset_timeout": None,
    "jitter": 0.0,
    "respect_retry_after": True,
    "max_retry_after": 300.0,
    "dry_run": False,
    "outcome_at": "close",
    "max_concurrent": None,
    "max_wait": 0.0,
}


def test_every_default_matches_the_design() -> None:
    """A config built with no arguments has exactly the documented defaults."""
    config = CircuitBreakerConfig()
    assert {f.name for f in dataclasses.fields(config)} == set(DEFAULTS)
    for name, value in DEFAULTS.items():
        actual = getattr(config, name)
        assert actual == value, name
        assert type(actual) is type(value), name


def test_minimum_requests_none_means_window_size() -> None:
    """`minimum_requests=None` resolves to the window size."""
    assert CircuitBreakerConfig(window_size=7).effective_minimum_requests == 7
    assert CircuitBreakerConfig(window_size=7, minimum_requests=3).effective_minimum_requests == 3


def test_config_is_frozen() -> None:
    """Fields cannot be reassigned after construction."""
    config = CircuitBreakerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.failure_threshold = 1  # type: ignore[misc]


def test_config_is_keyword_only() -> None:
    """Positional arguments are refused."""
    with pytest.raises(TypeError):
        CircuitBreakerConfig(5)  # type: ignore[misc]


def test_configs_compare_by_value() -> None:
    """Two configs with the same values are equal and hash alike."""
    a = CircuitBreakerConfig(failure_threshold=2)
    b = CircuitBreakerConfig(failure_threshold=2)
    assert a == b
    assert hash(a) == hash(b)
    assert a != CircuitBreakerConfig(failure_threshold=3)


@pytest.mark.parametrize(
    "field",
    [
        "timeout",
        "reset_timeout",
        "window_duration",
        "slow_call_duration",
        "max_retry_after",
        "max_wait",
    ],
)
def test_timedelta_durations_become_float_seconds(field: str) -> None:
    """Every duration accepts a timedelta and stores float seconds."""
    # max_wait only means something with a limit to wait for.
    extra = {"max_concurrent": 1} if field == "max_wait" else {}
    config = CircuitBreakerConfig(**{field: timedelta(milliseconds=1500)}, **extra)
    value = getattr(config, field)
    assert value == 1.5
    assert type(value) is float


def test_int_durations_become_floats() -> None:
    """An int number of seconds is stored as a float."""
    config = CircuitBreakerConfig(reset_timeout=30, timeout=2)
    assert config.reset_timeout == 30.0 and type(config.reset_timeout) is float
    assert config.timeout == 2.0 and type(config.timeout) is float


def test_max_reset_timeout_accepts_timedelta() -> None:
    """`max_reset_timeout` takes a timedelta too."""
    config = CircuitBreakerConfig(reset_timeout=10, max_reset_timeout=timedelta(minutes=2))
    assert config.max_reset_timeout == 120.0


def test_none_turns_optional_limits_off() -> None:
    """`timeout`, `slow_call_duration` and `max_reset_timeout` accept None."""
    config = CircuitBreakerConfig(timeout=None, slow_call_duration=None, max_reset_timeout=None)
    assert config.timeout is None
    assert config.slow_call_duration is None
    assert config.max_reset_timeout is None


def test_exclude_exceptions_accepts_one_class_or_any_iterable() -> None:
    """A single exception class or a list is stored as a tuple."""
    assert CircuitBreakerConfig(exclude_exceptions=KeyError).exclude_exceptions == (KeyError,)
    config = CircuitBreakerConfig(exclude_exceptions=[KeyError, ValueError])
    assert config.exclude_exceptions == (KeyError, ValueError)


def test_boundary_values_are_accepted() -> None:
    """The closed ends of every range are legal."""
    config = CircuitBreakerConfig(
        failure_threshold=1,
        failure_rate_threshold=1.0,
        reset_timeout=0,
        half_open_max_requests=1,
        window_size=1,
        minimum_requests=1,
        slow_call_rate_threshold=1.0,
        reset_timeout_multiplier=1.0,
        max_reset_timeout=0,
        jitter=1.0,
        max_retry_after=0,
        max_concurrent=1,
        max_wait=0,
    )
    assert config.window_size == 1
    assert CircuitBreakerConfig(jitter=0.0, window_size=4, minimum_requests=4).jitter == 0.0


def test_a_config_cannot_be_changed_once_made() -> None:
    """Frozen: one config may be shared by many breakers, and none can change it under
    the others (`dataclasses.replace` makes a new one); equal configs hash alike."""
    config = CircuitBreakerConfig(failure_threshold=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.failure_threshold = 100  # type: ignore[misc]
    assert config.failure_threshold == 3
    assert hash(config) == hash(CircuitBreakerConfig(failure_threshold=3))


def test_durations_that_must_be_positive_take_a_fraction_of_a_second() -> None:
    """`timeout`, `window_duration` and `slow_call_duration` are open at 0 only: a
    millisecond is a legal value for each."""
    config = CircuitBreakerConfig(timeout=0.001, window_duration=0.001, slow_call_duration=0.001)
    assert (config.timeout, config.window_duration, config.slow_call_duration) == (0.001,) * 3


@pytest.mark.parametrize(
    ("field", "value", "range_text"),
    [
        ("failure_threshold", 0, ">= 1"),
        ("failure_threshold", -3, ">= 1"),
        ("failure_rate_threshold", 0.0, "(0, 1]"),
        ("failure_rate_threshold", -0.1, "(0, 1]"),
        ("failure_rate_threshold", 1.5, "(0, 1]"),
        ("failure_rate_threshold", float("nan"), "(0, 1]"),
        ("slow_call_rate_threshold", 0, "(0, 1]"),
        ("slow_call_rate_threshold", 1.01, "(0, 1]"),
        ("timeout", 0, "> 0"),
        ("timeout", -1.0, "> 0"),
        ("timeout", float("inf"), "finite"),
        ("reset_timeout", -0.5, ">= 0"),
        ("reset_timeout", timedelta(seconds=-1), ">= 0"),
        ("half_open_max_requests", 0, ">= 1"),
        ("window_size", 0, ">= 1"),
        ("window_size", -1, ">= 1"),
        ("window_duration", 0, "> 0"),
        ("window_duration", -60, "> 0"),
        ("minimum_requests", 0, "between 1 and window_size (10)"),
        ("minimum_requests", 11, "between 1 and window_size (10)"),
        ("slow_call_duration", 0, "> 0"),
        ("slow_call_duration", -2, "> 0"),
        ("reset_timeout_multiplier", 0.5, ">= 1"),
        ("reset_timeout_multiplier", float("inf"), ">= 1"),
        ("max_reset_timeout", 59.0, ">= reset_timeout (60.0)"),
        ("max_reset_timeout", -1, ">= reset_timeout"),
        ("jitter", -0.01, "[0, 1]"),
        ("jitter", 1.5, "[0, 1]"),
        ("max_retry_after", -1, ">= 0"),
        ("outcome_at", "body", '"close" or "headers"'),
        ("max_concurrent", 0, ">= 1 or None"),
        ("max_concurrent", -5, ">= 1 or None"),
        ("max_wait", -0.001, ">= 0"),
        ("max_wait", timedelta(seconds=-1), ">= 0"),
        ("max_wait", float("inf"), "finite"),
        ("max_wait", float("nan"), "finite"),
    ],
)
def test_invalid_value_names_field_range_and_value(
    field: str, value: object, range_text: str
) -> None:
    """An out-of-range value raises ValueError naming the field, the range and the value."""
    with pytest.raises(ValueError, match="must") as info:
        CircuitBreakerConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(field), message
    assert range_text in message, message
    assert repr(value) in message, message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", "5"),
        ("failure_threshold", 2.0),
        ("failure_threshold", True),
        ("failure_rate_threshold", "0.5"),
        ("failure_rate_threshold", True),
        ("timeout", "10"),
        ("reset_timeout", None),
        ("reset_timeout", "60"),
        ("half_open_max_requests", 1.5),
        ("window_size", "10"),
        ("window_duration", None),
        ("minimum_requests", 2.0),
        ("slow_call_duration", "1s"),
        ("reset_timeout_multiplier", "2"),
        ("max_reset_timeout", "inf"),
        ("jitter", None),
        ("respect_retry_after", 1),
        ("max_retry_after", [1]),
        ("dry_run", "yes"),
        ("outcome_at", None),
        ("max_concurrent", 2.0),
        ("max_concurrent", "10"),
        ("max_concurrent", True),
        ("max_wait", None),
        ("max_wait", "1s"),
        ("max_wait", True),
        ("exclude_exceptions", "ValueError"),
        ("exclude_exceptions", 42),
        ("exclude_exceptions", (ValueError, "oops")),
        ("exclude_exceptions", (int,)),
        ("exclude_exceptions", (ValueError(),)),
    ],
)
def test_wrong_type_is_a_type_error_that_is_also_a_value_error(field: str, value: object) -> None:
    """A value of the wrong type raises ConfigTypeError, caught by both except clauses."""
    with pytest.raises(ConfigTypeError) as info:
        CircuitBreakerConfig(**{field: value})
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(field), message
    assert "must" in message


def test_bulkhead_fields_take_a_limit_and_a_wait() -> None:
    """`max_concurrent` is kept as given; `max_wait` becomes float seconds."""
    config = CircuitBreakerConfig(max_concurrent=8, max_wait=2)
    assert config.max_concurrent == 8
    assert config.max_wait == 2.0 and type(config.max_wait) is float
    assert CircuitBreakerConfig(max_concurrent=None).max_concurrent is None


def test_max_wait_without_max_concurrent_warns() -> None:
    """A wait with no limit to wait for is legal but does nothing: it warns, naming both."""
    with pytest.warns(UserWarning, match=r"max_wait=0\.5 has no effect without max_concurrent") as seen:
        config = CircuitBreakerConfig(max_wait=0.5)
    assert config.max_wait == 0.5
    assert seen[0].filename == __file__  # it points at the caller's line, not ours


def test_exclude_exceptions_message_names_the_offender() -> None:
    """A non-exception in `exclude_exceptions` is named in the message."""
    with pytest.raises(ValueError, match=r"exclude_exceptions must hold only exception classes.*'oops'"):
        CircuitBreakerConfig(exclude_exceptions=(KeyError, "oops"))  # type: ignore[arg-type]


def test_unknown_field_is_refused() -> None:
    """A misspelt keyword raises TypeError rather than being ignored."""
    with pytest.raises(TypeError):
        CircuitBreakerConfig(failure_treshold=3)  # type: ignore[call-arg]


def test_replace_validates_again() -> None:
    """`replace` returns a changed copy and validates the new values."""
    config = CircuitBreakerConfig(failure_threshold=2)
    changed = config.replace(reset_timeout=timedelta(seconds=5))
    assert changed.reset_timeout == 5.0
    assert changed.failure_threshold == 2
    assert config.reset_timeout == 60.0
    with pytest.raises(ValueError, match="window_size"):
        config.replace(window_size=0)


def test_open_period_grows_by_the_multiplier_up_to_the_cap() -> None:
    """`open_period(n)` is reset_timeout * multiplier**n, capped by max_reset_timeout."""
    config = CircuitBreakerConfig(
        reset_timeout=10, reset_timeout_multiplier=2.0, max_reset_timeout=50
    )
    assert [config.open_period(n) for n in range(5)] == [10.0, 20.0, 40.0, 50.0, 50.0]
    assert config.open_period(10_000) == 50.0
    uncapped = CircuitBreakerConfig(reset_timeout=1, reset_timeout_multiplier=10.0)
    assert uncapped.open_period(3) == 1000.0
    assert uncapped.open_period(100_000) == float("inf")


def test_config_pickles_and_copies() -> None:
    """A config survives pickling and deep copying unchanged."""
    import copy
    import pickle

    config = CircuitBreakerConfig(failure_threshold=2, exclude_exceptions=(KeyError,))
    assert pickle.loads(pickle.dumps(config)) == config
    assert copy.deepcopy(config) == config
