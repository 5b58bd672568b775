"""The unsupervised feature picker (issue #19): planted blobs in a synthetic feature map are found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.picking.base import PickerInputs, available_pickers, picker_class
from cryoset.picking.evaluate import evaluate_picks
from cryoset.picking.features import (
    FeaturePicker,
    feature_grid,
    grid_duplicates,
    pc1_score,
    window_grid,
)

from .scene import DIAMETER_PX, PIXEL_A, make_scene


def _planted_feature_map(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """(gy, gx, D) features: noise plus a Gaussian bump along one direction at planted cells."""
    rng = np.random.default_rng(seed)
    gy, gx, d = 40, 50, 24
    centres = [(8, 10), (8, 30), (20, 22), (30, 8), (31, 40), (15, 44)]
    yy, xx = np.mgrid[0:gy, 0:gx]
    bump = np.zeros((gy, gx))
    for cy, cx in centres:
        bump += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5 ** 2))
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    feats = rng.normal(size=(gy, gx, d)) * 0.05 + bump[..., None] * u * 3.0 + 7.0
    return feats, bump, centres


def test_pc1_finds_planted_blobs_in_a_feature_map() -> None:
    feats, bump, centres = _planted_feature_map()
    # orientation by the local cue, and also with the sign flipped in the features (sign must not matter)
    for f in (feats, 14.0 - feats):
        score, ev = pc1_score(f, orientation=bump)
        assert ev > 0.5 and score.min() == 0.0 and score.max() == 1.0
        assert np.corrcoef(score.ravel(), bump.ravel())[0, 1] > 0.99
        cells, vals = grid_duplicates(score, 0.3, 2.0)
        assert len(cells) == len(centres)
        found = sorted((round(y), round(x)) for x, y in cells)
        assert found == sorted(centres)
        assert np.all(np.diff(vals) <= 0)


def test_pc1_sign_without_orientation_makes_high_scores_the_minority() -> None:
    feats, bump, _ = _planted_feature_map(1)
    for f in (feats, 14.0 - feats):
        score, _ = pc1_score(f)
        assert np.corrcoef(score.ravel(), bump.ravel())[0, 1] > 0.99


def test_otsu_splits_two_populations() -> None:
    from cryoset.picking.features import otsu_threshold

    v = np.r_[np.full(900, 0.2), np.full(100, 0.8)] + np.random.default_rng(0).normal(0, 0.02, 1000)
    t = otsu_threshold(v)
    assert (v[:900] <= t).all() and (v[900:] > t).all() and 0.4 < t < 0.6


def test_window_grid_is_centred() -> None:
    top, left = window_grid((100, 90), 20, 7)
    assert len(top) == (100 - 20) // 7 + 1 and len(left) == (90 - 20) // 7 + 1
    assert top[0] == (100 - ((len(top) - 1) * 7 + 20)) // 2
    img = np.arange(100 * 90, dtype=np.float32).reshape(100, 90)
    f, t, left = feature_grid(img, lambda w: w[:, :1, :1].reshape(len(w), 1), 20, 7, batch_size=5)
    np.testing.assert_array_equal(f[..., 0], img[np.ix_(t, left)])


def _disk_featurizer(windows: np.ndarray) -> np.ndarray:
    """A stand-in encoder: mean of the inverted window in concentric rings (dark particles → high)."""
    w = -np.asarray(windows, dtype=np.float64)
    n = w.shape[-1]
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    r = np.hypot(yy, xx) / (n / 2)
    rings = [(r < 0.25), (r >= 0.25) & (r < 0.5), (r >= 0.5) & (r < 0.75), (r >= 0.75)]
    return np.stack([w[:, m].mean(axis=1) for m in rings], axis=1)


def test_picker_finds_particles_in_a_synthetic_scene() -> None:
    assert available_pickers()["features"] is FeaturePicker and picker_class("features") is FeaturePicker
    img, truth = make_scene(3, snr=1.0, n=20, size=512)
    picker = FeaturePicker.from_inputs(PickerInputs(DIAMETER_PX * PIXEL_A, PIXEL_A, featurizer=_disk_featurizer,
                                                    featurizer_input_px=32))
    picks = picker.pick(img, PIXEL_A, micrograph=truth["micrograph"].iloc[0])
    assert {"x_px", "y_px", "score", "ncc", "power"} <= set(picks.columns)
    assert picks["score"].between(max(0.3, picker.threshold_used), 1.0).all() and picker.threshold_used >= 0.3
    xy = picks[["x_px", "y_px"]].to_numpy()
    dist = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    assert (dist[np.triu_indices(len(xy), 1)] >= 0.5 * DIAMETER_PX).all()  # the distance rule
    _, pooled = evaluate_picks(picks, truth, diameter_px=DIAMETER_PX)
    assert pooled.recall >= 0.9 and pooled.precision >= 0.6


def test_from_inputs_needs_a_featurizer() -> None:
    from cryoset.errors import InputError

    with pytest.raises(InputError, match="checkpoint"):
        FeaturePicker.from_inputs(PickerInputs(200.0, 5.0))


def test_pick_command_path_with_a_random_encoder(tmp_path: Path) -> None:
    """``--method features`` runs through run_pick: coordinate files, scores, false positives, provenance."""
    import json

    import torch

    from cryoset.io.mrc import write_map
    from cryoset.learn.vit import VisionTransformer, ViTConfig
    from cryoset.learn.vit_weights import save_vit
    from cryoset.workflows.pick import PickParams, run_pick

    torch.manual_seed(0)
    ckpt = save_vit(tmp_path / "vit.safetensors",
                    VisionTransformer(ViTConfig(embed_dim=16, depth=1, num_heads=2, patch_size=8, img_size=32)),
                    metadata={"normalization": {"kind": "store"}, "input_size": 32})
    img, _ = make_scene(5, snr=1.0, n=8, size=256)
    write_map(tmp_path / "m.mrc", img[None], PIXEL_A)
    out = tmp_path / "picks"
    res = run_pick([tmp_path / "m.mrc"], out, PickParams(diameter_a=DIAMETER_PX * PIXEL_A, method="features",
                                                         checkpoint=ckpt, max_power=1e9), progress=False)
    assert (out / "m.star").is_file() and (out / "false_positives.csv").is_file()
    scores = pd.read_parquet(out / "picks_scores.parquet")
    assert len(scores) == res.picks + res.rejected
    prov = json.loads((out / "provenance.json").read_text())
    assert "vit.safetensors" in json.dumps(prov)
