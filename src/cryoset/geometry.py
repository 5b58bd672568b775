"""Rotations: RELION Euler angles, rotation matrices, rotation vectors, uniform sampling.

Conventions (see docs/conventions.md)
-------------------------------------
* Euler angles are RELION's ``(rot, tilt, psi)`` in degrees: ZYZ, the matrix
  ``A = Rz(psi) @ Ry(tilt) @ Rz(rot)`` built from *passive* (frame) rotations, exactly
  RELION's ``Euler_angles2matrix``.
* ``A`` maps coordinates of the reference (map) frame to the particle (image) frame:
  ``p_image = A @ p_ref`` with vectors in ``(x, y, z)`` order. The projection image is
  ``P(x, y) = ∫ V(A.T @ (x, y, z)) dz`` and the central slice of the image's Fourier
  transform samples the volume's transform at ``A.T @ (kx, ky, 0)``.
* Rotation vectors (axis × angle in radians, cryoSPARC's pose) map to matrices with the
  Rodrigues formula ``R = exp([r]×)``.

All functions accept leading batch dimensions.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

_EPS = 16 * np.finfo(np.float32).eps


def _as_matrices(matrix: ArrayLike) -> NDArray[np.float64]:
    """``matrix`` as float64, shape (..., 3, 3); ValueError for any other shape."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"matrix: expected shape (..., 3, 3), got {m.shape}")
    return m


def euler_to_matrix(rot_deg: ArrayLike, tilt_deg: ArrayLike, psi_deg: ArrayLike) -> NDArray[np.float64]:
    """RELION ZYZ Euler angles (degrees) to rotation matrices.

    Parameters
    ----------
    rot_deg, tilt_deg, psi_deg
        Angles in degrees, broadcastable to a common shape ``(...)``.

    Returns
    -------
    ndarray, shape (..., 3, 3)

    Examples
    --------
    >>> euler_to_matrix(0.0, 0.0, 0.0) + 0.0  # + 0.0 writes the -0.0 entries as 0.0
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    """
    a, b, g = np.broadcast_arrays(
        np.deg2rad(np.asarray(rot_deg, dtype=np.float64)),
        np.deg2rad(np.asarray(tilt_deg, dtype=np.float64)),
        np.deg2rad(np.asarray(psi_deg, dtype=np.float64)),
    )
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    m = np.empty((*a.shape, 3, 3), dtype=np.float64)
    m[..., 0, 0] = cg * cc - sg * sa
    m[..., 0, 1] = cg * cs + sg * ca
    m[..., 0, 2] = -cg * sb
    m[..., 1, 0] = -sg * cc - cg * sa
    m[..., 1, 1] = -sg * cs + cg * ca
    m[..., 1, 2] = sg * sb
    m[..., 2, 0] = sc
    m[..., 2, 1] = ss
    m[..., 2, 2] = cb
    return m


def matrix_to_euler(matrix: ArrayLike) -> NDArray[np.float64]:
    """Rotation matrices to RELION ZYZ Euler angles in degrees.

    Parameters
    ----------
    matrix : array, shape (..., 3, 3)

    Returns
    -------
    ndarray, shape (..., 3)
        ``(rot, tilt, psi)`` in degrees, tilt in [0, 180], rot and psi in (-180, 180].
        In the gimbal-lock case (tilt 0 or 180) rot is set to 0.
    """
    m = _as_matrices(matrix)
    abs_sb = np.hypot(m[..., 0, 2], m[..., 1, 2])
    regular = abs_sb > _EPS
    gamma = np.arctan2(m[..., 1, 2], -m[..., 0, 2])
    alpha = np.arctan2(m[..., 2, 1], m[..., 2, 0])
    beta = np.arctan2(abs_sb, m[..., 2, 2])
    up = m[..., 2, 2] > 0
    gamma_lock = np.where(up, np.arctan2(-m[..., 1, 0], m[..., 0, 0]),
                          np.arctan2(m[..., 1, 0], -m[..., 0, 0]))
    alpha = np.where(regular, alpha, 0.0)
    beta = np.where(regular, beta, np.where(up, 0.0, np.pi))
    gamma = np.where(regular, gamma, gamma_lock)
    return np.rad2deg(np.stack([alpha, beta, gamma], axis=-1))


def rotvec_to_matrix(rotvec: ArrayLike) -> NDArray[np.float64]:
    """Rotation vectors (axis × angle, radians) to matrices (Rodrigues' formula).

    Parameters
    ----------
    rotvec : array, shape (..., 3)

    Returns
    -------
    ndarray, shape (..., 3, 3)
    """
    r = np.asarray(rotvec, dtype=np.float64)
    if r.shape[-1] != 3:
        raise ValueError(f"rotvec: expected shape (..., 3), got {r.shape}")
    theta = np.linalg.norm(r, axis=-1)
    small = theta < 1e-12
    safe = np.where(small, 1.0, theta)
    k = r / safe[..., None]
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    kmat = np.stack([
        np.stack([zero, -kz, ky], axis=-1),
        np.stack([kz, zero, -kx], axis=-1),
        np.stack([-ky, kx, zero], axis=-1),
    ], axis=-2)
    s = np.where(small, 0.0, np.sin(theta))[..., None, None]
    c = np.where(small, 0.0, 1.0 - np.cos(theta))[..., None, None]
    eye = np.broadcast_to(np.eye(3), kmat.shape)
    return eye + s * kmat + c * (kmat @ kmat)


