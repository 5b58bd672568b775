"""Tests of the particle readers/writers: STAR 3.0/3.1, .cs, CryoVirusDB ↔ the canonical table."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoset.errors import InputError
from cryoset.io.cryosparc import read_cs
from cryoset.io.particles import ParticleSet, read_particles, write_particles
from cryoset.io.star import read_star, write_star
from cryoset.testing import require_program, require_shared_data

#: Expected outcome of every shared STAR / .cs file: a row count, or the error it must raise.
EXPECTED: dict[str, int | str] = {
    "relion/default_pipeline.star": "no particle table",
    "relion/empiar_10076_7.star": 7,
    "relion/one_loop.star": 16,
    "relion/postprocess.star": "no particle table",
    "relion/relion31.6opticsgroups.star": 139,
    "relion/relion31.star": 5,
    "relion/relion31.v2.star": 5,
    "relion/relion_tutorial/run_it025_optimiser_2D.star": "no particle table",
    "relion/relion_tutorial/run_it025_optimiser_3D.star": "no particle table",
    "relion/relion_tutorial/run_it025_sampling_2D.star": "no particle table",
    "relion/relion_tutorial/run_it025_sampling_3D.star": "no particle table",
    "relion/rln3.1_data_style.star": 2,
    "relion/sample_particles_relion30.star": 17,
    "relion/sample_particles_relion31.star": 17,
    "relion/sample_relion_symmetry_group_D4.star": 17,
    "cryosparc/cryosparc_P12_J24_001_particles.cs": 2019,
    "cryosparc/cryosparc_J2_particles_exported.cs": 22,
    "relion/empiar_10076_7.cs": 7,
}

STAR31 = ["relion31.star", "relion31.v2.star", "relion31.6opticsgroups.star",
          "sample_particles_relion31.star"]
STAR30 = ["empiar_10076_7.star", "sample_particles_relion30.star",
          "sample_relion_symmetry_group_D4.star", "one_loop.star", "rln3.1_data_style.star"]


def _assert_same_values(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    """Same blocks, same columns in the same order, same values (300 == 300.0)."""
    assert list(a) == list(b)
    for name in a:
        assert list(a[name].columns) == list(b[name].columns), name
        pd.testing.assert_frame_equal(a[name], b[name], check_dtype=False, check_exact=True)


@pytest.mark.shared_data
def test_every_shared_file_is_listed() -> None:
    root = require_shared_data("star")
    found = {str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in (".star", ".cs")}
    assert found == set(EXPECTED)


@pytest.mark.shared_data
@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
def test_every_shared_file_loads_or_fails_clearly(name: str, expected: int | str) -> None:
    path = require_shared_data("star", *name.split("/"))
    if isinstance(expected, str):
        with pytest.raises(InputError, match=expected) as info:
            read_particles(path)
        assert info.value.path == str(path)
        return
    ps = read_particles(path)
    assert len(ps.table) == expected
    assert ps.source_format == ("cs" if name.endswith(".cs") else
                                "star3.1" if "31" in name and "style" not in name else "star3.0")


@pytest.mark.shared_data
def test_pixel_size_of_empiar_10076_from_star_and_cs_agree() -> None:
    star = read_particles(require_shared_data("star", "relion", "empiar_10076_7.star")).table
    cs = read_particles(require_shared_data("star", "relion", "empiar_10076_7.cs")).table
    expected = 5.0 * 1e4 / 38168.0  # rlnDetectorPixelSize (µm) × 1e4 / rlnMagnification
    np.testing.assert_allclose(star["pixel_size_a"], expected, rtol=1e-15)
    assert abs(expected - 1.31) < 1e-3
    np.testing.assert_allclose(cs["pixel_size_a"], star["pixel_size_a"], rtol=1e-6)
    # the two files describe the same particles: same defocus (float32 in .cs), same images
    np.testing.assert_allclose(cs["defocus_u_a"], star["defocus_u_a"], rtol=1e-7)
    np.testing.assert_allclose(cs["defocus_angle_deg"], star["defocus_angle_deg"], atol=1e-4)
    assert cs["image_index"].tolist() == star["image_index"].tolist() == list(range(7))


@pytest.mark.shared_data
def test_six_optics_groups_merge_and_split_back_identically(tmp_path: Path) -> None:
    path = require_shared_data("star", "relion", "relion31.6opticsgroups.star")
    ps = read_particles(path)
    t = ps.table
    assert sorted(t["optics_group"].unique()) == [1, 2, 3, 4, 5, 6]
    optics = read_star(path)["optics"].set_index("rlnOpticsGroup")
    # merged: every particle carries the pixel size and Cs of its group
    np.testing.assert_array_equal(t["pixel_size_a"], optics.loc[t["optics_group"], "rlnImagePixelSize"])
    np.testing.assert_array_equal(t["cs_mm"], optics.loc[t["optics_group"], "rlnSphericalAberration"])
    assert (t.loc[t["optics_group"] == 4, "optics_group_name"] == "opticsGroup1").all()
    out = write_particles(tmp_path / "six.star", ps)
    _assert_same_values(read_star(path), read_star(out))


@pytest.mark.shared_data
@pytest.mark.parametrize("name", STAR31)
def test_star31_round_trip_same_blocks_same_values(name: str, tmp_path: Path) -> None:
    path = require_shared_data("star", "relion", name)
    out = write_particles(tmp_path / "rt.star", read_particles(path))
    _assert_same_values(read_star(path), read_star(out))
    assert read_particles(out).table.equals(read_particles(path).table)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", STAR30)
def test_star30_to_31_to_30_round_trip(name: str, tmp_path: Path) -> None:
    path = require_shared_data("star", "relion", name)
    p30 = read_particles(path)
    s31 = write_particles(tmp_path / "x31.star", p30, star_version="3.1")
    p31 = read_particles(s31)
    assert p31.source_format == "star3.1"
    assert "optics" in read_star(s31)
    pd.testing.assert_frame_equal(
        p31.table[p30.table.columns], p30.table, check_dtype=False, check_exact=True)
    p31.extra = p30.extra  # the original layout (block name, column order)
    s30 = write_particles(tmp_path / "x30.star", p31, star_version="3.0")
    _assert_same_values(_as_relion_reads_stacks(read_star(path)), read_star(s30))


def _as_relion_reads_stacks(blocks: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``N@x.mrc`` → ``N@x.mrc:mrcs``: the only change our writer makes (RELION 3.1 refuses the former)."""
    out = {}
    for name, df in blocks.items():
        df = df.copy()
        if "rlnImageName" in df.columns:
            df["rlnImageName"] = [v + ":mrcs" if "@" in v and v.endswith(".mrc") else v
                                  for v in df["rlnImageName"].astype(str)]
        out[name] = df
    return out


