"""Blob picker: multi-scale Laplacian of Gaussian on a down-sampled, normalised micrograph.

Steps (all parameters derive from the particle diameter ``d``):

1. Fourier-crop the micrograph so the particle is ``WORK_DIAMETER_PX`` (20) pixels across
   (never up-sampled); this low-passes it at ≈ d/10.
2. Flatten: subtract the local mean and divide by the local sd (Gaussian windows of sd
   ``2 d``) so carbon, thick ice and gradients do not dominate; then median 0, sd 1, and
   negate when particles are dark (the default: raw under-focused micrographs show protein
   dark on light).
3. For ``N_SCALES`` (5) diameters ``d_k`` evenly spaced in ``[d_min, d_max]`` (default
   ``[0.8 d, 1.2 d]``) compute the scale-normalised response ``−σ² ∇²G_σ * I`` with
   ``σ = d_k / (2√2)`` (the scale at which a uniform disk of diameter ``d_k`` gives its
   largest response) and keep the maximum over scales.
4. Remove slow background from the response (Gaussian of sd ``2 d``) and express it in
   robust noise units: ``(R − median R) / (1.4826 · MAD R)``. This is the pick ``score``.
5. Local maxima at least ``min_distance_fraction · d`` apart (NMS, best first), above
   ``threshold`` (default 3.5 noise units), not closer than ``edge_fraction · d``
   (default 0.5: particles cut by the edge) to the micrograph edge.

Each pick also gets ``power``: the mean squared value of the normalised micrograph in the
particle disk (≈ 1 on empty ice; large on contamination and carbon edges), and
``ncc``: the normalised cross-correlation of the disk around it with a dark disk of the
particle's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.fft
from numpy.typing import ArrayLike, NDArray

from cryoset.errors import InputError
from cryoset.picking.base import (
    Peaks,
    Picker,
    PickerInputs,
    PreparedMicrograph,
    ScoreMap,
    register_picker,
)
from cryoset.picking.peaks import local_power, peaks_in_micrograph, picks_table

__all__ = [
    "WORK_DIAMETER_PX",
    "BlobPicker",
    "BlobSettings",
    "blob_response",
    "fourier_crop_f32",
    "pick_blobs",
    "prepare_micrograph",
]

#: Particle diameter (pixels) in the working (down-sampled) image.
WORK_DIAMETER_PX = 20.0
#: Number of LoG scales between the smallest and largest diameter.
N_SCALES = 5


@dataclass(frozen=True)
class BlobSettings:
    """Parameters of the blob picker (see the module docstring).

    Attributes
    ----------
    diameter_a
        Expected particle diameter (Å).
    diameter_min_a, diameter_max_a
        Diameter range searched; default ``0.8`` and ``1.2 × diameter_a``.
    threshold
        Minimum score (robust noise units of the LoG response).
    min_distance_fraction
        Minimum distance between picks as a fraction of the diameter.
    edge_fraction
        Picks closer than this fraction of the diameter to the edge are dropped.
    dark_particles
        Particles darker than the background (raw micrographs).
    """

    diameter_a: float
    diameter_min_a: float | None = None
    diameter_max_a: float | None = None
    threshold: float = 3.5
    min_distance_fraction: float = 0.5
    edge_fraction: float = 0.5
    dark_particles: bool = True

    def check(self) -> None:
        """Raise :class:`InputError` naming the first parameter that makes no sense."""
        if not self.diameter_a > 0:
            raise InputError("diameter", f"must be > 0 Å, got {self.diameter_a}")
        lo, hi = self.diameter_range_a
        if not 0 < lo <= hi:
            raise InputError("diameter range", f"need 0 < min <= max, got {lo}, {hi}")
        if self.min_distance_fraction < 0:
            raise InputError("min-distance", f"must be >= 0, got {self.min_distance_fraction}")
        if self.edge_fraction < 0:
            raise InputError("edge", f"must be >= 0, got {self.edge_fraction}")

    @property
    def diameter_range_a(self) -> tuple[float, float]:
        """``(d_min, d_max)`` in Å."""
        lo = 0.8 * self.diameter_a if self.diameter_min_a is None else self.diameter_min_a
        hi = 1.2 * self.diameter_a if self.diameter_max_a is None else self.diameter_max_a
        return float(lo), float(hi)


def _crop_rows(n: int, m: int) -> NDArray[np.intp]:
    """Indices of the ``m`` lowest frequencies of an unshifted ``n``-point FFT axis."""
    k = np.arange(m)
    return np.asarray(np.where(k < (m + 1) // 2, k, n - m + k), dtype=np.intp)


def fourier_crop_f32(image: NDArray[np.float32], out_shape: tuple[int, int]) -> NDArray[np.float32]:
    """:func:`cryoset.fourier.crop.fourier_crop` of one image from a float32 real FFT.

    The same result (to float32 rounding): the ``m`` lowest frequencies of each axis kept,
    values scaled by ``m² / n²``; for even ``m`` the Nyquist row/column is the mean of the
    input's ``±m/2`` frequencies, which is what the real part of the complex crop keeps
    (:func:`irfft2` averages the Nyquist column itself).
    """
    ny, nx = image.shape
    my, mx = out_shape
    if (my, mx) == (ny, nx):
        return np.asarray(image, dtype=np.float32)
    f = scipy.fft.rfft2(image)
    g = f[_crop_rows(ny, my), : mx // 2 + 1]
    if my % 2 == 0 and my < ny:  # Nyquist row: mean of the +my/2 and -my/2 input rows
        g[my // 2] = 0.5 * (f[ny - my // 2, : mx // 2 + 1] + f[my // 2, : mx // 2 + 1])
        if mx % 2 == 0 and mx < nx:  # the corner keeps the real part of the +(my/2, mx/2) bin
            g[my // 2, mx // 2] = f[my // 2, mx // 2]
    out = scipy.fft.irfft2(g, s=(my, mx))
    return np.asarray(out * np.float32(my * mx / (ny * nx)), dtype=np.float32)


@lru_cache(maxsize=64)
def _kernel_dct(n: int, sigma: float, order: int) -> NDArray[np.float32]:
    """Transfer function on the ``n`` DCT-II bins of an axis of the sampled Gaussian kernel
    (``order`` 0) or its second derivative (``order`` 2) that :mod:`scipy.ndimage` uses
    (radius ``round(4 σ)``, Gaussian normalised to sum 1).

    Multiplying DCT-II coefficients by it filters with mirror ("reflect") boundaries:
    :func:`scipy.ndimage.gaussian_filter` / ``gaussian_laplace`` with ``mode="reflect"``, as
    long as the kernel is shorter than twice the axis.
    """
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    h = np.exp(-0.5 * x * x / (sigma * sigma))
    h /= h.sum()
    if order == 2:
        h *= x * x / sigma**4 - 1.0 / sigma**2
    f = np.arange(n, dtype=np.float64) / (2.0 * n)
    return _frozen(np.cos(2.0 * math.pi * f[:, None] * x[None, :]) @ h)


def _frozen(a: NDArray[np.floating]) -> NDArray[np.float32]:
    """A read-only float32 copy (the transfer functions are cached and shared)."""
    out = np.array(a, dtype=np.float32)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=64)
def _gaussian_dct(shape: tuple[int, ...], sigma: float) -> NDArray[np.float32]:
    """2-D Gaussian filter of sd ``sigma`` pixels on the DCT-II bins (see :func:`_kernel_dct`)."""
    return _frozen(_kernel_dct(shape[0], sigma, 0)[:, None] * _kernel_dct(shape[1], sigma, 0)[None, :])


@lru_cache(maxsize=64)
def _neg_log_dct(shape: tuple[int, ...], sigma: float) -> NDArray[np.float32]:
    """``−σ² ∇²G_σ`` on the DCT-II bins: ``−σ² (G''_y G_x + G_y G''_x)`` with sampled kernels."""
    gy, gx = _kernel_dct(shape[0], sigma, 0), _kernel_dct(shape[1], sigma, 0)
    dy, dx = _kernel_dct(shape[0], sigma, 2), _kernel_dct(shape[1], sigma, 2)
    return _frozen(np.float32(-(sigma**2)) * (dy[:, None] * gx[None, :] + gy[:, None] * dx[None, :]))


def _dct(a: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(scipy.fft.dctn(a, type=2, norm="ortho"), dtype=np.float32)


def _idct(a: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(scipy.fft.idctn(a, type=2, norm="ortho"), dtype=np.float32)


def prepare_micrograph(
    image: ArrayLike, diameter_px: float, *, dark_particles: bool = True
) -> tuple[NDArray[np.float32], float]:
    """Down-sample and normalise a micrograph for picking.

    One float32 real FFT of the micrograph gives the Fourier-cropped working image; the
    local mean and sd (Gaussian windows of sd ``2 d``, mirror boundaries) are products in
    the cosine (DCT-II) domain of the small working image, not spatial convolutions.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
    diameter_px
        Particle diameter in micrograph pixels.
    dark_particles
        Negate so particles become bright.

    Returns
    -------
    work : ndarray of float32, shape (my, mx)
        Locally flattened, then median 0, sd 1; particles bright.
    factor : float
        ``nx / mx``: a working pixel ``(x, y)`` is at ``(x, y) · factor`` in the micrograph.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < 8:
        raise ValueError(f"micrograph must be 2-D and at least 8×8, got shape {img.shape}")
    factor_wanted = max(1.0, diameter_px / WORK_DIAMETER_PX)
    ny, nx = img.shape
    # one factor for both axes: choose m for the long axis, scale the other exactly
    mx = max(8, round(nx / factor_wanted / 2) * 2) if factor_wanted > 1 else nx
    mx = min(mx, nx)
    factor = nx / mx
    my = min(ny, max(8, round(ny / factor)))
    work = fourier_crop_f32(img, (my, mx))
    # local flattening: remove the local mean and divide by the local sd (Gaussian windows
    # of sd 2 d), so carbon, thick ice and gradients do not dominate the global statistics
    g = _gaussian_dct(work.shape, 2.0 * diameter_px / factor)
    work = _idct(_dct(work) * (np.float32(1.0) - g))
    local_sd = np.sqrt(np.maximum(_idct(_dct(work * work) * g), np.float32(0.0)))
    floor = 1e-6 * float(local_sd.max()) if local_sd.size else 0.0
    if floor > 0:
        work /= np.maximum(local_sd, np.float32(floor))
    work -= np.float32(np.median(work))
    sd = float(work.std(dtype=np.float64))
    if sd > 0:
        work /= np.float32(sd)
    if dark_particles:
        work = -work
    return np.asarray(work, dtype=np.float32), float(factor)


