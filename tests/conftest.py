"""Shared fixtures. See :mod:`cryoset.testing` for ``require_shared_data`` / ``require_program``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryoset.testing import require_shared_data


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (skips, or fails under CI, when absent)."""
    return require_shared_data()


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: every test is reproducible."""
    return np.random.default_rng(20261123)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``cryoset ARGS…`` in-process; return (exit_code, stdout, stderr)."""
    from cryoset.cli.main import main

    def _run(*args: object) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return _run
