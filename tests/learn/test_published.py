"""PyTorch datasets for the published layouts (synthetic data with exact truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cryoset.errors import InputError
from cryoset.learn.published import (
    MicrographBoxDataset,
    NpzSubgridDataset,
    ZarrSubgridDataset,
    boxes_xyxy,
    collate_detection,
)
from cryoset.maps.subgrids import split
from cryoset.workflows.maps import write_subgrids


def test_boxes_xyxy_centre_convention_and_rescaling() -> None:
    b = boxes_xyxy(np.array([10.0]), np.array([20.0]), np.array([8.0]))
    np.testing.assert_array_equal(b, [[6, 16, 14, 24]])
    half = boxes_xyxy(np.array([10.0]), np.array([20.0]), np.array([8.0]), (0.5, 0.5))
    np.testing.assert_allclose(half, [[2.75, 7.75, 6.75, 11.75]])
    # pixel-area preserving: the first pixel's centre 0 maps to -0.25 at half size, the last (n-1) to n/2-0.75
    assert boxes_xyxy(np.array([0.0]), np.array([99.0]), np.array([0.0]), (0.5, 0.5))[0, :2].tolist() == [-0.25, 49.25]
    assert boxes_xyxy(np.zeros(0), np.zeros(0), np.zeros(0)).shape == (0, 4)


def test_detection_dataset_boxes_sit_on_the_particles(tmp_path: Path, rng: np.random.Generator) -> None:
    from PIL import Image

    ny, nx = 96, 128
    centres = {"a": [(20.0, 30.0), (90.0, 60.0)], "b": [(64.0, 48.0)]}
    paths = {}
    rows = []
    yy, xx = np.mgrid[:ny, :nx]
    for name, pts in centres.items():
        img = rng.normal(40, 5, (ny, nx))
        for x, y in pts:
            img[(xx - x) ** 2 + (yy - y) ** 2 <= 36] = 220
            rows.append({"micrograph": name, "x_px": x, "y_px": y, "score": np.nan, "diameter_px": np.nan})
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(paths[name])
    picks = pd.DataFrame(rows)
    with pytest.raises(InputError, match="default_diameter_px"):
        MicrographBoxDataset(paths, picks)
    ds = MicrographBoxDataset({**paths, "c": paths["b"]}, picks, default_diameter_px=12.0)
    assert len(ds) == 3
    image, target = ds[0]
    assert image.shape == (1, ny, nx) and image.dtype == torch.float32 and target["micrograph"] == "a"
    assert target["labels"].tolist() == [1, 1]
    for x1, y1, x2, y2 in target["boxes"].tolist():
        assert x2 - x1 == 12.0 and y2 - y1 == 12.0
        cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
        assert image[0, cy, cx] == 220.0  # the box centre is on the bright disk
    _, empty = ds[2]  # a micrograph without picks
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    images, targets = collate_detection([ds[0], ds[1]])
    assert len(images) == 2 and [len(t["boxes"]) for t in targets] == [2, 1]
    # the same picks given in a 2× larger coordinate frame land on the same pixels
    big = picks.assign(x_px=(picks["x_px"] + 0.5) * 2 - 0.5, y_px=(picks["y_px"] + 0.5) * 2 - 0.5)
    ds2 = MicrographBoxDataset(paths, big, coordinate_shapes={"a": (2 * ny, 2 * nx), "b": (2 * ny, 2 * nx)},
                               default_diameter_px=24.0)
    np.testing.assert_allclose(ds2[0][1]["boxes"].numpy(), target["boxes"].numpy(), atol=1e-5)


def test_zarr_and_npz_subgrids_yield_the_same_items(tmp_path: Path, rng: np.random.Generator) -> None:
    density = rng.random((40, 30, 25)).astype(np.float32)
    backbone = rng.integers(0, 4, density.shape).astype(np.uint8)
    amino = rng.integers(0, 21, density.shape).astype(np.uint8)
    write_subgrids(tmp_path / "s.zarr", {"density": density, "backbone": backbone, "amino": amino})
    zds = ZarrSubgridDataset(tmp_path / "s.zarr")
    assert zds.labels == ["amino", "backbone"]
    blocks = {k: split(v)[0] for k, v in (("protein_grid", density), ("atom_grid", backbone), ("amino_grid", amino))}
    n = blocks["protein_grid"].shape[0]
    np.savez(tmp_path / "all.npz", **blocks)  # one file holding (n, 32, 32, 32)
    nds = NpzSubgridDataset([tmp_path / "all.npz"])
    assert len(zds) == len(nds) == n == 2 * 2 * 2
    for i in range(n):
        (d1, l1), (d2, l2) = zds[i], nds[i]
        assert d1.shape == (1, 32, 32, 32)
        np.testing.assert_array_equal(d1[0].numpy(), blocks["protein_grid"][i])
        assert torch.equal(d1, d2) and torch.equal(l1["backbone"], l2["backbone"])
        assert torch.equal(l1["amino"], l2["amino"]) and l1["amino"].dtype == torch.int64
    with pytest.raises(InputError, match="no label array secondary"):
        ZarrSubgridDataset(tmp_path / "s.zarr", labels=["secondary"])
    with pytest.raises(InputError, match=r"not a cryoset sub-grid store|not a Zarr group"):
        ZarrSubgridDataset(tmp_path / "missing.zarr")
    np.savez(tmp_path / "density_only.npz", protein_grid=blocks["protein_grid"])
    with pytest.raises(InputError, match="has no backbone"):
        NpzSubgridDataset([tmp_path / "density_only.npz"])
