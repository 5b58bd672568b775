"""Gold-standard 3D auto-refinement: projection matching and reconstruction, iterated.

One iteration (:func:`refine_iteration`), for each half set ``h`` separately:

1. Search the poses of half ``h``'s particles against half ``h``'s reference only
   (:func:`cryoset.recon.align.search_poses`): a global search over the asymmetric unit at the
   current angular step while ``local`` is False, afterwards a local search within
   ``LOCAL_RANGE_STEPS × step`` of the previous pose (shifts within ``2 ×`` the shift step of
   the previous shift). Fourier coefficients are compared up to the *search resolution*: the
   initial low-pass at iteration 1, then the gold-standard resolution plus
   ``EXTRA_SHELLS`` Fourier shells. The Gaussian noise power per shell is that of half
   ``h``'s residuals at its best poses of the previous iteration (the images' power outside
   the particle radius before the first).
2. Reconstruct each half from its own particles (:func:`cryoset.recon.reconstruct.reconstruct`
   with ``subsets``: CTF-corrected, FSC-weighted Wiener inversion, symmetrised), each particle
   inserted at its ``n_best_poses`` most probable poses weighted by their renormalised
   posterior (RELION's marginalisation over the significant poses; 1: the best pose); the FSC between
   the two half maps gives the resolution (0.143). The two half maps are the next iteration's
   references, so a half reference never sees the other half's particles (the noise spectra
   are per half too).
3. Step the search: while the resolution improves by at least one Fourier shell the step is
   kept; when it does not (or after ``global_iterations`` global iterations) the search becomes
   local with the angular and shift steps halved. A local search halves them again when the
   resolution did not improve and the poses have settled (median pose change below half the
   step); at the final angular step such an iteration ends the refinement (``converged``),
   as does ``max_iterations``.

The starting reference is low-pass filtered at ``initial_lowpass_a`` and, per half, scaled so
that its CTF-modulated projections carry that half's signal power below that resolution (image
power minus the noise power measured outside the particle radius). Nothing a half uses — its
reference, scale, noise spectra, poses — depends on the other half's images.

Everything is deterministic given the particles, the reference, the half split and the
settings: the state after each iteration (:class:`RefineState`) is all a resumed run needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["RefineSettings", "RefineState", "auto_refine", "initial_state", "refine_iteration",
           "split_halves"]

#: Local search radius in units of the angular step.
LOCAL_RANGE_STEPS = 2.0
#: Fourier shells searched beyond the current gold-standard resolution.
EXTRA_SHELLS = 2


@dataclass(frozen=True)
class RefineSettings:
    """Parameters of the refinement (defaults in :class:`cryoset.workflows.params.RefineParams`)."""

    symmetry: str = "C1"
    initial_lowpass_a: float = 30.0
    angular_step_deg: float = 7.5
    final_angular_step_deg: float = 0.9
    shift_range_px: float = 3.0
    shift_step_px: float = 1.0
    global_iterations: int = 3
    max_iterations: int = 25
    #: Fixed Wiener ``1/SNR`` of the half maps; None: per shell from the half-map FSC
    #: (:func:`cryoset.recon.reconstruct.reconstruct`; RELION's τ² from the gold-standard FSC,
    #: a 1D filter that is the only quantity the two halves share).
    wiener_constant: float | None = None
    #: Posterior-weighted ("soft") back-projection: each particle is inserted into its half map
    #: at its ``n_best_poses`` most probable poses, weighted by their renormalised posterior
    #: (:func:`cryoset.recon.align.search_poses` ``n_best``); 1: its best pose only. 8 by
    #: default (docs/refine.md: from a 30 Å start 14.6° instead of 52° median error on the
    #: benchmark, from 15 Å 5.2° instead of 6.1°).
    n_best_poses: int = 8


@dataclass
class RefineState:
    """Everything the next iteration needs (and a resumed run restores).

    Attributes
    ----------
    iteration
        Iterations done (0: the starting state).
    rotations, shifts_px : arrays (n, 3, 3), (n, 2)
        Current poses (RELION matrices, RELION 3.1 shifts in pixels); identity and 0 at start.
    subsets : int array (n,)
        Half set (1 or 2) of every particle.
    half1, half2 : float32 arrays (b, b, b)
        The references of the next search (the half maps of the last iteration).
    volume : float32 array (b, b, b)
        Map from both halves of the last iteration (the low-passed reference at start).
    resolution_a
        Gold-standard resolution (FSC 0.143) of the last iteration (the low-pass at start).
    fsc, fsc_freq_per_a : arrays
        Half-map FSC of the last iteration (empty at start).
    noise_power : float64 array (2, b//2 + 1)
        Per-half noise power per shell (:mod:`cryoset.recon.align` units).
    angular_step_deg, shift_step_px, local
        Search of the next iteration.
    max_probability, angular_error_deg : arrays (n,)
    converged
    history
        One summary dict per iteration.
    """

    iteration: int
    rotations: NDArray[np.float64]
    shifts_px: NDArray[np.float64]
    subsets: NDArray[np.int64]
    half1: NDArray[np.float32]
    half2: NDArray[np.float32]
    volume: NDArray[np.float32]
    resolution_a: float
    fsc: NDArray[np.float64]
    fsc_freq_per_a: NDArray[np.float64]
    noise_power: NDArray[np.float64]
    angular_step_deg: float
    shift_step_px: float
    local: bool
    max_probability: NDArray[np.float64]
    angular_error_deg: NDArray[np.float64]
    converged: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def split_halves(n: int, seed: int) -> NDArray[np.int64]:
    """A seeded split of ``n`` particles into half sets 1 and 2 (sizes ``n - n//2`` and ``n//2``)."""
    rng = np.random.default_rng(seed)
    subsets = np.ones(n, np.int64)
    subsets[rng.permutation(n)[: n // 2]] = 2
    return subsets


def _shell_of_b(box: int) -> NDArray[np.int64]:
    """round(|k|) on the ``b × (b//2+1)`` rfft2 grid."""
    ky = np.fft.fftfreq(box)[:, None] * box
    kx = np.arange(box // 2 + 1)[None, :]
    return np.asarray(np.rint(np.hypot(kx, ky)), np.int64)


def _shell_mean(values: NDArray[np.float64], shells: NDArray[np.int64], nshell: int) -> NDArray[np.float64]:
    keep = shells < nshell
    tot = np.bincount(shells[keep], weights=values[keep], minlength=nshell)
    cnt = np.bincount(shells[keep], minlength=nshell)
    return np.asarray(tot / np.maximum(cnt, 1), np.float64)


def _image_power(images: NDArray[np.float32]) -> NDArray[np.float64]:
    """Mean |rfft2|² per shell (``b//2 + 1`` shells)."""
    from cryoset.recon.reconstruct import image_transforms

    b = images.shape[-1]
    shells = _shell_of_b(b)
    power = np.zeros(shells.shape)
    for s in range(0, images.shape[0], 256):
        spec = image_transforms(np.asarray(images[s:s + 256], np.float32), np.zeros((min(256, images.shape[0] - s), 2)), b)
        power += np.sum(np.abs(spec) ** 2, axis=0)
    return _shell_mean(power / images.shape[0], shells, b // 2 + 1)


def _background_variance(images: NDArray[np.float32]) -> float:
    """Pixel variance outside the inscribed circle (the particle-free corners)."""
    b = images.shape[-1]
    r = np.hypot(*np.meshgrid(np.arange(b) - b // 2, np.arange(b) - b // 2, indexing="ij"))
    corners = np.asarray(images)[:, r > 0.5 * b]
    return float(np.var(corners, axis=1).mean()) if corners.size else 0.0


def _projections_spectra(reference: NDArray[np.float32], rotations: NDArray[np.float64]) -> NDArray[np.complex64]:
    """Full ``b × (b//2+1)`` central slices (transform of the projections, origin at b//2)."""
    from cryoset.simulate.projection import fourier_slices, fourier_volume

    fvol = fourier_volume(reference, pad=2, order=1)
    return fourier_slices(fvol, rotations, size=reference.shape[0])


def _ctf_rows(ctf_params: dict[str, NDArray[np.float64]] | None, idx: NDArray[np.int64], box: int,
              pixel_size_a: float) -> NDArray[np.float32] | None:
    from cryoset.recon.reconstruct import _ctf_batch

    return _ctf_batch(ctf_params, idx, box, pixel_size_a)


def _residual_noise(images: NDArray[np.float32], reference: NDArray[np.float32], rotations: NDArray[np.float64],
                    shifts_px: NDArray[np.float64], idx: NDArray[np.int64], pixel_size_a: float,
                    ctf_params: dict[str, NDArray[np.float64]] | None) -> NDArray[np.float64]:
    """Mean |X e^{-2πik·s} − CTF·P|² per shell of the particles ``idx`` at their poses."""
    from cryoset.recon.reconstruct import image_transforms

    b = reference.shape[0]
    shells = _shell_of_b(b)
    total = np.zeros(shells.shape)
    for s in range(0, idx.size, 128):
        rows = idx[s:s + 128]
        spec = image_transforms(np.asarray(images[rows], np.float32), shifts_px[rows], b)
        proj = _projections_spectra(reference, rotations[rows])
        ctf = _ctf_rows(ctf_params, rows, b, pixel_size_a)
        if ctf is not None:
            proj = proj * ctf
        total += np.sum(np.abs(spec - proj) ** 2, axis=0)
    return _shell_mean(total / max(idx.size, 1), shells, b // 2 + 1)


def _noise_floor(noise: NDArray[np.float64], image_power: NDArray[np.float64]) -> NDArray[np.float64]:
    """Keep the noise power ≥ 1e-4 of the image power (noise-free data: a finite likelihood)."""
    return np.asarray(np.maximum(noise, 1e-4 * np.maximum(image_power, 1e-30)), np.float64)


def _shell_index(resolution_a: float, box: int, pixel_size_a: float) -> int:
    if not math.isfinite(resolution_a) or resolution_a <= 0:
        return 0
    return math.floor(box * pixel_size_a / resolution_a + 1e-9)


def initial_state(images: NDArray[np.float32], reference: NDArray[np.float32], pixel_size_a: float, *,
                  subsets: NDArray[np.int64], settings: RefineSettings,
                  ctf_params: dict[str, NDArray[np.float64]] | None = None) -> RefineState:
    """The starting state: both half references = the low-passed, power-matched reference.

    Parameters
    ----------
    images : array (n, b, b)
    reference : array (b, b, b)
    pixel_size_a
    subsets : int array (n,)
        Half set of every particle (1 or 2).
    settings
    ctf_params
        As for :func:`cryoset.recon.reconstruct.backproject`.
    """
    from cryoset.geometry import random_rotations
    from cryoset.simulate.density import lowpass_filter

    n, b = images.shape[0], images.shape[-1]
    ref = lowpass_filter(np.asarray(reference, np.float32), pixel_size_a, settings.initial_lowpass_a)
    k_lp = max(1, min(b // 2, _shell_index(settings.initial_lowpass_a, b, pixel_size_a)))
    subsets = np.asarray(subsets, np.int64)
    halves: list[NDArray[np.float32]] = []
    noises: list[NDArray[np.float64]] = []
    for h in (1, 2):  # each half's scale and noise from its own particles only
        sel = np.flatnonzero(subsets == h)
        power = _image_power(images[sel])
        var = _background_variance(images[sel])
        probe = np.random.default_rng(h)
        m = min(sel.size, 64)
        rows = np.sort(probe.choice(sel, size=m, replace=False)).astype(np.int64)
        proj = _projections_spectra(ref, random_rotations(m, probe))
        ctf = _ctf_rows(ctf_params, rows, b, pixel_size_a)
        if ctf is not None:
            proj = proj * ctf
        ref_power = _shell_mean(np.mean(np.abs(proj) ** 2, axis=0), _shell_of_b(b), b // 2 + 1)
        # scale: the images' signal power (minus the corner noise) over the projections' power
        sig = float(np.sum(np.maximum(power[1:k_lp + 1] - b * b * var, 0.0)))
        refp = float(np.sum(ref_power[1:k_lp + 1]))
        scale = math.sqrt(sig / refp) if sig > 0 and refp > 0 else 1.0
        halves.append((ref * scale).astype(np.float32))
        noises.append(_noise_floor(np.full(b // 2 + 1, b * b * var), power))
    return RefineState(
        iteration=0, rotations=np.broadcast_to(np.eye(3), (n, 3, 3)).copy(), shifts_px=np.zeros((n, 2)),
        subsets=subsets, half1=halves[0], half2=halves[1], volume=0.5 * (halves[0] + halves[1]),
        resolution_a=float(settings.initial_lowpass_a), fsc=np.zeros(0), fsc_freq_per_a=np.zeros(0),
        noise_power=np.stack(noises), angular_step_deg=float(settings.angular_step_deg),
        shift_step_px=float(settings.shift_step_px), local=False, max_probability=np.zeros(n),
        angular_error_deg=np.zeros(n))


def _symmetric_change_deg(a: NDArray[np.float64], b: NDArray[np.float64], symmetry: str) -> NDArray[np.float64]:
    from cryoset.geometry import angular_distance_deg
    from cryoset.recon.symmetry import symmetry_operators

    ops = symmetry_operators(symmetry)
    return np.asarray(np.min([angular_distance_deg(a @ op, b) for op in ops], axis=0), np.float64)


def refine_iteration(state: RefineState, images: NDArray[np.float32], pixel_size_a: float, *,
                     settings: RefineSettings, ctf_params: dict[str, NDArray[np.float64]] | None = None,
                     progress: Callable[[int], None] | None = None) -> RefineState:
    """One iteration: per-half pose search against the own half reference, per-half
    reconstruction, FSC, search stepping (module docstring). Returns a new state."""
    from cryoset.recon.align import search_poses
    from cryoset.recon.reconstruct import _Take, reconstruct

    b = images.shape[-1]
    nyquist_k = b // 2 - 1
    if state.iteration == 0:
        search_res = float(settings.initial_lowpass_a)
    else:
        k = min(nyquist_k, max(2, _shell_index(state.resolution_a, b, pixel_size_a) + EXTRA_SHELLS))
        search_res = b * pixel_size_a / k
    rotations = state.rotations.copy()
    shifts = state.shifts_px.copy()
    max_prob = state.max_probability.copy()
    ang_err = state.angular_error_deg.copy()
    done = 0
    soft = int(settings.n_best_poses) > 1
    top_rot: list[NDArray[np.float64]] = []
    top_shift: list[NDArray[np.float64]] = []
    top_w: list[NDArray[np.float64]] = []
    top_row: list[NDArray[np.int64]] = []
    for h, ref in ((1, state.half1), (2, state.half2)):
        sel = np.flatnonzero(state.subsets == h)
        sub_ctf = None if ctf_params is None else {k: np.asarray(v)[sel] for k, v in ctf_params.items()}

        def report(k: int, offset: int = done) -> None:
            if progress is not None:
                progress(offset + k)

        if state.local:
            res = search_poses(images[sel], ref, pixel_size_a, ctf_params=sub_ctf, max_resolution_a=search_res,
                               angular_step_deg=state.angular_step_deg, shift_range_px=2 * state.shift_step_px,
                               shift_step_px=state.shift_step_px, prior_rotations=rotations[sel],
                               prior_shifts_px=shifts[sel],
                               local_range_deg=LOCAL_RANGE_STEPS * state.angular_step_deg,
                               symmetry=settings.symmetry, noise_power=state.noise_power[h - 1],
                               n_best=int(settings.n_best_poses), progress=report)
        else:
            res = search_poses(images[sel], ref, pixel_size_a, ctf_params=sub_ctf, max_resolution_a=search_res,
                               angular_step_deg=state.angular_step_deg, shift_range_px=settings.shift_range_px,
                               shift_step_px=state.shift_step_px, prior_shifts_px=None,
                               symmetry=settings.symmetry, noise_power=state.noise_power[h - 1],
                               n_best=int(settings.n_best_poses), progress=report)
        done += sel.size
        rotations[sel] = res.rotations
        shifts[sel] = res.shifts_px
        max_prob[sel] = res.max_probability
        ang_err[sel] = res.angular_error_deg
        if soft:
            assert res.top_rotations is not None and res.top_shifts_px is not None and res.top_weights is not None
            keep = res.top_weights > 0                                  # (n_h, k)
            top_rot.append(res.top_rotations[keep])
            top_shift.append(res.top_shifts_px[keep])
            top_w.append(res.top_weights[keep])
            top_row.append(np.broadcast_to(sel[:, None], keep.shape)[keep].astype(np.int64))
    if soft:  # every particle at its kept poses, weights summing to 1 per particle
        rows = np.concatenate(top_row)
        sub_ctf_rows = None if ctf_params is None else {k: np.asarray(v)[rows] for k, v in ctf_params.items()}
        rec = reconstruct(_Take(images, rows), np.concatenate(top_rot), np.concatenate(top_shift), pixel_size_a,
                          ctf_params=sub_ctf_rows, subsets=state.subsets[rows], symmetry=settings.symmetry,
                          wiener_constant=settings.wiener_constant, weights=np.concatenate(top_w))
    else:
        rec = reconstruct(images, rotations, shifts, pixel_size_a, ctf_params=ctf_params,
                          subsets=state.subsets, symmetry=settings.symmetry,
                          wiener_constant=settings.wiener_constant)
    noise = np.stack([
        _noise_floor(_residual_noise(images, half, rotations, shifts, np.flatnonzero(state.subsets == h),
                                     pixel_size_a, ctf_params), _image_power(images[state.subsets == h]))
        for h, half in ((1, rec.half1), (2, rec.half2))])
    change = (_symmetric_change_deg(state.rotations, rotations, settings.symmetry)
              if state.iteration > 0 else np.full(rotations.shape[0], 180.0))
    best_k = max([_shell_index(e["resolution_a"], b, pixel_size_a) for e in state.history], default=0)
    new_k = _shell_index(rec.resolution_a, b, pixel_size_a)
    improved = new_k > best_k
    step, shift_step, local, converged = state.angular_step_deg, state.shift_step_px, state.local, False
    n_global = sum(1 for e in state.history if not e["local"]) + (0 if state.local else 1)
    if not local:
        if not improved or n_global >= settings.global_iterations:
            local, step, shift_step = True, step / 2, shift_step / 2
    elif not improved and float(np.median(change)) < 0.5 * step:  # settled at this step
        if step / 2 >= settings.final_angular_step_deg * (1 - 1e-9):
            step, shift_step = step / 2, shift_step / 2
        else:
            converged = True
    iteration = state.iteration + 1
    if iteration >= settings.max_iterations:
        converged = True
    record = {"iteration": iteration, "local": state.local, "angular_step_deg": state.angular_step_deg,
              "shift_step_px": state.shift_step_px, "search_resolution_a": search_res,
              "resolution_a": float(rec.resolution_a), "median_pose_change_deg": float(np.median(change)),
              "median_max_probability": float(np.median(max_prob)),
              "median_angular_error_deg": float(np.median(ang_err)),
              "half_sizes": [int((state.subsets == 1).sum()), int((state.subsets == 2).sum())],
              "converged": converged}
    return replace(state, iteration=iteration, rotations=rotations, shifts_px=shifts, half1=rec.half1,
                   half2=rec.half2, volume=rec.volume, resolution_a=float(rec.resolution_a),
                   fsc=np.asarray(rec.fsc.correlation, np.float64),
                   fsc_freq_per_a=np.asarray(rec.fsc.freq_per_a, np.float64), noise_power=noise,
                   angular_step_deg=step, shift_step_px=shift_step, local=local, max_probability=max_prob,
                   angular_error_deg=ang_err, converged=converged, history=[*state.history, record])


def auto_refine(images: NDArray[np.float32], reference: NDArray[np.float32], pixel_size_a: float, *,
                settings: RefineSettings, ctf_params: dict[str, NDArray[np.float64]] | None = None,
                subsets: NDArray[np.int64] | None = None, seed: int = 0, state: RefineState | None = None,
                on_iteration: Callable[[RefineState], None] | None = None,
                progress: Callable[[int, int], None] | None = None) -> RefineState:
    """Refine until converged (or ``max_iterations``), from ``state`` when given (resume).

    Parameters
    ----------
    images : array (n, b, b)
    reference : array (b, b, b)
        Starting map (low-passed at ``settings.initial_lowpass_a`` here).
    pixel_size_a
    settings
    ctf_params
        As for :func:`cryoset.recon.reconstruct.backproject` (``phase_flipped`` per particle).
    subsets
        Half sets (1/2); default :func:`split_halves` with ``seed``.
    state
        Continue from this state (a saved iteration) instead of the start.
    on_iteration
        Called with the state after every iteration (the workflow saves it).
    progress
        Called ``(iteration, particles searched)`` during each iteration.

    Returns
    -------
    RefineState
        The last state; ``volume``, ``half1``, ``half2``, ``fsc`` are the final maps.
    """
    n = images.shape[0]
    if state is None:
        sub = split_halves(n, seed) if subsets is None else np.asarray(subsets, np.int64)
        if not np.isin(sub, (1, 2)).all() or not ((sub == 1).sum() >= 1 and (sub == 2).sum() >= 1):
            raise ValueError("subsets must hold 1 and 2 only, both present")
        state = initial_state(images, reference, pixel_size_a, subsets=sub, settings=settings,
                              ctf_params=ctf_params)
    while not state.converged and state.iteration < settings.max_iterations:
        it = state.iteration + 1

        def report(k: int, it: int = it) -> None:
            if progress is not None:
                progress(it, k)

        state = refine_iteration(state, images, pixel_size_a, settings=settings, ctf_params=ctf_params,
                                 progress=report)
        if on_iteration is not None:
            on_iteration(state)
    return state
