"""Point-group operators: group axioms, orders and the RELION axis conventions."""

from __future__ import annotations

import numpy as np
import pytest

from cryoset.errors import InputError
from cryoset.recon.symmetry import is_group, parse_point_group, symmetry_operators


@pytest.mark.parametrize("name,order", [("C1", 1), ("C2", 2), ("C4", 4), ("C7", 7), ("D2", 4),
                                        ("D3", 6), ("D5", 10), ("T", 12), ("O", 24), ("I", 60)])
def test_operators_form_a_group_of_the_right_order(name: str, order: int) -> None:
    ops = symmetry_operators(name)
    assert ops.shape == (order, 3, 3)
    np.testing.assert_allclose(ops[0], np.eye(3))
    assert is_group(ops)
    # proper rotations, all distinct
    np.testing.assert_allclose(np.linalg.det(ops), 1.0, atol=1e-12)
    flat = ops.reshape(order, 9)
    assert np.min([np.abs(a - b).max() for i, a in enumerate(flat) for b in flat[i + 1:]] or [1]) > 0.1


def test_axes_follow_relion_convention() -> None:
    c4 = symmetry_operators("C4")
    np.testing.assert_allclose(c4 @ np.array([0, 0, 1.0]), np.tile([0, 0, 1.0], (4, 1)), atol=1e-12)
    np.testing.assert_allclose(c4[1] @ np.array([1.0, 0, 0]), [0, 1, 0], atol=1e-12)
    d2 = symmetry_operators("D2")
    # a two-fold about x maps z to -z and keeps x
    flips = [op for op in d2 if np.allclose(op @ [1.0, 0, 0], [1, 0, 0]) and np.allclose(op @ [0, 0, 1.0], [0, 0, -1])]
    assert len(flips) == 1


def test_non_groups_are_detected() -> None:
    ops = symmetry_operators("C4")
    assert not is_group(ops[:3])  # missing the 270° rotation
    assert not is_group(ops[1:])  # no identity


def test_polyhedral_axes() -> None:
    def fixed_axes(ops: np.ndarray, axis: list[float]) -> int:
        a = np.asarray(axis) / np.linalg.norm(axis)
        return sum(1 for op in ops if np.allclose(op @ a, a, atol=1e-9))

    t, o, i = symmetry_operators("T"), symmetry_operators("O"), symmetry_operators("I")
    assert fixed_axes(t, [1, 0, 0]) == 2 and fixed_axes(t, [1, 1, 1]) == 3 and fixed_axes(t, [0, 0, 1]) == 2
    assert fixed_axes(o, [0, 0, 1]) == 4 and fixed_axes(o, [1, 1, 1]) == 3 and fixed_axes(o, [1, 1, 0]) == 2
    phi = (1 + 5**0.5) / 2
    assert fixed_axes(i, [0, 1, phi]) == 5 and fixed_axes(i, [1, 0, 0]) == 2 and fixed_axes(i, [1, 1, 1]) == 3
    # T is the subgroup of O; both are subgroups of nothing smaller
    assert all(any(np.allclose(a, b) for b in o) for a in t)
    assert parse_point_group("i") == ("I", 60)


@pytest.mark.parametrize("bad", ["C0", "D1", "I2", "T1", "c", "4"])
def test_unsupported_groups_are_input_errors(bad: str) -> None:
    with pytest.raises(InputError):
        parse_point_group(bad)


def test_lowercase_accepted() -> None:
    assert parse_point_group("d6") == ("D", 6)
