"""The voxel-network evaluation measures: Cα F1 curves, evaluation regions, baselines."""

from __future__ import annotations

import numpy as np
import pytest

from cryoset.learn.voxel_eval import ca_f1_curve, density_peak_scores, model_region, random_scores


def _truth() -> np.ndarray:
    truth = np.zeros((20, 20, 20), bool)
    truth[5, 5, 5] = truth[10, 12, 8] = truth[15, 4, 16] = True
    return truth


def test_perfect_scores_give_f1_one_and_shifted_ones_need_tolerance() -> None:
    truth = _truth()
    exact = ca_f1_curve(truth.astype(np.float32), truth, [0.5])
    assert exact["f1"][0] == pytest.approx(1.0)
    shifted = np.roll(truth, 1, axis=2).astype(np.float32)
    assert ca_f1_curve(shifted, truth, [0.5])["f1"][0] == 0.0
    assert ca_f1_curve(shifted, truth, [0.5], tolerance_px=1)["f1"][0] == pytest.approx(1.0)


def test_precision_and_recall_count_false_positives_and_misses() -> None:
    truth = _truth()
    scores = truth.astype(np.float32)
    scores[0, 0, 0] = 1.0          # one false positive
    scores[15, 4, 16] = 0.0        # one miss
    c = ca_f1_curve(scores, truth, [0.5])
    assert c["precision"][0] == pytest.approx(2 / 3)
    assert c["recall"][0] == pytest.approx(2 / 3)


def test_evaluation_mask_ignores_everything_outside_it() -> None:
    truth = _truth()
    scores = truth.astype(np.float32)
    scores[0:3, 0:3, 0:3] = 1.0    # a block of false positives (unmodelled density)
    whole = ca_f1_curve(scores, truth, [0.5])
    assert whole["precision"][0] < 0.2
    region = np.ones_like(truth)
    region[0:3, 0:3, 0:3] = False
    masked = ca_f1_curve(scores, truth, [0.5], evaluation_mask=region)
    assert masked["f1"][0] == pytest.approx(1.0)
    # a labelled Cα outside the region is not counted as missed
    region[15, 4, 16] = False
    assert ca_f1_curve(scores, truth, [0.5], evaluation_mask=region)["recall"][0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="evaluation_mask"):
        ca_f1_curve(scores, truth, [0.5], evaluation_mask=region[1:])


def test_model_region_is_the_ball_around_the_atoms_in_the_map_frame() -> None:
    # one atom at x=12, y=10, z=8 Å; map origin (z, y, x) = (2, 0, 4) Å, 1 Å voxels
    region = model_region(np.array([[12.0, 10.0, 8.0]]), (16, 20, 20), (2.0, 0.0, 4.0), radius_a=3.0)
    centre = (6, 10, 8)
    assert region[centre]
    zz, yy, xx = np.nonzero(region)
    dist = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
    assert dist.max() <= 3.0
    assert region.sum() == np.count_nonzero(
        np.sqrt(np.sum((np.indices(region.shape).reshape(3, -1).T - centre) ** 2, axis=1)) <= 3.0)
    # 2 Å voxels halve the radius in voxels
    coarse = model_region(np.array([[12.0, 10.0, 8.0]]), (8, 10, 10), (2.0, 0.0, 4.0), voxel_size_a=2.0,
                          radius_a=3.0)
    assert coarse[3, 5, 4] and coarse.sum() == 19  # centre, 6 faces (2 Å), 12 edges (2.83 Å); no corners (3.46 Å)
    with pytest.raises(ValueError, match="radius_a"):
        model_region(np.zeros((1, 3)), (4, 4, 4), (0, 0, 0), radius_a=-1)


def test_density_peaks_find_planted_blobs_at_ca_spacing() -> None:
    z, y, x = np.indices((24, 24, 24))
    centres = [(6, 6, 6), (6, 6, 10), (16, 12, 8)]
    vol = sum(np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / 2.0) for c in centres)
    scores = density_peak_scores(vol.astype(np.float32))
    found = {tuple(int(v) for v in p) for p in np.argwhere(scores > 0)}
    assert found == set(centres)
    assert scores.max() == pytest.approx(1.0)


def test_random_scores_are_seeded_uniform() -> None:
    a, b = random_scores((8, 8, 8), seed=3), random_scores((8, 8, 8), seed=3)
    assert np.array_equal(a, b) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() < 1.0
