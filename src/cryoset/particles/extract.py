"""Particle extraction: boxes around picks, phase flipping, Fourier down-sampling, contrast
inversion and RELION-style background normalisation.

Geometry: a pick at ``(x_px, y_px)`` is rounded to the nearest pixel ``(j, i)`` (halves
round up, ``floor(x + 0.5)``) and the box of size ``b`` is
``image[i − b//2 : i − b//2 + b, j − b//2 : j − b//2 + b]``, so the pick sits at box pixel
``(b//2, b//2)`` — RELION's centre for even and odd boxes. Picks whose box leaves the
micrograph are skipped and counted. (RELION 3.1 truncates the coordinate instead,
``(long int) x``: for a fractional part ≥ 0.5 its box sits one pixel lower; RELION also keeps
boxes that cross the edge. ``benchmarks/bench_extract.py`` measures both.)

Order of operations (per particle, as RELION's ``relion_preprocess --extract``): cut the box;
optionally phase-flip it with its own CTF (``FT ← FT · sign(CTF)``, local defocus when the
table has it); Fourier-crop to the output size; invert contrast (``× −1``); normalise so the
pixels **outside** the circle of radius ``bg_radius_px`` (output pixels, distance from the
box centre strictly greater than the radius) have mean 0 and sd 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cryoset.ctf.model import CTFParams, ctf_2d
from cryoset.errors import InputError

if TYPE_CHECKING:  # pandas is imported only by the table API (the extract command's fast path
    import pandas as pd  # works on arrays: importing pandas costs more than RELION's whole run)

__all__ = [
    "ExtractionResult",
    "box_size_for_diameter",
    "cut_boxes",
    "default_bg_radius_px",
    "extract_boxes",
    "extract_particles",
    "is_fft_friendly",
    "normalise_background",
    "output_box_size",
    "phase_flip",
]


def is_fft_friendly(n: int) -> bool:
    """True for even ``n`` whose only prime factors are 2, 3 and 5."""
    if n <= 0 or n % 2:
        return False
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def box_size_for_diameter(diameter_px: float, padding: tuple[float, float] = (0.25, 0.5)) -> int:
    """Smallest FFT-friendly box with 25–50 % padding around the particle.

    Parameters
    ----------
    diameter_px
        Particle diameter (pixels).
    padding
        ``(min, max)`` extra fraction: the box is the smallest FFT-friendly size
        ``>= (1 + min) · d``; if none lies within ``(1 + max) · d``, the smallest even
        size ``>= (1 + min) · d`` is returned.

    Examples
    --------
    >>> box_size_for_diameter(56)
    72
    """
    if not diameter_px > 0:
        raise InputError("diameter", f"must be > 0, got {diameter_px}")
    lo = (1 + padding[0]) * diameter_px
    hi = (1 + padding[1]) * diameter_px
    n = math.ceil(lo)
    n += n % 2
    first_even = n
    while n <= hi:
        if is_fft_friendly(n):
            return n
        n += 2
    return first_even


def output_box_size(box_px: int, pixel_size_a: float, pixel_size_out_a: float | None) -> int:
    """Even output box for down-sampling ``box_px`` pixels to about ``pixel_size_out_a``.

    The true output pixel size is then ``pixel_size_a · box_px / output`` (see
    :func:`cryoset.fourier.crop.resampled_pixel_size_a`); never up-samples.
    """
    if pixel_size_out_a is None or pixel_size_out_a <= pixel_size_a:
        return box_px
    m = round(box_px * pixel_size_a / pixel_size_out_a / 2) * 2
    return max(2, min(box_px, m))


def default_bg_radius_px(box_px: int) -> float:
    """RELION's default background radius: 75 % of half the box."""
    return 0.375 * box_px


