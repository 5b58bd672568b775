"""Blob and template pickers on synthetic scenes with exact truth and on real EMPIAR-10028."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.io.coords import read_coords
from cryoset.io.images import read_image
from cryoset.picking.blob import BlobSettings, pick_blobs
from cryoset.picking.evaluate import evaluate_picks
from cryoset.picking.imported import score_imported
from cryoset.picking.template import TemplateSettings, pick_templates
from cryoset.testing import require_shared_data

from .scene import DIAMETER_PX, PIXEL_A, make_scene, sphere_projection

#: Per-pixel SNR of the synthetic scenes: hard enough that a few picks go wrong.
SNR = 0.006


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, pd.DataFrame]]:
    return [make_scene(seed, snr=SNR, name=f"sim_{seed}.mrc") for seed in range(2)]


def _pooled_f1(picks: list[pd.DataFrame], truths: list[pd.DataFrame]) -> float:
    _, pooled = evaluate_picks(pd.concat(picks), pd.concat(truths))
    return pooled.f1


def test_blob_picker_finds_synthetic_particles(scenes: list[tuple[np.ndarray, pd.DataFrame]]) -> None:
    s = BlobSettings(DIAMETER_PX * PIXEL_A)
    picks = [pick_blobs(img, PIXEL_A, s, micrograph=t["micrograph"].iloc[0]) for img, t in scenes]
    f1 = _pooled_f1(picks, [t for _, t in scenes])
    assert f1 >= 0.95  # measured 1.00 at SNR 0.006 (2 scenes, 50 particles)
    for p in picks:  # every pick has NCC and power; all are at least 0.5 d apart
        assert p[["ncc", "power", "score"]].notna().all().all()
        d = np.hypot(*(p[["x_px", "y_px"]].to_numpy()[:, None, :]
                       - p[["x_px", "y_px"]].to_numpy()[None, :, :]).transpose(2, 0, 1))
        assert (d[np.triu_indices(len(p), 1)] >= 0.5 * DIAMETER_PX - 1e-9).all()


def test_template_picker_finds_synthetic_particles(scenes: list[tuple[np.ndarray, pd.DataFrame]]) -> None:
    tmpl = sphere_projection(64, DIAMETER_PX, 32, 32)  # protein bright
    s = TemplateSettings(DIAMETER_PX * PIXEL_A, angle_step_deg=90)
    picks = [pick_templates(img, PIXEL_A, tmpl, PIXEL_A, s, micrograph=t["micrograph"].iloc[0])
             for img, t in scenes]
    f1 = _pooled_f1(picks, [t for _, t in scenes])
    assert f1 >= 0.95  # measured 1.00 at SNR 0.006 (2 scenes, 50 particles)
    assert all(((p["ncc"] >= -1) & (p["ncc"] <= 1)).all() for p in picks)


def test_blob_picker_edge_exclusion_and_empty_image() -> None:
    img, _truth = make_scene(5, snr=1.0, n=8, size=256)
    picks = pick_blobs(img, PIXEL_A, BlobSettings(DIAMETER_PX * PIXEL_A, edge_fraction=0.5))
    m = 0.5 * DIAMETER_PX
    assert ((picks["x_px"] >= m) & (picks["x_px"] <= 255 - m)).all()
    flat = np.full((256, 256), 5.0, dtype=np.float32)
    assert len(pick_blobs(flat, PIXEL_A, BlobSettings(200.0))) == 0
    with pytest.raises(InputError):
        pick_blobs(img, PIXEL_A, BlobSettings(-5.0))


def test_imported_picks_are_deduplicated_and_scored() -> None:
    img, truth = make_scene(3, snr=1.0, n=8, size=256)
    dup = truth.copy()
    dup["x_px"] += 3.0  # duplicates 3 px away from every true pick
    near_edge = truth.iloc[:1].assign(x_px=2.0)
    out = score_imported(img, pd.concat([truth, dup, near_edge]), DIAMETER_PX)
    assert len(out) == len(truth)  # one per particle, the edge pick dropped
    assert out[["ncc", "power"]].notna().all().all()


@pytest.mark.shared_data
def test_blob_picker_on_real_empiar_10028() -> None:
    root = require_shared_data("micrographs", "empiar_10028")
    picks, truth = [], []
    for name in ("064_10028", "311_10028"):  # held-out images (not used to set the threshold)
        img = read_image(root / "images" / f"{name}.png").data
        picks.append(pick_blobs(img, 5.36, BlobSettings(300.0), micrograph=name))
        truth.append(read_coords(root / "coords" / f"{name}.csv"))
    _, pooled = evaluate_picks(pd.concat(picks), pd.concat(truth), diameter_px=56)
    assert pooled.recall >= 0.95
    assert pooled.f1 >= 0.85  # measured 0.870 (P 0.777, R 0.989) on these two images


@pytest.mark.slow
def test_blob_picker_on_simulated_micrographs_with_carbon_and_mask() -> None:
    """cryoset.simulate.micrograph scenes (carbon edge, contamination, CTF, shot noise):
    the carbon/contamination mask inspection removes every false pick there."""
    from cryoset.picking.inspection import InspectionSettings, inspect_picks
    from cryoset.simulate.micrograph import AtomSet, MicrographSettings, simulate_micrograph

    rng = np.random.default_rng(0)  # a 120 Å ball of 6000 carbon atoms
    n = 6000
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1)[:, None]
    atoms = AtomSet(v * (60 * rng.uniform(0, 1, n) ** (1 / 3))[:, None], np.array(["C"] * n),
                    np.full(n, 30.0))
    settings = MicrographSettings(shape_px=(512, 512), pixel_size_a=3.0, n_particles=25,
                                  dose_e_per_a2=100.0, defocus_range_a=(15000.0, 25000.0))
    raw, kept, truth = [], [], []
    for seed in (3, 4):
        mic = simulate_micrograph(atoms, settings, seed=seed, name=f"s{seed}")
        d = float(mic.picks["diameter_px"].iloc[0])
        picks = pick_blobs(mic.image, 3.0, BlobSettings(d * 3.0), micrograph=f"s{seed}")
        accepted, rejected = inspect_picks(
            picks, InspectionSettings(), masks={f"s{seed}": mic.carbon_mask | mic.contamination_mask})
        assert set(rejected["Reason"]) <= {"on carbon/ice mask"}
        raw.append(picks)
        kept.append(accepted)
        truth.append(mic.picks)
    _, before = evaluate_picks(pd.concat(raw), pd.concat(truth))
    _, after = evaluate_picks(pd.concat(kept), pd.concat(truth))
    assert after.n_matched == before.n_matched  # the mask never removes a true particle
    assert after.precision >= 0.95  # measured 1.00 (0.65 before the mask)
    assert after.f1 >= 0.75  # measured 0.81: P 1.00, R 0.68 (seeds 3-8: F1 0.65-0.86, P 1.00)


@pytest.mark.parametrize("all_nan", [True, False])
def test_templates_with_nan_pixels_are_refused_naming_the_file(all_nan: bool) -> None:
    """Issue #16: an all-NaN template stack gave NaN correlations (no picks, no error)."""
    rng = np.random.default_rng(3)
    templates = rng.normal(size=(3, 24, 24))
    templates[:3 if all_nan else 1] = np.nan
    image = rng.normal(size=(128, 128))
    message = "every template holds" if all_nan else r"1 of 3 templates \(first: 0\) hold"
    with pytest.raises(InputError, match=rf"^classes\.mrcs: {message} NaN or infinite pixels"):
        pick_templates(image, 2.0, templates, 2.0, TemplateSettings(40.0), source="classes.mrcs")
