"""Breaker keys for httpx2 requests: the same function, and so the same keys, as httpx's.

`httpx_breaker`'s `default_key` reads only ``request.url.raw_host`` and
``request.url.port``, which `httpx2.URL` has with httpx's meaning (lower-case IDNA
bytes; None for the scheme's default port). It is typed for `httpx.Request`, so here it
is given the httpx2 type, not wrapped: no extra call per request, and one registry can
serve httpx and httpx2 clients with one breaker per host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import httpx2

from .._registry import default_key as _default_key

__all__ = ["default_key"]

default_key = cast(Callable[[httpx2.Request], str], _default_key)
"""The breaker key of an httpx2 request: host, plus ``:port`` when it is not the default."""
