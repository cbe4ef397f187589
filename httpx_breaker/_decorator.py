"""@circuit_breaker: put a breaker around an async or sync function."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
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
    config: CircuitBreakerConfig | None = None,
    classifier: ResultClassifier | None = None,
    *,
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
    config: CircuitBreakerConfig | None = None,
    classifier: ResultClassifier | None = None,
    *,
    name: str | None = None,
    clock: Callable[[], float] | None = None,
) -> Any:
    """Run every call of the decorated function through its own `CircuitBreaker`.

    Works on `async def` and plain functions. The wrapper keeps the function's
    signature (also for a type checker: it is a `BreakerWrapped[P, R]`) and gains
    `.circuit_breaker()`, which returns the breaker:

    ```python
    @circuit_breaker(name="external_api", config=CircuitBreakerConfig(failure_threshold=3))
    async def call_external_api(url: str) -> dict: ...

    call_external_api.circuit_breaker().get_metrics()
    ```

    What counts is the outcome the caller waits for:

    - An ``async def``, a `functools.partial` of one, or an object whose ``__call__``
      is an ``async def`` gets an ``async def`` wrapper: the call is admitted and
      judged when it is awaited (`CircuitBreaker.call_async`).
    - A plain function is admitted before it runs (an open breaker never runs it). If
      it returns an awaitable (a coroutine, a Task, a Future), its outcome is judged
      when that is awaited: the wrapper returns a coroutine that awaits it (so
      ``await``, ``asyncio.create_task`` and ``gather`` take it as usual; a Task's own
      methods are on the Task, not on this coroutine). The call lasts from the call to
      the end of the await, and `timeout` bounds the await. Dropped without being
      awaited, it returns its permit when it is garbage-collected (counted as
      ignored). Checking each result for an awaitable costs some 50 ns per call.

    `name` defaults to the module and qualified name of the function (for a
    `functools.partial`, of the function it wraps; for a callable object, of its
    class). `name`, `config` and `classifier` may be given by keyword or, in that
    order, positionally (``@circuit_breaker("external_api", config)``). `classifier` is `(result, exception) -> bool | None`, so a function that
    returns its failures (a `Result` type) can still trip the breaker.
    """
    if callable(func_or_name) and not isinstance(func_or_name, str):
        if config is not None or classifier is not None:
            raise TypeError(
                "circuit_breaker(func) takes no config or classifier: use "
                "@circuit_breaker(name, config, classifier) (or keywords) above the function"
            )
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
        name = _default_name(func)
    breaker = CircuitBreaker(name, config, classifier=classifier, clock=clock)
    # A function's __dict__ is copied onto the wrapper as functools.wraps does; an
    # object's (its state: clients, caches) is not the wrapper's business.
    updated = functools.WRAPPER_UPDATES if inspect.isfunction(func) else ()

    if _is_async_callable(func):
        afunc = cast(Callable[..., Awaitable[Any]], func)

        @functools.wraps(func, updated=updated)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await breaker.call_async(afunc, *args, **kwargs)

        wrapper: Any = async_wrapper
    else:
        call = breaker._call_or_defer

        @functools.wraps(func, updated=updated)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            return call(func, args, kwargs)

        wrapper = sync_wrapper

    wrapper.circuit_breaker = lambda: breaker
    return cast(BreakerWrapped[P, R], wrapper)


def _unwrap_partial(func: Any) -> Any:
    while isinstance(func, functools.partial):
        func = func.func
    return func


def _is_async_callable(func: Any) -> bool:
    """Whether calling `func` gives a coroutine: an ``async def`` (also behind
    `functools.partial`), or an object whose ``__call__`` is one."""
    func = _unwrap_partial(func)
    if inspect.iscoroutinefunction(func):
        return True
    if isinstance(func, type) or inspect.isroutine(func):
        return False  # calling a class makes an instance; a plain function is sync
    # Not callable(): the question is whether the __call__ it has is a coroutine function.
    return inspect.iscoroutinefunction(getattr(func, "__call__", None))  # noqa: B004


def _default_name(func: Any) -> str:
    """``module.qualname`` of what `func` runs: the function under a `functools.partial`,
    the class of a callable object."""
    target = _unwrap_partial(func)
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(qualname, str):
        target = type(target)
        qualname = target.__qualname__
    return f"{getattr(target, '__module__', None)}.{qualname}"
