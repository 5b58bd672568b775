"""Template picker: FFT normalised cross-correlation over templates and in-plane rotations.

The micrograph is prepared as for the blob picker (Fourier-cropped so the particle is
about 20 px across, normalised, negated when particles are dark so protein is bright).
Templates — 2D class averages, projections of a map or any image stack, **protein bright**
as in RELION/cryoSPARC averages — are resampled to the working pixel size, cropped to a
circular mask of radius ``mask_fraction × d`` (default 0.6 d), and rotated in-plane in steps
of ``angle_step_deg``. For each rotated template ``t`` (zero mean and unit norm inside the
mask ``M`` of ``N`` pixels) the normalised cross-correlation at position ``x`` is

    NCC(x) = Σ_u t(u) I(x + u) / (√N · σ_M(x)),

with ``σ_M(x)`` the standard deviation of the image under the mask at ``x`` (local
normalisation, computed with two FFT convolutions). NCC lies in [−1, 1]. The pick score is
the maximum NCC over templates and rotations; picks are local maxima above
``threshold`` at least ``min_distance_fraction × d`` apart, away from the edge, with
``power`` as in :mod:`cryoset.picking.blob`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.fft
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from cryoset.errors import InputError
from cryoset.picking.base import (
    Peaks,
    Picker,
    PickerInputs,
    PreparedMicrograph,
    ScoreMap,
    register_picker,
)
from cryoset.picking.blob import map_peaks, prepare_micrograph
from cryoset.picking.peaks import local_power, picks_table

__all__ = [
    "TemplatePicker",
    "TemplateSettings",
    "check_templates",
    "ncc_map",
    "pick_templates",
    "prepare_templates",
]


@dataclass(frozen=True)
class TemplateSettings:
    """Parameters of the template picker.

    Attributes
    ----------
    diameter_a
        Particle diameter (Å).
    threshold
        Minimum NCC.
    angle_step_deg
        In-plane rotation step (degrees); 360 means no rotation.
    mask_fraction
        Radius of the circular template mask as a fraction of the diameter.
    min_distance_fraction, edge_fraction, dark_particles
        As in :class:`cryoset.picking.blob.BlobSettings`.
    """

    diameter_a: float
    threshold: float = 0.2
    angle_step_deg: float = 15.0
    mask_fraction: float = 0.6
    min_distance_fraction: float = 0.5
    edge_fraction: float = 0.5
    dark_particles: bool = True

    def check(self) -> None:
        """Raise :class:`InputError` naming the first parameter that makes no sense."""
        if not self.diameter_a > 0:
            raise InputError("diameter", f"must be > 0 Å, got {self.diameter_a}")
        if not 0 < self.angle_step_deg <= 360:
            raise InputError("angle-step", f"must be in (0, 360], got {self.angle_step_deg}")
        if not self.mask_fraction > 0:
            raise InputError("mask-fraction", f"must be > 0, got {self.mask_fraction}")


def check_templates(templates: ArrayLike, source: str | os.PathLike[str] = "templates") -> NDArray[np.float64]:
    """The templates as a float64 ``(n, y, x)`` stack, refused when they cannot be matched.

    Raises
    ------
    InputError
        (naming ``source``) not a non-empty ``(n, y, x)`` stack, or a template holds NaN or
        infinite pixels (its normalised cross-correlation would be NaN everywhere).
    """
    t = np.asarray(templates, dtype=np.float64)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] == 0:
        raise InputError(source, f"need a (n, y, x) stack of templates, got shape {t.shape}")
    bad = ~np.isfinite(t).reshape(t.shape[0], -1).all(axis=1)
    if bad.any():
        which = ("every template holds" if bad.all() else
                 f"{int(bad.sum())} of {t.shape[0]} templates (first: {int(np.argmax(bad))}) hold")
        raise InputError(source, f"{which} NaN or infinite pixels")
    return t


def prepare_templates(
    templates: ArrayLike,
    template_pixel_size_a: float,
    work_pixel_size_a: float,
    mask_radius_px: float,
    angle_step_deg: float,
    *,
    source: str | os.PathLike[str] = "templates",
) -> NDArray[np.float32]:
    """Resample, rotate, mask and normalise templates.

    Parameters
    ----------
    templates : array_like, shape (n, b, b) or (b, b)
        Template images, protein bright, centred.
    template_pixel_size_a
        Their pixel size (Å).
    work_pixel_size_a
        Pixel size of the image they will be correlated with.
    mask_radius_px
        Circular mask radius in working pixels.
    angle_step_deg
        Rotation step; every template is rotated by ``0, step, …`` below 360°.
    source
        The template file, named in errors (:func:`check_templates`).

    Returns
    -------
    ndarray of float32, shape (n · n_angles, s, s)
        ``s = 2 ceil(mask_radius) + 1``; each zero-mean and unit-norm inside the mask and
        0 outside.
    """
    t = check_templates(templates, source)
    zoom = template_pixel_size_a / work_pixel_size_a
    half = math.ceil(mask_radius_px)
    size = 2 * half + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    mask = xx * xx + yy * yy <= mask_radius_px * mask_radius_px
    angles = np.arange(0.0, 360.0 - 1e-9, angle_step_deg)
    out: list[NDArray[np.float64]] = []
    for img in t:
        if zoom < 1:  # low-pass before shrinking
            img = ndimage.gaussian_filter(img, 0.5 / zoom)
        z = ndimage.zoom(img, zoom, order=1)
        z = _centre_crop_or_pad(z, size + 4)
        for a in angles:
            r = ndimage.rotate(z, a, reshape=False, order=1, mode="constant", cval=0.0)
            r = _centre_crop_or_pad(r, size)
            v = r[mask]
            v = v - v.mean()
            norm = float(np.linalg.norm(v))
            if norm == 0:
                continue
            tt = np.zeros((size, size))
            tt[mask] = v / norm
            out.append(tt)
    if not out:
        raise InputError(source, "every template is constant inside the mask")
    return np.asarray(out, dtype=np.float32)


def _centre_crop_or_pad(img: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    n = img.shape[0]
    c = n // 2
    out = np.zeros((size, size))
    h = size // 2
    for oy in range(size):
        sy = c - h + oy
        if 0 <= sy < n:
            lo = max(0, h - c)
            hi = min(size, h - c + n)
            out[oy, lo:hi] = img[sy, c - h + lo : c - h + hi]
    return out


def ncc_map(image: ArrayLike, templates: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    """Best normalised cross-correlation over a set of masked templates.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
    templates : array_like, shape (k, s, s)
        From :func:`prepare_templates` (zero mean, unit norm inside the mask, 0 outside;
        the mask is where any template is non-zero).

    Returns
    -------
    ncc : ndarray of float32, shape (ny, nx)
        Max over templates; positions whose mask leaves the image use zero padding.
    best : ndarray of intp, shape (ny, nx)
        Index of the best template.
    """
    # float32 throughout (complex64 spectra): the image is normalised (sd 1), so the local
    # moments lose nothing that matters to an NCC in [-1, 1]
    img = np.asarray(image, dtype=np.float32)
    t = np.asarray(templates, dtype=np.float32)
    ny, nx = img.shape
    k, s, _ = t.shape
    half = s // 2
    mask: NDArray[np.float32] = np.asarray((np.abs(t) > 0).any(axis=0), dtype=np.float32)
    n_mask = float(mask.sum())
    fy = scipy.fft.next_fast_len(ny + s, real=True)
    fx = scipy.fft.next_fast_len(nx + s, real=True)
    pad = np.zeros((fy, fx), dtype=np.float32)

    def kernel_ft(k2d: NDArray[np.float32]) -> NDArray[np.complex64]:
        # correlation = convolution with the flipped kernel, centred at (half, half): the
        # kernel's corners wrap around the padded array's corners
        pad[:] = 0.0
        flipped = k2d[::-1, ::-1]
        pad[: s - half, : s - half] = flipped[half:, half:]
        pad[: s - half, fx - half :] = flipped[half:, :half]
        pad[fy - half :, : s - half] = flipped[:half, half:]
        pad[fy - half :, fx - half :] = flipped[:half, :half]
        return np.asarray(scipy.fft.rfft2(pad))

    fi = scipy.fft.rfft2(img, s=(fy, fx))
    fi2 = scipy.fft.rfft2(img * img, s=(fy, fx))
    fm = kernel_ft(mask)
    mean = scipy.fft.irfft2(fi * fm, s=(fy, fx))[:ny, :nx] / np.float32(n_mask)
    ex2 = scipy.fft.irfft2(fi2 * fm, s=(fy, fx))[:ny, :nx] / np.float32(n_mask)
    sd = np.sqrt(np.maximum(ex2 - mean * mean, np.float32(0.0)))
    inv_denom = np.where(sd > 1e-6, np.float32(1.0 / math.sqrt(n_mask)) / np.maximum(sd, np.float32(1e-6)),
                         np.float32(0.0)).astype(np.float32)
    best = np.full((ny, nx), -np.inf, dtype=np.float32)
    arg = np.zeros((ny, nx), dtype=np.intp)
    better = np.empty((ny, nx), dtype=bool)
    for i in range(k):
        c = scipy.fft.irfft2(fi * kernel_ft(t[i]), s=(fy, fx))[:ny, :nx] * inv_denom
        np.greater(c, best, out=better)
        np.copyto(best, c, where=better)
        arg[better] = i
    return best, arg


def pick_templates(
    image: ArrayLike,
    pixel_size_a: float,
    templates: ArrayLike,
    template_pixel_size_a: float,
    settings: TemplateSettings,
    *,
    micrograph: str = "micrograph",
    source: str | os.PathLike[str] = "templates",
) -> pd.DataFrame:
    """Pick particles in one micrograph by template matching.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
        The micrograph.
    pixel_size_a
        Micrograph pixel size (Å).
    templates : array_like, shape (n, b, b)
        Templates, protein bright.
    template_pixel_size_a
        Template pixel size (Å).
    settings
        :class:`TemplateSettings`.
    micrograph
        Name for the ``micrograph`` column.
    source
        The template file, named in errors.

    Returns
    -------
    DataFrame
        Canonical picks (``score`` = ``ncc``) plus ``ncc``, ``power`` and ``template``
        (index of the best template before rotation), best first.
    """
    return TemplatePicker(settings, templates, template_pixel_size_a, source=source).pick(
        image, pixel_size_a, micrograph=micrograph
    )


@register_picker("template")
class TemplatePicker(Picker):
    """The template picker as the four :class:`~cryoset.picking.base.Picker` steps.

    ``templates`` (``(n, b, b)``, protein bright) at ``template_pixel_size_a``; ``source``
    names the template file in errors.
    """

    default_threshold: ClassVar[float | None] = TemplateSettings.threshold
    needs: ClassVar[frozenset[str]] = frozenset({"templates"})

    def __init__(self, settings: TemplateSettings, templates: ArrayLike, template_pixel_size_a: float, *,
                 source: str | os.PathLike[str] = "templates") -> None:
        self.settings = settings
        self.templates = templates
        self.template_pixel_size_a = template_pixel_size_a
        self.source = source

    @classmethod
    def from_inputs(cls, inputs: PickerInputs) -> TemplatePicker:
        """Needs ``templates``; without ``template_pixel_size_a`` they share the micrograph's."""
        if inputs.templates is None:
            raise InputError("templates", "the template picker needs templates")
        threshold = cls.threshold_of(inputs)
        assert threshold is not None
        settings = TemplateSettings(inputs.diameter_a, threshold=threshold,
                                    min_distance_fraction=inputs.min_distance_fraction,
                                    dark_particles=inputs.dark_particles)
        return cls(settings, inputs.templates, inputs.template_pixel_size_a or inputs.pixel_size_a,
                   source=inputs.template_source)

    def prepare(self, image: ArrayLike, pixel_size_a: float) -> PreparedMicrograph:
        self.settings.check()
        if not pixel_size_a > 0 or not self.template_pixel_size_a > 0:
            raise InputError("pixel-size", "pixel sizes must be > 0 Å")
        img = np.asarray(image, dtype=np.float32)
        d_px = self.settings.diameter_a / pixel_size_a
        work, factor = prepare_micrograph(img, d_px, dark_particles=self.settings.dark_particles)
        return PreparedMicrograph(img, work, factor, pixel_size_a, d_px)

    def score_map(self, micrograph: PreparedMicrograph) -> ScoreMap:
        s = self.settings
        prepared = prepare_templates(
            self.templates, self.template_pixel_size_a, micrograph.pixel_size_a * micrograph.factor,
            s.mask_fraction * micrograph.diameter_work_px, s.angle_step_deg, source=self.source,
        )  # fmt: skip
        n_angles = len(np.arange(0.0, 360.0 - 1e-9, s.angle_step_deg))
        ncc, arg = ncc_map(micrograph.work, prepared)
        return ScoreMap(ncc, {"template": arg // max(n_angles, 1)})

    def peaks(self, micrograph: PreparedMicrograph, score: ScoreMap) -> Peaks:
        s = self.settings
        return map_peaks(micrograph, score, threshold=s.threshold, min_distance_fraction=s.min_distance_fraction,
                         edge_fraction=s.edge_fraction)

    def picks(self, micrograph: PreparedMicrograph, score: ScoreMap, peaks: Peaks, name: str) -> pd.DataFrame:
        ij = np.rint(peaks.xy_work).astype(int)
        return picks_table(
            name, peaks.xy, peaks.values, micrograph.diameter_px, ncc=peaks.values.astype(np.float64),
            power=local_power(micrograph.work, peaks.xy_work, micrograph.diameter_work_px / 2),
            template=score.extra["template"][ij[:, 1], ij[:, 0]].astype(np.int64),
        )
