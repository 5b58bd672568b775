"""Superpose one map onto another: rotation, translation and handedness, then their FSC.

Ab initio maps come in an arbitrary orientation, position and hand (a map and its mirror image
project to the same images in different poses), so comparing one with a known map needs the
rigid motion and the mirror that bring it closest. :func:`superpose`:

1. Each map is moved (Fourier phase) to put the centre of mass of its positive density on the
   box centre, so that rotations about the centre need little translation. Both are
   Fourier-cropped to ``coarse_box`` voxels (default 12), zero-meaned and masked by the
   inscribed sphere.
2. For each of ``n_coarse`` seeded uniformly random rotations ``R`` and for the map and its
   mirror (``z → −z`` about voxel ``b//2``), the moving map is rotated
   (``M_R(p) = M(Rᵀ p)``, trilinear) and its cross-correlation with the fixed map over all
   cyclic translations is one FFT; the best translation's normalised correlation scores ``R``.
3. The ``n_refine`` best candidates are refined at ``refine_box`` voxels by three rounds of local
   grids (:func:`cryoset.recon.align.local_grid`: ±10° in 5° steps, ±4° in 2°, ±1.6° in 0.8°;
   translation again from the FFT peak), and the best is applied to the full map (cubic
   interpolation; the translation from the full-size cross-correlation peak, refined to a
   fraction of a voxel by a parabola, applied as a Fourier phase).

Returns the transform and the FSC of the superposed map with the fixed one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cryoset.recon.fsc import CorrelationCurve, fourier_shell_correlation, resolution_at

#: Local refinement rounds (radius, step) in degrees, at ``refine_box``.
_REFINE_ROUNDS = ((10.0, 5.0), (4.0, 2.0), (1.6, 0.8))


@dataclass
class Superposition:
    """Result of :func:`superpose`.

    Attributes
    ----------
    rotation : ndarray, shape (3, 3)
        ``R`` in ``aligned(p) = M'(Rᵀ (p − t))`` (``p`` in ``(x, y, z)`` voxels from ``b//2``;
        ``M'`` the moving map, mirrored when ``mirrored``).
    shift_vox : ndarray, shape (3,)
        ``t`` in ``(x, y, z)`` voxels.
    mirrored
        The moving map's hand was flipped (``z → −z``) first.
    correlation
        Real-space correlation coefficient of the superposed maps (inside the inscribed sphere).
    aligned : ndarray, float32, shape (b, b, b)
        The moving map superposed on the fixed one.
    fsc : CorrelationCurve
        FSC of ``aligned`` with the fixed map.
    resolution_05_a, resolution_0143_a
        Where that FSC falls below 0.5 and 0.143.
    """

    rotation: NDArray[np.float64]
    shift_vox: NDArray[np.float64]
    mirrored: bool
    correlation: float
    aligned: NDArray[np.float32]
    fsc: CorrelationCurve
    resolution_05_a: float
    resolution_0143_a: float


def mirror(volume: NDArray[np.float32]) -> NDArray[np.float32]:
    """The mirror image ``z → −z`` about voxel ``b//2`` (the other hand)."""
    v = np.asarray(volume)
    flipped = v[::-1]
    return np.ascontiguousarray(np.roll(flipped, 1, axis=0) if v.shape[0] % 2 == 0 else flipped)


