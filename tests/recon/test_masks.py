"""Soft auto-masks of a simulated protein map: they hold its density, their edge is soft and
falls monotonically, loose contains tight, the threshold is configurable."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from cryoset.recon.masks import auto_mask, default_threshold, soft_extend, sphere_mask
from cryoset.recon.reconstruct import inscribed_sphere_mask

BOX, PX = 48, 2.0


@pytest.fixture(scope="module")
def protein_map() -> NDArray[np.float32]:
    from cryoset.simulate.micrograph import atoms_from_protein
    from cryoset.simulate.potential import potential_volume
    from cryoset.simulate.protein import build_protein

    atoms = atoms_from_protein(build_protein(120, 3)).centred()
    return np.asarray(potential_volume(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, (BOX,) * 3, PX,
                                       (-(BOX // 2) * PX,) * 3), dtype=np.float32)


def test_auto_mask_holds_the_density_above_threshold(protein_map: NDArray[np.float32]) -> None:
    m = auto_mask(protein_map, PX, extend_px=3.0, soft_edge_px=5.0)
    above = protein_map > m.threshold
    assert above.sum() > 100
    inside = float((protein_map[above] * m.mask[above]).sum() / protein_map[above].sum())
    assert inside >= 0.99
    assert float((m.mask[above] == 1.0).mean()) >= 0.99
    # the solvent far from the molecule is excluded
    assert m.mask[0, 0, 0] == 0.0 and 0.0 < m.seed_fraction < 0.3
    assert 0.0 <= m.mask.min() and m.mask.max() == 1.0


def test_auto_mask_edge_is_soft_and_monotone(protein_map: NDArray[np.float32]) -> None:
    from scipy.spatial import cKDTree

    m = auto_mask(protein_map, PX, extend_px=2.0, soft_edge_px=6.0)
    soft = (m.mask > 0.0) & (m.mask < 1.0)
    assert soft.sum() > 500
    # the mask as a function of the distance from the binary seed (an independent k-d tree
    # distance) never increases
    from cryoset.recon.validate import lowpass

    seed = lowpass(protein_map, PX, m.lowpass_a) > m.threshold
    grid = np.indices(protein_map.shape).reshape(3, -1).T
    dist, _ = cKDTree(grid[seed.ravel()]).query(grid)
    order = np.argsort(dist, kind="stable")
    values = m.mask.ravel()[order]
    d = dist[order]
    steps = np.diff(values)
    assert np.all(steps[np.diff(d) > 1e-9] <= 1e-6)
    assert np.all(values[d <= 2.0] == 1.0) and np.all(values[d >= 8.0] == 0.0)
    edge = values[(d > 2.5) & (d < 7.5)]
    assert np.all((edge > 0.0) & (edge < 1.0))


def test_loose_contains_tight_and_threshold_is_configurable(protein_map: NDArray[np.float32]) -> None:
    tight = auto_mask(protein_map, PX, extend_px=2.0, soft_edge_px=3.0)
    loose = auto_mask(protein_map, PX, extend_px=8.0, soft_edge_px=6.0)
    assert np.all(loose.mask >= tight.mask) and loose.mask.sum() > 1.5 * tight.mask.sum()
    high = auto_mask(protein_map, PX, threshold=2.0 * tight.threshold)
    assert high.threshold == pytest.approx(2.0 * tight.threshold)
    assert high.seed_fraction < tight.seed_fraction
    with pytest.raises(ValueError, match="maximum"):
        auto_mask(protein_map, PX, threshold=1e9)


def test_soft_extend_of_a_point_is_a_radial_cosine() -> None:
    seed = np.zeros((21, 21, 21), bool)
    seed[10, 10, 10] = True
    mask = soft_extend(seed, 3.0, 4.0)
    r = np.arange(11, dtype=np.float64)
    expected = np.where(r <= 3, 1.0, np.where(r >= 7, 0.0, 0.5 + 0.5 * np.cos(np.pi * (r - 3) / 4)))
    np.testing.assert_allclose(mask[10, 10, 10:], expected, atol=1e-6)


def test_default_threshold_sits_above_solvent_noise() -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((32, 32, 32))
    v[12:20, 12:20, 12:20] += 20.0
    thr = default_threshold(v)
    assert 3.0 < thr < 20.0
    assert sphere_mask is inscribed_sphere_mask