def blob_response(work: ArrayLike, diameters_px: ArrayLike) -> NDArray[np.float32]:
    """Max over scales of the scale-normalised LoG, in robust noise units.

    The filter bank comes from one DCT-II of ``work`` (float32): for each scale the
    coefficients are multiplied by the transfer function of ``−σ² ∇²G_σ`` (the sampled
    kernels of ``scipy.ndimage.gaussian_laplace`` with ``mode="reflect"``, see
    :func:`_kernel_dct`) and transformed back; no spatial convolution at any sigma.

    Parameters
    ----------
    work : array_like, shape (ny, nx)
        Prepared micrograph (particles bright).
    diameters_px : array_like, shape (k,)
        Blob diameters (working pixels).

    Returns
    -------
    ndarray of float32, shape (ny, nx)
    """
    w = np.asarray(work, dtype=np.float32)
    d = np.asarray(diameters_px, dtype=np.float64).reshape(-1)
    spectrum = _dct(w)
    resp = np.full(w.shape, -np.inf, dtype=np.float32)
    for dk in d:
        np.maximum(resp, _idct(spectrum * _neg_log_dct(w.shape, dk / (2.0 * math.sqrt(2.0)))), out=resp)
    resp = _idct(_dct(resp) * (np.float32(1.0) - _gaussian_dct(w.shape, 2.0 * float(d.mean()))))
    med = float(np.median(resp))
    mad = 1.4826 * float(np.median(np.abs(resp - np.float32(med))))
    return np.asarray((resp - np.float32(med)) / np.float32(mad if mad > 0 else 1.0), dtype=np.float32)


