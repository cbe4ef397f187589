"""MkDocs hooks: put the repository's own files on the docs site, and link to them.

The site is built from ``docs/``, but some of what it shows lives elsewhere in the
repository and must stay there: ``CHANGELOG.md``, ``CONTRIBUTING.md`` and
``BENCHMARKS.md`` at the root (the benchmark run writes the last, with its chart in
``benchmarks/``), ``benchmarks/FLEET.md`` (the fleet benchmark's own report), and the
runnable scripts in ``examples/``. These hooks add them to the site as generated
pages (an example becomes a page showing its source) instead of copies that could
drift, and rewrite a page's relative links to them (``../examples/presets.py``,
``../CHANGELOG.md``), which work on GitHub, into links to those pages. Any other link
out of ``docs/`` is left alone, so ``mkdocs build --strict`` still fails on it.
"""

from __future__ import annotations

import ast
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parent.parent

# Where each generated page comes from in the repository, by its path on the site.
_PAGES = {
    "changelog.md": "CHANGELOG.md",
    "benchmarks.md": "BENCHMARKS.md",
    "benchmarks-fleet.md": "benchmarks/FLEET.md",
    "contributing.md": "CONTRIBUTING.md",
}
# Files other than pages, copied as they are.
_ASSETS = {"benchmarks/results.png": "benchmarks/results.png"}
# A markdown link or image target: `](target)` or `](target "title")`.
_LINK = re.compile(r"(\]\()([^)\s#]*)(#[^)\s]*)?((?:\s+\"[^\"]*\")?\))")


def _examples() -> dict[str, Path]:
    """The example scripts by the path of their page on the site."""
    return {f"examples/{path.stem}.md": path for path in sorted((ROOT / "examples").glob("*.py"))}


def _summary(path: Path) -> str:
    """The first line of a script's module docstring."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def _example_page(path: Path) -> str:
    name = f"examples/{path.name}"
    return (
        f"# {name}\n\n"
        f"{_summary(path)}\n\n"
        f"Run it from a checkout with `.venv/bin/python {name}`; the test suite runs it"
        " too (`tests/test_examples.py`).\n\n"
        f"```python title=\"{name}\"\n{path.read_text(encoding='utf-8')}```\n"
    )


def _examples_index() -> str:
    lines = [
        "# Examples",
        "",
        "Runnable scripts for the scenarios of the design, each starting whatever it",
        "needs on 127.0.0.1 and each run by the test suite. Run one from a checkout with",
        "`.venv/bin/python examples/<name>.py`.",
        "",
    ]
    for page, path in _examples().items():
        lines.append(f"- [`{path.name}`]({posixpath.relpath(page, 'examples')}): {_summary(path)}")
    return "\n".join(lines) + "\n"


def on_files(files: Files, config: Any) -> Files:
    for page, source in _PAGES.items():
        files.append(
            File.generated(config, page, content=(ROOT / source).read_text(encoding="utf-8"))
        )
    for asset, source in _ASSETS.items():
        files.append(File.generated(config, asset, abs_src_path=str(ROOT / source)))
    files.append(File.generated(config, "examples/index.md", content=_examples_index()))
    for page, path in _examples().items():
        # Reached from the examples' index and from the guides, not listed in the nav.
        files.append(
            File.generated(
                config, page, content=_example_page(path), inclusion=InclusionLevel.NOT_IN_NAV
            )
        )
    return files


def _site_path(repo_path: str) -> str | None:
    """Where a repository file is on the site, or None when it is not there."""
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    for page, source in (*_PAGES.items(), *_ASSETS.items()):
        if repo_path == source:
            return page
    if repo_path in ("examples", "examples/"):
        return "examples/index.md"
    for page, path in _examples().items():
        if repo_path == f"examples/{path.name}":
            return page
    return None


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Point links to repository files outside ``docs/`` at their pages on the site."""
    src_uri = page.file.src_uri
    # The page's place in the repository: generated pages come from elsewhere.
    origin = _PAGES.get(src_uri, f"docs/{src_uri}")

    def rewrite(match: re.Match[str]) -> str:
        target = match[2]
        if not target or "://" in target or target.startswith(("/", "mailto:")):
            return match[0]
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(origin), target))
        site = _site_path(repo_path)
        if site is None:
            return match[0]
        new = posixpath.relpath(site, posixpath.dirname(src_uri) or ".")
        return f"{match[1]}{new}{match[3] or ''}{match[4]}"

    return _LINK.sub(rewrite, markdown)
