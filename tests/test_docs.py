"""Every Python block of README.md and of the pages under docs/ runs as written.

A page's blocks run in order in one namespace (later blocks reuse earlier names), as in
a notebook: a block may ``await`` at top level (its page keeps one asyncio event loop for
such blocks), and respx stands in for the network: every host no block mocks itself answers 200 with
a small JSON body, so no request leaves the machine. A block that defines a test
function (``def test_...`` or ``async def test_...``) is a test itself: after the
page's blocks have run, each such function is called (async ones under asyncio and
under trio). Blocks in other languages (``sh``, ``toml``, ``text``) are not run.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path

import anyio
import httpx
import pytest
import respx

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def run_page(page: Path) -> dict[str, object]:
    """Run the page's blocks; return the namespace they built."""
    name = page.relative_to(ROOT).as_posix()
    namespace: dict[str, object] = {"__name__": "docs"}
    loop = asyncio.new_event_loop()
    try:
        with respx.mock(assert_all_called=False) as mock:
            mock.route().mock(return_value=httpx.Response(200, json={"id": 1}))
            for number, block in enumerate(blocks(page), 1):
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
    namespace = run_page(page)
    if page.name == "README.md":
        assert "payments.internal: open" in capsys.readouterr().out  # the promised output
        assert any(key.startswith("test_") for key in namespace)  # the respx example ran