def disk_ncc(work: ArrayLike, xy: ArrayLike, diameter_px: float) -> NDArray[np.float64]:
    """NCC of the window around each position with a bright disk of the given diameter.

    The window is a square of side ``1.5 d`` (rounded up to odd); the template is 1 inside
    the disk and 0 outside, both mean-subtracted. Positions too close to the edge to fit
    the window get NaN.
    """
    w = np.asarray(work, dtype=np.float64)
    p = np.rint(np.asarray(xy, dtype=np.float64).reshape(-1, 2)).astype(int)
    half = math.ceil(0.75 * diameter_px)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    t = (xx * xx + yy * yy <= (diameter_px / 2) ** 2).astype(np.float64)
    t -= t.mean()
    t /= np.linalg.norm(t) or 1.0
    out = np.full(len(p), np.nan)
    for k, (x, y) in enumerate(p):
        if half <= x < w.shape[1] - half and half <= y < w.shape[0] - half:
            win = w[y - half : y + half + 1, x - half : x + half + 1]
            win = win - win.mean()
            n = np.linalg.norm(win)
            out[k] = float((win * t).sum() / n) if n > 0 else np.nan
    return out


def pick_blobs(
    image: ArrayLike,
    pixel_size_a: float,
    settings: BlobSettings,
    *,
    micrograph: str = "micrograph",
) -> pd.DataFrame:
    """Pick particles in one micrograph with the multi-scale LoG blob detector.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
        The micrograph.
    pixel_size_a
        Micrograph pixel size (Å).
    settings
        :class:`BlobSettings`.
    micrograph
        Name written in the ``micrograph`` column.

    Returns
    -------
    DataFrame
        Canonical picks table (``micrograph, x_px, y_px, score, diameter_px``) plus
        ``ncc`` and ``power``, best score first.
    """
    return BlobPicker(settings).pick(image, pixel_size_a, micrograph=micrograph)


