"""Issue #24: ``cryoset classify2d`` writes CryoVirusDB's collective particles CSV of the kept
particles (``particles_selected.csv``): the published columns in order, psi/origin/class those of
the classification STAR, y flipped with each micrograph's own height, and it converts back
through ``cryoset convert``. End to end through the CLI on simulated micrographs of two heights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cryoset.io.cryovirusdb import COLLECTIVE_CSV_COLUMNS, read_cryovirusdb
from cryoset.io.particles import read_particles

#: The published header (CryoVirusDB's ``convert_start_to_csv_file``; paper: the 12 columns).
PUBLISHED = ["Particles Filename", "Micrographs Filename", "X-Coordinate", "Y-Coordinate", "Angle-Psi",
             "Origin X (Ang)", "Origin Y (Ang)", "Defocus U", "Defocus V", "Defocus Angle", "Phase Shift",
             "CTF B Factor", "Optics Group", "Class Number"]
SHAPES = {"mic_a.mrc": (256, 256), "mic_b.mrc": (320, 256)}  # (ny, nx): two heights, two flips


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two simulated micrographs, their true picks, and ``cryoset extract`` of them."""
    from cryoset.cli.main import main
    from cryoset.io.coords import write_coords
    from cryoset.io.mrc import write_map
    from cryoset.simulate.micrograph import (
        MicrographSettings,
        atoms_from_protein,
        simulate_micrograph,
    )
    from cryoset.simulate.protein import build_protein

    root = tmp_path_factory.mktemp("cvdb")
    atoms = atoms_from_protein(build_protein(60, 1))
    (root / "mics").mkdir()
    (root / "picks").mkdir()
    for k, (name, shape) in enumerate(SHAPES.items()):
        sim = simulate_micrograph(atoms, MicrographSettings(
            shape_px=shape, pixel_size_a=1.5, n_particles=8, defocus_range_a=(12000.0, 16000.0),
            carbon_fraction=0.0, n_contaminations=0), seed=40 + k, name=name)
        write_map(root / "mics" / name, sim.image[None], 1.5)
        write_coords(root / "picks" / name.replace(".mrc", ".star"), sim.picks, micrograph_shape=shape)
    code = main(["extract", *(str(root / "mics" / n) for n in SHAPES), "--picks", str(root / "picks"),
                 "--out", str(root / "extract"), "--box-px", "48", "--pixel-size-a", "1.5",
                 "--pixel-size-out-a", "3"])
    assert code == 0
    return root


def test_classify2d_writes_the_collective_csv_of_the_kept_particles(run_cli: Any, extracted: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "c2d"
    code, stdout, stderr = run_cli("classify2d", extracted / "extract" / "particles.star", "--out", out, "-K", "2",
                                   "--n-iter", "2", "--psi-step-deg", "30", "--offset-range-px", "1", "--no-ctf",
                                   "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    csv_path = out / "particles_selected.csv"
    assert summary["cryovirusdb_csv"] == str(csv_path) and summary["cryovirusdb_csv_note"] is None
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    assert list(raw.columns) == PUBLISHED == list(COLLECTIVE_CSV_COLUMNS)  # no Diameter
    kept = read_particles(out / "particles_kept.star").table
    assert len(raw) == len(kept) == summary["kept"] > 0
    # psi, origin and class are the classification STAR's values, written exactly
    for column, canonical in (("Angle-Psi", "psi_deg"), ("Origin X (Ang)", "shift_x_a"),
                              ("Origin Y (Ang)", "shift_y_a"), ("Class Number", "class_number")):
        np.testing.assert_array_equal(raw[column].astype(float).to_numpy(), kept[canonical].to_numpy(float), column)
    assert set(raw["Class Number"].astype(int)) <= set(summary["good_classes"]) | {
        c["class_number"] for c in summary["class_table"]}
    assert (raw["Particles Filename"] == [Path(p).name for p in kept["image_path"]]).all()
    assert (raw["Micrographs Filename"] == kept["micrograph"].astype(str)).all()
    # y transposed with each micrograph's own height, (ny − 1) − y
    ny = raw["Micrographs Filename"].map({k: v[0] for k, v in SHAPES.items()}).to_numpy(float)
    np.testing.assert_allclose(raw["Y-Coordinate"].astype(float).to_numpy(), (ny - 1) - kept["y_px"].to_numpy(float),
                               atol=1e-6)
    assert set(raw["Micrographs Filename"]) == set(SHAPES)  # both heights exercised
    np.testing.assert_allclose(raw["X-Coordinate"].astype(float).to_numpy(), kept["x_px"].to_numpy(float), atol=1e-9)
    back = read_cryovirusdb(csv_path, micrograph_heights={k: v[0] for k, v in SHAPES.items()})
    assert back.attrs["cryovirusdb_variant"] == "collective"
    np.testing.assert_allclose(back["y_px"].to_numpy(float), kept["y_px"].to_numpy(float), atol=1e-6)
    # round trip through `cryoset convert`, one micrograph at a time (one shape per call)
    for name, shape in SHAPES.items():
        part = tmp_path / f"{name}.csv"
        raw[raw["Micrographs Filename"] == name].to_csv(part, index=False)
        if not (raw["Micrographs Filename"] == name).any():
            continue
        star = tmp_path / f"{name}.star"
        code, _, stderr = run_cli("convert", part, star, "--micrograph-shape-px", *shape)
        assert code == 0, stderr
        converted = read_particles(star).table
        mine = kept[kept["micrograph"] == name].reset_index(drop=True)
        for col in ("x_px", "y_px", "psi_deg", "shift_x_a", "shift_y_a", "class_number", "defocus_u_a"):
            if col in mine.columns and mine[col].notna().any():
                np.testing.assert_allclose(converted[col].to_numpy(float), mine[col].to_numpy(float), atol=1e-6,
                                           err_msg=col)


def test_rounds_reuse_the_heights_and_an_unknown_height_writes_no_csv(run_cli: Any, extracted: Path,
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "c2d"
    code, stdout, stderr = run_cli("classify2d", extracted / "extract" / "particles.star", "--out", out, "-K", "2",
                                   "--n-iter", "1", "--psi-step-deg", "30", "--offset-range-px", "1", "--no-ctf",
                                   "--rounds", "2", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    for later in summary["rounds"]:
        assert later["cryovirusdb_csv"] is not None
        assert list(pd.read_csv(later["cryovirusdb_csv"]).columns) == PUBLISHED
    # the micrographs moved away: no height, so no CSV (and the summary says why)
    moved = tmp_path / "moved"
    (extracted / "mics").rename(moved)
    try:
        code, stdout, stderr = run_cli("classify2d", extracted / "extract" / "particles.star", "--out",
                                       tmp_path / "c2d_nomics", "-K", "2", "--n-iter", "1", "--psi-step-deg", "30",
                                       "--offset-range-px", "1", "--no-ctf", "--json")
    finally:
        moved.rename(extracted / "mics")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["cryovirusdb_csv"] is None and "no height for micrograph(s) mic_a, mic_b" in summary[
        "cryovirusdb_csv_note"]
    assert not (tmp_path / "c2d_nomics" / "particles_selected.csv").exists()
