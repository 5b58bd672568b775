"""Point-group symmetry operators for reconstruction: cyclic ``Cn`` and dihedral ``Dn``.

Conventions (RELION's): the ``n``-fold axis of ``Cn`` and ``Dn`` is ``z``; the 2-fold axes of
``Dn`` lie in the ``xy`` plane, one of them along ``x``. An operator ``R`` is a 3×3 rotation
acting on map-frame vectors ``(x, y, z)``; a map ``V`` has the symmetry when
``V(R p) = V(p)`` for every operator. ``C1`` is the identity alone.

A particle image taken in pose ``A`` (RELION matrix, ``A @ p_ref = p_image``) of a map with
the symmetry is also the image in pose ``A @ R`` for every operator ``R``, because the
projection samples ``V((A R)ᵀ x) = V(Rᵀ Aᵀ x) = V(Aᵀ x)``; symmetric reconstruction inserts
every image once per operator with those poses.
"""

from __future__ import annotations

import re

import numpy as np
from numpy.typing import NDArray

from cryoset.errors import InputError

_GROUP = re.compile(r"^([CD])(\d+)$")


def _rz(angle_rad: float) -> NDArray[np.float64]:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def parse_point_group(name: str) -> tuple[str, int]:
    """Split a point-group name (``"C4"``, ``"d2"``) into ``("C" | "D", n)``.

    Raises
    ------
    InputError
        For anything but ``Cn`` (n ≥ 1) or ``Dn`` (n ≥ 2).
    """
    m = _GROUP.match(name.strip().upper())
    if m is None or int(m.group(2)) < 1 or (m.group(1) == "D" and int(m.group(2)) < 2):
        raise InputError("--symmetry", f"expected a point group Cn (n >= 1) or Dn (n >= 2), got {name!r}")
    return m.group(1), int(m.group(2))


def symmetry_operators(name: str) -> NDArray[np.float64]:
    """The rotation matrices of a ``Cn`` or ``Dn`` point group.

    Parameters
    ----------
    name
        ``"C1"``, ``"C4"``, ``"D2"``… (case-insensitive).

    Returns
    -------
    ndarray, shape (order, 3, 3)
        Identity first; ``n`` operators for ``Cn``, ``2n`` for ``Dn``.

    Examples
    --------
    >>> symmetry_operators("D3").shape
    (6, 3, 3)
    """
    kind, n = parse_point_group(name)
    ops = [_rz(2.0 * np.pi * k / n) for k in range(n)]
    if kind == "D":
        flip = np.diag([1.0, -1.0, -1.0])  # 2-fold about x
        ops += [op @ flip for op in ops[:n]]
    return np.stack(ops)


def is_group(operators: NDArray[np.float64], atol: float = 1e-9) -> bool:
    """Whether a set of rotations is closed under products and inverses and holds the identity.

    Parameters
    ----------
    operators : array, shape (m, 3, 3)
    atol
        Tolerance on matrix entries.
    """
    ops = np.asarray(operators, dtype=np.float64)

    def member(mat: NDArray[np.float64]) -> bool:
        return bool(np.any(np.all(np.abs(ops - mat) <= atol, axis=(1, 2))))

    if not member(np.eye(3)):
        return False
    for a in ops:
        if not np.allclose(a @ a.T, np.eye(3), atol=atol) or not member(a.T):
            return False
        for b in ops:
            if not member(a @ b):
                return False
    return True