def _centred(volume: NDArray[np.float32]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The map moved so that the centre of mass of its positive density sits on voxel ``b//2``,
    and the offset ``(z, y, x)`` of that centre of mass from it (``volume(p) = centred(p − offset)``)."""
    v = np.asarray(volume, np.float64)
    b = v.shape[0]
    w = np.clip(v, 0.0, None)
    total = float(w.sum())
    if total <= 0:
        return v.copy(), np.zeros(3)
    c = np.arange(b, dtype=np.float64) - b // 2
    off = np.array([float((w.sum(axis=(1, 2)) * c).sum()), float((w.sum(axis=(0, 2)) * c).sum()),
                    float((w.sum(axis=(0, 1)) * c).sum())]) / total
    return _fourier_shift(v, -off), off


def _sphere(b: int) -> NDArray[np.float64]:
    r = np.arange(b) - b // 2
    rr = r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2
    return (rr <= (b / 2) ** 2).astype(np.float64)


def _prepare(volume: NDArray[np.floating[Any]], size: int) -> NDArray[np.float64]:
    from cryoset.recon.abinitio import fourier_crop_volume

    v = fourier_crop_volume(np.asarray(volume, np.float32), size).astype(np.float64)
    m = _sphere(size)
    v = (v - v[m > 0].mean()) * m
    return v / max(float(np.linalg.norm(v)), 1e-30)


def _rotate(volume: NDArray[np.float64], rotations: NDArray[np.float64], order: int = 1) -> NDArray[np.float64]:
    """``volume(Rᵀ p)`` for each rotation, shape (m, b, b, b)."""
    from scipy import ndimage

    b = volume.shape[0]
    c = np.arange(b, dtype=np.float64) - b // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    pts = np.stack([x.ravel(), y.ravel(), z.ravel()])  # (3, b³), (x, y, z)
    q = np.swapaxes(rotations, 1, 2) @ pts  # (m, 3, b³): (x, y, z) in the moving frame
    coords = np.moveaxis(q[:, ::-1], 1, 0).reshape(3, -1) + b // 2  # (z, y, x) indices, all maps at once
    out = ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=0.0)
    return out.reshape(rotations.shape[0], b, b, b)


def _best_shift(fixed_f: NDArray[np.complex128], moved: NDArray[np.float64]
                ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Max over cyclic shifts of ``Σ fixed(p) moved(p − t)`` per map, and the argmax ``t`` (z, y, x)."""
    b = moved.shape[-1]
    cc = np.fft.irfftn(fixed_f[None] * np.conj(np.fft.rfftn(moved, axes=(1, 2, 3))), s=(b, b, b), axes=(1, 2, 3))
    flat = cc.reshape(cc.shape[0], -1)
    j = np.argmax(flat, axis=1)
    t = np.stack(np.unravel_index(j, (b, b, b)), axis=1)
    t = np.where(t > b // 2, t - b, t)
    norm = np.linalg.norm(moved.reshape(moved.shape[0], -1), axis=1)
    return flat[np.arange(flat.shape[0]), j] / np.maximum(norm, 1e-30), t.astype(np.int64)


def _score(fixed_f: NDArray[np.complex128], moving: NDArray[np.float64], rotations: NDArray[np.float64],
           batch: int = 256) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    scores, shifts = [], []
    for a in range(0, rotations.shape[0], batch):
        s, t = _best_shift(fixed_f, _rotate(moving, rotations[a:a + batch]))
        scores.append(s)
        shifts.append(t)
    return np.concatenate(scores), np.concatenate(shifts)


def _fourier_shift(volume: NDArray[np.float64], t_zyx: NDArray[np.float64]) -> NDArray[np.float64]:
    """``volume(p − t)`` by a Fourier phase (cyclic)."""
    b = volume.shape[0]
    k = np.fft.fftfreq(b)
    kr = np.fft.rfftfreq(b)
    phase = np.exp(-2j * np.pi * (k[:, None, None] * t_zyx[0] + k[None, :, None] * t_zyx[1]
                                  + kr[None, None, :] * t_zyx[2]))
    return np.asarray(np.fft.irfftn(np.fft.rfftn(volume) * phase, s=volume.shape, axes=(0, 1, 2)), np.float64)


def superpose(moving: NDArray[np.float32], fixed: NDArray[np.float32], voxel_size_a: float, *,
              n_coarse: int = 2000, coarse_box: int = 12, refine_box: int = 24, n_refine: int = 3,
              mirror_search: bool = True, seed: int = 0) -> Superposition:
    """Superpose ``moving`` on ``fixed`` (both ``(b, b, b)``, same voxel size) over rotations,
    translations and (``mirror_search``) handedness; module docstring for the method.

    Parameters
    ----------
    moving, fixed : array, shape (b, b, b)
    voxel_size_a
        Voxel size (for the FSC's frequencies).
    n_coarse
        Random rotations of the coarse search (2000 leave few rotations farther than about 15° from one).
    coarse_box, refine_box
        Edges the maps are Fourier-cropped to for the coarse search and the refinement.
    n_refine
        Candidates refined.
    mirror_search
        Search the mirror image too.
    seed
        Seed of the coarse rotations.

    Returns
    -------
    Superposition
    """
    from cryoset.geometry import random_rotations
    from cryoset.recon.align import local_grid

    mov = np.asarray(moving, np.float32)
    fix = np.asarray(fixed, np.float32)
    if mov.shape != fix.shape or mov.ndim != 3 or len(set(mov.shape)) != 1:
        raise ValueError(f"need two cubic maps of one shape, got {mov.shape} and {fix.shape}")
    b = mov.shape[0]
    cb, rb = min(coarse_box, b), min(refine_box, b)
    rots = random_rotations(int(n_coarse), np.random.default_rng(seed))
    rots = np.concatenate([np.eye(3)[None], rots])
    hands = [False, True] if mirror_search else [False]
    fix_c, off_f = _centred(fix)
    sources = {hand: _centred(mirror(mov) if hand else mov) for hand in hands}
    candidates: list[tuple[float, bool, NDArray[np.float64]]] = []
    fixed_c = np.fft.rfftn(_prepare(fix_c, cb))
    for hand in hands:
        m = _prepare(sources[hand][0], cb)
        sc, _ = _score(fixed_c, m, rots)
        for j in np.argsort(-sc)[:n_refine]:
            candidates.append((float(sc[j]), hand, rots[j]))
    candidates.sort(key=lambda c: -c[0])
    fixed_r = np.fft.rfftn(_prepare(fix_c, rb))
    best: tuple[float, bool, NDArray[np.float64]] | None = None
    for _, hand, r0 in candidates[:n_refine]:
        m = _prepare(sources[hand][0], rb)
        r = r0
        val = -np.inf
        for range_deg, step_deg in _REFINE_ROUNDS:
            grid = local_grid(r, range_deg, step_deg)
            sc, _ = _score(fixed_r, m, grid)
            j = int(np.argmax(sc))
            r, val = grid[j], float(sc[j])
        if best is None or val > best[0]:
            best = (val, hand, r)
    assert best is not None
    _, hand, r_best = best
    src, off_m = sources[hand]
    rotated = _rotate(src, r_best[None], order=3)[0]
    # residual translation at full size: FFT peak, refined to sub-voxel by a parabola
    fp = np.fft.rfftn(fix_c - fix_c.mean())
    cc = np.fft.irfftn(fp * np.conj(np.fft.rfftn(rotated - rotated.mean())), s=rotated.shape, axes=(0, 1, 2))
    peak = np.array(np.unravel_index(int(np.argmax(cc)), cc.shape))
    t = peak.astype(np.float64)
    for ax in range(3):
        lo, hi = peak.copy(), peak.copy()
        lo[ax] = (lo[ax] - 1) % b
        hi[ax] = (hi[ax] + 1) % b
        c0, cm, cp = cc[tuple(peak)], cc[tuple(lo)], cc[tuple(hi)]
        den = cm - 2 * c0 + cp
        if den < 0:
            t[ax] += 0.5 * (cm - cp) / den
    t = np.where(t > b / 2, t - b, t)
    aligned = _fourier_shift(rotated, t + off_f).astype(np.float32)
    # aligned(p) = M'(Rᵀ (p − t − off_f) + off_m): one shift t_total = t + off_f − R off_m (x, y, z)
    shift_xyz = (t + off_f)[::-1] - r_best @ off_m[::-1]
    sphere = _sphere(b) > 0
    corr = float(np.corrcoef(aligned[sphere], fix[sphere])[0, 1])
    curve = fourier_shell_correlation(aligned, fix, voxel_size_a=voxel_size_a)
    return Superposition(r_best, shift_xyz, bool(hand), corr, aligned, curve,
                         resolution_at(curve.correlation, curve.freq_per_a, 0.5),
                         resolution_at(curve.correlation, curve.freq_per_a, 0.143))
