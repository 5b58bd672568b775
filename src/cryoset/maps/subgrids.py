"""Split a map into overlapping cubic sub-grids and stitch their cores back.

Geometry
--------
With box size ``b`` (default 32) and overlap ``o`` (default 6) the *core* is
``c = b - 2 o`` (20). Along an axis of length ``n`` there are ``ceil(n / c)`` boxes; box ``q``
covers map indices ``[q c - o, q c - o + b)`` and its core ``[q c, q c + c)``. The map is padded
with ``fill`` (0) wherever a box reaches past it, so any shape works, including maps smaller
than one box and lengths that are not multiples of ``c``. :func:`stitch` puts each core back
and crops to the map shape, reproducing the map exactly. Boxes are ordered z-major
(C order over the box grid) and ``starts`` holds each box's first map index (may be
negative).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

__all__ = ["box_grid", "box_starts", "iter_blocks", "split", "stitch"]


def _check(box: int, overlap: int) -> int:
    if box < 1 or overlap < 0:
        raise ValueError(f"box must be >= 1 and overlap >= 0, got box={box}, overlap={overlap}")
    core = box - 2 * overlap
    if core < 1:
        raise ValueError(f"box {box} leaves no core with overlap {overlap} on each face")
    return core


def box_grid(shape: Sequence[int], box: int = 32, overlap: int = 6) -> tuple[int, int, int]:
    """Number of boxes along ``(z, y, x)``: ``ceil(n / (box - 2 overlap))``.

    Examples
    --------
    >>> box_grid((100, 20, 7))
    (5, 1, 1)
    """
    core = _check(box, overlap)
    g = tuple(max(1, -(-int(n) // core)) for n in shape)
    return g[0], g[1], g[2]


def box_starts(shape: Sequence[int], box: int = 32, overlap: int = 6) -> NDArray[np.int32]:
    """First map index ``(z, y, x)`` of every box, z-major order; shape (n_boxes, 3)."""
    core = _check(box, overlap)
    grid = box_grid(shape, box, overlap)
    qz, qy, qx = np.meshgrid(*[np.arange(g) for g in grid], indexing="ij")
    return (np.stack([qz.ravel(), qy.ravel(), qx.ravel()], axis=1) * core - overlap).astype(np.int32)


def _as_map(volume: NDArray[np.generic]) -> NDArray[np.generic]:
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"a map must be 3D (z, y, x), got shape {vol.shape}")
    return vol


def _box_view(vol: NDArray[np.generic], box: int, overlap: int, fill: float
              ) -> tuple[NDArray[np.generic], tuple[int, int, int]]:
    """All ``box³`` sub-grids of the ``fill``-padded map as a strided view, and the box grid.

    Returns
    -------
    view : ndarray, shape (gz, gy, gx, box, box, box)
        ``view[qz, qy, qx]`` is box ``(qz, qy, qx)`` (a view of one padded copy of the map).
    grid : (gz, gy, gx)
        :func:`box_grid`.
    """
    core = _check(box, overlap)
    grid = box_grid(vol.shape, box, overlap)
    pad = [(overlap, g * core + overlap - n) for g, n in zip(grid, vol.shape, strict=True)]
    padded = np.pad(vol, pad, mode="constant", constant_values=fill)
    return sliding_window_view(padded, (box, box, box))[::core, ::core, ::core], grid


def iter_blocks(
    volume: NDArray[np.generic], box: int = 32, overlap: int = 6, *, batch: int = 256, fill: float = 0
) -> Iterator[tuple[int, NDArray[np.generic]]]:
    """Yield ``(first_box_number, blocks)`` batches of at most ``batch`` sub-grids.

    Only one batch of blocks exists at a time (plus one padded copy of the volume), so
    peak memory stays near the map size however many boxes there are.
    """
    vol = _as_map(volume)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    view, grid = _box_view(vol, box, overlap, fill)
    total = grid[0] * grid[1] * grid[2]
    for lo in range(0, total, batch):
        qz, qy, qx = np.unravel_index(np.arange(lo, min(lo + batch, total)), grid)
        yield lo, view[qz, qy, qx]


def split(
    volume: NDArray[np.generic], box: int = 32, overlap: int = 6, fill: float = 0
) -> tuple[NDArray[np.generic], NDArray[np.int32]]:
    """Cut a ``(z, y, x)`` volume into overlapping ``box³`` sub-grids.

    Parameters
    ----------
    volume : ndarray, shape (z, y, x)
    box, overlap
        Sub-grid edge and overlap on each face, in voxels.
    fill
        Value used outside the map.

    Returns
    -------
    blocks : ndarray, shape (n_boxes, box, box, box), dtype of ``volume``
    starts : int32 ndarray, shape (n_boxes, 3)
        Map index of each block's ``[0, 0, 0]`` voxel.
    """
    vol = _as_map(volume)
    view, grid = _box_view(vol, box, overlap, fill)
    blocks = np.empty((grid[0] * grid[1] * grid[2], box, box, box), dtype=vol.dtype)
    blocks.reshape(*grid, box, box, box)[...] = view
    return blocks, box_starts(vol.shape, box, overlap)


def stitch(
    blocks: NDArray[np.generic], shape: Sequence[int], box: int = 32, overlap: int = 6
) -> NDArray[np.generic]:
    """Rebuild a ``(z, y, x)`` volume from the cores of the blocks made by :func:`split`.

    Parameters
    ----------
    blocks : array, shape (n_boxes, box, box, box)
        In :func:`split` order (e.g. network predictions for each sub-grid).
    shape
        The map shape ``(z, y, x)``.

    Returns
    -------
    ndarray, shape ``shape``
    """
    arr = np.asarray(blocks)
    core = _check(box, overlap)
    gz, gy, gx = box_grid(shape, box, overlap)
    if arr.shape != (gz * gy * gx, box, box, box):
        raise ValueError(
            f"expected {gz * gy * gx} blocks of {box}³ for shape {tuple(shape)}, got {arr.shape}"
        )
    cores = arr[:, overlap : overlap + core, overlap : overlap + core, overlap : overlap + core]
    full = cores.reshape(gz, gy, gx, core, core, core).transpose(0, 3, 1, 4, 2, 5)
    full = full.reshape(gz * core, gy * core, gx * core)
    nz, ny, nx = (int(s) for s in shape)
    return np.ascontiguousarray(full[:nz, :ny, :nx])
