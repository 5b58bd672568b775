"""Rotation conventions: RELION ZYZ Euler angles, rotation vectors, uniform sampling."""

from __future__ import annotations

import numpy as np
import pytest

from cryoset.geometry import (
    angular_distance_deg,
    euler_to_matrix,
    matrix_to_euler,
    matrix_to_quaternion,
    matrix_to_rotvec,
    quaternion_to_matrix,
    random_rotations,
    rotvec_to_matrix,
)


def _rz(deg: float) -> np.ndarray:
    # passive rotation about z: frame rotates by +deg
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])


def _ry(deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])


def test_euler_is_relion_zyz_composition() -> None:
    rot, tilt, psi = 30.0, 50.0, -70.0
    expected = _rz(psi) @ _ry(tilt) @ _rz(rot)
    np.testing.assert_allclose(euler_to_matrix(rot, tilt, psi), expected, atol=1e-12)


def test_euler_relion_reference_values() -> None:
    # tilt 90 about y with rot = psi = 0 sends the reference z axis to the image -x axis
    m = euler_to_matrix(0.0, 90.0, 0.0)
    np.testing.assert_allclose(m @ np.array([0.0, 0.0, 1.0]), [-1.0, 0.0, 0.0], atol=1e-12)


def test_euler_round_trip(rng: np.random.Generator) -> None:
    mats = random_rotations(500, rng)
    angles = matrix_to_euler(mats)
    assert np.all((angles[:, 1] >= 0) & (angles[:, 1] <= 180))
    np.testing.assert_allclose(euler_to_matrix(*angles.T), mats, atol=1e-9)


@pytest.mark.parametrize("tilt", [0.0, 180.0])
def test_euler_gimbal_lock(tilt: float) -> None:
    m = euler_to_matrix(40.0, tilt, 25.0)
    back = matrix_to_euler(m)
    assert back[0] == 0.0
    np.testing.assert_allclose(euler_to_matrix(*back), m, atol=1e-9)


def test_rotvec_round_trip_and_angle(rng: np.random.Generator) -> None:
    mats = random_rotations(300, rng)
    rv = matrix_to_rotvec(mats)
    np.testing.assert_allclose(rotvec_to_matrix(rv), mats, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(rv, axis=-1), angular_distance_deg(np.eye(3), mats) * np.pi / 180, atol=1e-9)


def test_rotvec_zero_and_pi() -> None:
    np.testing.assert_allclose(rotvec_to_matrix(np.zeros(3)), np.eye(3))
    m = rotvec_to_matrix([0.0, 0.0, np.pi])
    np.testing.assert_allclose(m, np.diag([-1.0, -1.0, 1.0]), atol=1e-12)
    np.testing.assert_allclose(rotvec_to_matrix(matrix_to_rotvec(m)), m, atol=1e-9)


def test_quaternion_round_trip(rng: np.random.Generator) -> None:
    mats = random_rotations(100, rng)
    np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(mats)), mats, atol=1e-9)


def test_random_rotations_are_rotations_and_uniform(rng: np.random.Generator) -> None:
    mats = random_rotations(20000, rng)
    np.testing.assert_allclose(mats @ np.swapaxes(mats, 1, 2), np.broadcast_to(np.eye(3), mats.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(mats), 1.0, atol=1e-9)
    # uniform on SO(3): the image of a fixed axis is uniform on the sphere (mean ~ 0, cos(tilt) uniform)
    z = mats[:, 2, :]
    assert np.all(np.abs(z.mean(axis=0)) < 0.02)
    hist, _ = np.histogram(z[:, 2], bins=10, range=(-1, 1))
    assert hist.min() > 0.9 * len(z) / 10
    # rotation angle density is (1 - cos θ)/π on [0, π]: mean angle = π/2 + 2/π
    ang = np.deg2rad(angular_distance_deg(np.eye(3), mats))
    assert abs(ang.mean() - (np.pi / 2 + 2 / np.pi)) < 0.02


def test_bad_shapes_name_parameter() -> None:
    with pytest.raises(ValueError, match="matrix"):
        matrix_to_euler(np.eye(2))
    with pytest.raises(ValueError, match="rotvec"):
        rotvec_to_matrix([1.0, 2.0])
    with pytest.raises(ValueError, match="n"):
        random_rotations(-1, np.random.default_rng(0))