@pytest.mark.shared_data
def test_relion30_origins_become_angstrom(tmp_path: Path) -> None:
    path = require_shared_data("star", "relion", "sample_particles_relion30.star")
    raw = read_star(path)["model_class_1"]
    t = read_particles(path).table
    psize = raw["rlnDetectorPixelSize"] * 1e4 / raw["rlnMagnification"]
    np.testing.assert_allclose(t["shift_x_a"], raw["rlnOriginX"] * psize, rtol=1e-15)
    np.testing.assert_allclose(t["shift_y_a"], raw["rlnOriginY"] * psize, rtol=1e-15)
    assert "rlnOriginX" not in t.columns


def test_image_names_are_one_based_in_relion(tmp_path: Path) -> None:
    path = tmp_path / "p.star"
    path.write_text("data_particles\nloop_\n_rlnImageName\n_rlnClassNumber\n"
                    "000001@Extract/a.mrcs 1\n12@b.mrcs 2\nsubtomo_3.mrc 1\n")
    t = read_particles(path).table
    assert t["image_index"].tolist()[:2] == [0, 11]
    assert pd.isna(t["image_index"].iloc[2])  # a whole-file image has no index
    assert t["image_path"].tolist() == ["Extract/a.mrcs", "b.mrcs", "subtomo_3.mrc"]
    out = read_star(write_particles(tmp_path / "o.star", read_particles(path)))["particles"]
    # the source did not zero-pad every index, so neither do we; a new table gets RELION's 6 digits
    assert out["rlnImageName"].tolist() == ["1@Extract/a.mrcs", "12@b.mrcs", "subtomo_3.mrc"]
    fresh = read_star(write_particles(tmp_path / "f.star", read_particles(path).table))["particles"]
    assert fresh["rlnImageName"].tolist() == ["000001@Extract/a.mrcs", "000012@b.mrcs", "subtomo_3.mrc"]
    bad = tmp_path / "bad.star"
    bad.write_text("data_\nloop_\n_rlnImageName\n0@a.mrcs\n")
    with pytest.raises(InputError, match="counts from 1"):
        read_particles(bad)


