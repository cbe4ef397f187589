#!/usr/bin/env python3
"""Generate the httpx2 twin of the transports from their httpx source.

    python scripts/gen_httpx2.py           # (re)write the generated modules
    python scripts/gen_httpx2.py --check   # exit 1 if one is stale or a rule is unused

As httpcore's ``scripts/unasync.py`` makes its sync code from its async code, this makes
``httpx_breaker/_httpx2/_transport.py`` and ``_classify.py`` from
``httpx_breaker/_transport.py`` and ``_classify.py``: each source line goes through a
list of ``(regex, replacement)`` rules, in order. The source is the one truth; the
generated files are never edited by hand. `--check` rebuilds them in memory and
compares whole files (not line by line: an added or removed line is a difference too),
and fails when a rule changed nothing in any file it applies to: a rule that no longer
matches means the source moved under it, and the twin may be wrong in a way no diff
shows. ``tests/test_httpx2_generated.py`` runs the same check.

What differs between httpx and httpx2 beyond a name lives in hand-written modules next
to the generated ones (``_httpx2/_errors.py``: the errors, which are httpx2 errors and
ours at once; ``_httpx2/_keys.py``: the key function typed for httpx2 requests), and the
rules below point the generated code at them.
"""

from __future__ import annotations

import ast
import difflib
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "httpx_breaker"
TARGET = PACKAGE / "_httpx2"

Rule = tuple[str, str]

# Modules of httpx_breaker that have a generated twin in _httpx2/: imported from there.
# Every other relative import reaches the parent package (the shared, I/O-free core).
TWINS = ("_classify", "_transport")

COMMON: list[Rule] = [
    # The library itself: the import, every annotation and isinstance, the docstrings.
    (r"\bhttpx\b", "httpx2"),
    (r"\bhttpcore\b", "httpcore2"),
    # The shared modules (breaker, config, registry, deadline, errors, ...) are one level up.
    (rf"^from \.(?!(?:{'|'.join(TWINS)})\b)(_\w+) import ", r"from ..\1 import "),
]


def _our_errors() -> list[str]:
    """The names in `httpx_breaker._errors.__all__`: the errors that have httpx2 twins."""
    tree = ast.parse((PACKAGE / "_errors.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise LookupError("httpx_breaker/_errors.py has no __all__")


TRANSPORT: list[Rule] = [
    # Errors: the generated transport raises the httpx2 twins (httpx_breaker/_httpx2/
    # _errors.py) of the errors it makes, and turns those the shared engine and deadline
    # raise into twins on their way out. Names it catches stay ours: the twins subclass them.
    (r"^import httpx2$", "import httpx2\n\nfrom . import _errors as httpx2_errors"),
    (rf"(?<![.\w])({'|'.join(_our_errors())})\(", r"httpx2_errors.\1("),
    (r"^(\s+)exc\._?request = request$", r"\1httpx2_errors.adopt(exc, request)"),
    # Keys: the same key function, typed for httpx2 requests (_httpx2/_keys.py).
    (r"^from \.\._keys import default_key$", "from ._keys import default_key"),
]

FILES: dict[str, list[Rule]] = {
    "_classify.py": COMMON,
    "_transport.py": COMMON + TRANSPORT,
}

HEADER = """\
# Generated from httpx_breaker/{name} by scripts/gen_httpx2.py: do not edit.
# Change the source, or a rule in the script, and run `python scripts/gen_httpx2.py`.
"""


def render(name: str, source: str, used: set[Rule]) -> str:
    """The generated twin of the module `name` whose text is `source`.

    Adds to `used` every rule that changed at least one line.
    """
    rules = FILES[name]
    compiled = [(rule, re.compile(rule[0])) for rule in rules]
    lines = []
    for line in source.splitlines(keepends=True):
        body = line.rstrip("\n")
        for rule, pattern in compiled:
            new = pattern.sub(rule[1], body)
            if new != body:
                used.add(rule)
                body = new
        lines.append(body + line[len(line.rstrip("\n")) :])
    return HEADER.format(name=name) + "".join(lines)


def generate(read: Callable[[Path], str] = Path.read_text) -> tuple[dict[Path, str], list[Rule]]:
    """Every generated file by path, and the rules that changed nothing anywhere."""
    used: set[Rule] = set()
    out = {TARGET / name: render(name, read(PACKAGE / name), used) for name in FILES}
    every = [rule for rules in FILES.values() for rule in rules]
    unused = [rule for rule in dict.fromkeys(every) if rule not in used]
    return out, unused


def problems(read: Callable[[Path], str] = Path.read_text) -> list[str]:
    """What `--check` reports: stale generated files (as diffs) and unused rules."""
    generated, unused = generate(read)
    found = []
    for path, text in generated.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            where = path.relative_to(ROOT).as_posix()
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{where} (on disk)",
                f"{where} (generated)",
            )
            found.append(f"{where} is stale:\n{''.join(diff)}")
    for pattern, replacement in unused:
        found.append(f"rule never used (the source moved?): {pattern!r} -> {replacement!r}")
    return found


def main(argv: list[str]) -> int:
    if "--check" in argv:
        found = problems()
        for problem in found:
            print(problem)
        if found:
            print("run `python scripts/gen_httpx2.py` (and fix the rules it names)")
        return 1 if found else 0
    generated, unused = generate()
    for path, text in generated.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT).as_posix()}")
    for pattern, replacement in unused:
        print(f"rule never used (the source moved?): {pattern!r} -> {replacement!r}")
    return 1 if unused else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
