"""Fixtures: small entries in the published layouts built from ../shared/data (see builders.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cryoset.testing import require_shared_data

from .builders import build_cryoppp_entry


@pytest.fixture(scope="session")
def cryoppp_full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("cryoppp") / "10028"
    return root, build_cryoppp_entry(root)


@pytest.fixture(scope="session")
def cryoppp_lite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("cryoppp_lite") / "10028"
    return root, build_cryoppp_entry(root, lite_factor=2)


@pytest.fixture(scope="session")
def prepared_5168(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our ``map prepare`` of the EMD-5168 monomer with 3MFP (labels and sub-grids)."""
    from cryoset.workflows.maps import prepare_map

    d = require_shared_data("maps", "emd_5168")
    out = tmp_path_factory.mktemp("ours") / "EMD-5168"
    prepare_map(d / "emd_5168_monomer.mrc", out, d / "3MFP.pdb", meta={"emdb_id": "EMD-5168", "pdb_id": "3MFP"})
    return out
