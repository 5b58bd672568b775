"""Sub-grid split / stitch: exact reconstruction for any shape (property test)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoset.maps.subgrids import box_grid, box_starts, iter_blocks, split, stitch


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 45), st.integers(1, 45), st.integers(1, 45)),
    geometry=st.sampled_from([(32, 6), (8, 2), (5, 0), (7, 3), (4, 1)]),
    seed=st.integers(0, 2**16),
)
def test_split_then_stitch_reproduces_the_map(shape: tuple[int, int, int], geometry: tuple[int, int], seed: int) -> None:
    box, overlap = geometry
    vol = np.random.default_rng(seed).integers(-100, 100, size=shape).astype(np.int16)
    blocks, starts = split(vol, box, overlap)
    assert blocks.shape == (int(np.prod(box_grid(shape, box, overlap))), box, box, box)
    np.testing.assert_array_equal(stitch(blocks, shape, box, overlap), vol)
    # every block holds the map at its start (zero outside)
    for b in (0, blocks.shape[0] - 1):
        z, y, x = starts[b]
        ref = np.zeros((box, box, box), np.int16)
        lo = np.maximum([z, y, x], 0)
        hi = np.minimum(np.array([z, y, x]) + box, shape)
        ref[tuple(slice(lo[a] - s, hi[a] - s) for a, s in enumerate((z, y, x)))] = vol[
            tuple(slice(lo[a], hi[a]) for a in range(3))
        ]
        np.testing.assert_array_equal(blocks[b], ref)


def test_default_geometry_matches_the_paper(rng: np.random.Generator) -> None:
    vol = rng.random((50, 41, 20)).astype(np.float32)
    blocks, starts = split(vol)
    assert blocks.shape[1:] == (32, 32, 32)
    assert box_grid(vol.shape) == (3, 3, 1)
    assert starts[0].tolist() == [-6, -6, -6]
    assert starts[1].tolist() == [-6, 14, -6]  # 20-voxel core stride, z-major order
    np.testing.assert_array_equal(blocks[0, 6:26, 6:26, 6:26], vol[:20, :20, :20])


def test_batched_iteration_equals_split(rng: np.random.Generator) -> None:
    vol = rng.random((33, 25, 47)).astype(np.float32)
    blocks, starts = split(vol, 16, 3)
    got = np.concatenate([b for _, b in iter_blocks(vol, 16, 3, batch=7)])
    np.testing.assert_array_equal(got, blocks)
    np.testing.assert_array_equal(box_starts(vol.shape, 16, 3), starts)


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="core"):
        split(np.zeros((4, 4, 4)), 12, 6)
    with pytest.raises(ValueError, match="expected"):
        stitch(np.zeros((2, 32, 32, 32)), (20, 20, 20))
