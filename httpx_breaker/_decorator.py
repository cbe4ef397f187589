"""@circuit_breaker: put a breaker around an async or sync function."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast, overload

from ._breaker import CircuitBreaker, ResultClassifier
from ._config import CircuitBreakerConfig

__all__ = ["BreakerDecorator", "BreakerWrapped", "circuit_breaker"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")


class BreakerWrapped(Protocol[P, R_co]):
    """A function wrapped by `@circuit_breaker`: callable as before, plus its breaker.

    Generic over the function's parameters `P` and return type `R_co`, so a type
    checker keeps the call signature (for an ``async def``, `R_co` is the coroutine,
    so ``await fn(...)`` has the function's result type) and knows
    ``fn.circuit_breaker()`` returns a `CircuitBreaker`. On a method, reading it
    through an instance binds ``self`` as a function would.
    """

    __name__: str
    __qualname__: str

    @property
    def __wrapped__(self) -> Callable[P, R_co]:
        """The undecorated function (set by `functools.wraps`)."""
        ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def circuit_breaker(self) -> CircuitBreaker:
        """The breaker every call of this function goes through."""
        ...

    @overload
    def __get__(
        self, instance: None, owner: type[Any] | None = None, /
    ) -> BreakerWrapped[P, R_co]: ...

    @overload
    def __get__(
        self: BreakerWrapped[Concatenate[T, P2], R],
        instance: T,
        owner: type[Any] | None = None,
        /,
    ) -> BreakerWrapped[P2, R]: ...


class BreakerDecorator(Protocol):
    """What `@circuit_breaker(...)` with arguments returns: the decorator proper."""

    def __call__(self, func: Callable[P, R], /) -> BreakerWrapped[P, R]: ...


@overload
def circuit_breaker(func: Callable[P, R], /) -> BreakerWrapped[P, R]: ...


@overload
def circuit_breaker(
    name: str | None = None,
    /,
    *,
    config: CircuitBreakerConfig | None = None,
    classifier: ResultClassifier | None = None,
    clock: Callable[[], float] | None = None,
) -> BreakerDecorator: ...


@overload
def circuit_breaker(
    *,
    name: str | None = None,
    config: CircuitBreakerConfig | None = None,
    classifier: ResultClassifier | None = None,
    clock: Callable[[], float] | None = None,
) -> BreakerDecorator: ...


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
    signature (also for a type checker: it is a `BreakerWrapped[P, R]`) and gains
    `.circuit_breaker()`, which returns the breaker::

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

    def decorate(func: Callable[P, R], /) -> BreakerWrapped[P, R]:
        return _decorate(func, name, config, classifier, clock)

    return decorate


def _decorate(
    func: Callable[P, R],
    name: str | None,
    config: CircuitBreakerConfig | None,
    classifier: ResultClassifier | None,
    clock: Callable[[], float] | None,
) -> BreakerWrapped[P, R]:
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
    return cast(BreakerWrapped[P, R], wrapper)
