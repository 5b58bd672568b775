"""Ab initio 3D maps from particle images with no reference: stochastic frequency-marching
projection matching (in the spirit of cryoSPARC's SGD ab initio), ``K`` classes, symmetry.

Algorithm (:func:`abinitio`; ``b`` the image box, ``p`` its pixel size, ``L = b p`` the box edge
in Å; every random choice comes from one ``numpy`` generator seeded with ``seed``):

1. **Working box.** Images are Fourier-cropped once to the smallest even box ``b_w ≤ b`` that
   holds ``1/final_resolution_a`` one shell inside its last full shell
   (:func:`crop_box`: ``b_w // 2 − 1 ≥ L / final_resolution_a``; ``p_w = L / b_w``). Every class
   keeps two :class:`~cryoset.recon.reconstruct.FourierAccumulator` halves at ``b_w`` (each
   particle's half is a seeded random split).
2. **Random start.** Class ``k`` starts from the back-projection of a seeded random subset of
   ``batch_size`` particles in seeded random poses: a featureless blob of roughly the particle's
   size and a different one per class.
3. **Iterations** ``t = 0 … T−1``. The resolution limit marches linearly in frequency from
   ``1/initial_resolution_a`` to ``1/final_resolution_a``: ``r_t``. A minibatch of ``batch_size``
   particles is drawn (a seeded random permutation, passed through in order, then a new one).
   The images and the class maps are Fourier-cropped to the box ``b_t = crop_box(…, r_t)`` (the
   cropped maps rescaled by ``b_w / b_t`` so that they still project to the cropped images);
   :func:`cryoset.recon.align.search_poses` finds every image's best pose and shift in each
   class map (global search over ``so3_grid(step_t, symmetry)`` × shifts up to
   ``max_shift_a``, frequencies up to ``r_t``, ``step_t = max(angular_step_deg,
   degrees(r_t / (0.75 L)))``, at most 30°) and the image joins the class of highest
   log-likelihood (hard assignment; during the first ``balance · T`` iterations every class is
   guaranteed a share of the batch falling linearly from ``m/K`` to 0, the particles that lose
   least by moving being moved (:func:`balanced_assignment`), so that no class starves at the
   start). The batch is back-projected (CTF-weighted, once per symmetry operator) into its
   class, after the class's accumulators are multiplied by the forgetting factor
   ``λ_t = 1 − κ / (t + 1 + κ)`` (``κ = forget``): the batch of iteration ``s`` weighs
   ``≈ ((s + κ) / (t + κ))^κ`` at iteration ``t``, so the random start and early, poorly aligned
   batches are forgotten while the memory grows. The new class map is the Wiener inverse of the
   accumulated halves with ``1/SNR`` per shell from their FSC
   (:func:`~cryoset.recon.reconstruct.shell_regulariser`, RELION's τ² idea), so shells where the
   halves disagree are damped.
4. **Final pass.** Every particle is searched globally in every class map at ``final_resolution_a``
   (step ``angular_step_deg``), assigned to its best class, and its pose is refined by a local
   search (``±angular_step_deg`` at ``final_angular_step_deg``; shifts within ``max_shift_a`` in
   1-px steps, or within ±1 px in 0.5-px steps when ``max_shift_a`` is below one pixel). Each class map is then
   reconstructed from all its particles at the full box ``b``
   (:func:`~cryoset.recon.reconstruct.reconstruct`, the particles' halves, FSC-weighted Wiener
   filter) and low-pass filtered at ``final_resolution_a``. The half-map FSC resolution it
   reports is optimistic: both halves were aligned against one map (not gold-standard).

The handedness of an ab initio map is arbitrary (a map and its mirror image give the same
projections up to a pose change): compare with a known map through
:func:`cryoset.recon.superpose.superpose`, which searches both hands.

The result is bit-reproducible for a given seed (the pose search is deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from cryoset.fourier.crop import fourier_crop
from cryoset.recon.fsc import fourier_shell_correlation
from cryoset.recon.reconstruct import (
    FourierAccumulator,
    backproject,
    invert,
    reconstruct,
    shell_regulariser,
)


class PoseResult(Protocol):
    """What :func:`cryoset.recon.align.search_poses` returns (the fields used here)."""

    rotations: NDArray[np.float64]
    shifts_px: NDArray[np.float64]
    max_probability: NDArray[np.float64]
    angular_error_deg: NDArray[np.float64]
    log_likelihood: NDArray[np.float64]


#: Signature of the pose search (``cryoset.recon.align.search_poses``).
SearchFunction = Callable[..., PoseResult]


@dataclass(frozen=True)
class AbinitioSettings:
    """Parameters of :func:`abinitio` (module docstring for their roles).

    Attributes
    ----------
    n_classes
        ``K``, the number of classes (maps).
    symmetry
        Point group used in the search and the reconstruction.
    n_iterations
        Minibatch iterations ``T``.
    batch_size
        Particles per minibatch (and in each class's random start).
    initial_resolution_a, final_resolution_a
        Resolution limit of the first and last iterations (Å).
    angular_step_deg
        Finest global angular step (iterations start coarser, ``degrees(r_t / (0.75 L))``).
    final_angular_step_deg
        Step of the local search of the final pass.
    max_shift_a
        Translational search range (Å, each of x and y).
    forget
        ``κ`` of the forgetting factor ``λ_t = 1 − κ / (t + 1 + κ)``.
    balance
        Fraction of the iterations over which every class is guaranteed a share of the batch
        (``m/K`` at the start, falling linearly to 0), against one class taking all particles.
    final_pass
        Search all particles in the final maps and reconstruct each class from them.
    seed
        Seed of every random choice.
    """

    n_classes: int = 1
    symmetry: str = "C1"
    n_iterations: int = 40
    batch_size: int = 100
    initial_resolution_a: float = 35.0
    final_resolution_a: float = 15.0
    angular_step_deg: float = 15.0
    final_angular_step_deg: float = 5.0
    max_shift_a: float = 0.0
    forget: float = 2.0
    balance: float = 0.5
    final_pass: bool = True
    seed: int = 0

    def check(self, box: int, pixel_size_a: float) -> None:
        """Raise ``ValueError`` naming the first setting that makes no sense for ``box × box``
        images of ``pixel_size_a``."""
        nyquist = 2.0 * pixel_size_a
        checks = [
            (self.n_classes >= 1, "n_classes must be >= 1"),
            (self.n_iterations >= 1, "n_iterations must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2"),
            (math.isfinite(self.final_resolution_a) and self.final_resolution_a >= nyquist * 0.999,
             f"final_resolution_a must be >= Nyquist ({nyquist:.3g} Å)"),
            (self.initial_resolution_a >= self.final_resolution_a,
             "initial_resolution_a must be >= final_resolution_a"),
            (0 < self.angular_step_deg <= 90, "angular_step_deg must be in (0, 90]"),
            (0 < self.final_angular_step_deg <= self.angular_step_deg,
             "final_angular_step_deg must be in (0, angular_step_deg]"),
            (self.max_shift_a >= 0, "max_shift_a must be >= 0"),
            (self.forget > 0, "forget must be > 0"),
            (0 < self.balance <= 1, "balance must be in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class AbinitioResult:
    """Result of :func:`abinitio`.

    Attributes
    ----------
    volumes : ndarray, float32, shape (K, b, b, b)
        Class maps ``(z, y, x)`` at the images' box and pixel size.
    rotations : ndarray, shape (n, 3, 3)
        RELION matrices ``A`` of every particle (in its class's map).
    shifts_px : ndarray, shape (n, 2)
        RELION 3.1 shifts (x, y), pixels of the input images.
    class_index : ndarray of int, shape (n,)
        0-based class.
    max_probability, angular_error_deg, log_likelihood : ndarray, shape (n,)
        From the pose search of the last pass that saw the particle.
    resolution_a : ndarray, shape (K,)
        Gold-standard FSC 0.143 resolution of each class map (NaN for a class with < 2
        particles); only with the final pass.
    subsets : ndarray of int, shape (n,)
        Half set (1 or 2) of every particle in the class accumulators and the final
        reconstruction (RELION's ``rlnRandomSubset``).
    half_fsc : list
        Each class's half-map :class:`~cryoset.recon.fsc.CorrelationCurve` (None without one).
    history : list of dict
        Per iteration: ``iteration``, ``resolution_a``, ``box``, ``angular_step_deg``,
        ``class_counts`` (batch particles per class), ``mean_log_likelihood``.
    """

    volumes: NDArray[np.float32]
    rotations: NDArray[np.float64]
    shifts_px: NDArray[np.float64]
    class_index: NDArray[np.int64]
    max_probability: NDArray[np.float64]
    angular_error_deg: NDArray[np.float64]
    log_likelihood: NDArray[np.float64]
    resolution_a: NDArray[np.float64]
    subsets: NDArray[np.int64]
    half_fsc: list[Any] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


def crop_box(box: int, pixel_size_a: float, resolution_a: float, *, minimum: int = 8) -> int:
    """The smallest even box ``≤ box`` (and ``≥ minimum``) holding frequency ``1/resolution_a``
    one shell inside its last full shell (``b_t // 2 − 1 ≥ L / resolution_a``, ``L`` the box edge
    in Å): the coefficients :func:`cryoset.recon.align.search_poses` compares."""
    extent = box * pixel_size_a
    need = 2 * math.ceil(extent / resolution_a - 1e-9) + 2
    return int(min(box, max(minimum, need)))


def fourier_crop_volume(volume: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Fourier-crop a cubic map to ``size³`` (mean preserved, as :func:`fourier_crop`)."""
    b = volume.shape[-1]
    if size == b:
        return np.asarray(volume, np.float32)
    yx = fourier_crop(volume, (size, size))  # (b, s, s)
    zx = fourier_crop(np.swapaxes(yx, 0, 2), (size, size))  # (x, s→s, z→s): crops z only
    return np.ascontiguousarray(np.swapaxes(zx, 0, 2))


def fourier_pad_volume(volume: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Fourier-pad (up-sample) a cubic map to ``size³``, the inverse of :func:`fourier_crop_volume`."""
    b = volume.shape[-1]
    if size == b:
        return np.asarray(volume, np.float32)
    f = np.fft.fftshift(np.fft.fftn(volume))
    out = np.zeros((size,) * 3, np.complex128)
    o = size // 2 - b // 2
    out[o:o + b, o:o + b, o:o + b] = f
    vol = np.fft.ifftn(np.fft.ifftshift(out)).real * (size / b) ** 3
    return np.asarray(vol, np.float32)


def balanced_assignment(scores: NDArray[np.float64], min_count: int) -> NDArray[np.int64]:
    """Each column's best row (class), then classes short of ``min_count`` members take the
    members whose score loss from moving is smallest, from classes that stay at or above it.

    Parameters
    ----------
    scores : array, shape (K, m)
        Log-likelihood of each of ``m`` particles in each of ``K`` classes.
    min_count
        Fewest members per class (``≤ m / K``).

    Returns
    -------
    ndarray of int, shape (m,)
    """
    k, m = scores.shape
    best = np.argmax(scores, axis=0).astype(np.int64)
    min_count = min(int(min_count), m // k)
    if k < 2 or min_count <= 0:
        return best
    for c in range(k):  # classes in order: deterministic
        short = min_count - int(np.sum(best == c))
        if short <= 0:
            continue
        counts = np.bincount(best, minlength=k)
        movable = np.flatnonzero((best != c) & (counts[best] > min_count))
        loss = scores[best[movable], movable] - scores[c, movable]
        for j in movable[np.argsort(loss, kind="stable")]:
            if short == 0:
                break
            if counts[best[j]] > min_count:
                counts[best[j]] -= 1
                best[j] = c
                short -= 1
    return best


def _subset(ctf: dict[str, NDArray[np.float64]] | None, idx: NDArray[np.int64]
            ) -> dict[str, NDArray[np.float64]] | None:
    return None if ctf is None else {k: np.asarray(v)[idx] for k, v in ctf.items()}


class _Halves:
    """A class's two accumulators and their FSC-regularised Wiener map."""

    def __init__(self, box: int) -> None:
        self.h = [FourierAccumulator.empty(box, 2), FourierAccumulator.empty(box, 2)]

    def scale(self, factor: float) -> None:
        for acc in self.h:
            acc.data *= factor
            acc.weight *= factor

    def insert(self, images: NDArray[np.float32], rotations: NDArray[np.float64], shifts_px: NDArray[np.float64],
               halves: NDArray[np.int64], pixel_size_a: float, ctf: dict[str, NDArray[np.float64]] | None,
               ops: NDArray[np.float64]) -> None:
        for h in (0, 1):
            sel = np.flatnonzero(halves == h)
            if sel.size:
                backproject(self.h[h], images[sel], rotations[sel], shifts_px[sel], pixel_size_a,
                            ctf_params=_subset(ctf, sel), symmetry_ops=ops)

    def volume(self, pixel_size_a: float) -> NDArray[np.float32]:
        a, b = self.h
        if a.weight.max() <= 0 or b.weight.max() <= 0:
            both = a + b
            if both.weight.max() <= 0:
                return np.zeros((a.box,) * 3, np.float32)
            return invert(both, 0.1 * float(both.weight.mean()))
        tiny = 1e-6 * max(float(a.weight.max()), float(b.weight.max()))
        m1, m2 = invert(a, tiny), invert(b, tiny)
        fsc = fourier_shell_correlation(m1, m2, voxel_size_a=pixel_size_a).correlation
        reg = shell_regulariser(a, b, fsc)
        return invert(a + b, reg)


def _default_search() -> SearchFunction:
    from cryoset.recon.align import search_poses

    return search_poses  # type: ignore[return-value]


def abinitio(images: NDArray[np.float32], pixel_size_a: float, settings: AbinitioSettings, *,
             ctf_params: dict[str, NDArray[np.float64]] | None = None,
             search: SearchFunction | None = None,
             progress: Callable[[int, int], None] | None = None) -> AbinitioResult:
    """Ab initio class maps and per-particle poses from images with no reference.

    Parameters
    ----------
    images : array, shape (n, b, b)
        Particle images (``b`` even).
    pixel_size_a
        Their pixel size (Å).
    settings
        :class:`AbinitioSettings`.
    ctf_params
        Per-particle CTF arrays as for :func:`cryoset.recon.reconstruct.backproject`; None: no CTF.
    search
        The pose search (default :func:`cryoset.recon.align.search_poses`).
    progress
        Called with ``(steps done, total steps)``: one step per iteration, one for the final pass.

    Returns
    -------
    AbinitioResult
    """
    from cryoset.geometry import random_rotations
    from cryoset.recon.symmetry import symmetry_operators
    from cryoset.simulate.density import lowpass_filter

    s = settings
    images = np.asarray(images, np.float32)
    n, b = images.shape[0], int(images.shape[-1])
    if images.ndim != 3 or images.shape[1] != b or b % 2:
        raise ValueError(f"images must be (n, b, b) with b even, got {images.shape}")
    if n < 2:
        raise ValueError("need at least 2 particles")
    s.check(b, pixel_size_a)
    search_fn = search if search is not None else _default_search()
    ops = symmetry_operators(s.symmetry)
    rng = np.random.default_rng(s.seed)
    k_classes = s.n_classes
    extent_a = b * pixel_size_a
    b_w = crop_box(b, pixel_size_a, s.final_resolution_a)
    p_w = extent_a / b_w
    work = fourier_crop(images, (b_w, b_w)) if b_w < b else images
    halves = rng.permutation(np.arange(n) % 2).astype(np.int64)
    batch = min(s.batch_size, n)
    total = s.n_iterations + (1 if s.final_pass else 0)

    # 2. random starts
    classes = [_Halves(b_w) for _ in range(k_classes)]
    for acc in classes:
        idx = np.sort(rng.choice(n, size=batch, replace=False))
        rots = random_rotations(idx.size, rng)
        acc.insert(work[idx], rots, np.zeros((idx.size, 2)), halves[idx], p_w, _subset(ctf_params, idx), ops)
    vols = [c.volume(p_w) for c in classes]

    rotations = np.tile(np.eye(3), (n, 1, 1))
    shifts_w = np.zeros((n, 2))
    class_index = np.zeros(n, np.int64)
    maxprob = np.zeros(n)
    ang_err = np.full(n, np.nan)
    loglik = np.full(n, np.nan)
    history: list[dict[str, Any]] = []
    order = rng.permutation(n)
    cursor = 0
    f0, f1 = 1.0 / s.initial_resolution_a, 1.0 / s.final_resolution_a
    for t in range(s.n_iterations):
        frac = t / max(s.n_iterations - 1, 1)
        res_t = 1.0 / (f0 + frac * (f1 - f0))
        if cursor + batch > n:
            order = rng.permutation(n)
            cursor = 0
        idx = np.sort(order[cursor:cursor + batch])
        cursor += batch
        b_t = crop_box(b_w, p_w, res_t)
        p_t = extent_a / b_t
        step_t = max(s.angular_step_deg, math.degrees(res_t / (0.75 * extent_a)))
        step_t = min(step_t, 30.0)
        imgs_t = fourier_crop(work[idx], (b_t, b_t)) if b_t < b_w else work[idx]
        ctf_t = _subset(ctf_params, idx)
        best_ll = np.full(idx.size, -np.inf)
        found: list[PoseResult] = []
        for k in range(k_classes):
            ref = fourier_crop_volume(vols[k], b_t) * np.float32(b_w / b_t)
            r = search_fn(imgs_t, ref, p_t, ctf_params=ctf_t, max_resolution_a=res_t,
                          angular_step_deg=step_t, shift_range_px=float(math.floor(s.max_shift_a / p_t)),
                          shift_step_px=1.0, symmetry=s.symmetry)
            found.append(r)
        lls = np.stack([np.asarray(r.log_likelihood, np.float64) for r in found])  # (K, m)
        min_count = math.floor(idx.size / k_classes * max(0.0, 1.0 - t / (s.balance * s.n_iterations)))
        best = balanced_assignment(lls, min_count)
        best_ll = lls[best, np.arange(idx.size)]
        lam = 1.0 - s.forget / (t + 1 + s.forget)
        counts = []
        for k in range(k_classes):
            sel = np.flatnonzero(best == k)
            counts.append(int(sel.size))
            r = found[k]
            rows = idx[sel]
            rotations[rows] = r.rotations[sel]
            shifts_w[rows] = np.asarray(r.shifts_px)[sel] * (b_w / b_t)
            class_index[rows] = k
            maxprob[rows] = r.max_probability[sel]
            ang_err[rows] = r.angular_error_deg[sel]
            loglik[rows] = r.log_likelihood[sel]
            classes[k].scale(lam)
            if sel.size:
                classes[k].insert(work[rows], rotations[rows], shifts_w[rows], halves[rows], p_w,
                                  _subset(ctf_params, rows), ops)
            vols[k] = classes[k].volume(p_w)
        history.append({"iteration": t + 1, "resolution_a": float(res_t), "box": int(b_t),
                        "angular_step_deg": float(step_t), "class_counts": counts,
                        "mean_log_likelihood": float(np.mean(best_ll))})
        if progress is not None:
            progress(t + 1, total)

    scale_wb = b / b_w
    if not s.final_pass:
        volumes = np.stack([lowpass_filter(fourier_pad_volume(v, b), pixel_size_a, s.final_resolution_a)
                            for v in vols]).astype(np.float32) / np.float32(scale_wb)
        return AbinitioResult(volumes, rotations, shifts_w * scale_wb, class_index, maxprob, ang_err, loglik,
                              np.full(k_classes, np.nan), halves + 1, [None] * k_classes, history)

    # 4. final pass: global search in every class, local refinement in the best one
    res_f = s.final_resolution_a
    p_f = p_w
    every = np.arange(n)
    found = []
    for k in range(k_classes):
        found.append(search_fn(work, vols[k], p_f, ctf_params=ctf_params, max_resolution_a=res_f,
                               angular_step_deg=s.angular_step_deg,
                               shift_range_px=float(math.floor(s.max_shift_a / p_f)), shift_step_px=1.0,
                               symmetry=s.symmetry))
    lls = np.stack([np.asarray(r.log_likelihood, np.float64) for r in found])
    class_index = np.argmax(lls, axis=0).astype(np.int64)
    volumes = np.zeros((k_classes, b, b, b), np.float32)
    resolution = np.full(k_classes, np.nan)
    fscs: list[Any] = [None] * k_classes
    for k in range(k_classes):
        sel = every[class_index == k]
        if sel.size == 0:
            volumes[k] = fourier_pad_volume(vols[k], b) * np.float32(1.0 / scale_wb)
            continue
        g = found[k]
        ctf_k = _subset(ctf_params, sel)
        local = search_fn(work[sel], vols[k], p_f, ctf_params=ctf_k, max_resolution_a=res_f,
                          angular_step_deg=s.final_angular_step_deg,
                          shift_range_px=max(1.0, float(math.floor(s.max_shift_a / p_f))),
                          shift_step_px=1.0 if s.max_shift_a >= p_f else 0.5,
                          prior_rotations=g.rotations[sel], prior_shifts_px=np.asarray(g.shifts_px)[sel],
                          local_range_deg=s.angular_step_deg, symmetry=s.symmetry)
        rotations[sel] = local.rotations
        shifts_w[sel] = local.shifts_px
        maxprob[sel] = local.max_probability
        ang_err[sel] = local.angular_error_deg
        loglik[sel] = local.log_likelihood
        if sel.size < 2:
            volumes[k] = fourier_pad_volume(vols[k], b) * np.float32(1.0 / scale_wb)
            continue
        if np.unique(halves[sel]).size < 2:  # a tiny class all in one half: alternate
            halves[sel] = np.arange(sel.size) % 2
        rec = reconstruct(images[sel], rotations[sel], shifts_w[sel] * scale_wb, pixel_size_a,
                          ctf_params=ctf_k, subsets=halves[sel] + 1, symmetry=s.symmetry)
        volumes[k] = lowpass_filter(rec.volume, pixel_size_a, res_f)
        resolution[k] = rec.resolution_a
        fscs[k] = rec.fsc
    history.append({"iteration": s.n_iterations + 1, "resolution_a": float(res_f), "box": int(b_w),
                    "angular_step_deg": float(s.final_angular_step_deg),
                    "class_counts": [int((class_index == k).sum()) for k in range(k_classes)],
                    "mean_log_likelihood": float(np.nanmean(loglik))})
    if progress is not None:
        progress(total, total)
    return AbinitioResult(volumes, rotations, shifts_w * scale_wb, class_index, maxprob, ang_err, loglik,
                          resolution, halves + 1, fscs, history)

