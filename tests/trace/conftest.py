"""Fixtures for the tracing tests: true Cα models from the shared fixture data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from cryoset.testing import require_shared_data
from cryoset.trace.model import read_ca_table
from cryoset.trace.residues import ONE_LETTER, three_to_index


@dataclass(frozen=True)
class TrueModel:
    """Cα positions (n, 3), class indices (n,), chain ids (n,) and residue names (n,)."""

    positions_a: np.ndarray
    aa_index: np.ndarray
    chains: np.ndarray
    names: np.ndarray

    def sequences(self) -> list[str]:
        out = []
        for cid in dict.fromkeys(self.chains.tolist()):
            idx = self.aa_index[self.chains == cid]
            out.append("".join(ONE_LETTER[k] if k < 20 else "X" for k in idx))
        return out


def load_true_model(*parts: str) -> TrueModel:
    table = read_ca_table(require_shared_data(*parts))
    return TrueModel(
        positions_a=table[["x_a", "y_a", "z_a"]].to_numpy(dtype=np.float64),
        aa_index=np.array([three_to_index(n) for n in table["residue_name"]], dtype=np.int64),
        chains=table["chain"].to_numpy(dtype=object),
        names=table["residue_name"].to_numpy(dtype=object),
    )


@pytest.fixture(scope="session")
def actin_3mfp() -> TrueModel:
    """PDB 3MFP (F-actin subunit, 369 Cα, chain A)."""
    return load_true_model("maps", "emd_5168", "3MFP.pdb")
