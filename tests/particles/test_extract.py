"""Extraction geometry, normalisation, down-sampling bookkeeping, phase flipping, edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoset.ctf.model import CTFParams, ctf_2d
from cryoset.errors import InputError
from cryoset.fourier.crop import fourier_crop
from cryoset.particles.extract import (
    box_size_for_diameter,
    cut_boxes,
    extract_particles,
    is_fft_friendly,
    normalise_background,
    output_box_size,
    phase_flip,
)


def _picks(xy: list[tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame({"micrograph": "m", "x_px": [p[0] for p in xy], "y_px": [p[1] for p in xy],
                         "score": np.nan, "diameter_px": 20.0})


def test_delta_lands_at_box_centre_even_and_odd() -> None:
    img = np.zeros((100, 120), dtype=np.float32)
    img[37, 81] = 1.0  # row 37 = y, column 81 = x
    for box in (32, 33):
        boxes, kept = cut_boxes(img, [(81.0, 37.0), (81.3, 36.6)], box)
        assert kept.all()
        for b in boxes:
            assert np.unravel_index(np.argmax(b), b.shape) == (box // 2, box // 2)


def test_blob_centre_survives_downsampling() -> None:
    yy, xx = np.mgrid[0:200, 0:200]
    img = np.exp(-((xx - 120) ** 2 + (yy - 70) ** 2) / (2 * 6.0**2)).astype(np.float32)
    res = extract_particles(img, _picks([(120, 70)]), 64, 2.0, pixel_size_out_a=4.0, normalise=False)
    b = res.stack[0]
    assert b.shape == (32, 32)
    assert np.unravel_index(np.argmax(b), b.shape) == (16, 16)
    assert res.pixel_size_a == pytest.approx(4.0)
    assert res.table["pixel_size_a"].iloc[0] == pytest.approx(4.0)
    assert res.table["micrograph_pixel_size_a"].iloc[0] == 2.0
    assert res.table["image_size_px"].iloc[0] == 32


def test_pixel_size_bookkeeping_for_uneven_ratio() -> None:
    m = output_box_size(72, 5.36, 8.0)
    assert m % 2 == 0 and m == 48
    img = np.random.default_rng(0).normal(size=(128, 128)).astype(np.float32)
    res = extract_particles(img, _picks([(64, 64)]), 72, 5.36, pixel_size_out_a=8.0)
    assert res.pixel_size_a == pytest.approx(5.36 * 72 / 48)  # the true size, not the target
    assert output_box_size(72, 5.36, 2.0) == 72  # never up-samples


def test_background_normalisation_stats(rng: np.random.Generator) -> None:
    stack = rng.normal(3.0, 5.0, (4, 40, 40))
    stack[:, 12:28, 12:28] += 50.0  # the "particle" inside the radius does not matter
    out = normalise_background(stack, 15.0)
    yy, xx = np.mgrid[0:40, 0:40] - 20
    bg = xx**2 + yy**2 > 15.0**2
    np.testing.assert_allclose(out[:, bg].mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[:, bg].std(axis=1), 1.0, atol=1e-5)


def test_invert_and_edge_skipping_counts(rng: np.random.Generator) -> None:
    img = rng.normal(size=(100, 100)).astype(np.float32)
    picks = _picks([(50, 50), (9, 50), (50, 91), (90, 90), (-3, 4)])
    a = extract_particles(img, picks, 20, 1.0, normalise=False)
    b = extract_particles(img, picks, 20, 1.0, normalise=False, invert=True)
    assert len(a.stack) == 2 and len(a.skipped_edge) == 3  # box of 20 needs the centre in [10, 90]
    assert a.table["image_index"].tolist() == [0, 1]
    np.testing.assert_array_equal(b.stack, -a.stack)


def test_box_size_is_padded_and_fft_friendly() -> None:
    for d in (20, 56, 100, 177, 300):
        b = box_size_for_diameter(d)
        assert 1.25 * d <= b <= 1.5 * d + 2
        assert is_fft_friendly(b)
    assert box_size_for_diameter(56) == 72
    with pytest.raises(InputError):
        box_size_for_diameter(0)


def test_phase_flip_makes_ctf_positive(rng: np.random.Generator) -> None:
    params = CTFParams(15000.0, 14000.0, 30.0)
    n = 64
    spectrum = np.fft.rfft2(rng.normal(size=(n, n)))
    spectrum[:, -1] = 0  # no Nyquist terms: their CTF is not Hermitian under astigmatism
    spectrum[n // 2, :] = 0
    ctf = ctf_2d(params, (n, n), 2.0, rfft=True)
    img = np.fft.irfft2(spectrum * ctf, s=(n, n))
    flipped = phase_flip(img, params, 2.0)
    expected = np.fft.irfft2(spectrum * np.abs(ctf), s=(n, n))
    np.testing.assert_allclose(flipped, expected, atol=1e-4)


def test_fourier_crop_preserves_mean_and_band_limited_signal() -> None:
    x = np.arange(64)
    img = np.cos(2 * np.pi * x / 16)[None, :] * np.ones((64, 1)) + 2.0
    out = fourier_crop(img, (32, 32))
    want = np.cos(2 * np.pi * np.arange(32) / 8)[None, :] + 2.0
    np.testing.assert_allclose(out, np.broadcast_to(want, (32, 32)), atol=1e-4)


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan")])
def test_nonpositive_output_pixel_size_is_refused_not_ignored(rng: np.random.Generator, bad: float) -> None:
    """Issue #16: ``--pixel-size-out -1`` silently extracted at the input pixel size."""
    image = rng.normal(size=(64, 64)).astype(np.float32)
    picks = pd.DataFrame({"x_px": [32.0], "y_px": [32.0]})
    with pytest.raises(InputError, match="pixel_size_out_a: must be > 0"):
        extract_particles(image, picks, 16, 2.0, pixel_size_out_a=bad)
