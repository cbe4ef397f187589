"""A pytest plugin that puts httpx-breaker's transports in every httpx client's path.

For running other projects' test suites (httpx's, respx's, an SDK's) through our
transports, to check that the wrappers change nothing those suites rely on. Loaded
with ``-p breaker_wrap`` (this file on ``PYTHONPATH``); see CONTRIBUTING.md.

Environment:
    BREAKER_WRAP=0            leave the clients alone (the baseline run)
    BREAKER_TIMEOUT=30        the policies' `timeout`
    BREAKER_OUTCOME_AT=headers
    BREAKER_MAX_CONCURRENT=4  a bulkhead (with `max_wait=30`)
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
)

ON = os.environ.get("BREAKER_WRAP", "1") == "1"
_options: dict[str, Any] = {}
if os.environ.get("BREAKER_TIMEOUT"):
    _options["timeout"] = float(os.environ["BREAKER_TIMEOUT"])
if os.environ.get("BREAKER_OUTCOME_AT"):
    _options["outcome_at"] = os.environ["BREAKER_OUTCOME_AT"]
if os.environ.get("BREAKER_MAX_CONCURRENT"):
    _options["max_concurrent"] = int(os.environ["BREAKER_MAX_CONCURRENT"])
    _options["max_wait"] = 30.0
CONFIG = CircuitBreakerConfig(**_options) if _options else None
WRAPPED = {"sync": 0, "async": 0}


def _wrap_sync(transport: Any) -> Any:
    if transport is None or isinstance(transport, CircuitBreakerTransport):
        return transport
    WRAPPED["sync"] += 1
    return CircuitBreakerTransport(transport, default=CONFIG)


def _wrap_async(transport: Any) -> Any:
    if transport is None or isinstance(transport, AsyncCircuitBreakerTransport):
        return transport
    WRAPPED["async"] += 1
    return AsyncCircuitBreakerTransport(transport, default=CONFIG)


if ON:
    _sync_init = httpx.Client.__init__
    _async_init = httpx.AsyncClient.__init__

    def _client_init(self: Any, *args: Any, **kwargs: Any) -> None:
        _sync_init(self, *args, **kwargs)
        self._transport = _wrap_sync(self._transport)
        self._mounts = {k: _wrap_sync(v) for k, v in self._mounts.items()}

    def _async_client_init(self: Any, *args: Any, **kwargs: Any) -> None:
        _async_init(self, *args, **kwargs)
        self._transport = _wrap_async(self._transport)
        self._mounts = {k: _wrap_async(v) for k, v in self._mounts.items()}

    httpx.Client.__init__ = _client_init  # type: ignore[method-assign]
    httpx.AsyncClient.__init__ = _async_client_init  # type: ignore[method-assign]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"breaker_wrap: on={ON} wrapped={WRAPPED}")
