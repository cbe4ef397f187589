"""@circuit_breaker: put a breaker around an async or sync function."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast, overload

from ._breaker import CircuitBreaker, ResultClassifier
from ._config import CircuitBreakerConfig

__all__ = ["BreakerWrapped", "circuit_breaker"]

F = TypeVar("F", bound=Callable[..., Any])


class BreakerWrapped(Protocol):
    """A function wrapped by `@circuit_breaker`: callable as before, plus its breaker."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def circuit_breaker(self) -> CircuitBreaker: ...


@overload
def circuit_breaker(func: F, /) -> F: ...


@overload
def circuit_breaker(
    name: str | None = None,
    /,
    *,
    config: CircuitBreakerConfig | None = None,
    classifier: ResultClassifier | None = None,
    clock: Callable[[], float] | None = None,
) -> Callable[[F], F]: ...


@overload
def circuit_breaker(
    *,
    name: str | None = None,
    config: CircuitBreakerConfig | None = None,
    classifier: ResultClassifier | None = None,
    clock: Callable[[], float] | None = None,
) -> Callable[[F], F]: ...


def circuit_breaker(
    func_or_name: Any = None,
    /,
    *,
    name: str | None = None,
    config: CircuitBreakerConfig | None = None,
    classifier: ResultClassifier | None = None,
    clock: Callable[[], float] | None = None,
) -> Any:
    """Run every call of the decorated function through its own `CircuitBreaker`.

    Works on `async def` and plain functions. The wrapper keeps the function's
    signature and gains `.circuit_breaker()`, which returns the breaker::

        @circuit_breaker(name="external_api", config=CircuitBreakerConfig(failure_threshold=3))
        async def call_external_api(url: str) -> dict: ...

        call_external_api.circuit_breaker().get_metrics()

    `name` defaults to the function's module and qualified name. `classifier` is
    `(result, exception) -> bool | None`, so a function that returns its failures
    (a `Result` type) can still trip the breaker.
    """
    if callable(func_or_name) and not isinstance(func_or_name, str):
        return _decorate(func_or_name, name, config, classifier, clock)
    if func_or_name is not None:
        if name is not None:
            raise TypeError("circuit_breaker() got the name both positionally and by keyword")
        name = func_or_name

    def decorate(func: F) -> F:
        return _decorate(func, name, config, classifier, clock)

    return decorate


def _decorate(
    func: F,
    name: str | None,
    config: CircuitBreakerConfig | None,
    classifier: ResultClassifier | None,
    clock: Callable[[], float] | None,
) -> F:
    if name is None:
        name = f"{func.__module__}.{func.__qualname__}"
    breaker = CircuitBreaker(name, config, classifier=classifier, clock=clock)

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await breaker.call_async(func, *args, **kwargs)

        wrapper: Any = async_wrapper
    else:

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            return breaker.call(func, *args, **kwargs)

        wrapper = sync_wrapper

    wrapper.circuit_breaker = lambda: breaker
    return cast(F, wrapper)
