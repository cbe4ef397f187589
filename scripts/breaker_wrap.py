"""A pytest plugin that puts httpx-breaker's transports in every httpx client's path.

For running other projects' test suites (httpx's, respx's, an SDK's) through our
transports, to check that the wrappers change nothing those suites rely on. Loaded
with ``-p breaker_wrap`` (this file on ``PYTHONPATH``); see CONTRIBUTING.md. Clients of
httpx2 (where it is installed) get `httpx_breaker.httpx2`'s transports the same way:
SDKs such as authlib's and mistralai's build those.

Environment:
    BREAKER_WRAP=0            leave the clients alone (the baseline run)
    BREAKER_TIMEOUT=30        the policies' `timeout`
    BREAKER_OUTCOME_AT=headers
    BREAKER_MAX_CONCURRENT=4  a bulkhead (with `max_wait=30`)
    BREAKER_DRY_RUN=1         `dry_run=True`: counts, never refuses (tells a suite's own
                              deliberate failures opening a shared client's breaker apart
                              from a transparency bug)
    BREAKER_CLASSIFIER=body   a classifier that reads every body it can (then judges by
                              the default rules): the transports then keep the chunks of
                              each body and hand the classifier a copy of the response

The summary line ``breaker_wrap: on=... wrapped=...`` counts the clients wrapped in
every process, pytest-xdist workers included: a wrapped run that wrapped nothing proves
nothing. With ``BREAKER_CLASSIFIER=body`` it also counts the bodies the classifier read
and those it found unread.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Any

import pytest

from httpx_breaker import CircuitBreakerConfig

ON = os.environ.get("BREAKER_WRAP", "1") == "1"
_options: dict[str, Any] = {}
if os.environ.get("BREAKER_TIMEOUT"):
    _options["timeout"] = float(os.environ["BREAKER_TIMEOUT"])
if os.environ.get("BREAKER_OUTCOME_AT"):
    _options["outcome_at"] = os.environ["BREAKER_OUTCOME_AT"]
if os.environ.get("BREAKER_MAX_CONCURRENT"):
    _options["max_concurrent"] = int(os.environ["BREAKER_MAX_CONCURRENT"])
    _options["max_wait"] = 30.0
if os.environ.get("BREAKER_DRY_RUN") == "1":
    _options["dry_run"] = True
CONFIG = CircuitBreakerConfig(**_options) if _options else None
READS_BODY = os.environ.get("BREAKER_CLASSIFIER") == "body"
WRAPPED: dict[str, int] = {}
"""Clients wrapped in this process, by kind: ``httpx sync``, ``httpx2 async``, ..."""


def _patch(library: str, ours: str) -> None:
    """Wrap the transport and mounts of every client of `library` in `ours`' transports."""
    try:
        http = importlib.import_module(library)
        breaker = importlib.import_module(ours)
    except ImportError:  # httpx2 is optional (and needs Python 3.11+)
        return
    for client_cls, wrapper_cls, kind in (
        (http.Client, breaker.CircuitBreakerTransport, f"{library} sync"),
        (http.AsyncClient, breaker.AsyncCircuitBreakerTransport, f"{library} async"),
    ):
        if getattr(client_cls.__init__, "breaker_wrap", False):
            # Patched already: after `httpx2.alias_httpx()` (the Anthropic SDK's suite
            # calls it), `httpx` is httpx2, and its clients must be wrapped once.
            continue
        WRAPPED[kind] = 0
        rules = importlib.import_module(f"{ours}.classifiers" if ours == "httpx_breaker" else ours)
        classifier = _body_reader(http, rules.default_classifier) if READS_BODY else None
        client_cls.__init__ = _wrapping_init(client_cls.__init__, wrapper_cls, kind, classifier)


def _body_reader(http: Any, default: Any) -> Any:
    """A classifier that reads the body when it is there, then keeps to `default`."""

    def classify(request: Any, response: Any, exc: BaseException | None) -> bool | None:
        if response is not None and exc is None:
            try:
                response.content  # noqa: B018
            except http.ResponseNotRead:
                WRAPPED["body unread"] = WRAPPED.get("body unread", 0) + 1
            else:
                WRAPPED["body read"] = WRAPPED.get("body read", 0) + 1
        verdict: bool | None = default(request, response, exc)
        return verdict

    return classify


def _wrapping_init(original: Any, wrapper_cls: Any, kind: str, classifier: Any) -> Any:
    def wrap(transport: Any) -> Any:
        if transport is None or isinstance(transport, wrapper_cls):
            return transport
        WRAPPED[kind] += 1
        return wrapper_cls(transport, default=CONFIG, classifier=classifier)

    # The client's own signature kept: google-genai reads it to choose which of its
    # arguments a client takes, and without it dropped the test's `transport`.
    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._transport = wrap(self._transport)
        self._mounts = {k: wrap(v) for k, v in self._mounts.items()}

    init.breaker_wrap = True  # type: ignore[attr-defined]
    return init


if ON:
    _patch("httpx2", "httpx_breaker.httpx2")  # first: an aliased `httpx` is httpx2
    _patch("httpx", "httpx_breaker")


def pytest_sessionfinish(session: Any) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller adds it up
        workeroutput["breaker_wrap"] = dict(WRAPPED)


@pytest.hookimpl(optionalhook=True)  # xdist's hook, on the controller
def pytest_testnodedown(node: Any, error: Any) -> None:
    for kind, count in getattr(node, "workeroutput", {}).get("breaker_wrap", {}).items():
        WRAPPED[kind] = WRAPPED.get(kind, 0) + count


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"breaker_wrap: on={ON} wrapped={WRAPPED}")
