"""Helpers for tests (ours and users'): locating real fixture data and external programs.

``../shared/data`` beside the project root holds real cryo-EM files. Tests that need it
skip with a reason when it is absent and fail when ``CRYOSET_REQUIRE_SHARED_DATA=1``.
The location can be overridden with ``CRYOSET_SHARED_DATA``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path:
    """The root of the real fixture data (may not exist)."""
    env = os.environ.get("CRYOSET_SHARED_DATA")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


def require_shared_data(*parts: str) -> Path:
    """Return ``<shared data>/<parts>``; skip the calling test (or fail under CI) when absent."""
    import pytest

    path = shared_data_root().joinpath(*parts)
    if not path.exists():
        msg = f"{path} is absent (the real fixture data in ../shared/data is not beside this clone)"
        if os.environ.get("CRYOSET_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg + " and CRYOSET_REQUIRE_SHARED_DATA=1")
        pytest.skip(msg)
    return path


def require_program(name: str) -> str:
    """Return the path of an external program, or skip the calling test when not installed."""
    import pytest

    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found