def test_unknown_columns_round_trip(tmp_path: Path) -> None:
    # RELION 5 tomography labels and made-up ones survive read → write unchanged
    df = pd.DataFrame({"rlnImageName": ["000001@s.mrcs", "000002@s.mrcs"],
                       "rlnTomoName": ["TS_01", "TS_02"],
                       "rlnCenteredCoordinateXAngst": [12.5, -300.25],
                       "rlnTomoParticleName": ["TS_01/1", "TS_02/7"],
                       "rlnMyCustomLabel": [1.25, -3.0], "rlnGroupName": ["g1", "g 2"]})
    path = write_star(tmp_path / "u.star", {"particles": df})
    ps = read_particles(path)
    assert ps.table["rlnMyCustomLabel"].tolist() == [1.25, -3.0]
    back = read_star(write_particles(tmp_path / "o.star", ps))["particles"]
    for column in df.columns:
        assert back[column].tolist() == df[column].tolist(), column


def test_missing_needed_columns_name_the_file_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "coords.star"
    path.write_text("data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnMicrographName\n1 2 m.mrc\n")
    ps = read_particles(path, require=("x_px", "y_px"))
    assert ps.table[["x_px", "y_px"]].to_numpy().tolist() == [[1.0, 2.0]]
    with pytest.raises(InputError, match=r"lacks rlnImageName \(needed for image_path, image_index\)") as info:
        read_particles(path, require=("image_path", "image_index"))
    assert info.value.path == str(path)
    images = tmp_path / "img.star"
    images.write_text("data_\nloop_\n_rlnImageName\n1@a.mrcs\n")
    with pytest.raises(InputError, match="rlnCoordinateX"):
        read_particles(images, require=("x_px",))


def test_inconsistent_optics_and_missing_pixel_size_raise(tmp_path: Path) -> None:
    path = tmp_path / "o.star"
    path.write_text("data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n1 1.0\n"
                    "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@a.mrcs 2\n")
    with pytest.raises(InputError, match=r"optics group\(s\) \[2\]"):
        read_particles(path)
    px = tmp_path / "px.star"
    px.write_text("data_\nloop_\n_rlnImageName\n_rlnOriginX\n1@a.mrcs 2.0\n")
    with pytest.raises(InputError, match="pixel size is unknown"):
        read_particles(px)
    box = tmp_path / "x.box"
    box.write_text("")
    with pytest.raises(InputError, match="unknown particle file type"):
        read_particles(box)


def test_bare_table_writes_valid_31_with_derived_optics(tmp_path: Path) -> None:
    t = pd.DataFrame({"image_index": [0, 1, 2], "image_path": ["a.mrcs"] * 3,
                      "pixel_size_a": [1.0, 1.0, 2.0], "image_size_px": [64, 64, 32],
                      "voltage_kv": [300.0] * 3, "cs_mm": [2.7] * 3, "amplitude_contrast": [0.1] * 3,
                      "shift_x_a": [1.5, -2.0, 0.25], "shift_y_a": [0.0, 1.0, 2.0]})
    blocks = read_star(write_particles(tmp_path / "b.star", t))
    assert blocks["optics"]["rlnOpticsGroup"].tolist() == [1, 2]
    assert blocks["optics"]["rlnImagePixelSize"].tolist() == [1.0, 2.0]
    assert blocks["optics"]["rlnImageDimensionality"].tolist() == [2, 2]
    assert blocks["particles"]["rlnOpticsGroup"].tolist() == [1, 1, 2]
    b30 = read_star(write_particles(tmp_path / "b30.star", t, star_version="3.0"))[""]
    assert b30["rlnMagnification"].tolist() == [10000.0] * 3
    np.testing.assert_array_equal(b30["rlnOriginX"], [1.5, -2.0, 0.125])


@pytest.mark.shared_data
def test_star_to_cs_to_star_keeps_shared_fields(tmp_path: Path) -> None:
    path = require_shared_data("star", "relion", "relion31.6opticsgroups.star")
    t = read_particles(path).table
    back = read_particles(write_particles(tmp_path / "x.cs", t)).table
    for column in ("defocus_u_a", "defocus_v_a", "pixel_size_a", "voltage_kv", "cs_mm",
                   "amplitude_contrast", "shift_x_a", "shift_y_a"):
        np.testing.assert_allclose(back[column], t[column], rtol=2e-7, atol=1e-6, err_msg=column)
    np.testing.assert_allclose(back["defocus_angle_deg"], t["defocus_angle_deg"], atol=1e-4)
    for column in ("image_index", "image_path", "class_number", "optics_group", "random_subset",
                   "image_size_px"):
        assert back[column].tolist() == t[column].tolist(), column
    from cryoset.geometry import angular_distance_deg, euler_to_matrix

    d = angular_distance_deg(euler_to_matrix(back["rot_deg"], back["tilt_deg"], back["psi_deg"]),
                             euler_to_matrix(t["rot_deg"], t["tilt_deg"], t["psi_deg"]))
    assert d.max() < 1e-3  # float32 rotation vectors


