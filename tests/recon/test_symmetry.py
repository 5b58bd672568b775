"""Point-group operators: group axioms, orders and the RELION axis conventions."""

from __future__ import annotations

import numpy as np
import pytest

from cryoset.errors import InputError
from cryoset.recon.symmetry import is_group, parse_point_group, symmetry_operators


@pytest.mark.parametrize("name,order", [("C1", 1), ("C2", 2), ("C4", 4), ("C7", 7), ("D2", 4),
                                        ("D3", 6), ("D5", 10)])
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


@pytest.mark.parametrize("bad", ["C0", "D1", "T", "I2", "O", "c", "4"])
def test_unsupported_groups_are_input_errors(bad: str) -> None:
    with pytest.raises(InputError):
        parse_point_group(bad)


def test_lowercase_accepted() -> None:
    assert parse_point_group("d6") == ("D", 6)
