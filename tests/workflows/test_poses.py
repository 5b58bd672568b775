"""``cryoset poses export``: refined poses → cryoSPARC ``.cs``, CryoVirusDB CSV, particle store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.geometry import euler_to_matrix
from cryoset.io.cryosparc import read_cs
from cryoset.io.cryovirusdb import read_cryovirusdb
from cryoset.io.particles import cs_pose_to_euler, euler_to_cs_pose, read_particles, write_particles
from cryoset.store import ParticleStore
from cryoset.workflows.poses import (
    ANGULAR_ERROR_FIELD,
    ANGULAR_ERROR_LABEL,
    MAX_PROB_FIELD,
    export_poses,
)

N = 24
NY, NX = 400, 500
PIXEL_A = 1.7


def _angle_diff_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((a - b + 180.0) % 360.0 - 180.0)


def _table(rng: np.random.Generator) -> pd.DataFrame:
    rot = rng.uniform(-180, 180, N)
    tilt = rng.uniform(5, 175, N)  # away from the gimbal lock, where rot is set to 0
    psi = rng.uniform(-180, 180, N)
    return pd.DataFrame({
        "image_path": "Extract/job001/stack.mrcs", "image_index": np.arange(N, dtype=np.int64),
        "micrograph": [f"mic_{i % 3}.mrc" for i in range(N)],
        "x_px": rng.uniform(40, NX - 40, N).round(2), "y_px": rng.uniform(40, NY - 40, N).round(2),
        "pixel_size_a": PIXEL_A, "image_size_px": 32, "voltage_kv": 300.0, "cs_mm": 2.7,
        "amplitude_contrast": 0.1, "defocus_u_a": rng.uniform(8000, 20000, N),
        "defocus_v_a": rng.uniform(8000, 20000, N), "defocus_angle_deg": rng.uniform(0, 180, N),
        "optics_group": 1, "rot_deg": rot, "tilt_deg": tilt, "psi_deg": psi,
        "shift_x_a": rng.uniform(-5, 5, N), "shift_y_a": rng.uniform(-5, 5, N),
        "random_subset": np.arange(N) % 2 + 1, "max_prob": rng.uniform(0.1, 1.0, N),
        ANGULAR_ERROR_LABEL: rng.uniform(0.5, 8.0, N),
    })


@pytest.fixture
def star(tmp_path: Path) -> Path:
    return write_particles(tmp_path / "run_data.star", _table(np.random.default_rng(7)))


def test_euler_cs_pose_conversion_is_exact_both_ways() -> None:
    rng = np.random.default_rng(3)
    angles = np.stack([rng.uniform(-180, 180, 500), rng.uniform(1, 179, 500), rng.uniform(-180, 180, 500)], 1)
    pose = euler_to_cs_pose(angles)
    back = cs_pose_to_euler(pose)
    assert _angle_diff_deg(back, angles).max() < 1e-6
    # the stated convention: euler_to_matrix(rot, tilt, psi) = Rodrigues(r)ᵀ
    from cryoset.geometry import rotvec_to_matrix

    mats = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    np.testing.assert_allclose(np.swapaxes(rotvec_to_matrix(pose), -1, -2), mats, atol=1e-12)


def test_cs_carries_the_star_poses(star: Path, tmp_path: Path) -> None:
    summary = export_poses(star, tmp_path / "out", micrograph_heights={f"mic_{i}.mrc": NY for i in range(3)})
    t = read_particles(star).table
    arr = read_cs(tmp_path / "out" / "particles.cs")
    assert len(arr) == N and summary["particles"] == N
    # the file holds cryoSPARC's float32: the pose is the float32 rounding of the exact rotation vector
    exact = euler_to_cs_pose(t[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy())
    np.testing.assert_array_equal(arr["alignments3D/pose"], exact.astype(np.float32))
    np.testing.assert_array_equal(arr["alignments3D/split"], t["random_subset"].to_numpy() - 1)
    np.testing.assert_allclose(arr["alignments3D/shift"][:, 0] * arr["alignments3D/psize_A"],
                               t["shift_x_a"], atol=1e-5)
    np.testing.assert_allclose(arr["alignments3D/shift"][:, 1] * arr["alignments3D/psize_A"],
                               t["shift_y_a"], atol=1e-5)
    np.testing.assert_array_equal(arr[ANGULAR_ERROR_FIELD], t[ANGULAR_ERROR_LABEL].to_numpy(np.float32))
    np.testing.assert_array_equal(arr[MAX_PROB_FIELD], t["max_prob"].to_numpy(np.float32))
    # read back (float32 rotation vector → Euler): to float32 precision (|r| ≤ π: 2.4e-7 rad ≈ 1.4e-5°)
    back = read_particles(tmp_path / "out" / "particles.cs").table
    for c in ("rot_deg", "tilt_deg", "psi_deg"):
        assert _angle_diff_deg(back[c].to_numpy(), t[c].to_numpy()).max() < 1e-4
    # and the rotations themselves agree to float32 precision
    m0 = euler_to_matrix(t["rot_deg"].to_numpy(), t["tilt_deg"].to_numpy(), t["psi_deg"].to_numpy())
    m1 = euler_to_matrix(back["rot_deg"].to_numpy(), back["tilt_deg"].to_numpy(), back["psi_deg"].to_numpy())
    assert np.abs(m0 - m1).max() < 1e-6
    np.testing.assert_array_equal(back["random_subset"], t["random_subset"])


def test_cryovirusdb_csv_has_the_layouts_pose_columns(star: Path, tmp_path: Path) -> None:
    summary = export_poses(star, tmp_path / "out", micrograph_heights={f"mic_{i}.mrc": NY for i in range(3)})
    path = Path(summary["cryovirusdb_csv"])
    raw = pd.read_csv(path)
    assert "Angle-Psi" in raw.columns and "Origin X (Ang)" in raw.columns
    assert not {"Angle-Rot", "Angle-Tilt"} & set(raw.columns)  # not in the published layout
    t = read_particles(star).table
    np.testing.assert_allclose(raw["Angle-Psi"], t["psi_deg"], atol=1e-9)
    np.testing.assert_allclose(raw["Origin X (Ang)"], t["shift_x_a"], atol=1e-9)
    np.testing.assert_allclose(raw["Origin Y (Ang)"], t["shift_y_a"], atol=1e-9)
    # the y axis is flipped per micrograph: read back with the flip, y is the STAR's
    back = read_cryovirusdb(path, micrograph_shape=(NY, NX))
    np.testing.assert_allclose(back["y_px"], t["y_px"], atol=1e-9)


def test_csv_not_written_without_micrograph_heights(star: Path, tmp_path: Path) -> None:
    summary = export_poses(star, tmp_path / "out")
    assert summary["cryovirusdb_csv"] is None and "no height" in summary["cryovirusdb_csv_note"]
    assert (tmp_path / "out" / "particles.cs").is_file()


def _store(tmp_path: Path, star: Path) -> tuple[Path, np.ndarray]:
    """A store experiment holding the STAR's particles in another order (and 6 more)."""
    t = read_particles(star).table
    rng = np.random.default_rng(11)
    extra = pd.DataFrame({"micrograph": "mic_9.mrc", "x_px": rng.uniform(0, 100, 6), "y_px": rng.uniform(0, 100, 6)})
    ann = pd.concat([t[["micrograph", "x_px", "y_px"]], extra], ignore_index=True)
    order = rng.permutation(len(ann))
    ann = ann.iloc[order].reset_index(drop=True)
    root = tmp_path / "store"
    s = ParticleStore.create(root, chunk_particles=16)
    s.add_experiment("EXP-1", rng.normal(size=(len(ann), 8, 8)).astype(np.float32), ann)
    where = np.argsort(order)[:N]  # stored row of STAR particle i
    return root, where


