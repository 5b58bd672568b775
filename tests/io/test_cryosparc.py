"""Tests of cryoSPARC .cs reading/writing and the pose/shift/CTF mapping to the canonical table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoset.errors import InputError
from cryoset.geometry import (
    angular_distance_deg,
    euler_to_matrix,
    random_rotations,
    rotvec_to_matrix,
)
from cryoset.io.cryosparc import CS_DEFAULT_FIELDS, read_cs, write_cs
from cryoset.io.particles import (
    cs_pose_to_euler,
    cs_to_table,
    euler_to_cs_pose,
    read_particles,
    table_to_cs,
)
from cryoset.testing import require_shared_data

#: dtypes of fields cryoSPARC writes in every particle file (../shared/data/star/cryosparc/*.cs).
ALWAYS_WRITTEN_DTYPES: dict[str, np.dtype] = {
    "uid": np.dtype("<u8"), "blob/idx": np.dtype("<u4"), "blob/shape": np.dtype(("<u4", (2,))),
    "blob/psize_A": np.dtype("<f4"), "blob/sign": np.dtype("<f4"), "blob/import_sig": np.dtype("<u8"),
    "ctf/type": np.dtype("S9"), "ctf/exp_group_id": np.dtype("<u4"), "ctf/accel_kv": np.dtype("<f4"),
    "ctf/cs_mm": np.dtype("<f4"), "ctf/amp_contrast": np.dtype("<f4"), "ctf/df1_A": np.dtype("<f4"),
    "ctf/df2_A": np.dtype("<f4"), "ctf/df_angle_rad": np.dtype("<f4"),
    "ctf/phase_shift_rad": np.dtype("<f4"), "ctf/scale": np.dtype("<f4"),
    "ctf/scale_const": np.dtype("<f4"), "ctf/bfactor": np.dtype("<f4"),
    "ctf/shift_A": np.dtype(("<f4", (2,))), "ctf/tilt_A": np.dtype(("<f4", (2,))),
    "ctf/trefoil_A": np.dtype(("<f4", (2,))), "ctf/tetra_A": np.dtype(("<f4", (4,))),
    "ctf/anisomag": np.dtype(("<f4", (4,))),
}

CS_FILES = ["cryosparc/cryosparc_P12_J24_001_particles.cs",
            "cryosparc/cryosparc_J2_particles_exported.cs", "relion/empiar_10076_7.cs"]


def _synthetic(n: int, rng: np.random.Generator, align: str = "alignments3D") -> np.ndarray:
    dtype = [("uid", "<u8"), ("blob/path", "S20"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
             ("blob/psize_A", "<f4"), ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"),
             ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"),
             ("ctf/df_angle_rad", "<f4"), ("ctf/phase_shift_rad", "<f4"), ("ctf/bfactor", "<f4"),
             ("ctf/exp_group_id", "<u4"),
             (f"{align}/pose", "<f4", (3,) if align == "alignments3D" else ()),
             (f"{align}/shift", "<f4", (2,)), (f"{align}/psize_A", "<f4"),
             (f"{align}/class", "<u4"), (f"{align}/split", "<u4"),
             ("location/micrograph_path", "S24"), ("location/center_x_frac", "<f4"),
             ("location/center_y_frac", "<f4"), ("location/micrograph_shape", "<u4", (2,))]
    a = np.zeros(n, dtype=dtype)
    a["uid"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    a["blob/path"] = b"J1/extract/stack.mrc"
    a["blob/idx"] = np.arange(n)
    a["blob/shape"] = 128
    a["blob/psize_A"] = 1.25
    a["ctf/accel_kv"], a["ctf/cs_mm"], a["ctf/amp_contrast"] = 300, 2.7, 0.1
    a["ctf/df1_A"] = rng.uniform(8000, 30000, n)
    a["ctf/df2_A"] = a["ctf/df1_A"] - rng.uniform(0, 500, n)
    a["ctf/df_angle_rad"] = rng.uniform(-np.pi, np.pi, n)
    a["ctf/phase_shift_rad"] = rng.uniform(0, 1, n)
    a["ctf/bfactor"] = rng.uniform(0, 50, n)
    a["ctf/exp_group_id"] = rng.integers(0, 3, n)
    if align == "alignments3D":
        a[f"{align}/pose"] = rng.uniform(-1.5, 1.5, (n, 3))
    else:
        a[f"{align}/pose"] = rng.uniform(0, 2 * np.pi, n)
    a[f"{align}/shift"] = rng.uniform(-10, 10, (n, 2))
    a[f"{align}/psize_A"] = 1.25
    a[f"{align}/class"] = rng.integers(0, 5, n)
    a[f"{align}/split"] = rng.integers(0, 2, n)
    a["location/micrograph_path"] = b"S1/motion/mic_0001.mrc"
    a["location/micrograph_shape"] = (3710, 3838)
    a["location/center_x_frac"] = rng.uniform(0, 1, n)
    a["location/center_y_frac"] = rng.uniform(0, 1, n)
    return a


def test_pose_convention_matches_transposed_rodrigues(rng: np.random.Generator) -> None:
    """RELION A(rot, tilt, psi) == expmap(pose).T: the cryoSPARC pose is the inverse rotation."""
    pose = rng.uniform(-2, 2, (200, 3))
    euler = cs_pose_to_euler(pose)
    a = euler_to_matrix(euler[:, 0], euler[:, 1], euler[:, 2])
    np.testing.assert_allclose(a, np.swapaxes(rotvec_to_matrix(pose), 1, 2), atol=1e-12)
    # an in-plane rotation by theta about z is psi = theta (the 2D pose convention)
    e = cs_pose_to_euler(np.array([[0.0, 0.0, 0.3]]))
    np.testing.assert_allclose(e[0, 0] + e[0, 2], np.rad2deg(0.3), atol=1e-12)
    assert e[0, 1] == 0.0


def test_euler_to_pose_to_euler_exact_float64(rng: np.random.Generator) -> None:
    mats = random_rotations(500, rng)
    from cryoset.geometry import matrix_to_euler

    euler = matrix_to_euler(mats)
    back = cs_pose_to_euler(euler_to_cs_pose(euler))
    np.testing.assert_allclose(euler_to_matrix(*back.T), mats, atol=1e-12)
    np.testing.assert_allclose(back, euler, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.floats(-180, 180), st.floats(1, 179), st.floats(-180, 180))
def test_property_euler_pose_round_trip(rot: float, tilt: float, psi: float) -> None:
    back = cs_pose_to_euler(euler_to_cs_pose(np.array([[rot, tilt, psi]])))[0]
    np.testing.assert_allclose(euler_to_matrix(*back), euler_to_matrix(rot, tilt, psi), atol=1e-12)


def _assert_fields_kept_plus_cryosparc_defaults(a: np.ndarray, back: np.ndarray) -> None:
    """Every field of ``a`` is written back; the only additions are the fields cryoSPARC always
    writes, with the same dtypes as in the shared cryoSPARC files."""
    names, got = set(a.dtype.names or ()), set(back.dtype.names or ())
    assert names <= got
    align = next((g for g in ("alignments3D", "alignments2D") if f"{g}/pose" in names), None)
    allowed = {"blob/import_sig"} | {
        (f"{align}/" if group == "alignments" else f"{group}/") + field
        for group, fields in CS_DEFAULT_FIELDS.items() for field, *_ in fields}
    assert got - names <= allowed, got - names - allowed
    for name in got - names:
        if name in ALWAYS_WRITTEN_DTYPES:
            assert back.dtype[name] == ALWAYS_WRITTEN_DTYPES[name], name


def test_synthetic_cs_maps_to_canonical_truth(rng: np.random.Generator) -> None:
    a = _synthetic(50, rng)
    t = cs_to_table(a)
    f64 = lambda name: a[name].astype(np.float64)  # noqa: E731
    np.testing.assert_array_equal(t["defocus_u_a"], f64("ctf/df1_A"))
    np.testing.assert_array_equal(t["defocus_angle_deg"], np.rad2deg(f64("ctf/df_angle_rad")))
    np.testing.assert_array_equal(t["phase_shift_deg"], np.rad2deg(f64("ctf/phase_shift_rad")))
    np.testing.assert_array_equal(t["ctf_bfactor_a2"], f64("ctf/bfactor"))
    np.testing.assert_array_equal(t["shift_x_a"], f64("alignments3D/shift")[:, 0] * 1.25)
    np.testing.assert_array_equal(t["shift_y_a"], f64("alignments3D/shift")[:, 1] * 1.25)
    np.testing.assert_array_equal(t["class_number"], a["alignments3D/class"] + 1)
    np.testing.assert_array_equal(t["random_subset"], a["alignments3D/split"] + 1)
    np.testing.assert_array_equal(t["optics_group"], a["ctf/exp_group_id"] + 1)
    np.testing.assert_array_equal(t["image_index"], np.arange(50))
    assert set(t["image_path"]) == {"J1/extract/stack.mrc"}
    assert set(t["micrograph"]) == {"mic_0001.mrc"}
    assert (t["image_size_px"] == 128).all()
    # micrograph_shape is (rows, columns): x scales with 3838, y with 3710
    np.testing.assert_array_equal(t["x_px"], f64("location/center_x_frac") * 3838)
    np.testing.assert_array_equal(t["y_px"], f64("location/center_y_frac") * 3710)


@pytest.mark.parametrize("align", ["alignments3D", "alignments2D"])
def test_cs_table_cs_round_trip_is_exact(rng: np.random.Generator, align: str, tmp_path: Path) -> None:
    a = _synthetic(40, rng, align)
    back = read_cs(write_cs(tmp_path / "x.cs", table_to_cs(cs_to_table(a))))
    _assert_fields_kept_plus_cryosparc_defaults(a, back)
    for name in a.dtype.names or ():
        if name == f"{align}/pose" and align == "alignments3D":
            # pose goes through Euler angles: same rotation, float32 precision
            d = angular_distance_deg(rotvec_to_matrix(back[name].astype(float)),
                                     rotvec_to_matrix(a[name].astype(float)))
            assert d.max() < 1e-3
        elif name == f"{align}/pose":
            np.testing.assert_allclose(np.mod(back[name] - a[name] + np.pi, 2 * np.pi) - np.pi,
                                       0, atol=1e-6)
        else:
            np.testing.assert_array_equal(back[name], a[name], err_msg=name)


def test_read_cs_refuses_non_cs_files(tmp_path: Path) -> None:
    text = tmp_path / "a.cs"
    text.write_text("data_\n")
    with pytest.raises(InputError, match="no numpy"):
        read_cs(text)
    plain = tmp_path / "b.cs"
    with open(plain, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(InputError, match="without named fields"):
        read_cs(plain)
    obj = tmp_path / "c.cs"
    with open(obj, "wb") as fh:
        np.save(fh, np.array([(1, {"x": 1})], dtype=[("uid", "<u8"), ("o", "O")]), allow_pickle=True)
    with pytest.raises(InputError, match="unpickling"):
        read_cs(obj)
    trunc = tmp_path / "d.cs"
    src = tmp_path / "full.cs"
    write_cs(src, np.zeros(100, dtype=[("uid", "<u8"), ("blob/idx", "<u4")]))
    trunc.write_bytes(src.read_bytes()[:300])
    with pytest.raises(InputError):
        read_cs(trunc)


def test_missing_fields_are_named(rng: np.random.Generator, tmp_path: Path) -> None:
    a = _synthetic(5, rng)
    keep = [n for n in a.dtype.names or () if n not in ("alignments3D/shift", "ctf/df2_A")]
    path = write_cs(tmp_path / "m.cs", a[keep].copy())
    with pytest.raises(InputError, match=r"ctf/df2_A.*alignments3D/shift|alignments3D/shift.*ctf/df2_A"):
        read_particles(path)
    t = read_particles(path, permissive=True).table
    assert "defocus_u_a" not in t.columns and "rot_deg" not in t.columns
    assert "ctf/df1_A" in t.columns  # incomplete groups are kept under their source names
    none = write_cs(tmp_path / "n.cs", np.zeros(2, dtype=[("uid", "<u8"), ("micrograph_blob/path", "S4")]))
    with pytest.raises(InputError, match="not a particle table"):
        read_particles(none)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", CS_FILES)
def test_real_cs_files(name: str, tmp_path: Path) -> None:
    path = require_shared_data("star", *name.split("/"))
    a = read_cs(path)
    t = read_particles(path).table
    assert len(t) == len(a)
    np.testing.assert_array_equal(t["defocus_u_a"], a["ctf/df1_A"].astype(np.float64))
    np.testing.assert_array_equal(t["pixel_size_a"], a["blob/psize_A"].astype(np.float64))
    for align in ("alignments3D", "alignments2D"):
        if f"{align}/pose" in (a.dtype.names or ()):
            np.testing.assert_allclose(
                t["shift_x_a"], a[f"{align}/shift"][:, 0].astype(float) * a[f"{align}/psize_A"],
                rtol=1e-12)
    if "alignments3D/pose" in (a.dtype.names or ()):
        m = euler_to_matrix(t["rot_deg"], t["tilt_deg"], t["psi_deg"])
        np.testing.assert_allclose(
            m, np.swapaxes(rotvec_to_matrix(a["alignments3D/pose"].astype(float)), 1, 2), atol=1e-12)
    back = read_cs(write_cs(tmp_path / "rt.cs", table_to_cs(t)))
    _assert_fields_kept_plus_cryosparc_defaults(a, back)
    for field in a.dtype.names or ():
        if field == "alignments3D/pose":
            d = angular_distance_deg(rotvec_to_matrix(back[field].astype(float)),
                                     rotvec_to_matrix(a[field].astype(float)))
            assert d.max() < 1e-3
        elif field == "alignments2D/pose":
            np.testing.assert_allclose(back[field], a[field], atol=1e-6)
        else:
            np.testing.assert_array_equal(back[field], a[field], err_msg=field)