def matrix_to_rotvec(matrix: ArrayLike) -> NDArray[np.float64]:
    """Rotation matrices to rotation vectors (axis × angle in radians, angle in [0, π]).

    Parameters
    ----------
    matrix : array, shape (..., 3, 3)

    Returns
    -------
    ndarray, shape (..., 3)
    """
    m = _as_matrices(matrix)
    q = matrix_to_quaternion(m)
    w = np.clip(q[..., 0], -1.0, 1.0)
    xyz = q[..., 1:]
    norm = np.linalg.norm(xyz, axis=-1)
    angle = 2.0 * np.arctan2(norm, w)
    scale = np.where(norm < 1e-12, 2.0, angle / np.where(norm < 1e-12, 1.0, norm))
    return xyz * scale[..., None]


def matrix_to_quaternion(matrix: ArrayLike) -> NDArray[np.float64]:
    """Rotation matrices to unit quaternions ``(w, x, y, z)`` with ``w >= 0``.

    Parameters
    ----------
    matrix : array, shape (..., 3, 3)

    Returns
    -------
    ndarray, shape (..., 4)
    """
    m = np.asarray(matrix, dtype=np.float64)
    # Choose, per matrix, the numerically largest of the four candidate components.
    tr = np.trace(m, axis1=-2, axis2=-1)
    cand = np.stack([tr, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], axis=-1)
    best = np.argmax(cand, axis=-1)
    q = np.empty((*m.shape[:-2], 4), dtype=np.float64)
    for i in range(4):
        sel = best == i
        if not np.any(sel):
            continue
        a = m[sel]
        if i == 0:
            s = np.sqrt(np.maximum(1.0 + np.trace(a, axis1=-2, axis2=-1), 0.0)) * 2
            qi = np.stack([0.25 * s, (a[:, 2, 1] - a[:, 1, 2]) / s,
                           (a[:, 0, 2] - a[:, 2, 0]) / s, (a[:, 1, 0] - a[:, 0, 1]) / s], axis=-1)
        elif i == 1:
            s = np.sqrt(np.maximum(1.0 + a[:, 0, 0] - a[:, 1, 1] - a[:, 2, 2], 0.0)) * 2
            qi = np.stack([(a[:, 2, 1] - a[:, 1, 2]) / s, 0.25 * s,
                           (a[:, 0, 1] + a[:, 1, 0]) / s, (a[:, 0, 2] + a[:, 2, 0]) / s], axis=-1)
        elif i == 2:
            s = np.sqrt(np.maximum(1.0 + a[:, 1, 1] - a[:, 0, 0] - a[:, 2, 2], 0.0)) * 2
            qi = np.stack([(a[:, 0, 2] - a[:, 2, 0]) / s, (a[:, 0, 1] + a[:, 1, 0]) / s,
                           0.25 * s, (a[:, 1, 2] + a[:, 2, 1]) / s], axis=-1)
        else:
            s = np.sqrt(np.maximum(1.0 + a[:, 2, 2] - a[:, 0, 0] - a[:, 1, 1], 0.0)) * 2
            qi = np.stack([(a[:, 1, 0] - a[:, 0, 1]) / s, (a[:, 0, 2] + a[:, 2, 0]) / s,
                           (a[:, 1, 2] + a[:, 2, 1]) / s, 0.25 * s], axis=-1)
        q[sel] = qi
    q *= np.where(q[..., :1] < 0, -1.0, 1.0)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quaternion_to_matrix(quaternion: ArrayLike) -> NDArray[np.float64]:
    """Unit quaternions ``(w, x, y, z)`` (normalised here) to rotation matrices, shape (..., 3, 3)."""
    q = np.asarray(quaternion, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"quaternion: expected shape (..., 4), got {q.shape}")
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def random_rotations(n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """``n`` rotation matrices uniform on SO(3) (normalised Gaussian quaternions).

    Parameters
    ----------
    n
        Number of rotations (``n >= 0``).
    rng
        A seeded generator, e.g. ``np.random.default_rng(0)``.

    Returns
    -------
    ndarray, shape (n, 3, 3)
    """
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    q = rng.standard_normal((n, 4))
    return quaternion_to_matrix(q)


def angular_distance_deg(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Geodesic angle (degrees) between rotation matrices ``a`` and ``b`` (shapes (..., 3, 3))."""
    ma, mb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rel = np.swapaxes(ma, -1, -2) @ mb
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0)))
