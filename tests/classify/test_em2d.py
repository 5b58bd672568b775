"""2D classification: rotation/shift conventions, pose recovery, view separation, junk removal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoset.classify.em2d import (
    ClassifySettings,
    align_to_references,
    classify_2d,
    rotate_images,
)
from cryoset.classify.select import (
    class_statistics,
    class_verdicts,
    recover_particles,
    recoverable_classes,
    reference_resolution,
    select_classes,
)
from cryoset.ctf.model import ctf_2d_batch
from cryoset.geometry import euler_to_matrix


def _shift(images: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """X(p) = R(p + s): the RELION 3.1 shift convention."""
    b = images.shape[-1]
    ky = np.fft.fftfreq(b)[:, None]
    kx = np.fft.rfftfreq(b)[None, :]
    ph = np.exp(2j * np.pi * (kx * shifts_px[:, 0, None, None] + ky * shifts_px[:, 1, None, None]))
    return np.fft.irfft2(np.fft.rfft2(images) * ph, s=(b, b)).astype(np.float32)


def _letter(b: int) -> np.ndarray:
    """An asymmetric 'L'-shaped blob image, centred."""
    img = np.zeros((b, b), np.float32)
    c = b // 2
    img[c - 6:c + 6, c - 4:c - 1] = 1.0
    img[c + 3:c + 6, c - 4:c + 5] = 1.0
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, 1.0).astype(np.float32)


def test_rotation_follows_the_relion_matrix() -> None:
    b = 32
    img = np.zeros((1, b, b), np.float32)
    img[0, b // 2, b // 2 + 5] = 1.0  # x = +5, y = 0
    out = rotate_images(img, np.array([90.0]))[0, 0]
    a = euler_to_matrix(0.0, 0.0, 90.0)[:2, :2]
    x, y = a @ np.array([5.0, 0.0])  # out(p) = in(Aᵀ p): the peak moves to A (5, 0)
    assert np.unravel_index(out.argmax(), out.shape) == (b // 2 + round(y), b // 2 + round(x))
    back = rotate_images(rotate_images(_letter(b)[None], np.array([37.0]))[:, 0], np.array([-37.0]))[0, 0]
    assert np.corrcoef(back.ravel(), _letter(b).ravel())[0, 1] > 0.97


def test_alignment_recovers_known_psi_and_shift(rng: np.random.Generator) -> None:
    b, n = 40, 24
    ref = _letter(b)
    psi = rng.choice(np.arange(0, 360, 10.0), n)
    shifts = rng.integers(-4, 5, (n, 2)).astype(np.float64)
    images = _shift(rotate_images(ref[None], psi)[0], shifts) + 0.3 * rng.standard_normal((n, b, b)).astype(np.float32)
    settings = ClassifySettings(n_classes=1, psi_step_deg=10.0, offset_range_px=6, particle_diameter_px=30)
    res = align_to_references(images, ref[None], settings)
    dpsi = (res.psi_deg - psi + 180) % 360 - 180
    exact = np.abs(dpsi) < 1e-6
    assert exact.mean() >= 0.9 and np.all(np.abs(dpsi) <= 10.0 + 1e-6)  # one angular step at worst
    np.testing.assert_array_equal(res.shift_px[exact], shifts[exact])
    assert np.abs(res.shift_px - shifts).max() <= 1.0
    assert np.all(res.ess == 1.0) and np.all(res.max_prob == 1.0)


@pytest.fixture(scope="module")
def two_views() -> dict[str, np.ndarray]:
    """Two different 2D objects (80 images), random in-plane angles, shifts, CTF and noise (SNR 0.3)."""
    rng = np.random.default_rng(7)
    b, n = 40, 80
    a = _letter(b)
    bb = np.zeros((b, b), np.float32)
    yy, xx = np.mgrid[0:b, 0:b] - b // 2
    bb[(np.abs(xx) < 9) & (np.abs(yy) < 3)] = 1.0
    bb[(np.hypot(xx - 6, yy + 6) < 3)] = 1.0
    truth = rng.integers(0, 2, n)
    refs = np.stack([a, bb])[truth]
    psi = rng.uniform(0, 360, n)
    shifts = rng.uniform(-3, 3, (n, 2))
    rotated = np.stack([rotate_images(r[None], np.array([p]))[0, 0] for r, p in zip(refs, psi, strict=True)])
    defocus = rng.uniform(8000, 20000, n)
    ctf = ctf_2d_batch(defocus, defocus, 0.0, (b, b), 2.5, rfft=True)
    clean = np.fft.irfft2(np.fft.rfft2(_shift(rotated, shifts)) * ctf, s=(b, b))
    noise_sd = np.sqrt(clean.var(axis=(1, 2)).mean() / 0.3)
    images = (clean + noise_sd * rng.standard_normal(clean.shape)).astype(np.float32)
    return {"images": images, "ctf": ctf, "truth": truth}


def test_two_views_are_separated_and_outputs_are_consistent(two_views: dict[str, np.ndarray]) -> None:
    settings = ClassifySettings(n_classes=2, n_iter=4, psi_step_deg=15, offset_range_px=4,
                                particle_diameter_px=30, seed=1)
    res = classify_2d(two_views["images"], settings, ctf=two_views["ctf"])
    truth = two_views["truth"]
    table = pd.crosstab(res.class_index, truth).to_numpy()
    purity = table.max(axis=1).sum() / truth.size
    assert purity >= 0.95, table  # measured 1.0
    assert np.all(res.ess >= 1.0 - 1e-9) and np.all(res.max_prob <= 1.0 + 1e-12)
    assert np.all((res.eca >= 1.0 - 1e-9) & (res.eca <= 2.0 + 1e-9))
    np.testing.assert_allclose(res.class_prob.sum(axis=1), 1.0, atol=1e-9)
    # seeded: the same run gives the same answer
    short = ClassifySettings(**{**settings.__dict__, "n_iter": 1})
    first = classify_2d(two_views["images"], short, ctf=two_views["ctf"])
    again = classify_2d(two_views["images"], short, ctf=two_views["ctf"])
    np.testing.assert_array_equal(again.class_index, first.class_index)
    np.testing.assert_array_equal(again.averages, first.averages)
    hard = classify_2d(two_views["images"], ClassifySettings(**{**settings.__dict__, "hard": True, "n_iter": 1}),
                       ctf=two_views["ctf"])
    assert np.all(hard.max_prob == 1.0) and np.all(hard.ess == 1.0) and np.all(hard.eca == 1.0)


def test_reference_resolution_is_the_population_weighted_median() -> None:
    res = np.array([6.0, 8.0, 9.0, 20.0, np.inf])
    pop = np.array([10, 30, 40, 100, 50])
    # sorted 6, 8, 9, 20 with cumulative 10, 40, 80, 180: half of 180 is reached at 20 Å
    assert reference_resolution(res, pop) == 20.0
    assert reference_resolution(res, np.array([100, 30, 40, 10, 50])) == 6.0
    assert reference_resolution(np.array([np.inf]), np.array([5])) == np.inf


def test_junk_rule_is_not_relative_to_one_sharp_class() -> None:
    """Class statistics measured on simulated scene (protein 1, simulation seed 1) of
    benchmarks/bench_classify.py, with the junk truth per class: the sharpest class (6.2 Å)
    holds 22 ice blobs and nothing else. The old rule (≤ 1.5 × best) rejected three classes of
    real particles (132 of 280 particles, recall 0.53); the rule now keeps every particle class and rejects
    exactly the ice class (power 5 × median) and the noise class."""
    stats = pd.DataFrame({
        "class_number": np.arange(1, 9),
        "population": [22, 54, 42, 50, 58, 61, 28, 85],
        "resolution_a": [6.22, 7.47, 21.15, 10.86, 8.51, 7.96, 9.98, 12.16],
        "mean_power": [3.550, 0.586, 0.005, 0.705, 0.716, 0.663, 0.710, 0.672]})
    content = ["ice", "particle", "noise", "particle", "particle", "particle", "particle", "particle"]
    verdict = class_verdicts(stats)
    assert list(verdict) == ["high_power", "good", "low_power", "good", "good", "good", "good", "good"]
    np.testing.assert_array_equal(select_classes(stats), [c == "particle" for c in content])
    # the previous default (1.5 × best, no upper power bound) in the new terms would keep the ice class
    assert class_verdicts(stats, max_power_ratio=np.inf)[0] == "good"
    # a class much worse than the weighted median (8.5 Å here) is rejected for resolution
    worse = stats.assign(resolution_a=stats["resolution_a"].where(stats["class_number"] != 8, 30.0))
    assert class_verdicts(worse)[7] == "resolution"
    small = stats.assign(population=stats["population"].where(stats["class_number"] != 2, 2))
    assert class_verdicts(small)[1] == "small"
    np.testing.assert_array_equal(recoverable_classes(np.array(["good", "small", "low_power", "high_power",
                                                                "resolution"])),
                                  [False, True, False, False, True])


@pytest.mark.slow
def test_junk_classes_found_and_good_particles_recovered() -> None:
    """Simulated mixture (cryoset.simulate.particles): 140 particles + 20 noise + 20 ice + 20
    overlapping pairs at SNR 0.1, K = 5. Measured (seed 0): the pure-noise class is found and
    is the only junk class; first-pass kept-set purity 0.778 (0.70 if everything were kept),
    recall 1.0 — the same with the recentred translation windows (the default) as with the
    previous fixed ±5 px window. (The previous rule, resolution ≤ 1.5 × the best class, kept 0.786 / 0.814:
    it rejected a 35-particle class of 74 % particles at 14.0 Å, 2.0 × the 7.0 Å best class,
    itself a mix of 15 particles and 12 ice blobs.) No ice-only class forms in this small scene, so
    the ice blobs and pairs stay in particle classes; the floors below are first-pass recall
    ≥ 0.95 and purity ≥ 0.75."""
    from cryoset.simulate.micrograph import atoms_from_protein
    from cryoset.simulate.particles import ParticleSettings, simulate_particles
    from cryoset.simulate.protein import build_protein

    atoms = atoms_from_protein(build_protein(150, 1))
    sim = simulate_particles(atoms, ParticleSettings(n=200, box_px=48, pixel_size_a=2.0, snr=0.1,
                                                     junk_fraction=0.3, max_shift_a=4.0), seed=0)
    tb = sim.table
    ctf = ctf_2d_batch(tb.defocus_u_a, tb.defocus_v_a, tb.defocus_angle_deg, (48, 48), 2.0, rfft=True)
    settings = ClassifySettings(n_classes=5, n_iter=5, psi_step_deg=15, particle_diameter_px=30, seed=1)
    res = classify_2d(sim.images, settings, ctf=ctf)
    stats = class_statistics(sim.images, res, settings, 2.0, ctf=ctf)
    verdict = class_verdicts(stats)
    good = verdict == "good"
    kind = tb["kind"].to_numpy()
    is_particle = kind == "particle"
    # every pure-noise image lands in a junk class, rejected for its (lack of) power
    noise_class = np.bincount(res.class_index[kind == "noise"]).argmax()
    assert not good[res.class_index[kind == "noise"]].any() and verdict[noise_class] == "low_power"
    first = good[res.class_index]
    purity0, recall0 = is_particle[first].mean(), first[is_particle].mean()
    rec = recover_particles(sim.images, res, good, settings, ctf=ctf, recover_from=recoverable_classes(verdict))
    purity1, recall1 = is_particle[rec.kept].mean(), rec.kept[is_particle].mean()
    print(f"first pass purity {purity0:.3f} recall {recall0:.3f}; after recovery {purity1:.3f} {recall1:.3f}")
    assert purity0 >= 0.75 and recall0 >= 0.95  # measured 0.778 / 1.0
    assert purity1 >= 0.75 and recall1 >= recall0
    assert np.all(recoverable_classes(verdict)[res.class_index[rec.recovered]])
    assert not rec.kept[kind == "noise"].any()
    # the noise class has the lowest mean power
    assert stats["mean_power"].idxmin() == noise_class
    # the default recovery (from every junk class) still never takes noise images back
    assert not recover_particles(sim.images, res, good, settings, ctf=ctf).kept[kind == "noise"].any()


def test_recentred_search_follows_particles_beyond_the_first_window(rng: np.random.Generator) -> None:
    """The default search (±5 px window recentred on each image's previous MAP offset, total offset
    capped at a quarter box, RELION's behaviour) aligns images shifted by 8–9 px; the old fixed
    ±5 px window around the box centre cannot reach them."""
    b, n = 48, 24
    ref = _letter(b)
    shifts = rng.integers(-2, 3, (n, 2)).astype(np.float64)
    far = np.array([[9.0, 0.0], [0.0, -9.0], [-6.0, 6.0], [8.0, -3.0], [-3.0, -8.0], [6.0, 6.0]])
    shifts[:far.shape[0]] = far  # |s| 8.5–9 px
    images = _shift(np.repeat(ref[None], n, axis=0), shifts) + 0.3 * rng.standard_normal((n, b, b)).astype(np.float32)
    # one angle (ψ = 0): the classification frame differs from the truth by one common shift
    base = ClassifySettings(n_classes=1, n_iter=4, psi_step_deg=360.0, offset_range_px=5, particle_diameter_px=40)
    assert base.offset_recentre and base.max_offset_px is None  # the default
    errors = {}
    for recentre in (True, False):
        res = classify_2d(images, ClassifySettings(**{**base.__dict__, "offset_recentre": recentre}))
        d = res.shift_px - shifts
        errors[recentre] = np.abs(d - np.median(d, axis=0)).max(axis=1)
        assert np.all(np.hypot(*res.shift_px.T) <= b / 4 + 1e-9)  # the cap
    assert np.all(errors[True] <= 1.0)  # every image, the 8–9 px ones included
    # the fixed window cannot reach most of them (measured: 5 of 6 off by 4–6 px, for 3 seeds)
    assert (errors[False][:far.shape[0]] >= 2.0).sum() >= 4
    # align_to_references: a window centred on a given offset reaches beyond the range around 0
    settings = ClassifySettings(n_classes=1, psi_step_deg=360.0, offset_range_px=3, particle_diameter_px=40)
    clean = _shift(ref[None], far[:1])
    centred = align_to_references(clean, ref[None], settings, offset_centre_px=np.array([[7.4, 0.2]]))
    np.testing.assert_array_equal(centred.shift_px, far[:1])
    assert align_to_references(clean, ref[None], settings).shift_px[0, 0] <= 3.0


def _matched_labels(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """The permutation of ``b``'s class labels that agrees best with ``a`` (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    counts = pd.crosstab(pd.Categorical(a, range(k)), pd.Categorical(b, range(k)), dropna=False).to_numpy()
    rows, cols = linear_sum_assignment(-counts)
    perm = np.empty(k, np.int64)
    perm[cols] = rows
    return perm


def _band_correlation(x: np.ndarray, y: np.ndarray, pixel_a: float, low_a: float, high_a: float) -> float:
    """Correlation of two images' Fourier coefficients between resolutions ``low_a`` and ``high_a``."""
    b = x.shape[-1]
    fx, fy = np.fft.rfft2(x), np.fft.rfft2(y)
    k = np.hypot(np.fft.fftfreq(b)[:, None], np.fft.rfftfreq(b)[None, :]) / pixel_a
    m = (k > 1.0 / low_a) & (k < 1.0 / high_a)
    return float(np.real((fx[m] * np.conj(fy[m])).sum())
                 / np.sqrt((np.abs(fx[m]) ** 2).sum() * (np.abs(fy[m]) ** 2).sum()))


def test_phase_flipped_and_unflipped_particles_give_the_same_classes() -> None:
    """The same simulated particles (two objects, astigmatic CTFs, 0.8–1.5 µm defocus, SNR 0.3),
    once as imaged (CTF) and once phase-flipped as ``cryoset extract --phase-flip`` flips them and
    flagged ``ctf_phase_flipped``: with the CTFs of :func:`ctf_images` (|CTF| for the flipped ones)
    they get the same assignments up to the label permutation and class averages correlating
    > 0.99, also beyond the first CTF zero (12–8 Å). Ignoring the flag (the full CTF applied to
    flipped images: the bug) garbles the averages there. Measured (seed 11): agreement 1.0,
    averages 0.9975 / 0.9979; 12–8 Å band 0.93 / 0.93 honoured, −0.45 / 0.19 ignored."""
    from cryoset.classify.data import ctf_images
    from cryoset.ctf.model import CTFParams
    from cryoset.particles.extract import phase_flip

    rng = np.random.default_rng(11)
    b, n, px = 40, 80, 2.5
    a = _letter(b)
    bb = np.zeros((b, b), np.float32)
    yy, xx = np.mgrid[0:b, 0:b] - b // 2
    bb[(np.abs(xx) < 9) & (np.abs(yy) < 3)] = 1.0
    bb[(np.hypot(xx - 6, yy + 6) < 3)] = 1.0
    truth = rng.integers(0, 2, n)
    rotated = np.stack([rotate_images(r[None], np.array([p]))[0, 0]
                        for r, p in zip(np.stack([a, bb])[truth], rng.uniform(0, 360, n), strict=True)])
    defocus = rng.uniform(8000, 15000, n)
    table = pd.DataFrame({"defocus_u_a": defocus + 300, "defocus_v_a": defocus - 300,
                          "defocus_angle_deg": rng.uniform(0, 180, n), "voltage_kv": 300.0,
                          "cs_mm": 2.7, "amplitude_contrast": 0.1, "ctf_phase_flipped": 0})
    ctf = ctf_images(table, b, px)
    clean = np.fft.irfft2(np.fft.rfft2(_shift(rotated, rng.uniform(-3, 3, (n, 2)))) * ctf, s=(b, b))
    noise_sd = np.sqrt(clean.var(axis=(1, 2)).mean() / 0.3)
    images = (clean + noise_sd * rng.standard_normal(clean.shape)).astype(np.float32)
    flipped = np.stack([phase_flip(img, CTFParams(r.defocus_u_a, r.defocus_v_a, r.defocus_angle_deg), px)
                        for img, r in zip(images, table.itertuples(), strict=True)])
    flagged_ctf = ctf_images(table.assign(ctf_phase_flipped=1), b, px)
    np.testing.assert_array_equal(flagged_ctf, np.abs(ctf))
    settings = ClassifySettings(n_classes=2, n_iter=4, psi_step_deg=15, offset_range_px=4,
                                particle_diameter_px=30, seed=1)
    plain = classify_2d(images, settings, ctf=ctf)
    honoured = classify_2d(flipped, settings, ctf=flagged_ctf)
    ignored = classify_2d(flipped, settings, ctf=ctf)
    assert pd.crosstab(plain.class_index, truth).to_numpy().max(axis=1).sum() / n >= 0.95
    perm = _matched_labels(plain.class_index, honoured.class_index, 2)
    agreement = float(np.mean(perm[honoured.class_index] == plain.class_index))
    same = [float(np.corrcoef(plain.averages[perm[j]].ravel(), honoured.averages[j].ravel())[0, 1])
            for j in range(2)]
    same_band = [_band_correlation(plain.averages[perm[j]], honoured.averages[j], px, 12.0, 8.0)
                 for j in range(2)]
    perm_bad = _matched_labels(plain.class_index, ignored.class_index, 2)
    bad_band = [_band_correlation(plain.averages[perm_bad[j]], ignored.averages[j], px, 12.0, 8.0)
                for j in range(2)]
    print(f"agreement {agreement:.3f}, averages {np.round(same, 4)}, 12-8 A {np.round(same_band, 3)}, "
          f"flag ignored {np.round(bad_band, 3)}")
    assert agreement >= 0.99
    assert min(same) > 0.99
    assert min(same_band) > 0.85
    assert max(bad_band) < 0.5
