"""CryoVirusDB's ground truth with its collective particles CSV (``<EMPIAR>_particles_selected.csv``
as the authors' convert script writes it): read into our table and written back with the same
columns and values (issue #24)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cryoset.datasets.cryoppp import read_cryoppp, write_cryoppp

COLUMNS = ["Particles Filename", "Micrographs Filename", "X-Coordinate", "Y-Coordinate", "Angle-Psi",
           "Origin X (Ang)", "Origin Y (Ang)", "Defocus U", "Defocus V", "Defocus Angle", "Phase Shift",
           "CTF B Factor", "Optics Group", "Class Number"]


def _entry(root: Path) -> Path:
    gt = root / "ground_truth"
    gt.mkdir(parents=True)
    rng = np.random.default_rng(2)
    rows = []
    for i in range(6):
        mic = f"FoilHole_{i // 3}_Data.mrc"
        rows.append([mic.replace(".mrc", "_particles.mrc"), mic, f"{rng.uniform(300, 3800):.1f}",
                     f"{rng.uniform(300, 3800):.1f}", f"{rng.uniform(-180, 180):.2f}", "0.5", "-1.25",
                     "15000.5", "14800.25", "12.5", "0.0", "0.0", "1", str(int(rng.integers(1, 50)))])
    pd.DataFrame(rows, columns=COLUMNS).to_csv(gt / "10205_particles_selected.csv", index=False)
    return root


def test_collective_selected_csv_round_trips_through_the_entry_reader(tmp_path: Path) -> None:
    root = _entry(tmp_path / "10205")
    entry = read_cryoppp(root, original_shape=(4096, 4096))
    assert entry.variants["selected"] == "collective" and len(entry.selected) == 6
    assert entry.selected["class_number"].notna().all() and entry.selected["psi_deg"].notna().all()
    out = write_cryoppp(entry, tmp_path / "out")
    a = pd.read_csv(root / "ground_truth" / "10205_particles_selected.csv", dtype=str)
    b = pd.read_csv(out / "ground_truth" / "10205_particles_selected.csv", dtype=str)
    assert list(b.columns) == COLUMNS  # no Diameter added, Particles Filename first
    assert b.iloc[:, :2].equals(a.iloc[:, :2])
    np.testing.assert_array_equal(b.iloc[:, 2:].astype(float), a.iloc[:, 2:].astype(float))
    # and here, byte for byte (the y flip is undone to the decimals written)
    assert (out / "ground_truth" / "10205_particles_selected.csv").read_bytes() == \
        (root / "ground_truth" / "10205_particles_selected.csv").read_bytes()
