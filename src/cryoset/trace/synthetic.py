"""Synthetic network outputs built from a known model: labels plus seeded noise.

Used to test and benchmark the tracer without a trained network:

- :func:`noisy_aa_probabilities`: per-residue amino-acid probabilities
  ``softmax(signal · onehot(true) + N(0, 1))``; ``signal`` sets the top-1 accuracy
  (≈ 0.84 at 3, 0.55 at 2, 0.22 at 1 with 20 classes).
- :func:`perturb_candidates`: Gaussian position noise per coordinate, dropped Cα
  (missed detections) and false-positive candidates placed near the true ones.
- :func:`probability_maps_from_ca`: Cα and amino-acid probability maps on a grid, a
  Gaussian blob per Cα plus uniform noise.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def noisy_aa_probabilities(
    aa_index: npt.ArrayLike, rng: np.random.Generator, *, signal: float = 3.0
) -> npt.NDArray[np.float64]:
    """Amino-acid probabilities, shape (n, 20), for residues of known class.

    Parameters
    ----------
    aa_index
        True class per residue, shape (n,); values ≥ 20 (unknown) get no signal.
    rng
        Seeded generator.
    signal
        Logit added to the true class before the softmax.
    """
    idx = np.asarray(aa_index, dtype=np.int64)
    logits = rng.normal(0.0, 1.0, size=(idx.size, 20))
    known = idx < 20
    logits[np.flatnonzero(known), idx[known]] += signal
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return np.asarray(p / p.sum(axis=1, keepdims=True), dtype=np.float64)


def perturb_candidates(
    positions_a: npt.ArrayLike,
    aa_prob: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    position_sd_a: float = 0.3,
    missing_fraction: float = 0.0,
    false_positive_fraction: float = 0.0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Turn true Cα positions into noisy candidates.

    Parameters
    ----------
    positions_a
        True positions, shape (n, 3), Å.
    aa_prob
        Their amino-acid probabilities, shape (n, 20).
    rng
        Seeded generator.
    position_sd_a
        Standard deviation of the Gaussian noise added to each coordinate, Å.
    missing_fraction
        Fraction of true Cα dropped.
    false_positive_fraction
        Number of false candidates, as a fraction of n, placed 2–6 Å from random true Cα
        with random (noise-only) amino-acid probabilities.

    Returns
    -------
    positions_a, aa_prob, truth
        Shuffled candidates, shapes (m, 3) and (m, 20), and the index of the true residue
        each candidate comes from, shape (m,), -1 for false positives.
    """
    pos = np.asarray(positions_a, dtype=np.float64)
    prob = np.asarray(aa_prob, dtype=np.float64)
    n = pos.shape[0]
    keep = rng.random(n) >= missing_fraction
    truth = np.flatnonzero(keep)
    out_pos = pos[keep] + rng.normal(0.0, position_sd_a, size=(truth.size, 3))
    out_prob = prob[keep]
    n_false = round(false_positive_fraction * n)
    if n_false:
        anchor = pos[rng.integers(0, n, n_false)]
        direction = rng.normal(size=(n_false, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        fake = anchor + direction * rng.uniform(2.0, 6.0, size=(n_false, 1))
        fake_prob = noisy_aa_probabilities(np.full(n_false, 20), rng)
        out_pos = np.concatenate([out_pos, fake])
        out_prob = np.concatenate([out_prob, fake_prob])
        truth = np.concatenate([truth, np.full(n_false, -1)])
    order = rng.permutation(truth.size)
    return out_pos[order], out_prob[order], truth[order].astype(np.int64)


def probability_maps_from_ca(
    positions_a: npt.ArrayLike,
    aa_prob: npt.ArrayLike,
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    *,
    voxel_size_a: float = 1.0,
    origin_a: tuple[float, float, float] = (0.0, 0.0, 0.0),
    blob_sd_a: float = 0.8,
    noise: float = 0.05,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Cα and amino-acid probability maps with a Gaussian blob at every Cα.

    Parameters
    ----------
    positions_a
        Cα positions, shape (n, 3), ``(x, y, z)`` Å.
    aa_prob
        Amino-acid probabilities of each Cα, shape (n, 20).
    shape
        Map shape ``(z, y, x)``.
    rng
        Seeded generator.
    voxel_size_a, origin_a
        Map geometry (``origin_a`` in ``(z, y, x)`` order), Å.
    blob_sd_a
        Standard deviation of each blob, Å.
    noise
        Amplitude of the uniform noise added to the Cα map (clipped to [0, 1]).

    Returns
    -------
    ca_prob, aa_map
        Shapes (z, y, x) and (20, z, y, x), float32. Each voxel of ``aa_map`` holds the
        blob-weighted mix of the residues' probabilities, uniform (1/20) far from any Cα.
    """
    pos = np.asarray(positions_a, dtype=np.float64)
    prob = np.asarray(aa_prob, dtype=np.float64)
    origin = np.asarray(origin_a, dtype=np.float64)
    ca_map = np.zeros(shape, dtype=np.float64)
    aa_acc = np.zeros((20, *shape), dtype=np.float64)
    weight = np.zeros(shape, dtype=np.float64)
    radius = int(np.ceil(3.0 * blob_sd_a / voxel_size_a))
    grid = np.arange(-radius, radius + 1)
    for k in range(pos.shape[0]):
        centre = (pos[k, ::-1] - origin) / voxel_size_a  # (z, y, x) in voxels
        base = np.round(centre).astype(np.int64)
        ranges = [base[a] + grid for a in range(3)]
        valid = [(r >= 0) & (r < shape[a]) for a, r in enumerate(ranges)]
        rz, ry, rx = (ranges[a][valid[a]] for a in range(3))
        if rz.size == 0 or ry.size == 0 or rx.size == 0:
            continue
        dz = (rz - centre[0])[:, None, None]
        dy = (ry - centre[1])[None, :, None]
        dx = (rx - centre[2])[None, None, :]
        blob = np.exp(-(dz**2 + dy**2 + dx**2) * voxel_size_a**2 / (2.0 * blob_sd_a**2))
        sl = np.ix_(rz, ry, rx)
        ca_map[sl] = np.maximum(ca_map[sl], blob)
        weight[sl] += blob
        for c in range(20):
            aa_acc[c][sl] += blob * prob[k, c]
    ca_map += rng.uniform(0.0, noise, size=shape)
    ca_map = np.clip(ca_map, 0.0, 1.0)
    floor = 1e-3
    aa_map = (aa_acc + floor / 20.0) / (weight + floor)[None]
    return ca_map.astype(np.float32), aa_map.astype(np.float32)
