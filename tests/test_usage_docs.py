"""What a newcomer copies from the docs must hold up outside the happy path.

tests/test_docs.py runs every block with respx answering 200, so an ``except`` clause
in a block never runs there. These tests check what such clauses rely on.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .test_docs import PAGES, ROOT, blocks

# An f-string field that formats a refusal's retry_after: `{exc.retry_after:.0f}`,
# `{e.retry_after}`.
FORMATS_RETRY_AFTER = re.compile(r"\{[\w.]*\bretry_after\b[^}]*\}")
GUARD = re.compile(r"\bretry_after is None\b")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_blocks_that_print_retry_after_handle_none(page: Path) -> None:
    """`CircuitOpenError.retry_after` is None when nobody can tell (a forced-open breaker,
    a half-open one whose probe slots are taken, a fleet replica without a probe lease):
    a block that formats it also handles None, or the handler copied from it raises
    TypeError (``{None:.0f}``) or prints "retry in Nones"."""
    for number, block in enumerate(blocks(page), 1):
        if FORMATS_RETRY_AFTER.search(block):
            assert GUARD.search(block), f"block {number} formats retry_after without a None case"
