"""The docs site builds: ``mkdocs build --strict``, and every public name is documented.

The strict build fails on a broken link or anchor, a page left out of the nav, a
reference (``::: name``) that does not resolve and a docstring griffe cannot parse, so
this test is what keeps the site whole. It builds into a temporary directory (a few
seconds). MkDocs' Material theme and httpx2 need Python 3.11+, so on 3.10 the site is
not built (the ``docs`` extra installs nothing there); on 3.11+ without the ``docs``
extra the tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The public modules the API reference covers, each with a page of its own.
PUBLIC_MODULES = [
    "classifiers",
    "events",
    "httpx2",
    "keys",
    "monitoring",
    "opentelemetry",
    "prometheus",
    "redis",
    "retries",
    "testing",
]

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the docs site is built on Python 3.11+"
)


@pytest.fixture(scope="module", autouse=True)
def _docs_tools() -> None:
    missing = [
        name
        for name in ("mkdocs", "material", "mkdocstrings_handlers.python", "griffe")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        message = f"the docs extra is not installed (missing {', '.join(missing)})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict` succeeds, with the pages and the reference in place."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    registry = (site / "reference" / "registry" / "index.html").read_text(encoding="utf-8")
    assert "max_size" in registry and "config_for" in registry  # rendered from docstrings
    assert (site / "changelog" / "index.html").is_file()  # CHANGELOG.md, from the root
    assert (site / "benchmarks" / "results.png").is_file()  # BENCHMARKS.md's chart
    assert (site / "examples" / "presets" / "index.html").is_file()  # examples/presets.py


def test_every_public_module_has_a_reference_page() -> None:
    """Each public module is rendered on a page of the API reference."""
    for module in PUBLIC_MODULES:
        page = ROOT / "docs" / "reference" / f"{module}.md"
        assert f"::: httpx_breaker.{module}" in page.read_text(encoding="utf-8"), page


def _undocumented(obj: object, path: str) -> list[str]:
    """The public names under `obj` that would render without a docstring."""
    import griffe

    assert isinstance(obj, griffe.Object)
    missing = [] if obj.docstring else [path]
    if obj.is_class:
        # A member may be described in the class's "Attributes:" section instead.
        described = {
            item.name
            for section in (obj.docstring.parse("google") if obj.docstring else [])
            if section.kind is griffe.DocstringSectionKind.attributes
            for item in section.value
        }
        for name, member in obj.members.items():
            if name.startswith("_") or member.is_alias or name in described:
                continue
            missing += _undocumented(member, f"{path}.{name}")
    return missing


def _public_objects() -> Iterator[tuple[str, Any]]:
    """The public modules, and each name of their __all__ (aliases resolved)."""
    import griffe

    package = griffe.load("httpx_breaker", search_paths=[str(ROOT)], resolve_aliases=True)
    for module in [package, *(package[name] for name in PUBLIC_MODULES)]:
        yield module.path, module
        for name in module.exports or ():
            member = module[name]
            yield f"{module.path}.{name}", member.final_target if member.is_alias else member


def test_every_public_name_has_a_docstring() -> None:
    """Every name in a public module's __all__, and every public member of a public class,
    has a docstring (mkdocstrings leaves undocumented members out of the reference)."""
    missing: list[str] = []
    for path, obj in _public_objects():
        if obj.is_module:
            assert obj.docstring, path
        else:
            missing += _undocumented(obj, path)
    assert missing == []


# A reST literal block ("Usage::") renders as text with "::" and an unhighlighted block;
# a section header the Google parser did not recognise ("Raises (from x):") as a run-on
# paragraph.
_UNRENDERED = re.compile(
    r"::\s*$|^\s*(Args|Arguments|Raises|Returns|Yields|Attributes|Examples?)\b.*:\s*$"
)


def test_docstrings_use_what_the_reference_renders() -> None:
    """No public docstring holds a reST literal block or a section header the Google
    style parser leaves as text."""
    import griffe

    bad: list[str] = []
    for path, obj in _public_objects():
        objects = [obj, *(m for n, m in obj.members.items() if not n.startswith("_"))]
        for item in objects:
            if item.is_alias or not item.docstring:
                continue
            for section in item.docstring.parse("google"):
                if section.kind is griffe.DocstringSectionKind.text:
                    bad += [
                        f"{path}: {line.strip()}"
                        for line in section.value.splitlines()
                        if _UNRENDERED.search(line)
                    ]
    assert bad == []
