"""The micrograph CTF STAR (io/micrograph_star.py), the coordinate-format registry and the
per-micrograph CryoVirusDB y flip (issue #17, item 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cryoset.ctf.model import CTFParams
from cryoset.io.coords import COORDINATE_FORMATS, COORDINATE_SUFFIXES, FORMATS
from cryoset.io.cryovirusdb import read_cryovirusdb, write_cryovirusdb
from cryoset.io.micrograph_star import read_micrograph_star, write_micrograph_star
from cryoset.io.star import LOOP_ATTR, read_star, write_star


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "micrograph": ["micrographs/a.mrc", "micrographs/b.mrc"],
        "pixel_size_a": [1.5, 1.0], "voltage_kv": [300.0, 200.0], "cs_mm": [2.7, 2.7],
        "amplitude_contrast": [0.1, 0.07], "defocus_u_a": [15000.0, 20000.0],
        "defocus_v_a": [14000.0, 19500.0], "defocus_angle_deg": [30.0, -12.5],
        "ctf_astigmatism_a": [1000.0, 500.0], "phase_shift_deg": [0.0, 0.0],
    })


def test_round_trip_with_optics_groups(tmp_path: Path) -> None:
    path = write_micrograph_star(tmp_path / "m.star", _table())
    blocks = read_star(path)
    assert list(blocks["optics"]["rlnOpticsGroup"]) == [1, 2]
    assert list(blocks["micrographs"].columns) == [
        "rlnMicrographName", "rlnOpticsGroup", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
        "rlnCtfAstigmatism", "rlnPhaseShift",
    ]
    back = read_micrograph_star(path)
    for col in _table().columns:
        if col != "micrograph":
            np.testing.assert_array_equal(back[col].to_numpy(), _table()[col].to_numpy())
    assert list(back["optics_group"]) == [1, 2]


def test_same_bytes_as_the_inline_writer_it_replaces(tmp_path: Path) -> None:
    t = _table().iloc[:1]
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographPixelSize": [1.5], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    mics = pd.DataFrame({"rlnMicrographName": ["micrographs/a.mrc"], "rlnOpticsGroup": [1],
                         "rlnDefocusU": [15000.0], "rlnDefocusV": [14000.0],
                         "rlnDefocusAngle": [30.0], "rlnCtfAstigmatism": [1000.0], "rlnPhaseShift": [0.0]})
    optics.attrs[LOOP_ATTR] = True
    mics.attrs[LOOP_ATTR] = True
    old = write_star(tmp_path / "old.star", {"optics": optics, "micrographs": mics}, version=30001)
    new = write_micrograph_star(tmp_path / "new.star", t)
    assert old.read_bytes() == new.read_bytes()


def test_ctf_params_from_a_table_row(tmp_path: Path) -> None:
    row = read_micrograph_star(write_micrograph_star(tmp_path / "m.star", _table())).iloc[1]
    assert CTFParams.from_row(row) == CTFParams(20000.0, 19500.0, -12.5, 200.0, 2.7, 0.07, 0.0)


def test_registry_names_and_suffixes() -> None:
    assert FORMATS == tuple(COORDINATE_FORMATS) == ("star", "box", "csv", "cryoppp", "topaz", "cbox", "cs")
    assert set(COORDINATE_SUFFIXES) == {".star", ".box", ".csv", ".cbox", ".cs", ".txt", ".tsv"}
    assert [n for n, f in COORDINATE_FORMATS.items() if f.flips_y] == ["cryoppp"]


def test_cryovirusdb_per_micrograph_flip_round_trips(tmp_path: Path) -> None:
    t = pd.DataFrame({"micrograph": ["a.mrc", "b.mrc"], "x_px": [10.0, 20.0], "y_px": [5.0, 7.0]})
    heights = {"a.mrc": 100.0, "b.mrc": 50.0}
    path = write_cryovirusdb(tmp_path / "p.csv", t, micrograph_heights=heights)
    raw = pd.read_csv(path)
    assert list(raw["Y-Coordinate"]) == [94, 42]
    back = read_cryovirusdb(path, micrograph_heights=lambda m: heights[m])
    assert list(back["y_px"]) == [5.0, 7.0]
