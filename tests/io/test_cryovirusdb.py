"""Tests of the CryoVirusDB / CryoPPP particle CSV reader and writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.io.coords import read_coords
from cryoset.io.cryovirusdb import (
    PARTICLE_CSV_COLUMNS,
    PER_MICROGRAPH_CSV_COLUMNS,
    read_cryovirusdb,
    write_cryovirusdb,
)
from cryoset.io.particles import read_particles, write_particles
from cryoset.io.star import read_star
from cryoset.testing import require_shared_data

TRUTH = ("coordinates", "empiar_10017", "cryoppp_groundtruth_Falcon_2012_06_12-14_33_35_0.csv")
SHAPE = (4096, 4096)


def _table(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({
        "micrograph": [f"mic_{i % 3}.mrc" for i in range(n)],
        "x_px": rng.integers(0, 4096, n).astype(float),
        "y_px": rng.integers(0, 3710, n).astype(float),
        "score": np.nan,
        "diameter_px": 377.0,
        "psi_deg": rng.uniform(0, 360, n),
        "shift_x_a": rng.uniform(-5, 5, n),
        "shift_y_a": rng.uniform(-5, 5, n),
        "defocus_u_a": rng.uniform(10000, 20000, n),
        "defocus_v_a": rng.uniform(9000, 10000, n),
        "defocus_angle_deg": rng.uniform(-90, 90, n),
        "phase_shift_deg": 0.0,
        "ctf_bfactor_a2": 0.0,
        "optics_group": np.ones(n, dtype=np.int64),
        "class_number": rng.integers(1, 50, n),
    })


def test_column_lists_are_exactly_the_published_ones() -> None:
    assert PARTICLE_CSV_COLUMNS == (
        "Micrographs Filename", "X-Coordinate", "Y-Coordinate", "Diameter", "Angle-Psi",
        "Origin X (Ang)", "Origin Y (Ang)", "Defocus U", "Defocus V", "Defocus Angle",
        "Phase Shift", "CTF B Factor", "Optics Group", "Class Number")
    assert len(PER_MICROGRAPH_CSV_COLUMNS) == 11


@pytest.mark.shared_data
def test_real_truth_csv_uses_the_coordinates_flip_rule(tmp_path: Path) -> None:
    path = require_shared_data(*TRUTH)
    t = read_cryovirusdb(path, micrograph_shape=SHAPE)
    picks = read_coords(path, fmt="cryoppp", micrograph_shape=SHAPE)
    assert len(t) == 629
    for column in ("micrograph", "x_px", "y_px", "diameter_px", "defocus_u_a", "defocus_v_a"):
        assert t[column].tolist() == picks[column].tolist(), column
    raw = pd.read_csv(path)
    np.testing.assert_array_equal(t["y_px"], 4095 - raw["Y-Coordinate"])
    np.testing.assert_array_equal(t["psi_deg"], raw["Angle-Psi"])
    np.testing.assert_array_equal(t["shift_y_a"], raw["Origin Y (Ang)"])
    # writing it back reproduces the file byte for byte
    out = write_cryovirusdb(tmp_path / "rt.csv", t, micrograph_shape=SHAPE, variant="per_micrograph")
    assert out.read_bytes() == path.read_bytes()


@pytest.mark.shared_data
def test_read_particles_dispatches_csv_and_converts_to_star(tmp_path: Path) -> None:
    path = require_shared_data(*TRUTH)
    with pytest.raises(InputError, match="micrograph shape"):
        read_particles(path)
    ps = read_particles(path, micrograph_shape=SHAPE)
    assert ps.source_format == "cryovirusdb"
    star = read_star(write_particles(tmp_path / "truth.star", ps))["particles"]
    np.testing.assert_array_equal(star["rlnCoordinateY"], ps.table["y_px"])
    np.testing.assert_array_equal(star["rlnAnglePsi"], ps.table["psi_deg"])
    np.testing.assert_array_equal(star["rlnOriginXAngst"], ps.table["shift_x_a"])
    back = write_particles(tmp_path / "truth.csv", ps)  # shape remembered from the read
    assert read_cryovirusdb(back, micrograph_shape=SHAPE)["y_px"].tolist() == ps.table["y_px"].tolist()


def test_fourteen_column_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    t = _table(25, rng)
    path = write_cryovirusdb(tmp_path / "p.csv", t, micrograph_shape=(3710, 4096))
    assert tuple(pd.read_csv(path).columns) == PARTICLE_CSV_COLUMNS
    back = read_cryovirusdb(path, micrograph_shape=(3710, 4096))
    assert back.attrs["cryovirusdb_variant"] == "particles"
    pd.testing.assert_frame_equal(back[t.columns], t, check_dtype=False, check_exact=True)
    # the written y is the flipped frame that the coordinates reader undoes
    raw = pd.read_csv(path)
    np.testing.assert_array_equal(raw["Y-Coordinate"], 3709 - t["y_px"])


def test_false_positive_variant_keeps_reason(tmp_path: Path, rng: np.random.Generator) -> None:
    t = _table(4, rng)
    t["Reason"] = ["ice", "carbon edge", "aggregate", "damaged, cut"]
    path = write_cryovirusdb(tmp_path / "fp.csv", t, flip_y=False)
    assert tuple(pd.read_csv(path).columns) == (*PARTICLE_CSV_COLUMNS, "Reason")
    back = read_cryovirusdb(path, flip_y=False)
    assert back.attrs["cryovirusdb_variant"] == "false_positives"
    assert back["Reason"].tolist() == t["Reason"].tolist()
    np.testing.assert_array_equal(back["y_px"], t["y_px"])


def test_text_optics_group_and_unknown_columns(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("Particles Filename,Micrographs Filename,X-Coordinate,Y-Coordinate,Optics Group\n"
                    "p1.mrc,m1.mrc,10,20,opticsGroup1\n")
    t = read_cryovirusdb(path, flip_y=False)
    assert t["optics_group_name"].tolist() == ["opticsGroup1"]
    assert t["Particles Filename"].tolist() == ["p1.mrc"]
    assert t["micrograph"].tolist() == ["m1.mrc"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("Micrographs Filename,Y-Coordinate\nm,1\n", "lacks X-Coordinate"),
        ("X-Coordinate,Y-Coordinate,Defocus U\n1,2,abc\n", "line 2: Defocus U value 'abc'"),
        ("X-Coordinate,X-Coordinate,Y-Coordinate\n1,2,3\n", "repeats"),
        ("X-Coordinate,Y-Coordinate\n1,2\n", "micrograph shape"),
        ("X-Coordinate,Y-Coordinate\n1,5000\n", "outside"),
    ],
)
def test_bad_csv_raises_naming_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    shape = SHAPE if "5000" in text else None
    flip = "Defocus" not in text and "Micrographs" not in text
    with pytest.raises(InputError, match=needle):
        read_cryovirusdb(path, micrograph_shape=shape, flip_y=flip)


def test_writer_needs_shape_or_no_flip(tmp_path: Path, rng: np.random.Generator) -> None:
    with pytest.raises(InputError, match="micrograph shape"):
        write_cryovirusdb(tmp_path / "a.csv", _table(2, rng))
    with pytest.raises(InputError, match="x_px"):
        write_cryovirusdb(tmp_path / "a.csv", pd.DataFrame({"y_px": [1.0]}), flip_y=False)
    assert not (tmp_path / "a.csv").exists()


# --- CryoVirusDB's collective particles CSV (issue #24) -------------------------------------
_COLLECTIVE = ["Particles Filename", "Micrographs Filename", "X-Coordinate", "Y-Coordinate", "Angle-Psi",
               "Origin X (Ang)", "Origin Y (Ang)", "Defocus U", "Defocus V", "Defocus Angle", "Phase Shift",
               "CTF B Factor", "Optics Group", "Class Number"]


def _published_collective(path: Path) -> Path:
    """The collective CSV as CryoVirusDB's convert script writes it: STAR tokens copied as
    text into a pandas frame with these 14 columns, ``to_csv(index=False)``."""
    rows = [["FoilHole_1_particles.mrc", "FoilHole_1.mrc", "1024.5", "2000.0", "-35.25", "1.5", "-0.75",
             "12000.5", "11800.25", "45.0", "0.0", "0.0", "1", "7"],
            ["FoilHole_2_particles.mrc", "FoilHole_2.mrc", "300.0", "512.0", "170.5", "0.0", "2.25",
             "15000.0", "14900.0", "-12.5", "0.0", "0.0", "1", "12"]]
    pd.DataFrame(rows, columns=_COLLECTIVE).to_csv(path, index=False)
    return path


def test_collective_csv_reads_and_writes_back_as_published(tmp_path: Path) -> None:
    from cryoset.io.cryovirusdb import COLLECTIVE_CSV_COLUMNS

    assert list(COLLECTIVE_CSV_COLUMNS) == _COLLECTIVE  # first Particles Filename, the 12 listed, no Diameter
    src = _published_collective(tmp_path / "particles_selected.csv")
    t = read_cryovirusdb(src, micrograph_shape=(4096, 4096))
    assert t.attrs["cryovirusdb_variant"] == "collective"
    assert t["psi_deg"].tolist() == [-35.25, 170.5] and t["class_number"].tolist() == [7, 12]
    assert t["y_px"].tolist() == [4095 - 2000.0, 4095 - 512.0]
    out = write_cryovirusdb(tmp_path / "back.csv", t, micrograph_shape=(4096, 4096), variant="collective")
    a, b = pd.read_csv(src, dtype=str), pd.read_csv(out, dtype=str)
    assert list(b.columns) == _COLLECTIVE
    assert b["Particles Filename"].tolist() == a["Particles Filename"].tolist()
    np.testing.assert_array_equal(b.iloc[:, 2:].astype(float), a.iloc[:, 2:].astype(float))
    with_d = write_cryovirusdb(tmp_path / "d.csv", t, micrograph_shape=(4096, 4096), variant="collective",
                               diameter=True)
    assert pd.read_csv(with_d).columns.tolist()[:5] == [*_COLLECTIVE[:4], "Diameter"]


def test_collective_csv_after_2d_classification_names_the_stacks(tmp_path: Path) -> None:
    table = pd.DataFrame({"micrograph": ["m1.mrc", "m1.mrc"], "x_px": [10.0, 20.0], "y_px": [5.0, 6.0],
                          "image_path": ["Extract/stacks/m1.mrcs", "Extract/stacks/m1.mrcs"],
                          "psi_deg": [12.5, -40.0], "shift_x_a": [1.5, 0.0], "shift_y_a": [-2.0, 0.5],
                          "class_number": [3, 1], "defocus_u_a": 1.0e4, "defocus_v_a": 1.0e4})
    out = write_cryovirusdb(tmp_path / "c.csv", table, flip_y=False, variant="collective")
    got = pd.read_csv(out)
    assert got.columns.tolist() == _COLLECTIVE
    assert got["Particles Filename"].tolist() == ["m1.mrcs"] * 2
    assert got["Angle-Psi"].tolist() == [12.5, -40.0] and got["Class Number"].tolist() == [3, 1]
    assert got["Origin X (Ang)"].tolist() == [1.5, 0.0] and got["Origin Y (Ang)"].tolist() == [-2.0, 0.5]


def test_weighted_average_class_resolution() -> None:
    from cryoset.io.cryovirusdb import weighted_class_resolution

    classes = pd.DataFrame({"class_number": [1, 2, 3, 4], "population": [100, 300, 50, 0],
                            "resolution_a": [10.0, 6.0, np.inf, 4.0]})
    assert weighted_class_resolution(classes) == pytest.approx((100 * 10 + 300 * 6) / 400)
    assert weighted_class_resolution(classes, n=1) == 6.0  # the most populated class
    assert np.isnan(weighted_class_resolution(classes.iloc[2:3]))
