"""Reference-free 2D classification by expectation–maximisation (RELION-like), in numpy.

Model (pixels relative to the box centre ``b//2``; RELION conventions): image ``i`` is

``X_i(p) = (C_i ∗ R_k)(A_ψᵀ (p + s)) + noise``,  ``A_ψ = euler_to_matrix(0, 0, ψ)[:2, :2]``,

i.e. class average ``R_k`` rotated by ``ψ`` (``rlnAnglePsi``), its centre moved to ``−s``
(``s`` = RELION 3.1 ``rlnOriginX/YAngst`` / pixel size) and filtered by the CTF ``C_i``
(``|CTF|`` for phase-flipped images: the ``ctf`` argument is the CTF left in the images);
the noise is white Gaussian with per-pixel variance ``σ²``.

E-step (rotate-then-FFT-translate): every reference is rotated to ``n_psi`` angles
(bilinear), and for every image the cross-correlation over all translations is one FFT:
``cc(t) = irfft2(conj(C_i X̂_i) · R̂_kψ)(t) = Σ_p X_i(p) (C_i ∗ R_kψ)(p + t)``. With
``‖C_i R_kψ‖²`` from Parseval, the log-likelihood of pose ``(k, ψ, t)`` is
``(cc − ½‖C_i R_kψ‖²)/σ² − |t|²/(2 σ_t²) + log π_k`` for the searched offsets ``t``, and
the posterior is its softmax (or its arg-max, one-hot, with ``hard=True``). The searched
offsets are the integer ``t`` with ``|t − c_i| ≤`` the offset range and ``|t| ≤`` the
offset cap, where the window centre ``c_i`` is 0 in the first iteration and, with
``offset_recentre`` (RELION's behaviour), image ``i``'s MAP offset of the previous iteration;
the prior stays centred at 0. ``cc`` at ``t = c_i + u`` is the partial inverse DFT at the
shared relative grid ``u`` of ``conj(C_i X̂_i) R̂_kψ`` multiplied by the phase
``exp(2πi k·c_i / b)`` of image ``i`` (so the two GEMMs stay shared by all images).

M-step (Wiener class averages): ``N_k = Σ_ψ rot_{−ψ} irfft2(Σ_i ŵ_ikψ · C_i X̂_i)``, where
``ŵ_ikψ`` is the transform of the posterior over translations (a convolution undoes every
shift at once), ``D_k(|f|) = Σ_i P_i(k) ⟨C_i²⟩(|f|)`` (rotational average of the CTF², an
approximation for astigmatic CTFs) and ``R̂_k = N̂_k / (D_k + b²σ²_mask / (T τ²_k))`` with
``τ²_k(|f|)`` the shell power of ``N̂_k/D_k`` minus its noise power (RELION's τ², with
``T = tau2_fudge``). Averages are masked (soft disc of the particle diameter) and
re-centred on their centre of mass. ``σ²`` and the class priors ``π_k`` are re-estimated.

Per particle: MAP class, ψ and shift, the largest posterior probability (``max_prob``), the
effective sample size of the pose posterior ``ess = 1/Σ p²`` and the effective number of
classes ``eca = 1/Σ_k P(k)²``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
import scipy.sparse
from numpy.typing import NDArray

from cryoset.fourier.shells import rfft_multiplicity, shell_index, shell_mean
from cryoset.geometry import euler_to_matrix

#: Images per E/M chunk (bounds memory: chunk × K × n_psi × b² floats).
_CHUNK = 12

#: Posterior cells (image, class, angle) below this fraction of the image's largest cell
#: are left out of the M-step sums.
_MIN_CELL_MASS = 1e-4


@dataclass(frozen=True)
class ClassifySettings:
    """Parameters of :func:`classify_2d`.

    Attributes
    ----------
    n_classes
        ``K``.
    n_iter
        EM iterations.
    psi_step_deg
        In-plane angular step (``360 / psi_step_deg`` angles).
    offset_range_px, offset_sigma_px
        Translations searched: integer pixels with ``|t − c_i| ≤ offset_range_px`` around the
        image's window centre ``c_i``; Gaussian prior centred at 0 with standard deviation
        ``offset_sigma_px`` on them.
    offset_recentre
        Centre each image's search window on its MAP offset of the previous iteration
        (RELION); False: ``c_i = 0`` always (a fixed window around the box centre).
    max_offset_px
        Cap on the total offset of recentred windows, ``|t| ≤ max_offset_px`` (default: a
        quarter of the box; a fixed window is never cut).
    learn_offset_sigma
        Re-estimate the prior's standard deviation every iteration as RELION does,
        ``σ_t² = Σ_i Σ_t P_i(t) |t|² / (2 n)`` (``offset_sigma_px`` is the initial value).
    particle_diameter_px
        Diameter of the soft circular mask of images and averages (default 0.8 b).
    tau2_fudge
        ``T`` (RELION's ``--tau2_fudge``): > 1 trusts the data more (sharper averages).
    hard
        One-hot assignment at the MAP pose instead of probabilities.
    align_band
        The E-step compares images and references up to this fraction of Nyquist (the
        averages keep every frequency).
    seed
        Seed of the initial references and of the half-set split.
    """

    n_classes: int = 8
    n_iter: int = 10
    psi_step_deg: float = 10.0
    offset_range_px: int = 5
    offset_sigma_px: float = 3.0
    offset_recentre: bool = True
    max_offset_px: float | None = None
    learn_offset_sigma: bool = False
    particle_diameter_px: float | None = None
    tau2_fudge: float = 2.0
    hard: bool = False
    align_band: float = 0.6
    seed: int = 0


@dataclass
class Classification2D:
    """Result of :func:`classify_2d`.

    Attributes
    ----------
    averages : ndarray, float32, shape (K, b, b)
        Class averages (CTF-corrected, masked, centred).
    class_index : ndarray of int, shape (n,)
        MAP class, 0-based.
    psi_deg, shift_px : ndarray, shapes (n,) and (n, 2)
        MAP in-plane angle and RELION 3.1 shift ``(x, y)`` in pixels.
    max_prob, ess, eca : ndarray, shape (n,)
        Largest posterior probability, ``1/Σ p²`` over poses, ``1/Σ_k P(k)²``.
    log_evidence_gain : ndarray, shape (n,)
        Best ``(cc − ½‖CR‖²)/σ²`` (log-likelihood of the best pose minus that of an empty image).
    class_prob : ndarray, shape (n, K)
        Posterior class probabilities.
    sigma2
        Final per-pixel noise variance.
    history : list of dict
        Per iteration: ``sigma2``, ``changed`` (fraction of particles whose class changed),
        ``offset_sigma_px`` (the prior width used in the next iteration).
    """

    averages: NDArray[np.float32]
    class_index: NDArray[np.int64]
    psi_deg: NDArray[np.float64]
    shift_px: NDArray[np.float64]
    max_prob: NDArray[np.float64]
    ess: NDArray[np.float64]
    eca: NDArray[np.float64]
    log_evidence_gain: NDArray[np.float64]
    class_prob: NDArray[np.float64]
    sigma2: float
    history: list[dict[str, float]] = field(default_factory=list)


def soft_disc(box: int, diameter_px: float, edge_px: float = 3.0) -> NDArray[np.float32]:
    """A soft-edged disc (1 inside ``diameter/2``, raised-cosine edge), centre ``box//2``."""
    yy, xx = np.mgrid[0:box, 0:box] - box // 2
    r = np.hypot(xx, yy)
    r0 = diameter_px / 2.0
    t = np.clip((r - r0) / edge_px, 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)


def normalise_images(images: NDArray[np.float32], diameter_px: float) -> NDArray[np.float32]:
    """Zero mean and unit standard deviation of the background (outside ``diameter``).

    Parameters
    ----------
    images : array, shape (n, b, b)

    Returns
    -------
    ndarray, float32, shape (n, b, b)
    """
    b = images.shape[-1]
    yy, xx = np.mgrid[0:b, 0:b] - b // 2
    outside = np.hypot(xx, yy) > diameter_px / 2.0
    if outside.sum() < 16:
        outside = np.ones((b, b), bool)
    bg = images[:, outside]
    mean = bg.mean(axis=1)
    std = bg.std(axis=1)
    std = np.where(std > 0, std, 1.0)
    return ((images - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def rotate_images(images: NDArray[np.float32], psi_deg: NDArray[np.float64]) -> NDArray[np.float32]:
    """Rotate images by in-plane angles: ``out[k, j](p) = images[k](A_ψjᵀ p)`` (bilinear).

    Parameters
    ----------
    images : array, shape (K, b, b)
    psi_deg : array, shape (m,)

    Returns
    -------
    ndarray, float32, shape (K, m, b, b)
        Zero outside the input box.
    """
    k, b = images.shape[0], images.shape[-1]
    mats = euler_to_matrix(0.0, 0.0, np.asarray(psi_deg, np.float64))[:, :2, :2]  # (m, 2, 2)
    c = b // 2
    yy, xx = np.mgrid[0:b, 0:b].astype(np.float64) - c
    # source = Aᵀ p : src_x = A00 x + A10 y, src_y = A01 x + A11 y
    sx = mats[:, 0, 0, None, None] * xx + mats[:, 1, 0, None, None] * yy + c
    sy = mats[:, 0, 1, None, None] * xx + mats[:, 1, 1, None, None] * yy + c
    x0 = np.floor(sx).astype(np.int64)
    y0 = np.floor(sy).astype(np.int64)
    fx = (sx - x0).astype(np.float32)
    fy = (sy - y0).astype(np.float32)
    out = np.zeros((k, mats.shape[0], b, b), np.float32)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            ok = (xi >= 0) & (xi < b) & (yi >= 0) & (yi < b)
            vals = images[:, np.clip(yi, 0, b - 1), np.clip(xi, 0, b - 1)]  # (K, m, b, b)
            out += vals * (wx * wy * ok)[None]
    return out


def _centre(avg: NDArray[np.float32], mask: NDArray[np.float32]) -> NDArray[np.float32]:
    """Shift an average so its (positive, masked) centre of mass is at the box centre."""
    b = avg.shape[-1]
    w = np.clip(avg * mask, 0, None)
    total = float(w.sum())
    if total <= 0:
        return avg
    yy, xx = np.mgrid[0:b, 0:b] - b // 2
    cy, cx = float((w * yy).sum() / total), float((w * xx).sum() / total)
    ky = np.fft.fftfreq(b)[:, None]
    kx = np.fft.rfftfreq(b)[None, :]
    spec = np.fft.rfft2(avg) * np.exp(2j * np.pi * (kx * cx + ky * cy))
    return np.fft.irfft2(spec, s=(b, b)).astype(np.float32)


def _offsets(range_px: int) -> NDArray[np.int64]:
    r = int(range_px)
    ty, tx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = tx * tx + ty * ty <= r * r
    return np.stack([tx[keep], ty[keep]], axis=1)  # (T, 2) as (x, y)


@dataclass
class _Problem:
    """Precomputed data shared by the iterations."""

    spec: NDArray[np.complex64]  # C_i X̂_i, (n, b, b//2+1), origin-centred
    x2: NDArray[np.float64]  # ‖X_i‖² of the masked, normalised images, (n,)
    ctf2: NDArray[np.float32]  # (n, b, b//2+1)
    ctf2_radial: NDArray[np.float64]  # (n, nshell)
    mask: NDArray[np.float32]
    mask_area: float
    psi_deg: NDArray[np.float64]
    offsets: NDArray[np.int64]  # (T, 2) as (x, y): the window relative to its centre
    max_offset_px: float
    shells: NDArray[np.int64]
    nshell: int
    band_y: NDArray[np.int64]  # rfft2 rows used by the E-step, (Y,)
    band_x: NDArray[np.int64]  # rfft2 columns used by the E-step, (X,)
    band_mask: NDArray[np.bool_]  # (Y, X): inside the E-step circle
    dft_x: NDArray[np.complex64]  # (X, Tx): weight(kx) · exp(2πi kx tx / b) / b²
    dft_y: NDArray[np.complex64]  # (Ty, Y): exp(2πi ky ty / b)
    square_index: NDArray[np.int64]  # (T,): flat index of each offset in the (Ty, Tx) square


def _prepare(images: NDArray[np.float32], ctf: NDArray[np.float32] | None,
             settings: ClassifySettings) -> _Problem:
    n, b = images.shape[0], images.shape[-1]
    diameter = settings.particle_diameter_px or 0.8 * b
    mask = soft_disc(b, diameter)
    x = normalise_images(images, diameter) * mask
    spec = scipy.fft.rfft2(np.fft.ifftshift(x, axes=(-2, -1)), workers=-1)
    c = np.ones((n, b, b // 2 + 1), np.float32) if ctf is None else np.asarray(ctf, np.float32)
    spec = (spec * c).astype(np.complex64)
    shells = shell_index(b, 2)
    nshell = b // 2 + 1
    ctf2 = (c * c).astype(np.float32)
    offsets = _offsets(settings.offset_range_px)
    cap = b / 4.0 if settings.max_offset_px is None else float(settings.max_offset_px)
    if not settings.offset_recentre:  # the fixed window is never cut by the cap
        cap = max(cap, float(settings.offset_range_px))
    psi = np.arange(0.0, 360.0, settings.psi_step_deg)
    x2 = (x.astype(np.float64) ** 2).sum(axis=(1, 2))
    r_max = max(2, min(b // 2 - 1, round(settings.align_band * (b // 2))))
    ky_all = np.rint(np.fft.fftfreq(b) * b).astype(np.int64)
    band_y = np.flatnonzero(np.abs(ky_all) <= r_max)
    band_x = np.arange(r_max + 1)
    band_mask = np.hypot(ky_all[band_y][:, None], band_x[None, :]) <= r_max
    r_off = int(settings.offset_range_px)
    t1 = np.arange(-r_off, r_off + 1)
    dft_x = (rfft_multiplicity(b)[band_x][:, None] * np.exp(2j * np.pi * np.outer(band_x, t1) / b)
             / (b * b)).astype(np.complex64)
    dft_y = np.exp(2j * np.pi * np.outer(t1, ky_all[band_y]) / b).astype(np.complex64)
    square = (offsets[:, 1] + r_off) * t1.size + (offsets[:, 0] + r_off)
    return _Problem(spec, x2, ctf2, shell_mean(ctf2.astype(np.float64), shells, nshell), mask,
                    float(mask.sum()), psi, offsets, min(cap, b / 2.0 - 1.0), shells, nshell, band_y, band_x,
                    band_mask, dft_x, dft_y, square)


def _window(prob: _Problem, centre: NDArray[np.int64], sigma_px: float
            ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Absolute offsets of the images' search windows and their log prior.

    Parameters
    ----------
    centre : array of int, shape (c, 2)
        Window centres ``(x, y)``.

    Returns
    -------
    offsets : ndarray of int, shape (c, T, 2)
    log_prior : ndarray, shape (c, T)
        ``−|t|²/(2σ²)``, ``−inf`` beyond the offset cap.
    """
    off = centre[:, None, :] + prob.offsets[None]
    r2 = (off.astype(np.float64) ** 2).sum(axis=2)
    prior = np.where(r2 <= prob.max_offset_px ** 2 + 1e-9, -r2 / (2.0 * sigma_px ** 2), -np.inf)
    return off, prior


def _e_chunk(prob: _Problem, rows: NDArray[np.int64], centre: NDArray[np.int64],
             log_prior: NDArray[np.float64], ref_spec: NDArray[np.complex64],
             ref_pow: NDArray[np.float64], log_pi: NDArray[np.float64], sigma2: float
             ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Log-likelihood gain ``(cc − ½‖CR‖²)/σ²`` and log-posterior (unnormalised) for a chunk.

    ``centre`` (c, 2) are the images' window centres ``(x, y)`` and ``log_prior`` (c, T) the
    prior of their window offsets. Returns arrays of shape (c, K, n_psi, T).
    """
    b = prob.mask.shape[0]
    k, m = ref_spec.shape[:2]
    c = rows.size
    iy, ix = np.ix_(prob.band_y, prob.band_x)
    g = np.conj(prob.spec[rows][:, iy, ix]) * prob.band_mask  # (c, Y, X)
    if np.any(centre):  # move each image's window to its centre: cc(c + u) = DFT_u(g e^{2πi k·c/b} r)
        ky = np.rint(np.fft.fftfreq(b) * b)[prob.band_y]
        phase = np.exp((2j * np.pi / b) * (centre[:, 0, None, None] * prob.band_x[None, None, :]
                                           + centre[:, 1, None, None] * ky[None, :, None]))
        g = (g * phase).astype(np.complex64)
    r = ref_spec[:, :, iy, ix]  # (K, m, Y, X)
    # separable partial inverse DFT at the searched offsets only (band-limited E-step)
    ny, nx = prob.band_mask.shape
    tx, ty = prob.dft_x.shape[1], prob.dft_y.shape[0]
    prod = (g[:, None, None] * r[None]).reshape(-1, nx)  # (c K m Y, X): one GEMM per axis
    step = (prod @ prob.dft_x).reshape(-1, ny, tx).transpose(0, 2, 1).reshape(-1, ny)
    cc_sq = (step @ prob.dft_y.T).real.reshape(c, k, m, tx, ty)  # [..., tx, ty]
    cc = cc_sq.transpose(0, 1, 2, 4, 3).reshape(c, k, m, -1)[..., prob.square_index]
    wts = rfft_multiplicity(b)[prob.band_x] * prob.band_mask
    c2w = (prob.ctf2[rows][:, iy, ix] * wts).reshape(c, -1)
    norm2 = (c2w @ ref_pow[:, :, iy, ix].reshape(k * m, -1).T).reshape(c, k, m) / (b * b)
    gain = (cc - 0.5 * norm2[..., None]) / sigma2
    logp = gain + log_prior[:, None, None, :] + log_pi[None, :, None, None]
    return gain, logp


def _posterior(logp: NDArray[np.float64], hard: bool) -> NDArray[np.float64]:
    c = logp.shape[0]
    flat = logp.reshape(c, -1)
    if hard:
        p = np.zeros_like(flat)
        p[np.arange(c), flat.argmax(axis=1)] = 1.0
    else:
        p = np.exp(flat - flat.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
    return p.reshape(logp.shape)


def _iteration(prob: _Problem, refs: NDArray[np.float32], log_pi: NDArray[np.float64], sigma2: float,
               settings: ClassifySettings, centre: NDArray[np.int64], *,
               subset: NDArray[np.int64] | None = None, offset_sigma_px: float | None = None
               ) -> dict[str, NDArray[np.float64] | NDArray[np.complex128] | float]:
    """One E-step plus the sums of the M-step, over ``subset`` rows (default all).

    ``centre`` (n, 2) holds every image's search-window centre ``(x, y)``; the result's
    ``shift`` (n, 2) the MAP offsets and ``offset_ms`` the posterior mean of ``|t|²`` over
    the images. ``offset_sigma_px`` overrides the settings' prior width.
    """
    sigma_t = settings.offset_sigma_px if offset_sigma_px is None else offset_sigma_px
    n_all, b = prob.spec.shape[0], prob.mask.shape[0]
    rows_all = np.arange(n_all) if subset is None else subset
    k = refs.shape[0]
    m = prob.psi_deg.size
    rot = rotate_images(refs, prob.psi_deg)  # (K, m, b, b)
    ref_spec = scipy.fft.rfft2(np.fft.ifftshift(rot, axes=(-2, -1)), workers=-1).astype(np.complex64)
    ref_pow = (np.abs(ref_spec) ** 2).astype(np.float64)
    numer = np.zeros((k, m, b, b // 2 + 1), np.complex128)
    n = rows_all.size
    class_prob = np.zeros((n, k))
    best = np.zeros((n, 4), np.int64)  # k, psi index, t index
    shift = np.zeros((n, 2), np.int64)
    max_prob = np.zeros(n)
    ess = np.zeros(n)
    gain_best = np.zeros(n)
    resid = np.zeros(n)
    offset_ms = 0.0
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        rows = rows_all[sl]
        off, log_prior = _window(prob, centre[rows], sigma_t)
        gain, logp = _e_chunk(prob, rows, centre[rows], log_prior, ref_spec, ref_pow, log_pi, sigma2)
        p = _posterior(logp, settings.hard)
        c = rows.size
        flat_p = p.reshape(c, -1)
        arg = flat_p.argmax(axis=1)
        kk, mm, tt = np.unravel_index(arg, p.shape[1:])
        best[sl, 0], best[sl, 1], best[sl, 2] = kk, mm, tt
        shift[sl] = off[np.arange(c), tt]
        max_prob[sl] = flat_p.max(axis=1)
        ess[sl] = 1.0 / (flat_p ** 2).sum(axis=1)
        class_prob[sl] = p.sum(axis=(2, 3))
        offset_ms += float((p.sum(axis=(1, 2)) * (off.astype(np.float64) ** 2).sum(axis=2)).sum())
        g = gain.reshape(c, -1)
        gain_best[sl] = g[np.arange(c), arg]
        resid[sl] = np.maximum(prob.x2[rows] - 2.0 * sigma2 * gain_best[sl], 0.0)
        # M-step sums: posterior maps over translations, FFT, multiply by C X̂
        # only the (image, class, angle) cells with posterior mass matter (posteriors are sharp)
        cell = p.sum(axis=3)
        ci, kc, mc = np.nonzero(cell > _MIN_CELL_MASS * cell.max(axis=(1, 2), keepdims=True))
        wmap = np.zeros((ci.size, b * b))
        flat = (off[..., 1] % b) * b + (off[..., 0] % b)  # (c, T)
        wmap[np.arange(ci.size)[:, None], flat[ci]] = p[ci, kc, mc]
        wspec = scipy.fft.rfft2(wmap.reshape(-1, b, b), workers=-1) * prob.spec[rows[ci]]
        cells = scipy.sparse.csr_matrix((np.ones(ci.size), (kc * m + mc, np.arange(ci.size))),
                                        shape=(k * m, ci.size))
        numer += (cells @ wspec.reshape(ci.size, -1)).reshape(numer.shape)
    return {"numer": numer, "class_prob": class_prob, "best": best.astype(np.float64),
            "shift": shift.astype(np.float64), "offset_ms": offset_ms / max(n, 1),
            "max_prob": max_prob, "ess": ess, "gain": gain_best, "resid": resid}


def _averages(prob: _Problem, numer: NDArray[np.complex128], class_prob: NDArray[np.float64],
              rows: NDArray[np.int64], sigma2: float, tau2_fudge: float) -> NDArray[np.float32]:
    """Wiener class averages from the M-step sums (see the module docstring)."""
    k, m, b = numer.shape[0], numer.shape[1], prob.mask.shape[0]
    per_psi = np.fft.fftshift(scipy.fft.irfft2(numer, s=(b, b), workers=-1), axes=(-2, -1))
    summed = np.zeros((k, b, b), np.float32)
    for j in range(m):
        summed += rotate_images(per_psi[:, j].astype(np.float32), np.array([-prob.psi_deg[j]]))[:, 0]
    nspec = scipy.fft.rfft2(np.fft.ifftshift(summed, axes=(-2, -1)))
    denom_shell = class_prob.T @ prob.ctf2_radial[rows]  # (K, nshell)
    shells = np.minimum(prob.shells, prob.nshell - 1)
    denom = np.maximum(denom_shell[:, shells], 1e-9)
    noise_pow = sigma2 * prob.mask_area  # per Fourier coefficient of one image
    raw = nspec / denom
    pow_shell = shell_mean(np.abs(raw) ** 2, prob.shells, prob.nshell)
    tau2 = np.maximum(pow_shell - noise_pow / np.maximum(denom_shell, 1e-9), 0.0)
    reg = noise_pow / np.maximum(tau2_fudge * tau2, 1e-30)
    spec = nspec / (denom + np.minimum(reg, 1e30)[:, shells])
    spec[:, prob.shells >= prob.nshell - 1] = 0.0
    avg = np.fft.fftshift(scipy.fft.irfft2(spec, s=(b, b)), axes=(-2, -1)).astype(np.float32)
    return np.stack([_centre(a, prob.mask) * prob.mask for a in avg]).astype(np.float32)


def _initial_references(prob: _Problem, k: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """``K`` random particles (CTF-multiplied), low-pass filtered to 1/4 of Nyquist."""
    n, b = prob.spec.shape[0], prob.mask.shape[0]
    pick = rng.choice(n, size=k, replace=n < k)
    lowpass = np.exp(-(prob.shells / (b / 8.0)) ** 2)
    spec = prob.spec[pick] * lowpass
    imgs = np.fft.fftshift(scipy.fft.irfft2(spec, s=(b, b)), axes=(-2, -1)).astype(np.float32)
    return imgs * prob.mask


def classify_2d(images: NDArray[np.float32], settings: ClassifySettings, *,
                ctf: NDArray[np.float32] | None = None,
                progress: Callable[[int], None] | None = None) -> Classification2D:
    """Reference-free 2D classification (see the module docstring).

    Parameters
    ----------
    images : array, shape (n, b, b)
        Particle images (any scale; normalised internally on the background).
    settings
        Parameters.
    ctf : array, shape (n, b, b//2 + 1), optional
        Per-image CTF in ``rfft2`` layout (origin at ``[0, 0]``): the CTF left in the image,
        ``|CTF|`` for phase-flipped images (:func:`cryoset.classify.data.ctf_images`), used
        alike in the forward model ``C_i R`` and the Wiener weights ``C_i²``; None: no CTF.
    progress
        Called with the iteration number after each iteration.

    Returns
    -------
    Classification2D
    """
    imgs = np.asarray(images, np.float32)
    if imgs.ndim != 3 or imgs.shape[1] != imgs.shape[2]:
        raise ValueError(f"images: expected (n, b, b), got {imgs.shape}")
    if settings.n_classes < 1 or settings.n_iter < 1:
        raise ValueError("n_classes and n_iter must be >= 1")
    prob = _prepare(imgs, ctf, settings)
    rng = np.random.default_rng(settings.seed)
    k = settings.n_classes
    refs = _initial_references(prob, k, rng)
    log_pi = np.full(k, -math.log(k))
    sigma2 = 1.0
    rows = np.arange(imgs.shape[0])
    history: list[dict[str, float]] = []
    prev: NDArray[np.int64] | None = None
    out: dict[str, NDArray[np.float64] | NDArray[np.complex128] | float] = {}
    centre = np.zeros((imgs.shape[0], 2), np.int64)
    sigma_t = settings.offset_sigma_px
    for it in range(settings.n_iter):
        out = _iteration(prob, refs, log_pi, sigma2, settings, centre, offset_sigma_px=sigma_t)
        if settings.offset_recentre:
            centre = np.asarray(out["shift"]).astype(np.int64)
        if settings.learn_offset_sigma:
            sigma_t = max(math.sqrt(float(out["offset_ms"]) / 2.0), 0.5)
        cp = np.asarray(out["class_prob"])
        refs = _averages(prob, np.asarray(out["numer"]), cp, rows, sigma2, settings.tau2_fudge)
        pi = np.maximum(cp.mean(axis=0), 1e-6)
        log_pi = np.log(pi / pi.sum())
        sigma2 = max(float(np.mean(np.asarray(out["resid"]))) / prob.mask_area, 1e-6)
        cls = np.asarray(out["best"])[:, 0].astype(np.int64)
        changed = 1.0 if prev is None else float(np.mean(cls != prev))
        prev = cls
        history.append({"iteration": float(it + 1), "sigma2": sigma2, "changed": changed,
                        "offset_sigma_px": sigma_t})
        if progress is not None:
            progress(it + 1)
    # final assignment against the final averages
    out = _iteration(prob, refs, log_pi, sigma2, settings, centre, offset_sigma_px=sigma_t)
    best = np.asarray(out["best"]).astype(np.int64)
    cp = np.asarray(out["class_prob"])
    off = np.asarray(out["shift"])
    return Classification2D(
        averages=refs, class_index=best[:, 0], psi_deg=prob.psi_deg[best[:, 1]],
        shift_px=off, max_prob=np.asarray(out["max_prob"]), ess=np.asarray(out["ess"]),
        eca=1.0 / (cp ** 2).sum(axis=1), log_evidence_gain=np.asarray(out["gain"]),
        class_prob=cp, sigma2=sigma2, history=history)


def align_to_references(images: NDArray[np.float32], references: NDArray[np.float32],
                        settings: ClassifySettings, *, ctf: NDArray[np.float32] | None = None,
                        sigma2: float = 1.0, offset_centre_px: NDArray[np.float64] | None = None
                        ) -> Classification2D:
    """One hard E-step of every image against fixed references (no averaging).

    Parameters
    ----------
    images : array, shape (n, b, b)
    references : array, shape (K, b, b)
    settings
        Search parameters (``n_classes`` is ignored: ``K`` comes from ``references``).
    ctf : array, shape (n, b, b//2 + 1), optional
    sigma2
        Per-pixel noise variance (e.g. :attr:`Classification2D.sigma2`).
    offset_centre_px : array, shape (n, 2), optional
        Centres ``(x, y)`` of the images' search windows (rounded to pixels, e.g. the shifts of
        a classification; moved inside the offset cap); default 0.

    Returns
    -------
    Classification2D
        ``averages`` are the references; ``log_evidence_gain`` the best ``(cc − ½‖CR‖²)/σ²``.
    """
    prob = _prepare(np.asarray(images, np.float32), ctf, settings)
    refs = np.asarray(references, np.float32)
    k = refs.shape[0]
    n = prob.spec.shape[0]
    centre = np.zeros((n, 2), np.int64)
    if offset_centre_px is not None:
        c = np.asarray(offset_centre_px, np.float64).reshape(n, 2)
        centre = np.rint(c).astype(np.int64)
        norm = np.hypot(c[:, 0], c[:, 1])
        out_cap = np.hypot(centre[:, 0], centre[:, 1]) > prob.max_offset_px
        scaled = c[out_cap] * (prob.max_offset_px / norm[out_cap])[:, None]
        centre[out_cap] = np.trunc(scaled).astype(np.int64)  # towards 0: inside the cap
    hard = ClassifySettings(**{**settings.__dict__, "hard": True})
    out = _iteration(prob, refs, np.full(k, -math.log(k)), sigma2, hard, centre)
    best = np.asarray(out["best"]).astype(np.int64)
    cp = np.asarray(out["class_prob"])
    return Classification2D(
        averages=refs, class_index=best[:, 0], psi_deg=prob.psi_deg[best[:, 1]],
        shift_px=np.asarray(out["shift"]), max_prob=np.asarray(out["max_prob"]),
        ess=np.asarray(out["ess"]), eca=1.0 / (cp ** 2).sum(axis=1),
        log_evidence_gain=np.asarray(out["gain"]), class_prob=cp, sigma2=sigma2)


def aligned_images(images: NDArray[np.float32], psi_deg: NDArray[np.float64],
                   shift_px: NDArray[np.float64], settings: ClassifySettings, *,
                   ctf: NDArray[np.float32] | None = None
                   ) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """CTF-multiplied images brought into the reference frame, and their radial CTF².

    Parameters
    ----------
    images : array, shape (n, b, b)
    psi_deg, shift_px : arrays, shapes (n,) and (n, 2)
        Poses in the convention of the module docstring.
    settings
        For the mask diameter.
    ctf : array, shape (n, b, b//2 + 1), optional

    Returns
    -------
    aligned : ndarray, float32, shape (n, b, b)
        ``(C_i ∗ X_i)(A_ψ q − s)`` for reference-frame pixels ``q``.
    ctf2_radial : ndarray, shape (n, b//2 + 1)
        Rotational average of ``C_i²`` per Fourier shell.
    """
    prob = _prepare(np.asarray(images, np.float32), ctf, settings)
    b = prob.mask.shape[0]
    ky = np.fft.fftfreq(b)[:, None]
    kx = np.fft.rfftfreq(b)[None, :]
    s = np.asarray(shift_px, np.float64)
    phase = np.exp(-2j * np.pi * (kx * s[:, 0, None, None] + ky * s[:, 1, None, None]))
    unshifted = np.fft.fftshift(scipy.fft.irfft2(prob.spec * phase, s=(b, b)), axes=(-2, -1))
    out = np.empty((s.shape[0], b, b), np.float32)
    for i in range(s.shape[0]):
        out[i] = rotate_images(unshifted[i:i + 1].astype(np.float32), np.array([-psi_deg[i]]))[0, 0]
    return out, prob.ctf2_radial
