"""httpx and httpx2 side by side, so that the transport tests run against both.

A test that takes the `lib` fixture (tests/conftest.py) runs once with httpx and once
with httpx2. httpx2 exists for Python 3.11+ only: on 3.10 such a test runs with httpx
alone; on 3.11+ a missing httpx2 skips its runs, and fails them under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from types import ModuleType
from typing import Any

import pytest
import respx

NAMES = ("httpx", "httpx2") if sys.version_info >= (3, 11) else ("httpx",)


def require_httpx2() -> None:
    """Skip the calling test (or module) where httpx2 cannot run; fail under CI if it could."""
    if sys.version_info < (3, 11):
        pytest.skip("httpx2 needs Python 3.11+", allow_module_level=True)
    try:
        importlib.import_module("httpx_breaker.httpx2")
        importlib.import_module("pytest_httpx2")
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"httpx2 is missing from the dev environment on 3.11+: {exc}")
        pytest.skip(f"httpx2 is not installed: {exc}", allow_module_level=True)


def available() -> list[ModuleType]:
    """The libraries importable here: httpx, and httpx2 where it is installed."""
    found = []
    for name in NAMES:
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(name))
    return found


ASYNC_BASES: tuple[type, ...] = tuple(http.AsyncBaseTransport for http in available())
"""Every library's AsyncBaseTransport: a test transport deriving from all of them can
sit under the breaker of either library."""

SYNC_BASES: tuple[type, ...] = tuple(http.BaseTransport for http in available())
"""Every library's BaseTransport (see `ASYNC_BASES`)."""


class Library:
    """An HTTP library and the breaker's transports for it.

    Attributes of the library itself (``lib.AsyncClient``, ``lib.Response``,
    ``lib.ConnectError``, ...) are read through; ``lib.AsyncCircuitBreakerTransport``,
    ``lib.CircuitBreakerTransport``, ``lib.CircuitOpenError``,
    ``lib.CircuitTimeoutError``, ``lib.BulkheadFullError``, ``lib.RequestRejected``,
    ``lib.default_classifier`` and ``lib.make_classifier``
    are httpx_breaker's for that library (``httpx_breaker.httpx2``'s for httpx2).
    """

    def __init__(self, name: str) -> None:
        if name == "httpx2":
            require_httpx2()
        self.name = name
        self.http: ModuleType = importlib.import_module(name)
        if name == "httpx":
            breaker = importlib.import_module("httpx_breaker")
            classifiers = importlib.import_module("httpx_breaker.classifiers")
        else:
            breaker = classifiers = importlib.import_module("httpx_breaker.httpx2")
        self.AsyncCircuitBreakerTransport: Any = breaker.AsyncCircuitBreakerTransport
        self.CircuitBreakerTransport: Any = breaker.CircuitBreakerTransport
        self.CircuitOpenError: Any = breaker.CircuitOpenError
        self.CircuitTimeoutError: Any = breaker.CircuitTimeoutError
        self.BulkheadFullError: Any = breaker.BulkheadFullError
        self.RequestRejected: Any = breaker.RequestRejected
        self.default_classifier: Any = classifiers.default_classifier
        self.make_classifier: Any = classifiers.make_classifier

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)

    def mock(self, **options: Any) -> respx.MockRouter:
        """respx, patching this library's httpcore: the library's real transport runs
        above it. (For httpcore2, pytest-httpx2 registers the mocker.)"""
        if self.name == "httpx2":
            importlib.import_module("pytest_httpx2")
        return respx.mock(using="httpcore" if self.name == "httpx" else "httpcore2", **options)

    def __repr__(self) -> str:
        return self.name
