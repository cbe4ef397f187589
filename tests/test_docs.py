"""Every Python block of README.md and of the pages under docs/ runs as written.

A page's blocks run in order in one namespace (later blocks reuse earlier names), as in
a notebook: a block may ``await`` at top level (its page keeps one asyncio event loop for
such blocks), and respx stands in for the network: every host no block mocks itself answers 200 with
a small JSON body, so no request leaves the machine (for httpx2 clients too: respx then
also patches httpcore2, as pytest-httpx2 does). A block that defines a test
function (``def test_...`` or ``async def test_...``) is a test itself: after the
page's blocks have run, each such function is called (async ones under asyncio and
under trio). Blocks in other languages (``sh``, ``toml``, ``text``) are not run.

A block that mentions httpx2 runs only where httpx2 is installed (Python 3.11+); on
3.10 it is left out, and under ``CI=true`` on 3.11+ a missing httpx2 fails the page.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path

import anyio
import httpx
import pytest
import respx

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
NEEDS_HTTPX2 = re.compile(r"\bhttpx2\b")
HAVE_HTTPX2 = all(importlib.util.find_spec(name) for name in ("httpx2", "pytest_httpx2"))


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def run_page(page: Path) -> dict[str, object]:
    """Run the page's blocks; return the namespace they built."""
    name = page.relative_to(ROOT).as_posix()
    namespace: dict[str, object] = {"__name__": "docs"}
    loop = asyncio.new_event_loop()
    try:
        with contextlib.ExitStack() as stack:
            mock = stack.enter_context(respx.mock(assert_all_called=False))
            mock.route().mock(return_value=httpx.Response(200, json={"id": 1}))
            if HAVE_HTTPX2:
                import pytest_httpx2  # noqa: F401  (registers respx's httpcore2 mocker)

                mock2 = stack.enter_context(respx.mock(using="httpcore2", assert_all_called=False))
                mock2.route().mock(return_value=httpx.Response(200, json={"id": 1}))
            for number, block in enumerate(blocks(page), 1):
                if NEEDS_HTTPX2.search(block) and not HAVE_HTTPX2:
                    continue
                # A failure's traceback names "<page> block N". Running the docs' own
                # code is the point of this test.
                code = compile(
                    block, f"{name} block {number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
                )
                if code.co_flags & inspect.CO_COROUTINE:
                    loop.run_until_complete(eval(code, namespace))
                else:
                    exec(code, namespace)  # noqa: S102
    finally:
        loop.close()
    for key, value in list(namespace.items()):
        if key.startswith("test_") and callable(value):
            if inspect.iscoroutinefunction(value):
                for backend in ("asyncio", "trio"):
                    anyio.run(value, backend=backend)
            else:
                value()
    return namespace


def test_readme_has_python_blocks() -> None:
    """The README shows code, so the tests below have something to check."""
    assert len(blocks(ROOT / "README.md")) >= 3


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_block_runs(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each page's Python blocks run as written, and the tests they define pass."""
    needs = any(NEEDS_HTTPX2.search(block) for block in blocks(page))
    if needs and not HAVE_HTTPX2 and sys.version_info >= (3, 11) and os.environ.get("CI") == "true":
        pytest.fail(f"{page.name} has httpx2 blocks, and httpx2 is missing from the dev extra")
    namespace = run_page(page)
    if page.name == "README.md":
        # What README.md says its monitoring block prints, it prints.
        promised = re.findall(r"^prints `([^`]+)`", page.read_text(encoding="utf-8"), re.MULTILINE)
        out = capsys.readouterr().out
        assert promised and all(line in out for line in promised), (promised, out)
        assert any(key.startswith("test_") for key in namespace)  # the respx example ran