@pytest.mark.shared_data
def test_cs_to_star_to_cs_exact_for_shared_fields(tmp_path: Path) -> None:
    path = require_shared_data("star", "cryosparc", "cryosparc_P12_J24_001_particles.cs")
    a = read_cs(path)
    star = write_particles(tmp_path / "j24.star", read_particles(path))
    b = read_cs(write_particles(tmp_path / "j24.cs", read_particles(star)))
    for field in ("blob/idx", "blob/psize_A", "ctf/df1_A", "ctf/df2_A", "ctf/accel_kv", "ctf/cs_mm",
                  "ctf/amp_contrast", "ctf/phase_shift_rad", "alignments3D/class",
                  "alignments3D/split", "alignments3D/shift", "ctf/exp_group_id"):
        np.testing.assert_array_equal(b[field], a[field], err_msg=field)
    np.testing.assert_allclose(b["ctf/df_angle_rad"], a["ctf/df_angle_rad"], atol=1e-6)
    assert [x.decode() for x in b["blob/path"]] == [x.decode() for x in a["blob/path"]]


finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=15, deadline=None)
@given(
    shifts=st.lists(st.tuples(finite, finite), min_size=1, max_size=6),
    psize=st.floats(0.3, 10.0),
    defocus=st.floats(1000, 60000),
)
def test_property_star_versions_round_trip(shifts: list[tuple[float, float]], psize: float,
                                           defocus: float) -> None:
    import tempfile

    n = len(shifts)
    s = np.array(shifts)
    t = pd.DataFrame({"image_index": np.arange(n), "image_path": ["p.mrcs"] * n,
                      "pixel_size_a": psize, "defocus_u_a": defocus,
                      "shift_x_a": s[:, 0], "shift_y_a": s[:, 1]})
    with tempfile.TemporaryDirectory() as d:
        b31 = read_particles(write_particles(Path(d) / "a.star", ParticleSet(t))).table
        b30 = read_particles(write_particles(Path(d) / "b.star", t, star_version="3.0")).table
    pd.testing.assert_frame_equal(b31[t.columns], t, check_dtype=False, check_exact=True)
    # 3.0 stores shifts in pixels: Å → px → Å is exact to 12 significant digits
    np.testing.assert_allclose(b30["shift_x_a"], t["shift_x_a"], rtol=1e-11, atol=1e-9)
    np.testing.assert_array_equal(b30["pixel_size_a"], t["pixel_size_a"])


def _relion(exe: str, cwd: Path, *args: str) -> None:
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=120)


@pytest.mark.relion
@pytest.mark.shared_data
def test_relion_star_handler_selects_on_our_star(tmp_path: Path) -> None:
    exe = require_program("relion_star_handler")
    ps = read_particles(require_shared_data("star", "relion", "relion31.6opticsgroups.star"))
    write_particles(tmp_path / "ours.star", ps)
    _relion(exe, tmp_path, "--i", "ours.star", "--o", "sel.star", "--select", "rlnDefocusU",
            "--minval", "10000", "--maxval", "12000")
    t = ps.table
    expected = t[(t["defocus_u_a"] >= 10000) & (t["defocus_u_a"] <= 12000)].reset_index(drop=True)
    got = read_particles(tmp_path / "sel.star").table
    assert len(got) == len(expected) == 29
    for column in ("defocus_u_a", "rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "pixel_size_a",
                   "cs_mm", "x_px", "y_px"):
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-6, atol=1e-5)
    for column in ("image_index", "image_path", "optics_group", "optics_group_name", "class_number"):
        assert got[column].tolist() == expected[column].tolist()