def cut_boxes(
    image: ArrayLike, xy: ArrayLike, box_px: int
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Cut square boxes centred on picks; skip boxes that leave the image.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
    xy : array_like, shape (n, 2)
        Centres ``(x, y)`` in pixels.
    box_px
        Box edge (pixels).

    Returns
    -------
    boxes : ndarray of float32, shape (k, box_px, box_px)
        For the kept picks, in order.
    kept : ndarray of bool, shape (n,)
    """
    img = np.asarray(image, dtype=np.float32)
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if box_px < 2:
        raise InputError("box", f"must be >= 2 pixels, got {box_px}")
    j = np.floor(p[:, 0] + 0.5).astype(np.int64) - box_px // 2
    i = np.floor(p[:, 1] + 0.5).astype(np.int64) - box_px // 2
    kept = (j >= 0) & (i >= 0) & (j + box_px <= img.shape[1]) & (i + box_px <= img.shape[0])
    kept &= np.isfinite(p).all(axis=1)
    idx = np.flatnonzero(kept)
    if len(idx) == 0:
        return np.zeros((0, box_px, box_px), dtype=np.float32), kept
    windows = np.lib.stride_tricks.sliding_window_view(img, (box_px, box_px))
    out = np.ascontiguousarray(windows[i[idx], j[idx]], dtype=np.float32)
    return out, kept


def phase_flip(box: ArrayLike, params: CTFParams, pixel_size_a: float) -> NDArray[np.float32]:
    """Multiply the Fourier transform of one image by the sign of its CTF.

    Parameters
    ----------
    box : array_like, shape (b, b)
    params
        The particle's CTF.
    pixel_size_a
        Pixel size of ``box`` (Å).
    """
    import scipy.fft  # imported here: extraction without phase flipping needs no FFT library

    b = np.asarray(box, dtype=np.float64)
    sign = np.sign(ctf_2d(params, (b.shape[0], b.shape[1]), pixel_size_a, rfft=True))
    sign[sign == 0] = 1.0
    out = scipy.fft.irfft2(scipy.fft.rfft2(b) * sign, s=b.shape)
    return np.asarray(out, dtype=np.float32)


def normalise_background(stack: ArrayLike, bg_radius_px: float) -> NDArray[np.float32]:
    """RELION-style normalisation: pixels outside the circle get mean 0 and sd 1.

    Parameters
    ----------
    stack : array_like, shape (n, b, b)
    bg_radius_px
        Radius (pixels) around the box centre ``(b//2, b//2)``; pixels strictly farther
        are background. A box whose background is constant is only mean-subtracted.
    """
    s = np.asarray(stack, dtype=np.float32)
    b = s.shape[-1]
    yy, xx = np.mgrid[0:b, 0:b] - b // 2
    bg = ((xx * xx + yy * yy) > bg_radius_px * bg_radius_px).reshape(-1)
    if not bg.any():
        raise InputError("bg-radius", f"{bg_radius_px} leaves no background in a {b}-pixel box")
    vals = s.reshape(len(s), -1)[:, bg].astype(np.float64)  # statistics in double precision
    mean = vals.mean(axis=1)
    sd = vals.std(axis=1)
    sd = np.where(sd > 0, sd, 1.0)
    out = (s - mean[:, None, None].astype(np.float32)) * (1.0 / sd)[:, None, None].astype(np.float32)
    return np.asarray(out, dtype=np.float32)


@dataclass
class ExtractionResult:
    """Extracted particles of one micrograph.

    Attributes
    ----------
    stack : ndarray of float32, shape (k, m, m)
    table : DataFrame
        The kept picks with ``image_index`` (0-based), ``image_size_px``, ``pixel_size_a``
        (output), ``micrograph_pixel_size_a`` and ``ctf_phase_flipped`` (1 when phase-flipped:
        RELION's ``rlnCtfDataArePhaseFlipped``, so readers apply ``|CTF|``, not the CTF again).
    skipped_edge : DataFrame
        Picks whose box left the micrograph.
    pixel_size_a : float
        Output pixel size.
    """

    stack: NDArray[np.float32]
    table: pd.DataFrame
    skipped_edge: pd.DataFrame
    pixel_size_a: float


_CTF_COLUMNS = ("defocus_u_a", "defocus_v_a", "defocus_angle_deg")


def _row_ctf(row: pd.Series, fallback: CTFParams | None) -> CTFParams:
    import pandas as pd

    if all(c in row.index and pd.notna(row[c]) for c in _CTF_COLUMNS):
        return CTFParams.from_row(row, fallback)
    if fallback is None:
        raise InputError("ctf", "phase flipping needs defocus per pick or a micrograph CTF")
    return fallback


def extract_particles(
    image: ArrayLike,
    picks: pd.DataFrame,
    box_px: int,
    pixel_size_a: float,
    *,
    pixel_size_out_a: float | None = None,
    invert: bool = False,
    normalise: bool = True,
    bg_radius_px: float | None = None,
    ctf: CTFParams | None = None,
    phase_flip_ctf: bool = False,
) -> ExtractionResult:
    """Extract, optionally phase-flip, down-sample, invert and normalise particles.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
        The micrograph.
    picks
        Picks of this micrograph (``x_px``, ``y_px``; defocus columns for local phase
        flipping).
    box_px
        Box edge in micrograph pixels.
    pixel_size_a
        Micrograph pixel size (Å).
    pixel_size_out_a
        Target pixel size; the output box is :func:`output_box_size`.
    invert
        Multiply by −1 (dark particles become bright, as RELION expects).
    normalise
        Background to mean 0, sd 1 (:func:`normalise_background`).
    bg_radius_px
        Background radius in **output** pixels; default :func:`default_bg_radius_px`.
    ctf
        Micrograph CTF, used for picks without their own defocus.
    phase_flip_ctf
        Phase-flip every box with its CTF.

    Returns
    -------
    ExtractionResult
    """
    img = _check_inputs(image, pixel_size_a, pixel_size_out_a)
    xy = picks[["x_px", "y_px"]].to_numpy(np.float64)
    boxes, kept = cut_boxes(img, xy, int(box_px))
    table = picks.loc[kept].reset_index(drop=True)
    if phase_flip_ctf and len(boxes):
        for k in range(len(boxes)):
            boxes[k] = phase_flip(boxes[k], _row_ctf(table.iloc[k], ctf), pixel_size_a)
    stack, m, out_px = _finish(boxes, int(box_px), pixel_size_a, pixel_size_out_a, invert, normalise,
                               bg_radius_px)
    table = table.assign(image_index=np.arange(len(table), dtype=np.int64), image_size_px=m,
                         pixel_size_a=out_px, micrograph_pixel_size_a=float(pixel_size_a),
                         ctf_phase_flipped=np.int64(1 if phase_flip_ctf else 0))
    skipped = picks.loc[~kept].reset_index(drop=True)
    return ExtractionResult(stack, table, skipped, out_px)


def _check_inputs(image: ArrayLike, pixel_size_a: float, pixel_size_out_a: float | None) -> NDArray[np.float32]:
    if not pixel_size_a > 0:
        raise InputError("pixel-size", f"must be > 0 Å, got {pixel_size_a}")
    if pixel_size_out_a is not None and not (np.isfinite(pixel_size_out_a) and pixel_size_out_a > 0):
        raise InputError("pixel_size_out_a", f"must be > 0 Å, got {pixel_size_out_a}")
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise InputError("micrograph", f"must be a 2-D image, got shape {img.shape}")
    return img


def _finish(boxes: NDArray[np.float32], box_px: int, pixel_size_a: float, pixel_size_out_a: float | None,
            invert: bool, normalise: bool, bg_radius_px: float | None) -> tuple[NDArray[np.float32], int, float]:
    """Down-sample, invert and normalise cut boxes: ``(stack, output box, output pixel size)``."""
    m = output_box_size(box_px, pixel_size_a, pixel_size_out_a)
    out_px = pixel_size_a * box_px / m
    if m != box_px and len(boxes):
        from cryoset.fourier.crop import fourier_crop  # scipy.fft: only when down-sampling

        stack = fourier_crop(boxes, (m, m))
    else:
        stack = boxes
    if invert:
        stack = -stack
    if normalise and len(stack):
        stack = normalise_background(
            stack, default_bg_radius_px(m) if bg_radius_px is None else bg_radius_px
        )
    return np.asarray(stack, dtype=np.float32), m, out_px


def extract_boxes(
    image: ArrayLike,
    xy: ArrayLike,
    box_px: int,
    pixel_size_a: float,
    *,
    pixel_size_out_a: float | None = None,
    invert: bool = False,
    normalise: bool = True,
    bg_radius_px: float | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.bool_], float]:
    """:func:`extract_particles` without phase flipping, on arrays (no pandas).

    Parameters
    ----------
    image : array_like, shape (ny, nx)
    xy : array_like, shape (n, 2)
        Pick centres ``(x_px, y_px)``.
    box_px, pixel_size_a, pixel_size_out_a, invert, normalise, bg_radius_px
        As for :func:`extract_particles`.

    Returns
    -------
    stack : ndarray of float32, shape (k, m, m)
        The same images :func:`extract_particles` returns for these picks.
    kept : ndarray of bool, shape (n,)
        False for picks whose box leaves the micrograph.
    pixel_size_a : float
        Output pixel size.
    """
    img = _check_inputs(image, pixel_size_a, pixel_size_out_a)
    boxes, kept = cut_boxes(img, np.asarray(xy, dtype=np.float64).reshape(-1, 2), int(box_px))
    stack, _, out_px = _finish(boxes, int(box_px), pixel_size_a, pixel_size_out_a, invert, normalise,
                               bg_radius_px)
    return stack, kept, out_px
