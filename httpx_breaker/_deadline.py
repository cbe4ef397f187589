"""A deadline on one awaitable, under asyncio or trio, that tells its own expiry apart.

Under asyncio (3.11+) `asyncio.timeout` is used directly: it costs a timer handle,
where anyio's cancel scope costs several times more. Elsewhere (trio, asyncio on 3.10)
anyio's `move_on_after` does the work.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

import anyio

from ._errors import CircuitTimeoutError

__all__ = ["run_with_deadline"]

T = TypeVar("T")

_running_loop = asyncio._get_running_loop


# The parameter is the deadline we enforce, not a caller's timeout to honour.
async def run_with_deadline(awaitable: Awaitable[T], timeout: float, name: str) -> T:  # noqa: ASYNC109
    """Await `awaitable`, cancelling it after `timeout` seconds.

    Raises:
        CircuitTimeoutError: the deadline passed first (and the awaitable was cancelled).
    """
    if sys.version_info >= (3, 11) and _running_loop() is not None:
        cm = asyncio.timeout(timeout)
        try:
            async with cm:
                return await awaitable
        except TimeoutError as exc:
            if cm.expired():
                raise CircuitTimeoutError(name, timeout) from exc
            raise
    with anyio.move_on_after(timeout) as scope:
        return await awaitable
    if scope.cancelled_caught:
        raise CircuitTimeoutError(name, timeout)
    raise AssertionError("unreachable: a deadline scope exited without a result")  # pragma: no cover