def map_peaks(micrograph: PreparedMicrograph, score: ScoreMap, *, threshold: float,
              min_distance_fraction: float, edge_fraction: float) -> Peaks:
    """Peaks of a score map above ``threshold``, ``min_distance_fraction`` diameters apart and at
    least ``edge_fraction`` diameters from the edge (the blob and template pickers' rule)."""
    assert score.values is not None
    xy, vals, xy_w = peaks_in_micrograph(
        score.values, micrograph.factor, micrograph.shape, min_distance_fraction * micrograph.diameter_work_px,
        threshold=threshold, edge_margin_px=edge_fraction * micrograph.diameter_px,
    )  # fmt: skip
    return Peaks(xy, vals, xy_w)


@register_picker("blob")
class BlobPicker(Picker):
    """The blob picker as the four :class:`~cryoset.picking.base.Picker` steps."""

    default_threshold: ClassVar[float | None] = BlobSettings.threshold

    def __init__(self, settings: BlobSettings) -> None:
        self.settings = settings

    @classmethod
    def from_inputs(cls, inputs: PickerInputs) -> BlobPicker:
        threshold = cls.threshold_of(inputs)
        assert threshold is not None
        return cls(BlobSettings(inputs.diameter_a, threshold=threshold,
                                min_distance_fraction=inputs.min_distance_fraction,
                                dark_particles=inputs.dark_particles))

    def prepare(self, image: ArrayLike, pixel_size_a: float) -> PreparedMicrograph:
        self.settings.check()
        if not pixel_size_a > 0:
            raise InputError("pixel-size", f"must be > 0 Å, got {pixel_size_a}")
        img = np.asarray(image, dtype=np.float32)
        d_px = self.settings.diameter_a / pixel_size_a
        work, factor = prepare_micrograph(img, d_px, dark_particles=self.settings.dark_particles)
        return PreparedMicrograph(img, work, factor, pixel_size_a, d_px)

    def score_map(self, micrograph: PreparedMicrograph) -> ScoreMap:
        lo, hi = self.settings.diameter_range_a
        diam_work = np.linspace(lo, hi, N_SCALES) / micrograph.pixel_size_a / micrograph.factor
        return ScoreMap(blob_response(micrograph.work, diam_work))

    def peaks(self, micrograph: PreparedMicrograph, score: ScoreMap) -> Peaks:
        s = self.settings
        return map_peaks(micrograph, score, threshold=s.threshold, min_distance_fraction=s.min_distance_fraction,
                         edge_fraction=s.edge_fraction)

    def picks(self, micrograph: PreparedMicrograph, score: ScoreMap, peaks: Peaks, name: str) -> pd.DataFrame:
        d_work = micrograph.diameter_work_px
        return picks_table(name, peaks.xy, peaks.values, micrograph.diameter_px,
                           ncc=disk_ncc(micrograph.work, peaks.xy_work, d_work),
                           power=local_power(micrograph.work, peaks.xy_work, d_work / 2))
