"""Cα candidate extraction from probability maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from cryoset.trace.candidates import extract_candidates
from cryoset.trace.synthetic import noisy_aa_probabilities, probability_maps_from_ca


def _points(rng: np.random.Generator, n: int, box_a: float, min_sep_a: float) -> np.ndarray:
    pts: list[np.ndarray] = []
    while len(pts) < n:
        p = rng.uniform(3.0, box_a - 3.0, size=3)
        if all(np.linalg.norm(p - q) >= min_sep_a for q in pts):
            pts.append(p)
    return np.asarray(pts)


def test_candidates_recover_blob_centres(rng: np.random.Generator) -> None:
    pts = _points(rng, 40, 30.0, 3.6)
    aa = rng.integers(0, 20, 40)
    probs = noisy_aa_probabilities(aa, rng, signal=4.0)
    origin = (-2.0, 1.5, 0.5)  # (z, y, x)
    xyz = pts + np.asarray(origin)[::-1]
    ca, aa_map = probability_maps_from_ca(xyz, probs, (31, 31, 31), rng, origin_a=origin, noise=0.05)
    cands = extract_candidates(ca, aa_map, origin_a=origin, threshold=0.5, min_distance_a=2.0)
    assert len(cands) == 40
    dist, idx = cKDTree(cands.positions_a).query(xyz)
    assert sorted(idx.tolist()) == list(range(40))  # one candidate per Cα
    assert dist.max() < 0.35  # the weighted centroid refines the 1 Å voxel peak
    np.testing.assert_allclose(cands.aa_prob.sum(axis=1), 1.0, rtol=1e-6)
    # The candidate's amino-acid probabilities are its Cα's (blobs 3.6 Å apart barely mix).
    assert np.mean(cands.aa_prob[idx].argmax(axis=1) == probs.argmax(axis=1)) == 1.0
    assert np.all(np.diff(cands.ca_prob) <= 0)


def test_threshold_and_suppression_distance(rng: np.random.Generator) -> None:
    ca = np.zeros((12, 12, 12), np.float32)
    ca[5, 5, 3], ca[5, 5, 6], ca[5, 5, 9] = 0.9, 0.7, 0.4  # peaks 3 voxels apart
    aa = np.full((20, 12, 12, 12), 0.05, np.float32)
    assert len(extract_candidates(ca, aa, threshold=0.5)) == 2
    assert len(extract_candidates(ca, aa, threshold=0.3)) == 3
    # Suppression by distance keeps the strongest of peaks closer than 3.5 Å.
    kept = extract_candidates(ca, aa, threshold=0.3, min_distance_a=3.5)
    assert len(kept) == 2
    np.testing.assert_allclose(kept.positions_a[:, 0], [3.0, 9.0])
    assert len(extract_candidates(ca, aa, threshold=0.95)) == 0
    # Voxel size scales positions; positions are (x, y, z).
    scaled = extract_candidates(ca, aa, voxel_size_a=(1.0, 2.0, 0.5), threshold=0.8)
    np.testing.assert_allclose(scaled.positions_a, [[1.5, 10.0, 5.0]])


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="3-D"):
        extract_candidates(np.zeros((4, 4)), np.zeros((20, 4, 4)))
    with pytest.raises(ValueError, match="aa_prob"):
        extract_candidates(np.zeros((4, 4, 4)), np.zeros((19, 4, 4, 4)))
