"""Voxel-network inference over a whole map: sub-grids in batches, 20³ cores stitched in place.

:func:`predict_volume` takes a map already on the network's grid (1 Å voxels, normalised to
[0, 1] as ``map prepare`` does) and returns per-head class probabilities on the same grid. The
sub-grid geometry is :mod:`cryoset.maps.subgrids` (box ``b``, overlap ``o``, core ``b − 2o``):
each box's softmax is computed and only its core is written, at the core's place in the map, so
the result covers every voxel exactly once (the Cryo2Struct rule: no averaging of overlaps).
Memory: one output array per head, ``(classes, z, y, x)`` float32, plus one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from cryoset.learn.voxelnet import HEADS
from cryoset.maps.subgrids import box_grid, box_starts, iter_blocks

__all__ = ["predict_volume"]


@torch.no_grad()
def predict_volume(
    model: nn.Module,
    volume: NDArray[np.floating],
    *,
    heads: Sequence[str],
    box_px: int = 32,
    overlap_px: int = 6,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, NDArray[np.float32]]:
    """Class probabilities of every voxel of ``volume`` for each head.

    Parameters
    ----------
    model
        A voxel network (``(B, 1, b, b, b)`` → ``{head: (B, C, b, b, b)}`` logits).
    volume : array, shape (z, y, x)
        The normalised map on the network's grid.
    heads
        Heads to return (each must be one of the model's).
    box_px, overlap_px
        Sub-grid geometry (32 and 6: 20³ cores).
    batch_size
        Sub-grids per forward pass.
    device
        Torch device.
    on_batch
        Called as ``on_batch(done, total)`` after each batch (progress bars).

    Returns
    -------
    dict
        ``head → probabilities (classes, z, y, x)``, float32, summing to 1 over classes.
    """
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3-D (z, y, x), got shape {vol.shape}")
    if not np.isfinite(vol).all():
        raise ValueError("volume holds NaN or infinite values")
    dev = torch.device(device)
    model = model.to(dev).eval()
    core = box_px - 2 * overlap_px
    starts = box_starts(vol.shape, box_px, overlap_px) + overlap_px  # core starts
    total = int(np.prod(box_grid(vol.shape, box_px, overlap_px)))
    out = {h: np.zeros((HEADS[h], *vol.shape), dtype=np.float32) for h in heads}
    done = 0
    for lo, blocks in iter_blocks(vol, box_px, overlap_px, batch=batch_size):
        x = torch.from_numpy(np.ascontiguousarray(blocks, dtype=np.float32))[:, None].to(dev)
        logits = model(x)
        for h in heads:
            prob = torch.softmax(logits[h].float(), dim=1).cpu().numpy()
            for j in range(prob.shape[0]):
                z, y, xx = (int(v) for v in starts[lo + j])
                ez, ey, ex = (min(core, n - s) for n, s in zip(vol.shape, (z, y, xx), strict=True))
                out[h][:, z:z + ez, y:y + ey, xx:xx + ex] = prob[
                    j, :, overlap_px:overlap_px + ez, overlap_px:overlap_px + ey, overlap_px:overlap_px + ex]
        done += blocks.shape[0]
        if on_batch is not None:
            on_batch(done, total)
    return out