@pytest.mark.relion
@pytest.mark.shared_data
def test_relion_reads_our_cs_conversion(tmp_path: Path) -> None:
    exe = require_program("relion_star_handler")
    ps = read_particles(require_shared_data("star", "cryosparc", "cryosparc_P12_J24_001_particles.cs"))
    write_particles(tmp_path / "cs.star", ps)
    _relion(exe, tmp_path, "--i", "cs.star", "--o", "relion.star", "--operate", "rlnDefocusU",
            "--multiply_by", "2")
    got = read_particles(tmp_path / "relion.star").table
    t = ps.table
    assert len(got) == len(t) == 2019
    np.testing.assert_allclose(got["defocus_u_a"], 2 * t["defocus_u_a"], rtol=1e-6)
    for column in ("rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a", "defocus_v_a"):
        np.testing.assert_allclose(got[column], t[column], rtol=1e-6, atol=1e-5)
    assert got["pixel_size_a"].unique().tolist() == [2.95]


@pytest.mark.relion
@pytest.mark.shared_data
def test_relion_converts_our_30_file_like_we_do(tmp_path: Path) -> None:
    exe = require_program("relion_star_handler")
    ps = read_particles(require_shared_data("star", "relion", "sample_particles_relion30.star"))
    write_particles(tmp_path / "old.star", ps, star_version="3.0")
    _relion(exe, tmp_path, "--i", "old.star", "--o", "new.star")
    got = read_particles(tmp_path / "new.star")
    assert got.source_format == "star3.1"
    t = ps.table
    np.testing.assert_allclose(got.table["pixel_size_a"], t["pixel_size_a"], rtol=1e-6)
    np.testing.assert_allclose(got.table["shift_x_a"], t["shift_x_a"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.table["shift_y_a"], t["shift_y_a"], rtol=1e-5, atol=1e-5)


def test_provenance_is_embedded_in_star_and_beside_cs(tmp_path: Path) -> None:
    from cryoset.provenance import make_provenance, read_provenance

    record = make_provenance("test convert", {"fmt": "star"}, argv=["cryoset", "convert"])
    t = pd.DataFrame({"image_index": [0], "image_path": ["a.mrcs"], "pixel_size_a": [1.5],
                      "rot_deg": [10.0], "tilt_deg": [20.0], "psi_deg": [30.0]})
    star = write_particles(tmp_path / "p.star", t, provenance=record)
    first = star.read_text().splitlines()[0]
    assert first.startswith("# cryoset provenance: {") and '"test convert"' in first
    assert read_particles(star).table["rot_deg"].tolist() == [10.0]
    cs = write_particles(tmp_path / "p.cs", t, provenance=record)
    assert read_provenance(cs)["command"] == "test convert"


def _flag_table(flags: list[int], groups: list[int]) -> pd.DataFrame:
    n = len(flags)
    return pd.DataFrame({"image_index": np.arange(n), "image_path": ["Extract/job001/a.mrcs"] * n,
                         "pixel_size_a": 1.5, "image_size_px": 64, "voltage_kv": 300.0, "cs_mm": 2.7,
                         "amplitude_contrast": 0.1, "defocus_u_a": np.linspace(9000, 20000, n),
                         "defocus_v_a": np.linspace(8500, 19000, n), "defocus_angle_deg": 12.5,
                         "optics_group": groups, "ctf_phase_flipped": flags})


def test_phase_flip_flag_survives_star31_star30_and_cs(tmp_path: Path) -> None:
    """``ctf_phase_flipped`` is RELION's ``rlnCtfDataArePhaseFlipped``: in the optics block of a
    3.1 file (per group), per particle in a 3.0 file, ``cryoset/ctf_phase_flipped`` (uint8) in a
    ``.cs`` file; it survives every round trip, also chained."""
    t = _flag_table([1, 1, 1, 0, 0], [1, 1, 1, 2, 2])
    s31 = write_particles(tmp_path / "a.star", t)
    blocks = read_star(s31)
    assert blocks["optics"]["rlnCtfDataArePhaseFlipped"].tolist() == [1, 0]
    assert "rlnCtfDataArePhaseFlipped" not in blocks["particles"].columns
    s30 = write_particles(tmp_path / "b.star", t, star_version="3.0")
    assert read_star(s30)[""]["rlnCtfDataArePhaseFlipped"].tolist() == [1, 1, 1, 0, 0]
    cs = write_particles(tmp_path / "c.cs", t)
    arr = read_cs(cs)
    assert arr["cryoset/ctf_phase_flipped"].dtype == np.uint8
    assert arr["cryoset/ctf_phase_flipped"].tolist() == [1, 1, 1, 0, 0]
    for path in (s31, s30, cs):
        assert read_particles(path).table["ctf_phase_flipped"].tolist() == [1, 1, 1, 0, 0], path
    # chained: 3.1 → .cs → 3.0 → 3.1 (3.0 has no optics groups: they are rebuilt, the flag one of
    # the keys, so it goes back to data_optics)
    chain = read_particles(s31)
    for name, version in (("d.cs", "3.1"), ("e.star", "3.0"), ("f.star", "3.1")):
        chain = read_particles(write_particles(tmp_path / name, chain.table, star_version=version))  # type: ignore[arg-type]
    assert chain.table["ctf_phase_flipped"].tolist() == [1, 1, 1, 0, 0]
    assert read_star(tmp_path / "f.star")["optics"]["rlnCtfDataArePhaseFlipped"].tolist() == [1, 0]
    # a flag is 0 or 1
    bad = write_star(tmp_path / "g.star", {"": pd.DataFrame(
        {"rlnImageName": ["1@a.mrcs"], "rlnCtfDataArePhaseFlipped": [2]})})
    with pytest.raises(InputError, match=r"ctf_phase_flipped.*only 0 and 1"):
        read_particles(bad)


def test_mrc_stacks_are_named_as_relion_reads_them(tmp_path: Path) -> None:
    """RELION 3.1 refuses ``N@x.mrc`` (".mrc extensions are reserved for 3D maps") and reads
    ``N@x.mrc:mrcs``: the writer adds the type, the reader drops it (the table holds file names)."""
    t = pd.DataFrame({"image_index": [0, 1], "image_path": ["J19/extract/a_particles.mrc", "b.mrcs"],
                      "pixel_size_a": 2.0})
    star = write_particles(tmp_path / "p.star", t)
    assert read_star(star)["particles"]["rlnImageName"].tolist() == [
        "000001@J19/extract/a_particles.mrc:mrcs", "000002@b.mrcs"]
    assert read_particles(star).table["image_path"].tolist() == t["image_path"].tolist()
    cs = read_cs(write_particles(tmp_path / "p.cs", read_particles(star).table))
    assert [v.decode() for v in cs["blob/path"]] == t["image_path"].tolist()


def test_image_names_are_project_relative_and_resolved_like_relion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryoset.io.particles import image_path_candidates, relion_path, resolve_image_path

    project = tmp_path / "project"
    (project / "Extract" / "job001").mkdir(parents=True)
    monkeypatch.chdir(project)
    star = project / "Extract" / "job001" / "particles.star"
    stack = project / "Extract" / "job001" / "a.mrcs"
    stack.write_bytes(b"")
    assert relion_path(stack, star) == "Extract/job001/a.mrcs"
    assert relion_path(stack, star, "star") == "a.mrcs"
    outside = tmp_path / "elsewhere" / "b.mrcs"
    assert relion_path(outside, star) == outside.resolve().as_posix()
    # RELION's rule first (the current directory), then the STAR file's folder
    assert image_path_candidates("Extract/job001/a.mrcs", star)[0] == project / "Extract/job001/a.mrcs"
    assert resolve_image_path("Extract/job001/a.mrcs", star) == project / "Extract/job001/a.mrcs"
    assert resolve_image_path("a.mrcs", star) == stack
    with pytest.raises(InputError, match=r"image stack c\.mrcs not found") as info:
        resolve_image_path("c.mrcs", star)
    assert info.value.path == str(star)


@pytest.mark.shared_data
def test_cs_output_has_every_field_cryosparc_writes() -> None:
    """A ``.cs`` written from a RELION table has every field of the shared cryoSPARC files (3D:
    P12_J24, 2D: J2), with the same dtypes (text fields may differ in width)."""
    from cryoset.io.particles import table_to_cs

    t = read_particles(require_shared_data("star", "relion", "relion31.6opticsgroups.star")).table
    for name, table in (("cryosparc_P12_J24_001_particles.cs", t),
                        ("cryosparc_J2_particles_exported.cs", t.drop(columns=["rot_deg", "tilt_deg"]))):
        real = read_cs(require_shared_data("star", "cryosparc", name))
        ours = table_to_cs(table)
        missing = set(real.dtype.names or ()) - set(ours.dtype.names or ())
        assert not missing, (name, sorted(missing))
        for field in real.dtype.names or ():
            want, got = real.dtype[field], ours.dtype[field]
            assert (want.kind == got.kind == "S") or want == got, (name, field, want, got)
    ours = table_to_cs(t)
    assert set(ours["blob/sign"].tolist()) == {-1.0} and set(ours["ctf/type"].tolist()) == {b"imported"}
