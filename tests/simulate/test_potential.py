"""Potentials of atomic models: integrals, analytic shapes, 2D/3D consistency, geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoset.geometry import euler_to_matrix, random_rotations
from cryoset.simulate.potential import (
    center_of_mass,
    potential_volume,
    project_atoms,
    project_atoms_batch,
)
from cryoset.simulate.scattering import PENG_1996, POTENTIAL_PREFACTOR_V_A2, scattering_factor

K = POTENTIAL_PREFACTOR_V_A2


def _cluster(rng: np.random.Generator, n: int = 40) -> tuple[np.ndarray, list[str], np.ndarray]:
    xyz = rng.normal(0.0, 4.0, (n, 3))
    elements = list(rng.choice(["C", "N", "O", "S", "H"], n))
    b = rng.uniform(20.0, 40.0, n)
    return xyz, elements, b


def test_single_atom_integral_and_peak() -> None:
    voxel, n = 0.5, 41
    origin = (-10.0, -10.0, -10.0)  # voxel 20 sits at 0 Å
    vol = potential_volume([[0.0, 0.0, 0.0]], ["O"], [15.0], (n, n, n), voxel, origin,
                           pixel_integration="none", cutoff_sigma=5.0)
    assert vol.dtype == np.float32 and vol.shape == (n, n, n)
    integral = vol.sum(dtype=np.float64) * voxel**3
    assert integral == pytest.approx(K * float(scattering_factor("O", 0.0)), rel=1e-3)
    a, b = (np.asarray(x) for x in PENG_1996["O"])
    beta = b + 15.0
    peak = K * np.sum(a * (4 * np.pi / beta) ** 1.5)
    assert vol[20, 20, 20] == pytest.approx(peak, rel=1e-5)
    # radial profile 2 Å away along x (voxel offset 4)
    r = 2.0
    expected = K * np.sum(a * (4 * np.pi / beta) ** 1.5 * np.exp(-4 * np.pi**2 * r**2 / beta))
    assert vol[20, 20, 24] == pytest.approx(expected, rel=1e-5)
    assert vol[24, 20, 20] == pytest.approx(expected, rel=1e-5)


def test_pixel_integration_modes() -> None:
    total = K * float(scattering_factor("C", 0.0))

    def image(b: float, mode: str) -> np.ndarray:
        return project_atoms([[0.0, 0.0, 0.0]], ["C"], [b], np.eye(3), (31, 31), 1.0,
                             pixel_integration=mode)  # type: ignore[arg-type]

    # Realistic B: sampled sums are close to the integral (exact for "box"); the blur lowers the peak.
    for mode, tol in (("gaussian", 1e-2), ("box", 2e-3), ("none", 1e-2)):
        assert image(20.0, mode).sum(dtype=np.float64) == pytest.approx(total, rel=tol)
    assert image(20.0, "gaussian")[15, 15] < image(20.0, "none")[15, 15]
    # B = 0 (sharp core): only the exact box average keeps the sampled sum equal to the integral.
    assert image(0.0, "box").sum(dtype=np.float64) == pytest.approx(total, rel=2e-3)
    assert image(0.0, "gaussian").sum(dtype=np.float64) > 1.05 * total
    vol = potential_volume([[0.0, 0.0, 0.0]], ["C"], [0.0], (15, 15, 15), 1.0, (-7.0, -7.0, -7.0),
                           pixel_integration="box")
    assert vol.sum(dtype=np.float64) == pytest.approx(total, rel=2e-3)
    with pytest.raises(ValueError, match="pixel_integration"):
        image(0.0, "area")


def test_projection_is_line_integral_of_volume(rng: np.random.Generator) -> None:
    xyz, elements, b = _cluster(rng)
    voxel, n = 1.0, 48
    c = n // 2
    center = center_of_mass(xyz, elements)
    origin = tuple(center[::-1] - c * voxel)  # model centre on voxel [c, c, c]
    vol = potential_volume(xyz, elements, b, (n, n, n), voxel, origin)
    img = project_atoms(xyz, elements, b, np.eye(3), (n, n), voxel)
    summed = vol.sum(axis=0, dtype=np.float64) * voxel
    np.testing.assert_allclose(img, summed, rtol=0, atol=2e-3 * img.max())


def test_rotation_convention_matches_geometry(rng: np.random.Generator) -> None:
    xyz, elements, b = _cluster(rng)
    center = center_of_mass(xyz, elements)
    a = random_rotations(1, rng)[0]
    rotated = (xyz - center) @ a.T  # p_image = A @ p_ref
    img = project_atoms(xyz, elements, b, a, (40, 40), 1.2)
    ref = project_atoms(rotated, elements, b, np.eye(3), (40, 40), 1.2, center_xyz_a=np.zeros(3))
    np.testing.assert_allclose(img, ref, rtol=1e-5, atol=1e-5 * float(ref.max()))


def test_tilt_90_sends_plus_z_to_minus_x_and_shift_moves_image() -> None:
    # RELION: A = euler(0, 90, 0) maps the reference +z axis to image -x.
    a = euler_to_matrix(0.0, 90.0, 0.0)
    xyz = np.array([[0.0, 0.0, 10.0]])
    img = project_atoms(xyz, ["S"], [10.0], a, (64, 64), 1.0, center_xyz_a=np.zeros(3))
    assert np.unravel_index(int(img.argmax()), img.shape) == (32, 22)
    moved = project_atoms(xyz, ["S"], [10.0], a, (64, 64), 1.0, center_xyz_a=np.zeros(3),
                          shift_xy_a=(5.0, -3.0))
    assert np.unravel_index(int(moved.argmax()), moved.shape) == (29, 27)
    np.testing.assert_allclose(np.roll(img, (-3, 5), axis=(0, 1)), moved, atol=1e-6)


def test_default_centre_is_centre_of_mass() -> None:
    xyz = np.array([[-6.0, 0.0, 0.0], [6.0, 0.0, 0.0]])
    com = center_of_mass(xyz, ["H", "S"])
    assert com[0] == pytest.approx((-6 * 1.008 + 6 * 32.06) / (1.008 + 32.06))
    a = project_atoms(xyz, ["H", "S"], [20.0, 20.0], np.eye(3), (48, 48), 1.0)
    b = project_atoms(xyz, ["H", "S"], [20.0, 20.0], np.eye(3), (48, 48), 1.0, center_xyz_a=com)
    np.testing.assert_array_equal(a, b)


def test_deterministic_and_float32(rng: np.random.Generator) -> None:
    xyz, elements, b = _cluster(rng)
    one = potential_volume(xyz, elements, b, (20, 22, 24), 1.5, (-15.0, -16.0, -18.0))
    two = potential_volume(xyz, elements, b, (20, 22, 24), 1.5, (-15.0, -16.0, -18.0))
    assert one.dtype == np.float32 and one.shape == (20, 22, 24)
    np.testing.assert_array_equal(one, two)


def test_atoms_outside_grid_are_ignored() -> None:
    vol = potential_volume([[100.0, 0.0, 0.0]], ["C"], [0.0], (8, 8, 8), 1.0)
    assert not vol.any()


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="'Xx'"):
        potential_volume([[0.0, 0.0, 0.0]], ["Xx"], [0.0], (4, 4, 4), 1.0)
    vol = potential_volume([[0.0, 0.0, 0.0]], ["Xx"], [0.0], (4, 4, 4), 1.0, permissive=True)
    ref = potential_volume([[0.0, 0.0, 0.0]], ["C"], [0.0], (4, 4, 4), 1.0)
    np.testing.assert_array_equal(vol, ref)
    with pytest.raises(ValueError, match="shape"):
        project_atoms(np.zeros((2, 2)), ["C", "C"], 0.0, np.eye(3), (4, 4), 1.0)
    with pytest.raises(ValueError, match="elements"):
        project_atoms(np.zeros((2, 3)), ["C"], 0.0, np.eye(3), (4, 4), 1.0)
    with pytest.raises(ValueError, match="B-factor"):
        project_atoms(np.zeros((1, 3)), ["C"], [-1000.0], np.eye(3), (4, 4), 1.0)
    with pytest.raises(ValueError, match="pixel_size_a"):
        project_atoms(np.zeros((1, 3)), ["C"], 0.0, np.eye(3), (4, 4), 0.0)
    with pytest.raises(ValueError, match="rotation"):
        project_atoms(np.zeros((1, 3)), ["C"], 0.0, np.eye(2), (4, 4), 1.0)
    assert math.isfinite(float(project_atoms(np.zeros((1, 3)), ["C"], 0.0, np.eye(3), (4, 4), 1.0).sum()))


def test_batch_equals_single_projections(rng: np.random.Generator) -> None:
    xyz, elements, b = _cluster(rng)
    rots = random_rotations(5, rng)
    shifts = rng.uniform(-4.0, 4.0, (5, 2))
    batch = project_atoms_batch(xyz, elements, b, rots, (36, 40), 1.1, shifts_xy_a=shifts, batch=2)
    assert batch.shape == (5, 36, 40) and batch.dtype == np.float32
    for k in range(5):
        single = project_atoms(xyz, elements, b, rots[k], (36, 40), 1.1, shift_xy_a=tuple(shifts[k]))
        np.testing.assert_array_equal(batch[k], single)
    with pytest.raises(ValueError, match="rotations"):
        project_atoms_batch(xyz, elements, b, np.eye(3), (8, 8), 1.0)
