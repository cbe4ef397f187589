"""The httpx2 twin from the source side, with or without httpx2 installed.

`httpx_breaker/_httpx2/_transport.py` and `_classify.py` are generated from their httpx
source by ``scripts/gen_httpx2.py``: these tests fail while a generated file is stale
(the fix is ``python scripts/gen_httpx2.py``) or while a rule of the script no longer
matches its source. And `import httpx_breaker` never needs httpx2, while
`import httpx_breaker.httpx2` without it says what to install.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_httpx2.py"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_httpx2", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_modules_are_current(generator: ModuleType) -> None:
    """Each generated module is exactly what its source gives, and every rule is used.

    If this fails after a change to httpx_breaker/_transport.py or _classify.py, run
    `python scripts/gen_httpx2.py` (and fix a rule it reports as never used).
    """
    problems = generator.problems()
    assert problems == [], "\n".join(problems)


def test_a_changed_source_makes_the_check_fail(generator: ModuleType) -> None:
    """An edit of the source that the generated file lacks is reported, with its diff."""

    def read(path: Path) -> str:
        text = path.read_text(encoding="utf-8")
        if path.name == "_transport.py":
            text += "\n_NEW = 1\n"  # an edit anywhere; the end is always there
        return text

    problems = generator.problems(read)
    assert len(problems) == 1
    assert problems[0].startswith("httpx_breaker/_httpx2/_transport.py is stale")
    assert "+_NEW = 1" in problems[0]


def test_a_rule_that_matches_nothing_makes_the_check_fail(generator: ModuleType) -> None:
    """A rule the source no longer gives a line to is reported: the twin may be wrong in a
    way no diff shows (here: the engine's errors would leave httpx2 transports unadopted)."""

    def read(path: Path) -> str:
        text = path.read_text(encoding="utf-8")
        return re.sub(r"exc\._?request = request", "setattr(exc, 'request', request)", text)

    problems = generator.problems(read)
    assert any(
        problem.startswith("rule never used") and "httpx2_errors.adopt" in problem
        for problem in problems
    ), problems


def test_the_script_checks_from_the_command_line() -> None:
    """`python scripts/gen_httpx2.py --check` exits 0 on a current tree."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_package_imports_without_httpx2() -> None:
    """With httpx2 unimportable, httpx_breaker and its other modules import, and
    httpx_breaker.httpx2 raises an ImportError that names the extra."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["httpx2"] = None  # as if not installed
        sys.modules["httpcore2"] = None
        import httpx_breaker, httpx_breaker.classifiers, httpx_breaker.testing
        import httpx_breaker.monitoring
        try:
            import httpx_breaker.httpx2
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without httpx2")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pip install 'httpx-breaker[httpx2]'" in done.stdout
    assert ("3.11" in done.stdout) is (sys.version_info < (3, 11))
