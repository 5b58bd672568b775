"""Direct Fourier inversion of particle images with known poses and CTFs, half maps and FSC.

Algorithm (all frequencies in index units of the padded grid ``N = pad · b`` for ``b × b``
images; conventions of :mod:`cryoset.geometry`):

1. Each image is centred by its RELION 3.1 shift ``(shift_x_a, shift_y_a)`` (the particle
   centre sits at ``−shift`` from the box centre, so the centred image is
   ``X(p − s)``, a phase factor) and Fourier transformed (``rfft2`` about pixel ``b//2``);
   its frequency ``k`` (cycles per ``b``) is the padded-grid frequency ``(N/b) k``
   (``pad_images=True`` instead zero-pads the image to ``N × N`` first).
2. By the projection-slice theorem the image transform at ``(kx, ky)`` is the map transform at
   ``Aᵀ (kx, ky, 0)``. Every coefficient inside the sphere ``|k| < N/2 − 1`` is spread
   trilinearly onto the 8 neighbouring voxels of an ``N × N × (N//2+1)`` half-grid
   (Friedel mates fold into ``kx ≥ 0``), accumulating

   ``D(k) = Σ_j w_j CTF_j X_j``  and  ``W(k) = Σ_j w_j CTF_j²``  (``w_j``: trilinear weights).
   For phase-flipped images (``phase_flipped`` in the CTF parameters; the CTF left in them is
   ``|CTF|``) ``|CTF_j|`` replaces ``CTF_j`` in ``D``; ``W`` is unchanged (RELION's
   ``--ctf_phase_flipped``).

   With ``--symmetry`` every image is inserted once per operator ``R`` with pose ``A R``
   (:mod:`cryoset.recon.symmetry`).
3. The map transform is the Wiener estimate ``V̂ = D / (W + 1/SNR)``. By default ``1/SNR``
   is set per shell from the half-map FSC (RELION's τ² idea): a half map's per-voxel SNR is
   ``FSC/(1 − FSC)`` and its noise variance ``1/W̄``, so the signal-to-noise power ratio of the
   data is ``SNR(shell) = FSC/(1 − FSC) · W̄(shell)`` with ``W̄`` the mean half-set weight in the
   shell; a fixed ``wiener_constant`` may be given instead.
4. ``irfftn``, ``fftshift``, crop the central ``b³``: the map is in the units of
   :func:`cryoset.simulate.projection.project_fourier` (image = sum over voxels along z), so
   projections of a map reconstruct that map.
5. Gridding correction (default; ``gridding_correction=False`` skips it). ``D/W`` is a
   *normalised convolution*: where samples ``p_j`` are dense around a grid point ``g``,
   ``D(g)/W(g) ≈ Σ K(g − p) V(p) / Σ K(g − p) = (K * V)(g)``, a convolution of the map's
   transform with the trilinear kernel ``K``, i.e. the real-space map is multiplied by
   ``FT(K) = sinc²(x/N) sinc²(y/N) sinc²(z/N)`` (``x`` in voxels from the centre, ``N`` the
   padded edge): for ``N = 2b`` 0.90 at ``0.35 b`` on an axis, 0.81 at ``b/2``, 0.53 in the
   corners. Sharing the kernel between ``D`` and ``W`` cancels the *sampling density*, not this
   apodisation. The map is divided by :func:`gridding_factor` inside the inscribed sphere
   (radius ``b/2``) and set to zero outside it with a 3-voxel raised-cosine edge
   (:func:`inscribed_sphere_mask`; RELION also masks outside ``b/2``): density outside that
   sphere leaves the ``b × b`` image in some views, so the corners hold only noise, which the
   correction would amplify up to 1.9×. Where samples are sparse (few images, high frequency)
   ``D/W`` interpolates rather than smooths and the apodisation is somewhat stronger; that
   frequency-dependent remainder is not corrected (measured in docs/reconstruct.md). Half
   maps and the maps whose FSC sets ``1/SNR`` are corrected the same way.

Half maps come from ``random_subset`` (1/2) when present, otherwise from a seeded random
split; the gold-standard FSC between them gives the resolution at 0.143.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from cryoset.fourier.shells import shell_count, shell_index, shell_sum
from cryoset.fourier.slices import insert_slices_trilinear
from cryoset.recon.fsc import CorrelationCurve, fourier_shell_correlation, resolution_at

#: Images per batch when transforming and inserting (bounds memory).
_BATCH = 64

#: Raised-cosine edge (voxels) of the mask outside the inscribed sphere (gridding correction).
SPHERE_EDGE_PX = 3.0


@dataclass
class FourierAccumulator:
    """Sums ``D = Σ w CTF X`` and ``W = Σ w CTF²`` on the padded half-grid.

    Attributes
    ----------
    data : ndarray, complex128, shape (N, N, N//2 + 1)
    weight : ndarray, float64, shape (N, N, N//2 + 1)
    box : int
        Image (and output map) edge ``b``.
    n_images : int
        Images inserted (each symmetry copy counted once).
    """

    data: NDArray[np.complex128]
    weight: NDArray[np.float64]
    box: int
    n_images: int = 0

    @classmethod
    def empty(cls, box: int, pad: int = 2) -> FourierAccumulator:
        """An empty accumulator for ``box × box`` images padded ``pad`` times."""
        n_pad = int(pad) * int(box)
        shape = (n_pad, n_pad, n_pad // 2 + 1)
        return cls(np.zeros(shape, np.complex128), np.zeros(shape, np.float64), int(box))

    @property
    def n_pad(self) -> int:
        return int(self.data.shape[0])

    def __add__(self, other: FourierAccumulator) -> FourierAccumulator:
        return FourierAccumulator(self.data + other.data, self.weight + other.weight, self.box,
                                  self.n_images + other.n_images)


def image_transforms(images: NDArray[np.float32], shifts_px: NDArray[np.float64], n_pad: int
                     ) -> NDArray[np.complex64]:
    """Centre, pad and ``rfft2`` a batch of images.

    Parameters
    ----------
    images : array, shape (m, b, b)
    shifts_px : array, shape (m, 2)
        RELION 3.1 shifts ``(x, y)`` in pixels.
    n_pad : int
        Edge ``N`` of the transform (``≥ b``; equal to ``b`` for no padding).

    Returns
    -------
    ndarray, complex64, shape (m, N, N//2 + 1)
        Transform of the centred image, real-space origin at pixel ``N//2``.
    """
    m, b = images.shape[0], images.shape[-1]
    padded = np.zeros((m, n_pad, n_pad), np.float32)
    o = n_pad // 2 - b // 2
    padded[:, o:o + b, o:o + b] = images
    spec = scipy.fft.rfft2(np.fft.ifftshift(padded, axes=(-2, -1)), workers=-1)
    ky = np.fft.fftfreq(n_pad)[:, None]
    kx = np.fft.rfftfreq(n_pad)[None, :]
    sx = shifts_px[:, 0, None, None]
    sy = shifts_px[:, 1, None, None]
    phase = np.exp(-2j * np.pi * (kx * sx + ky * sy))
    return (spec * phase).astype(np.complex64)


def _ctf_batch(ctf_params: dict[str, NDArray[np.float64]] | None, idx: NDArray[np.int64],
               n_pad: int, pixel_size_a: float) -> NDArray[np.float32] | None:
    if ctf_params is None:
        return None
    from cryoset.ctf.model import ctf_2d_batch

    ctf = ctf_2d_batch(
        ctf_params["defocus_u_a"][idx], ctf_params["defocus_v_a"][idx],
        ctf_params["defocus_angle_deg"][idx], (n_pad, n_pad), pixel_size_a,
        voltage_kv=float(ctf_params["voltage_kv"][idx[0]]), cs_mm=float(ctf_params["cs_mm"][idx[0]]),
        amplitude_contrast=float(ctf_params["amplitude_contrast"][idx[0]]),
        phase_shift_deg=ctf_params["phase_shift_deg"][idx], bfactor_a2=ctf_params["bfactor_a2"][idx],
        rfft=True)
    flags = ctf_params.get("phase_flipped")
    if flags is not None:  # phase-flipped images carry |CTF|
        flipped = np.asarray(flags)[idx] != 0
        if flipped.any():
            ctf[flipped] = np.abs(ctf[flipped])
    return ctf


def backproject(acc: FourierAccumulator, images: Any, rotations: NDArray[np.float64],
                shifts_px: NDArray[np.float64], pixel_size_a: float, *,
                ctf_params: dict[str, NDArray[np.float64]] | None = None,
                symmetry_ops: NDArray[np.float64] | None = None, pad_images: bool = False,
                weights: NDArray[np.float64] | None = None,
                progress: Callable[[int], None] | None = None) -> FourierAccumulator:
    """Insert images into an accumulator (in place) and return it.

    Parameters
    ----------
    acc
        Accumulator for ``b × b`` images.
    images : array-like, shape (n, b, b)
        Particle images (indexable lazily, e.g. a memory-mapped stack).
    rotations : array, shape (n, 3, 3)
        RELION matrices ``A``.
    shifts_px : array, shape (n, 2)
        RELION 3.1 shifts (x, y) in pixels.
    pixel_size_a
        Pixel size (for the CTF).
    ctf_params
        Per-image arrays ``defocus_u_a``, ``defocus_v_a``, ``defocus_angle_deg``,
        ``phase_shift_deg``, ``bfactor_a2``, ``voltage_kv``, ``cs_mm``, ``amplitude_contrast``
        (shape (n,)) and optionally ``phase_flipped`` (non-zero: the image was phase-flipped,
        ``|CTF|`` is used); None for images without CTF (CTF = 1).
    symmetry_ops : array, shape (s, 3, 3), optional
        Point-group operators; each image is inserted with poses ``A @ R``.
    pad_images
        Zero-pad images to ``N × N`` before the 2D FFT (denser 2D samples); default False:
        the ``b × b`` transform is inserted at frequencies scaled by ``N / b`` (RELION's way;
        0.4 Å better 0.5-crossing on simulated data, see docs/reconstruct.md).
    weights : array, shape (n,), optional
        Per-row weight multiplying both the image term (``D``) and the ``CTF²`` term (``W``):
        an image inserted at several poses with weights summing to 1 counts once
        (posterior-weighted back-projection). None: every row weight 1 (unweighted code path).
    progress
        Called with the number of images done after each batch.
    """
    n = rotations.shape[0]
    wrow = None if weights is None else np.asarray(weights, np.float64)
    if wrow is not None and wrow.shape != (n,):
        raise ValueError(f"weights: expected shape ({n},), got {wrow.shape}")
    ops = np.eye(3)[None] if symmetry_ops is None else np.asarray(symmetry_ops, np.float64)
    for start in range(0, n, _BATCH):
        idx = np.arange(start, min(start + _BATCH, n))
        batch = np.asarray(images[start:idx[-1] + 1], dtype=np.float32)
        grid = acc.n_pad if pad_images else acc.box
        spec = image_transforms(batch, shifts_px[idx], grid)
        ctf = _ctf_batch(ctf_params, idx, grid, pixel_size_a)
        if ctf is None:
            ctf2 = np.ones(spec.shape, np.float32)
        else:
            spec *= ctf
            ctf2 = (ctf * ctf).astype(np.float32)
        if wrow is not None:
            wb = wrow[idx, None, None]
            spec = (spec * wb).astype(np.complex64)
            ctf2 = (ctf2 * wb).astype(np.float32)
        for op in ops:
            rots = np.ascontiguousarray(rotations[idx] @ op)
            insert_slices_trilinear(spec, ctf2, rots, acc.data, acc.weight)
        acc.n_images += idx.size * ops.shape[0]
        if progress is not None:
            progress(int(idx[-1]) + 1)
    return acc


def _hermitian_plane(acc: FourierAccumulator) -> tuple[NDArray[np.complex128], NDArray[np.float64]]:
    """Symmetrise the ``kx = 0`` plane (each sample lands on one side of it only)."""
    data = acc.data.copy()
    weight = acc.weight.copy()
    d0 = data[:, :, 0]
    w0 = weight[:, :, 0]
    flip = (-np.arange(acc.n_pad)) % acc.n_pad
    mate_d = np.conj(d0[np.ix_(flip, flip)])
    mate_w = w0[np.ix_(flip, flip)]
    data[:, :, 0] = d0 + mate_d
    weight[:, :, 0] = w0 + mate_w
    return data, weight


def shell_regulariser(half1: FourierAccumulator, half2: FourierAccumulator,
                      fsc: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-shell ``1/SNR`` (padded-grid shells ``0 … N//2``) from a half-map FSC.

    ``fsc`` is the FSC of the half maps on the *cropped* ``b`` grid (shell ``i`` at frequency
    ``i / b``); padded shell ``j`` maps to cropped shell ``j · b / N``.
    """
    n_pad = half1.n_pad
    shells = shell_index(n_pad, 3)
    nshell = n_pad // 2 + 1
    wsum = shell_sum(0.5 * (half1.weight + half2.weight), shells, nshell)
    count = shell_count(shells, nshell)
    wmean = wsum / np.maximum(count, 1)
    f = np.nan_to_num(np.asarray(fsc, np.float64), nan=0.0)
    cropped = np.arange(nshell) * half1.box / n_pad
    f_pad = np.interp(cropped, np.arange(f.size), f)
    f_pad = np.clip(f_pad, 1e-3, 0.999)
    snr = f_pad / (1.0 - f_pad) * np.maximum(wmean, 1e-12)
    return np.asarray(1.0 / snr, np.float64)


def gridding_factor(box: int, n_pad: int) -> NDArray[np.float32]:
    """Real-space apodisation of the trilinear normalised-convolution estimate, shape (b, b, b).

    ``c(x) c(y) c(z)`` with ``c(x) = sinc²(x / N)`` (``x`` in voxels from voxel ``b//2``,
    ``N`` the padded grid edge, ``sinc(u) = sin(πu)/(πu)``): the Fourier transform of the
    trilinear kernel (:func:`cryoset.simulate.projection.gridding_correction`, order 1).
    For ``N = 2b`` it is 0.81 at ``x = b/2`` on an axis and 0.53 in the box corners.

    Parameters
    ----------
    box
        Map edge ``b``.
    n_pad
        Padded Fourier grid edge ``N``.

    Returns
    -------
    ndarray, float32, shape (b, b, b)
    """
    from cryoset.simulate.projection import gridding_correction

    o = n_pad // 2 - box // 2
    c = gridding_correction(n_pad, 1)[o:o + box]
    c32 = c.astype(np.float32)
    return c32[:, None, None] * c32[None, :, None] * c32[None, None, :]


def inscribed_sphere_mask(box: int, edge_px: float = SPHERE_EDGE_PX) -> NDArray[np.float32]:
    """1 inside the sphere of radius ``b/2`` about voxel ``b//2``, a raised-cosine edge of
    ``edge_px`` voxels outside it, 0 beyond; shape (b, b, b)."""
    r1 = np.abs(np.arange(box, dtype=np.float32) - box // 2) ** 2
    r = np.sqrt(r1[:, None, None] + r1[None, :, None] + r1[None, None, :])
    mask = (r <= 0.5 * box).astype(np.float32)
    band = (r > 0.5 * box) & (r < 0.5 * box + edge_px)
    t = (r[band] - 0.5 * box) / np.float32(edge_px)
    mask[band] = 0.5 + 0.5 * np.cos(np.pi * t)
    return mask


def invert(acc: FourierAccumulator, regulariser: float | NDArray[np.float64], *,
           gridding_correction: bool = True) -> NDArray[np.float32]:
    """The map ``irfftn(D / (W + reg))`` cropped to ``b³``, gridding-corrected by default.

    Parameters
    ----------
    acc
        Filled accumulator.
    regulariser
        ``1/SNR``: a constant, or per padded shell (shape (N//2 + 1,), see
        :func:`shell_regulariser`).
    gridding_correction
        Divide the map by :func:`gridding_factor` and multiply it by
        :func:`inscribed_sphere_mask` (module docstring, step 5); False: the map as inverted.

    Returns
    -------
    ndarray, float32, shape (b, b, b)
    """
    return _invert(acc, regulariser, _correction_arrays(acc) if gridding_correction else None)


Correction = tuple[NDArray[np.float32], NDArray[np.float32]]


def _correction_arrays(acc: FourierAccumulator) -> Correction:
    """(:func:`inscribed_sphere_mask`, :func:`gridding_factor`) for the accumulator's grid."""
    return inscribed_sphere_mask(acc.box), gridding_factor(acc.box, acc.n_pad)


def _invert(acc: FourierAccumulator, regulariser: float | NDArray[np.float64],
            correction: Correction | None) -> NDArray[np.float32]:
    """:func:`invert` with the correction arrays given (computed once per reconstruction)."""
    out = _inverse(acc, regulariser)
    if correction is not None:
        mask, factor = correction
        out *= mask
        out /= factor
    return out


def _inverse(acc: FourierAccumulator, regulariser: float | NDArray[np.float64]) -> NDArray[np.float32]:
    """``irfftn(D / (W + reg))`` cropped to ``b³``, uncorrected."""
    data, weight = _hermitian_plane(acc)
    n_pad = acc.n_pad
    shells = _shells(n_pad)
    reg_arr = np.asarray(regulariser, np.float64)
    floor = 1e-6 * max(float(weight.max()), 1e-30)
    good = (weight > floor) & (shells < n_pad // 2 - 1)
    denom = weight  # W + reg, in place on the copy made by _hermitian_plane
    denom += float(reg_arr) if reg_arr.ndim == 0 else reg_arr[np.minimum(shells, reg_arr.size - 1)]
    spec = np.zeros_like(data)
    np.divide(data, denom, out=spec, where=good)
    vol = scipy.fft.irfftn(spec, s=(n_pad,) * 3, workers=-1)
    # the centred b³ box of fftshift(vol), read straight from the unshifted volume
    b = acc.box
    idx = (np.arange(n_pad // 2 - b // 2, n_pad // 2 - b // 2 + b) - n_pad // 2) % n_pad
    return np.ascontiguousarray(vol[np.ix_(idx, idx, idx)], dtype=np.float32)


@lru_cache(maxsize=4)
def _shells(n_pad: int) -> NDArray[np.int64]:
    """:func:`shell_index` of the padded 3-D half grid, computed once per size (read-only)."""
    shells = shell_index(n_pad, 3)
    shells.flags.writeable = False
    return shells


@dataclass
class Reconstruction:
    """Result of :func:`reconstruct`.

    Attributes
    ----------
    volume, half1, half2 : ndarray, float32, shape (b, b, b)
        Full map and half maps (``(z, y, x)``).
    fsc : CorrelationCurve
        Gold-standard FSC between the half maps.
    resolution_a : float
        Where the FSC falls below 0.143.
    voxel_size_a : float
    n_particles : tuple of int
        Particles in half 1 and half 2.
    regulariser : ndarray
        The per-shell ``1/SNR`` used (padded shells), or the constant as a 1-element array.
    """

    volume: NDArray[np.float32]
    half1: NDArray[np.float32]
    half2: NDArray[np.float32]
    fsc: CorrelationCurve
    resolution_a: float
    voxel_size_a: float
    n_particles: tuple[int, int]
    regulariser: NDArray[np.float64]


def reconstruct(images: Any, rotations: NDArray[np.float64],
                shifts_px: NDArray[np.float64], pixel_size_a: float, *,
                ctf_params: dict[str, NDArray[np.float64]] | None = None,
                subsets: NDArray[np.int64] | None = None, seed: int = 0,
                symmetry: str = "C1", wiener_constant: float | None = None, pad: int = 2,
                pad_images: bool = False, gridding_correction: bool = True,
                weights: NDArray[np.float64] | None = None,
                progress: Callable[[int], None] | None = None) -> Reconstruction:
    """Reconstruct a map and its half maps from posed particle images.

    Parameters
    ----------
    images : array-like, shape (n, b, b)
    rotations : array, shape (n, 3, 3)
        RELION matrices ``A``.
    shifts_px : array, shape (n, 2)
        RELION 3.1 shifts (x, y) in pixels.
    pixel_size_a
        Pixel size (Å); also the voxel size of the map.
    ctf_params
        See :func:`backproject`; None: no CTF.
    subsets : array of int, shape (n,), optional
        Half-set of every particle (1 or 2, RELION's ``rlnRandomSubset``); default a seeded
        random split into two equal halves.
    seed
        Seed of the random split.
    symmetry
        Point group (``C1``, ``Cn``, ``Dn``).
    wiener_constant
        Fixed ``1/SNR``; None: per shell from the half-map FSC (module docstring).
    pad
        Padding factor of the Fourier grid.
    pad_images
        See :func:`backproject`.
    gridding_correction
        Divide by the trilinear apodisation inside the inscribed sphere and zero the corners
        (module docstring, step 5); False: the estimate as inverted.
    weights : array, shape (n,), optional
        Per-row insertion weights (:func:`backproject`); rows may repeat an image at several
        poses (``images`` indexed lazily by a row map) when their weights sum to 1 per image.
        ``n_particles`` then counts rows. None: unweighted.
    progress
        Called with the number of images inserted so far.

    Returns
    -------
    Reconstruction
    """
    from cryoset.recon.symmetry import symmetry_operators

    n, b = rotations.shape[0], int(images.shape[-1])
    if n < 2:
        raise ValueError(f"need at least 2 particles for half maps, got {n}")
    if subsets is None:
        rng = np.random.default_rng(seed)
        subsets = np.ones(n, np.int64)
        subsets[rng.permutation(n)[: n // 2]] = 2
    subsets = np.asarray(subsets, np.int64)
    if not np.isin(subsets, (1, 2)).all() or not ((subsets == 1).any() and (subsets == 2).any()):
        raise ValueError("subsets must hold 1 and 2 only, both present")
    ops = symmetry_operators(symmetry)
    halves = []
    done = 0
    for h in (1, 2):
        sel = np.flatnonzero(subsets == h)
        acc = FourierAccumulator.empty(b, pad)
        sub_ctf = None if ctf_params is None else {k: np.asarray(v)[sel] for k, v in ctf_params.items()}

        def report(k: int, offset: int = done) -> None:
            if progress is not None:
                progress(offset + k)

        backproject(acc, _Take(images, sel), rotations[sel], shifts_px[sel], pixel_size_a,
                    ctf_params=sub_ctf, symmetry_ops=ops, pad_images=pad_images,
                    weights=None if weights is None else np.asarray(weights, np.float64)[sel],
                    progress=report)
        done += sel.size
        halves.append(acc)
    tiny = 1e-6 * max(float(halves[0].weight.max()), 1e-30)
    # the correction arrays serve all (up to five) maps inverted here
    correction = _correction_arrays(halves[0]) if gridding_correction else None
    if wiener_constant is None:
        m1, m2 = _invert(halves[0], tiny, correction), _invert(halves[1], tiny, correction)
        fsc0 = fourier_shell_correlation(m1, m2, voxel_size_a=pixel_size_a)
        reg = shell_regulariser(halves[0], halves[1], fsc0.correlation)
    else:
        reg = np.array([float(wiener_constant)])
    r_arg: float | NDArray[np.float64] = reg if reg.size > 1 else float(reg[0])
    h1, h2 = _invert(halves[0], r_arg, correction), _invert(halves[1], r_arg, correction)
    full = _invert(halves[0] + halves[1], r_arg, correction)
    curve = fourier_shell_correlation(h1, h2, voxel_size_a=pixel_size_a)
    res = resolution_at(curve.correlation, curve.freq_per_a, 0.143)
    return Reconstruction(full, h1, h2, curve, res, float(pixel_size_a),
                          (int((subsets == 1).sum()), int((subsets == 2).sum())), reg)


class _Take:
    """Lazy row selection of an indexable stack (slices of the selection read in one go)."""

    def __init__(self, images: Any, rows: NDArray[np.int64]) -> None:
        rows = np.asarray(rows, np.int64)
        if isinstance(images, _Take):  # a selection of a selection: compose the row maps
            rows = images.rows[rows]
            images = images.images
        self.images: Any = images
        self.rows: NDArray[np.int64] = rows
        self.shape = (rows.size, *images.shape[1:])

    def __getitem__(self, key: slice) -> NDArray[np.float32]:
        rows = self.rows[key]
        return np.asarray(self.images[rows] if isinstance(self.images, np.ndarray)
                          else np.stack([np.asarray(self.images[int(r)]) for r in rows]), np.float32)