def test_store_poses_equal_the_star_by_particle(star: Path, tmp_path: Path) -> None:
    root, where = _store(tmp_path, star)
    summary = export_poses(star, tmp_path / "out", store=root, experiment_id="EXP-1")
    assert summary["stored_poses"] == N
    t = read_particles(star).table
    got = ParticleStore.open(root).query(
        "SELECT p.particle_index, p.micrograph, q.* EXCLUDE (experiment_id, particle_index) "
        "FROM particles p JOIN poses q USING (experiment_id, particle_index) ORDER BY p.particle_index")
    assert len(got) == N
    got = got.set_index("particle_index").loc[where].reset_index()
    for c in ("rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a", "max_prob"):
        np.testing.assert_array_equal(got[c].to_numpy(), t[c].to_numpy(np.float64))
    np.testing.assert_array_equal(got["alignment_error_deg"], t[ANGULAR_ERROR_LABEL].to_numpy(np.float64))
    np.testing.assert_array_equal(got["random_subset"], t["random_subset"])
    np.testing.assert_array_equal(got["micrograph"], t["micrograph"])
    # a second export of a subset replaces those particles only
    sub = read_particles(star).table.iloc[:5].copy()
    sub["rot_deg"] = 1.25
    star2 = write_particles(tmp_path / "sub.star", sub)
    export_poses(star2, tmp_path / "out2", store=root, experiment_id="EXP-1")
    poses = ParticleStore.open(root).read_poses().set_index("particle_index")
    assert len(poses) == N
    assert (poses.loc[where[:5], "rot_deg"] == 1.25).all()
    np.testing.assert_array_equal(poses.loc[where[5:], "rot_deg"], t["rot_deg"].to_numpy()[5:])


def test_bad_inputs_are_input_errors(star: Path, tmp_path: Path) -> None:
    root, _ = _store(tmp_path, star)
    t = read_particles(star).table
    no_pose = write_particles(tmp_path / "np.star", t.drop(columns=["rot_deg", "tilt_deg"]))
    with pytest.raises(InputError, match="no 3D poses"):
        export_poses(no_pose, tmp_path / "o1")
    moved = t.copy()
    moved["x_px"] = moved["x_px"].to_numpy(np.float64) + np.where(np.arange(N) == 3, 2.0, 0.0)
    with pytest.raises(InputError, match="no stored particle within"):
        export_poses(write_particles(tmp_path / "mv.star", moved), tmp_path / "o2", store=root, experiment_id="EXP-1")
    with pytest.raises(InputError, match="together"):
        export_poses(star, tmp_path / "o3", store=root)
    with pytest.raises(InputError, match="no experiment"):
        export_poses(star, tmp_path / "o4", store=root, experiment_id="NOPE")
    assert not (root / "poses.parquet").exists()
