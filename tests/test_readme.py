"""README's Python blocks run as written, in order, with respx standing in for the network."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import httpx
import pytest
import respx

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_readme_has_python_blocks() -> None:
    """The README shows code, so the test below has something to check."""
    assert len(BLOCKS) >= 8


def test_every_readme_block_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """Each block runs in one shared namespace (later blocks reuse earlier names)."""
    namespace: dict[str, object] = {"__name__": "readme"}
    with respx.mock(assert_all_called=False) as mock:
        # Every host answers 200 with a small JSON body; no request leaves the machine.
        mock.route().mock(return_value=httpx.Response(200, json={"id": 1}))
        for number, block in enumerate(BLOCKS, 1):
            # A failure's traceback names "README.md block N". Running the README's own
            # code is the point of this test.
            exec(compile(block, f"README.md block {number}", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "payments.internal: open" in out  # the monitoring block's promised output
    # The respx testing example is a test itself: run it, under its own respx.mock.
    example_test = namespace["test_fetch_user_degrades_when_the_circuit_is_open"]
    assert callable(example_test)
    anyio.run(example_test)
