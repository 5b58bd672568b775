"""Projection matching: the posterior over poses of particle images given a 3D reference.

Model (RELION's, per particle ``i``): the centred image transform is the CTF-modulated
central slice of the reference plus complex Gaussian noise of per-shell power ``σ²(|k|)``::

    X_i(k) · exp(-2πi k·s) = CTF_i(k) · V(Aᵀ k) + n(k),   E|n(k)|² = σ²(|k|)

so the log-likelihood of pose ``(A, s)`` (RELION matrix ``A``, RELION 3.1 origin shift ``s``
in pixels) is ``-Σ_k w_k |X_i(k) e^{-2πi k·s} − CTF_i(k) V(Aᵀk)|² / σ²(|k|)`` over the
``rfft2`` half plane (``w_k = 2`` for ``kx > 0``, 1 on the ``kx = 0`` column, the DC term
left out) up to ``|k| ≤ k_max = b · pixel_size_a / max_resolution_a``. Expanding the square,
the cross term for all (shift, orientation) pairs of a batch is one real matrix product
``[Re Z, Im Z] @ [Re P; Im P]`` (``Z = X e^{-2πik·s} CTF w/σ²``, ``P`` the reference slices)
and the ``CTF² |P|²`` term another, so the search is BLAS-bound.

Speed: only the ``|k| ≤ k_max`` coefficients are used — the slices are extracted straight onto
the Fourier-cropped ``s × (s//2+1)`` grid (``s = 2 k_max``) from the padded, gridding-
corrected reference transform (:func:`cryoset.simulate.projection.fourier_volume`,
:func:`cryoset.fourier.slices.extract_slices_trilinear`), which is the transform of the
Fourier-cropped projection; the image transforms are cropped to the same coefficients.
Reference slices are computed once per orientation per call (global search) and shared by all
particles; a local search extracts each particle's own neighbourhood.

Posterior: uniform prior over the grid (orientations × shifts); ``max_probability`` is the
posterior of the best pose (RELION's ``rlnMaxValueProbDistribution``); ``angular_error_deg``
is ``sqrt(Σ_j p_j d_j²)`` with ``p_j`` the orientation marginal and ``d_j`` the geodesic
angle from the best orientation (the closest symmetry mate under ``symmetry``). With
``n_best = k > 1`` the ``k`` orientations of highest marginal, each at its most probable shift,
are returned too, their marginals renormalised over the ``k`` and cut at :data:`SOFT_MASS` of
the cumulative mass (weights for posterior-weighted back-projection).

Noise: ``noise_power[i]`` is ``E|n(k)|²`` of the *unnormalised* ``rfft2`` of a ``b × b``
image for ``round(|k|) = i`` (white real-space noise of variance ``v`` gives ``b² v``). When
None, the mean image power per shell is used (signal + noise: an over-estimate of the noise,
so a broader, conservative posterior).

Grids: :func:`so3_grid` takes ``4π/step²`` Fibonacci-sphere viewing directions × ``360/step``
in-plane angles (183 × 24 at 15°; RELION's HEALPix order 2: 192 × 24), restricted for a point group to
the rotations ``A`` closer to the identity than all their mates ``A R`` (a fundamental
domain of the right action, i.e. the asymmetric unit); :func:`local_grid` takes the rotation
vectors on a cubic lattice of spacing ``step`` inside a ball of radius ``range``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["PoseSearchResult", "local_grid", "search_poses", "shift_grid", "so3_grid"]

#: Particles per inner batch of the likelihood products (bounds memory).
_PARTICLE_BATCH = 32
#: Orientations per batch in the global search.
_ORIENT_BATCH = 1024
#: Soft assignment keeps the most probable poses until this cumulative posterior mass.
SOFT_MASS = 0.999


@dataclass
class PoseSearchResult:
    """Best poses and posterior statistics of :func:`search_poses` (one row per image)."""

    rotations: NDArray[np.float64]
    shifts_px: NDArray[np.float64]
    max_probability: NDArray[np.float64]
    angular_error_deg: NDArray[np.float64]
    log_likelihood: NDArray[np.float64]
    #: With ``n_best > 1``: the ``k`` most probable orientations per image (by the orientation
    #: marginal), each at its most probable shift, shape (n, k, 3, 3) / (n, k, 2), and their
    #: posterior probabilities renormalised over the poses kept, shape (n, k) (poses beyond
    #: :data:`SOFT_MASS` of the cumulative mass get weight 0). None when ``n_best == 1``.
    top_rotations: NDArray[np.float64] | None = None
    top_shifts_px: NDArray[np.float64] | None = None
    top_weights: NDArray[np.float64] | None = None


def so3_grid(step_deg: float, symmetry: str = "C1") -> NDArray[np.float64]:
    """RELION rotation matrices covering SO(3) (or its asymmetric unit) at about ``step_deg``.

    Parameters
    ----------
    step_deg
        Angular spacing (degrees, > 0).
    symmetry
        Point group; the grid keeps one rotation of every coset ``{A R}``.

    Returns
    -------
    ndarray, shape (m, 3, 3)

    Examples
    --------
    >>> so3_grid(15.0).shape
    (4392, 3, 3)
    """
    from cryoset.geometry import euler_to_matrix
    from cryoset.recon.symmetry import symmetry_operators

    if not (math.isfinite(step_deg) and step_deg > 0):
        raise ValueError(f"step_deg must be > 0, got {step_deg}")
    step = math.radians(step_deg)
    n_dir = max(2, round(4.0 * math.pi / step**2))
    n_psi = max(1, round(360.0 / step_deg))
    i = np.arange(n_dir, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * i / n_dir
    phi = (math.pi * (3.0 - math.sqrt(5.0)) * i) % (2.0 * math.pi)
    rot = np.rad2deg(phi)
    tilt = np.rad2deg(np.arccos(np.clip(z, -1.0, 1.0)))
    psi = np.arange(n_psi, dtype=np.float64) * 360.0 / n_psi
    mats = euler_to_matrix(rot[:, None], tilt[:, None], psi[None, :]).reshape(-1, 3, 3)
    ops = symmetry_operators(symmetry)
    if ops.shape[0] > 1:
        # trace(A R) for every operator: keep A when it is (one of) the closest mates to I
        traces = np.einsum("mab,sba->ms", mats, ops)
        keep = traces[:, 0] >= traces.max(axis=1) - 1e-9
        mats = mats[keep]
    return np.ascontiguousarray(mats)


def _rotvec_offsets(range_deg: float, step_deg: float) -> NDArray[np.float64]:
    """Rotation vectors (radians) on a cubic lattice of spacing ``step`` within ``range``."""
    if not (step_deg > 0 and range_deg >= 0):
        raise ValueError(f"need step_deg > 0 and range_deg >= 0, got {step_deg}, {range_deg}")
    n = math.floor(range_deg / step_deg + 1e-9)
    ax = np.arange(-n, n + 1, dtype=np.float64) * step_deg
    g = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)
    g = g[np.linalg.norm(g, axis=1) <= range_deg + 1e-9]
    # identity first, then by distance (deterministic order)
    order = np.lexsort((g[:, 2], g[:, 1], g[:, 0], np.round(np.linalg.norm(g, axis=1), 9)))
    return np.deg2rad(g[order])


def local_grid(centres: NDArray[np.float64], range_deg: float, step_deg: float) -> NDArray[np.float64]:
    """Rotations within ``range_deg`` of a centre: ``exp([v]×) @ centre`` for rotation vectors
    ``v`` on a cubic lattice of spacing ``step_deg`` with ``|v| ≤ range_deg`` (identity first).

    Parameters
    ----------
    centres : array, shape (3, 3) or (n, 3, 3)
        RELION matrices.
    range_deg, step_deg
        Radius and spacing (degrees).

    Returns
    -------
    ndarray, shape (m, 3, 3) (or (n, m, 3, 3) for ``n`` centres)

    Examples
    --------
    >>> local_grid(np.eye(3), 2.0, 1.0).shape
    (33, 3, 3)
    """
    from cryoset.geometry import rotvec_to_matrix

    c = np.asarray(centres, np.float64)
    deltas = rotvec_to_matrix(_rotvec_offsets(range_deg, step_deg))
    if c.ndim == 2:
        return np.ascontiguousarray(deltas @ c)
    return np.ascontiguousarray(deltas[None] @ c[:, None])


def shift_grid(range_px: float, step_px: float) -> NDArray[np.float64]:
    """Shift offsets ``(x, y)`` (pixels) on a square lattice of spacing ``step_px`` inside the
    disc of radius ``range_px``; ``(0, 0)`` first. Shape (t, 2)."""
    if not (step_px > 0 and range_px >= 0):
        raise ValueError(f"need step_px > 0 and range_px >= 0, got {step_px}, {range_px}")
    n = math.floor(range_px / step_px + 1e-9)
    ax = np.arange(-n, n + 1, dtype=np.float64) * step_px
    g = np.stack(np.meshgrid(ax, ax, indexing="xy"), axis=-1).reshape(-1, 2)
    g = g[np.hypot(g[:, 0], g[:, 1]) <= range_px + 1e-9]
    order = np.lexsort((g[:, 1], g[:, 0], np.round(np.hypot(g[:, 0], g[:, 1]), 9)))
    return g[order]


@dataclass
class _Coefficients:
    """The Fourier coefficients compared: positions on the b-grid and the cropped s-grid."""

    size: int                     # s, the cropped grid edge
    b_rows: NDArray[np.intp]      # row on the b × (b//2+1) rfft grid
    cols: NDArray[np.intp]        # column (kx) on both grids
    s_rows: NDArray[np.intp]      # row on the s × (s//2+1) grid
    kx: NDArray[np.float64]       # frequencies (cycles per b pixels)
    ky: NDArray[np.float64]
    shell: NDArray[np.intp]       # round(|k|)
    weight: NDArray[np.float64]   # 2 for kx > 0, 1 for kx = 0


def _coefficients(box: int, k_max: int) -> _Coefficients:
    s = 2 * k_max + 2  # the s-grid holds ky = -k_max … k_max (the kernel zeroes |k| > s//2)
    iy, ix = np.meshgrid(np.arange(s), np.arange(s // 2 + 1), indexing="ij")
    ky = np.where(iy < (s + 1) // 2, iy, iy - s).astype(np.float64)
    kx = ix.astype(np.float64)
    r = np.hypot(kx, ky)
    keep = (r <= k_max + 1e-9) & (r > 0)
    # the kx = 0 column holds both members of each Friedel pair: keep ky > 0 only, weight 2
    keep &= ~((kx == 0) & (ky < 0))
    ky_k, kx_k = ky[keep], kx[keep]
    return _Coefficients(size=s, b_rows=(ky_k.astype(np.intp) % box), cols=kx_k.astype(np.intp),
                         s_rows=iy[keep].astype(np.intp), kx=kx_k, ky=ky_k,
                         shell=np.rint(np.hypot(kx_k, ky_k)).astype(np.intp),
                         weight=np.full(kx_k.shape, 2.0))


def _shell_noise(noise_power: NDArray[np.float64] | None, spectra: NDArray[np.complex64],
                 coef: _Coefficients) -> NDArray[np.float64]:
    """σ² per compared coefficient (from ``noise_power`` or the mean image power per shell)."""
    if noise_power is not None:
        npow = np.asarray(noise_power, np.float64)
        sig = npow[np.minimum(coef.shell, npow.size - 1)]
    else:
        power = np.mean(np.abs(spectra) ** 2, axis=0)
        nshell = int(coef.shell.max()) + 1
        tot = np.bincount(coef.shell, weights=power, minlength=nshell)
        cnt = np.bincount(coef.shell, minlength=nshell)
        sig = (tot / np.maximum(cnt, 1))[coef.shell]
    floor = 1e-12 * max(float(np.max(sig)), 1e-30)
    return np.asarray(np.maximum(sig, floor), np.float64)


def _slices(fdata: NDArray[np.complex64], rots: NDArray[np.float64], scale: float,
            coef: _Coefficients) -> NDArray[np.complex64]:
    """Reference slices at the compared coefficients, shape (m, K)."""
    from cryoset.fourier.slices import extract_slices_trilinear
    from cryoset.simulate.potential import run_in_threads

    rot = np.ascontiguousarray(rots.reshape(-1, 3, 3), dtype=np.float64)
    s = coef.size
    out = np.empty((rot.shape[0], s, s // 2 + 1), np.complex64)

    def work(a: int, b: int) -> None:
        extract_slices_trilinear(fdata, rot[a:b], scale, out[a:b])

    run_in_threads(work, rot.shape[0])
    return np.ascontiguousarray(out[:, coef.s_rows, coef.cols])


def _symmetric_trace(best: NDArray[np.float64], rots: NDArray[np.float64],
                     ops: NDArray[np.float64]) -> NDArray[np.float64]:
    """max over operators R of trace(bestᵀ rots R): shape (n, m) for best (n,3,3), rots (m,3,3)."""
    bflat = best.reshape(-1, 9)
    out = None
    for op in ops:
        t = bflat @ (rots @ op).reshape(-1, 9).T
        out = t if out is None else np.maximum(out, t)
    assert out is not None
    return out


def _angular_spread(best: NDArray[np.float64], rots: NDArray[np.float64], prob: NDArray[np.float64],
                    ops: NDArray[np.float64]) -> NDArray[np.float64]:
    """sqrt(Σ_j p_j d_j²) (degrees) for prob (n, m) over rots (m,3,3) or (n,m,3,3)."""
    if rots.ndim == 3:
        tr = _symmetric_trace(best, rots, ops)
    else:
        tr = np.full(prob.shape, -np.inf)
        for op in ops:
            tr = np.maximum(tr, np.einsum("nab,nmab->nm", best, rots @ op))
    ang = np.rad2deg(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))
    return np.asarray(np.sqrt(np.sum(prob * ang**2, axis=1)), np.float64)


def _logsumexp(a: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.asarray(np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis)), np.float64)


def _reduce_shifts(score: NDArray[np.float64]
                   ) -> tuple[NDArray[np.float64], NDArray[np.intp], NDArray[np.float64]]:
    """Per orientation over the shift axis 1 of (nb, T, m): logsumexp, argmax, max."""
    arg = np.argmax(score, axis=1)
    top = np.take_along_axis(score, arg[:, None, :], axis=1)[:, 0, :]
    lse = top + np.log(np.sum(np.exp(score - top[:, None, :]), axis=1))
    return np.asarray(lse, np.float64), np.asarray(arg, np.intp), np.asarray(top, np.float64)


def search_poses(images: NDArray[np.float32], reference: NDArray[np.float32], pixel_size_a: float, *,
                 ctf_params: dict[str, NDArray[np.float64]] | None = None,
                 max_resolution_a: float, angular_step_deg: float = 7.5,
                 shift_range_px: float = 3.0, shift_step_px: float = 1.0,
                 prior_rotations: NDArray[np.float64] | None = None,
                 prior_shifts_px: NDArray[np.float64] | None = None,
                 local_range_deg: float | None = None, symmetry: str = "C1",
                 noise_power: NDArray[np.float64] | None = None, phase_flipped: bool = False,
                 n_best: int = 1, progress: Callable[[int], None] | None = None) -> PoseSearchResult:
    """Best pose and posterior statistics of every image against a reference (module docstring).

    Parameters
    ----------
    images : array, shape (n, b, b)
        Particle images at ``pixel_size_a``.
    reference : array, shape (b, b, b)
        Map ``(z, y, x)`` in the units of :func:`cryoset.simulate.projection.project_fourier`
        (projection = sum over voxels), as :func:`cryoset.recon.reconstruct.reconstruct` makes.
    pixel_size_a
        Pixel size (Å).
    ctf_params
        Per-image CTF parameters as for :func:`cryoset.recon.reconstruct.backproject` (its
        ``phase_flipped`` entry marks images that hold ``|CTF|``); None: no CTF.
    max_resolution_a
        Compare Fourier coefficients up to this resolution (Å; capped at Nyquist).
    angular_step_deg
        Orientation spacing: of :func:`so3_grid` (global) or :func:`local_grid` (local).
    shift_range_px, shift_step_px
        Shift offsets searched (:func:`shift_grid`), around ``prior_shifts_px`` when given.
    prior_rotations : array, shape (n, 3, 3), optional
        Local search around these when ``local_range_deg`` is given too.
    prior_shifts_px : array, shape (n, 2), optional
        Centre of the shift search (default 0).
    local_range_deg
        Radius of the local search; None: global search.
    symmetry
        Point group of the reference (global grid over the asymmetric unit; angular error
        measured to the closest symmetry mate).
    noise_power : array, optional
        Noise power per shell (module docstring); None: the mean image power.
    phase_flipped
        All images are phase-flipped (compare with ``|CTF|``-modulated slices).
    n_best
        Also return the ``n_best`` most probable poses per image with renormalised posterior
        weights (``top_*`` fields; for posterior-weighted back-projection); 1: best pose only.
    progress
        Called with the number of images done.

    Returns
    -------
    PoseSearchResult
    """
    from cryoset.recon.reconstruct import _ctf_batch, image_transforms
    from cryoset.recon.symmetry import symmetry_operators
    from cryoset.simulate.projection import fourier_volume

    imgs = np.asarray(images, np.float32)
    ref = np.asarray(reference, np.float32)
    if imgs.ndim != 3 or imgs.shape[1] != imgs.shape[2]:
        raise ValueError(f"images: expected (n, b, b), got {imgs.shape}")
    n, b = imgs.shape[0], imgs.shape[-1]
    if ref.shape != (b, b, b):
        raise ValueError(f"reference shape {ref.shape} does not match images box {b}")
    if not (math.isfinite(max_resolution_a) and max_resolution_a > 0):
        raise ValueError(f"max_resolution_a must be > 0, got {max_resolution_a}")
    local = local_range_deg is not None
    if local and prior_rotations is None:
        raise ValueError("local_range_deg needs prior_rotations")
    if int(n_best) != n_best or n_best < 1:
        raise ValueError(f"n_best must be an integer >= 1, got {n_best}")
    k_max = max(2, min(b // 2 - 1, math.floor(b * pixel_size_a / max_resolution_a)))
    coef = _coefficients(b, k_max)
    ops = symmetry_operators(symmetry)
    fvol = fourier_volume(ref, pad=2, order=1)
    scale = fvol.n_pad / b
    offsets = shift_grid(shift_range_px, shift_step_px)
    n_t = offsets.shape[0]
    prior_s = np.zeros((n, 2)) if prior_shifts_px is None else np.asarray(prior_shifts_px, np.float64)

    spectra = image_transforms(imgs, np.zeros((n, 2)), b)[:, coef.b_rows, coef.cols]
    sigma2 = _shell_noise(noise_power, spectra, coef)
    wk = coef.weight / sigma2  # (K,)
    kvec = np.stack([coef.kx, coef.ky], axis=1) / b  # cycles per pixel

    slices_all: NDArray[np.complex64] | None = None
    if local:
        grid_rel = None
        deltas = local_grid(np.eye(3), float(local_range_deg or 0.0), angular_step_deg)
        m = deltas.shape[0]
    else:
        grid_rel = so3_grid(angular_step_deg, symmetry)
        m = grid_rel.shape[0]
        if m * coef.weight.size * 8 <= 512 * 2**20:
            slices_all = _slices(fvol.data, grid_rel, scale, coef)

    best_rot = np.zeros((n, 3, 3))
    best_shift = np.zeros((n, 2))
    max_prob = np.zeros(n)
    ang_err = np.zeros(n)
    loglik = np.zeros(n)
    k_top = min(int(n_best), m)
    top_rot = np.zeros((n, k_top, 3, 3)) if n_best > 1 else None
    top_shift = np.zeros((n, k_top, 2)) if n_best > 1 else None
    top_w = np.zeros((n, k_top)) if n_best > 1 else None
    flip_all = bool(phase_flipped)
    for start in range(0, n, _PARTICLE_BATCH):
        idx = np.arange(start, min(start + _PARTICLE_BATCH, n))
        nb = idx.size
        ctf_full = _ctf_batch(ctf_params, idx, b, pixel_size_a)
        ctf = (np.ones((nb, coef.weight.size), np.float32) if ctf_full is None
               else ctf_full[:, coef.b_rows, coef.cols])
        if flip_all:
            ctf = np.abs(ctf)
        shifts = prior_s[idx, None, :] + offsets[None]                       # (nb, T, 2)
        phase = np.exp(-2j * np.pi * (shifts @ kvec.T))                       # (nb, T, K)
        x = spectra[idx]
        const = -np.sum(wk * np.abs(x) ** 2, axis=1)                          # (nb,)
        z = x[:, None, :] * phase * (ctf * wk)[:, None, :]                    # (nb, T, K)
        zr = np.concatenate([z.real, z.imag], axis=2).astype(np.float32)      # (nb, T, 2K)
        q = (ctf.astype(np.float64) ** 2 * wk).astype(np.float32)             # (nb, K)
        if local:
            assert prior_rotations is not None
            rots = deltas[None] @ np.asarray(prior_rotations, np.float64)[idx, None]  # (nb, m, 3, 3)
            p = _slices(fvol.data, rots, scale, coef).reshape(nb, m, -1)
            pr = np.concatenate([p.real, p.imag], axis=2).astype(np.float32)  # (nb, m, 2K)
            cross = np.matmul(zr, np.swapaxes(pr, 1, 2))                      # (nb, T, m)
            norm = np.einsum("nk,nmk->nm", q, (np.abs(p) ** 2).astype(np.float32))
            lse_j, t_of_j, max_j = _reduce_shifts(2.0 * cross.astype(np.float64) - norm[:, None, :])
            rot_of = rots
        else:
            assert grid_rel is not None
            lse_j = np.empty((nb, m))
            max_j = np.empty((nb, m))
            t_of_j = np.empty((nb, m), np.intp)
            for o0 in range(0, m, _ORIENT_BATCH):
                o1 = min(o0 + _ORIENT_BATCH, m)
                p = (slices_all[o0:o1] if slices_all is not None
                     else _slices(fvol.data, grid_rel[o0:o1], scale, coef))
                pr = np.concatenate([p.real, p.imag], axis=1).astype(np.float32)  # (mb, 2K)
                cross = (zr.reshape(nb * n_t, -1) @ pr.T).reshape(nb, n_t, -1)
                norm = q @ (np.abs(p) ** 2).astype(np.float32).T                  # (nb, mb)
                lse_j[:, o0:o1], t_of_j[:, o0:o1], max_j[:, o0:o1] = _reduce_shifts(
                    2.0 * cross.astype(np.float64) - norm[:, None, :])
            rot_of = grid_rel
        rows = np.arange(nb)
        j_best = np.argmax(max_j, axis=1)
        t_best = t_of_j[rows, j_best]
        top = max_j[rows, j_best]
        lse = _logsumexp(lse_j, axis=1)
        marg = np.exp(lse_j - lse[:, None])                                   # (nb, m)
        br = rot_of[rows, j_best] if local else rot_of[j_best]
        best_rot[idx] = br
        best_shift[idx] = shifts[rows, t_best]
        max_prob[idx] = np.exp(top - lse)
        loglik[idx] = top + const
        ang_err[idx] = _angular_spread(br, rot_of, marg, ops)
        if top_rot is not None and top_shift is not None and top_w is not None:
            order = np.argsort(-lse_j, axis=1, kind="stable")[:, :k_top]          # (nb, k)
            w = np.take_along_axis(marg, order, axis=1)
            w = w / np.maximum(w[:, :1], 1e-300)                                  # top pose 1
            cum = np.cumsum(w, axis=1) - w                                        # mass before j
            w = np.where(cum < SOFT_MASS * np.sum(w, axis=1, keepdims=True), w, 0.0)
            top_w[idx] = w / np.sum(w, axis=1, keepdims=True)
            top_rot[idx] = rot_of[rows[:, None], order] if local else rot_of[order]
            top_shift[idx] = shifts[rows[:, None], t_of_j[rows[:, None], order]]
        if progress is not None:
            progress(int(idx[-1]) + 1)
    return PoseSearchResult(best_rot, best_shift, max_prob, ang_err, loglik, top_rot, top_shift, top_w)
