"""Every docstring example in src/cryoset runs (issue #17, item 6).

One test per module that has examples (``>>>`` in its source), run with :mod:`doctest`
(``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` on); a failing example fails its module's test.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import cryoset

_ROOT = Path(cryoset.__file__).parent


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(_ROOT.rglob("*.py")):
        if ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(_ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


MODULES = _modules_with_examples()


def test_examples_exist() -> None:
    assert len(MODULES) >= 20


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, name) if t.examples]
    report: list[str] = []
    for t in tests:
        result = runner.run(t, out=report.append)
        assert result.failed == 0, "".join(report)
    assert tests, f"{name} has '>>>' but doctest finds no example"
