"""``cryoset featuremap``: grid shape and stride alignment in micrograph pixel coordinates,
windows normalised as particles, deterministic PCA colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cryoset.errors import InputError
from cryoset.io.mrc import write_map
from cryoset.learn.vit import VisionTransformer, ViTConfig
from cryoset.learn.vit_weights import load_vit, save_vit
from cryoset.particles.extract import normalise_background
from cryoset.workflows.featuremap import feature_map, grid_geometry, pca_rgb, prepare_windows


def _checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(embed_dim=32, depth=1, num_heads=2, patch_size=8, img_size=32))
    return save_vit(path, model, metadata={"normalization": {"kind": "store"}, "input_size": 32})


def _micrograph(path: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    data = rng.normal(size=(100, 140)).astype(np.float32)
    yy, xx = np.mgrid[0:100, 0:140]
    for y0, x0 in [(30, 40), (60, 100)]:
        data -= 4.0 * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 6.0 ** 2)).astype(np.float32)  # dark blobs
    write_map(path, data[None], voxel_size_a=2.0)
    return path, data


def test_grid_geometry_is_centred_with_documented_centres() -> None:
    (gy, gx), (oy, ox), cy, cx = grid_geometry((100, 140), 32, 8)
    assert (gy, gx) == (9, 14) and (oy, ox) == (2, 2)
    assert cy[0] == 2 + 16 and cy[-1] == 2 + 8 * 8 + 16 and cx[-1] == 2 + 13 * 8 + 16
    # the grid's span is centred: equal margins (within one pixel) on both sides
    assert abs((cy[0] - 16) - (100 - (cy[-1] + 16))) <= 1
    (gy, gx), (oy, ox), _, _ = grid_geometry((64, 64), 64, 16)
    assert (gy, gx, oy, ox) == (1, 1, 0, 0)
    with pytest.raises(InputError, match="larger than the micrograph"):
        grid_geometry((50, 80), 64, 16)


def test_feature_grid_cells_are_the_windows_at_their_centres(tmp_path: Path, rng: np.random.Generator) -> None:
    import zarr

    ckpt = _checkpoint(tmp_path / "vit.safetensors")
    mic, data = _micrograph(tmp_path / "mic.mrc", rng)
    summary = feature_map(mic, tmp_path / "out", checkpoint=ckpt, window_px=32, stride_px=8, batch_size=10)
    assert summary["grid_shape"] == [9, 14] and summary["dim"] == 32
    root = zarr.open_group(str(tmp_path / "out" / "features.zarr"), mode="r")
    grid = np.asarray(zarr.open_array(str(tmp_path / "out" / "features.zarr" / "features"), mode="r")[:])
    cy = np.asarray(zarr.open_array(str(tmp_path / "out" / "features.zarr" / "centre_y_px"), mode="r")[:])
    cx = np.asarray(zarr.open_array(str(tmp_path / "out" / "features.zarr" / "centre_x_px"), mode="r")[:])
    assert grid.shape == (9, 14, 32)
    attrs = dict(root.attrs)
    assert attrs["provenance"]["command"] == "featuremap"  # type: ignore[index,call-overload]
    model, meta = load_vit(ckpt)
    for i, j in [(0, 0), (3, 7), (8, 13)]:
        win = data[cy[i] - 16:cy[i] + 16, cx[j] - 16:cx[j] + 16]
        # normalised as extracted particles: inverted, background mean 0 / sd 1 outside r = 0.375 w
        x = prepare_windows(win[None], meta["normalization"], 32)
        torch.testing.assert_close(x[0, 0], torch.from_numpy(normalise_background(-win[None], 12.0)[0]))
        with torch.no_grad():
            np.testing.assert_allclose(grid[i, j], model(x)[0].numpy(), rtol=1e-5, atol=1e-5)
    from PIL import Image

    rgb = np.asarray(Image.open(tmp_path / "out" / "pca_rgb.png"))
    assert rgb.shape == (100, 140, 3)
    assert (rgb[0, 0] == 0).all()  # outside the painted cells (first cell starts at y = cy[0] − 4 = 14)
    colours, _ = pca_rgb(grid)
    assert (rgb[cy[3], cx[7]] == colours[3, 7]).all()
    assert (rgb[cy[3] + 3, cx[7] - 4] == colours[3, 7]).all()  # the s × s cell around the centre


def test_pca_colours_are_deterministic_and_separate_clusters(tmp_path: Path, rng: np.random.Generator) -> None:
    feats = rng.normal(scale=0.1, size=(6, 8, 16))
    feats[:, 4:, 0] += 5.0  # right half differs along one direction
    a, ratios = pca_rgb(feats)
    b, _ = pca_rgb(feats.copy())
    assert np.array_equal(a, b) and ratios[0] > 0.9
    assert a[:, :4, 0].max() < a[:, 4:, 0].min() or a[:, :4, 0].min() > a[:, 4:, 0].max()
    # the component signs are fixed by the loadings (not by the SVD's whim): negated features
    # project to the mirrored colours
    mirrored = pca_rgb(-feats)[0].astype(int)
    assert np.abs(mirrored - (255 - a.astype(int))).max() <= 1

    ckpt = _checkpoint(tmp_path / "vit.safetensors")
    mic, _ = _micrograph(tmp_path / "mic.mrc", rng)
    for out in ("o1", "o2"):
        feature_map(mic, tmp_path / out, checkpoint=ckpt, window_px=32, stride_px=16)
    for name in ("pca_rgb.png", "pca_pc1.png", "pca_overlay.png"):
        assert (tmp_path / "o1" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes()


def test_cli_featuremap(tmp_path: Path, rng: np.random.Generator, run_cli) -> None:  # type: ignore[no-untyped-def]
    ckpt = _checkpoint(tmp_path / "vit.safetensors")
    mic, _ = _micrograph(tmp_path / "mic.mrc", rng)
    code, out, err = run_cli("featuremap", mic, "--checkpoint", ckpt, "--window-px", "48", "--stride-px", "12",
                             "-o", tmp_path / "fm")
    assert code == 0, err
    assert "5×8 feature grid" in out
    assert (tmp_path / "fm" / "pca_overlay.png").is_file() and (tmp_path / "fm" / "provenance.json").is_file()
    code, out, err = run_cli("featuremap", mic, "--checkpoint", ckpt, "--window-px", "400", "-o", tmp_path / "x")
    assert code == 2 and len(err.strip().splitlines()) == 1
