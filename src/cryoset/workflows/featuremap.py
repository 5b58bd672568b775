"""``cryoset featuremap``: a ViT feature vector per sliding window of a micrograph, and its PCA
as an RGB image over the micrograph (cryoPANDA Fig. 8; ml-anchors (d)).

**Grid.** For a micrograph of ``H × W`` pixels, window ``w`` and stride ``s``:
``gy = (H − w) // s + 1`` rows and ``gx = (W − w) // s + 1`` columns of windows, the grid centred:
``oy = (H − ((gy − 1) s + w)) // 2`` (``ox`` likewise). Window ``(i, j)`` covers rows
``oy + i s … oy + i s + w − 1`` and columns ``ox + j s …``; its **centre** in micrograph pixel
coordinates (pixel centres on integers, row 0 the first stored row — the convention of
extraction, where a box of size ``w`` around pixel ``c`` starts at ``c − w // 2``) is
``centre_y_px[i] = oy + i s + w // 2``, ``centre_x_px[j] = ox + j s + w // 2``.

**Windows normalised as the particles were** (by the checkpoint's ``normalization``):

* ``store`` — as extraction made the store's particles: contrast inverted (``--invert``, the
  default: particles dark in the micrograph become white), background normalised
  (:func:`cryoset.particles.extract.normalise_background`, mean 0 and sd 1 outside a circle of
  radius 0.375 w), then resized to the model's ``input_size`` like the store images in
  ``cryoset embed``;
* ``uint8`` — cryoPANDA's micrograph method: min–max to [0, 1], inverted (``1 − p``), resized,
  ``(p − 0.5476) / 0.1205``.

**Outputs** (``OUT/``; nothing appears there until all are complete, then each replaces its namesake):

* ``features.zarr`` — Zarr v3 group: ``features`` (gy, gx, D) float32, ``centre_y_px`` (gy,),
  ``centre_x_px`` (gx,) int64; attributes: window/stride/offset, micrograph shape, checkpoint,
  PCA explained-variance ratios and the provenance record;
* ``pca_rgb.png`` — the first three principal components (fitted on this micrograph's windows,
  whitened, sign fixed so each component's largest loading is positive), each min–max scaled to
  0…255, as R, G, B; every micrograph pixel takes the colour of the window whose centre cell
  (``s × s`` around the centre) contains it; pixels outside the grid are black;
* ``pca_pc1.png`` (PC 1 as gray) and ``pca_overlay.png`` (RGB blended 1:1 with the micrograph);
* ``provenance.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.io.atomic import staged_directory
from cryoset.provenance import make_provenance

__all__ = ["feature_map", "grid_geometry", "pca_rgb", "prepare_windows"]

PathLike = str | os.PathLike[str]


def grid_geometry(shape_yx: tuple[int, int], window_px: int, stride_px: int
                  ) -> tuple[tuple[int, int], tuple[int, int], NDArray[np.int64], NDArray[np.int64]]:
    """``((gy, gx), (oy, ox), centre_y_px, centre_x_px)`` of the centred window grid (module docstring)."""
    h, w = shape_yx
    if window_px < 1 or stride_px < 1:
        raise InputError("--window-px", f"window and stride must be ≥ 1 px, got {window_px} and {stride_px}")
    if h < window_px or w < window_px:
        raise InputError("--window-px", f"{window_px} px is larger than the micrograph ({h}×{w})")
    gy, gx = (h - window_px) // stride_px + 1, (w - window_px) // stride_px + 1
    oy, ox = (h - ((gy - 1) * stride_px + window_px)) // 2, (w - ((gx - 1) * stride_px + window_px)) // 2
    cy = oy + np.arange(gy, dtype=np.int64) * stride_px + window_px // 2
    cx = ox + np.arange(gx, dtype=np.int64) * stride_px + window_px // 2
    return (gy, gx), (oy, ox), cy, cx


def prepare_windows(windows: NDArray[Any], normalization: Mapping[str, Any], input_size: int, *,
                    invert: bool = True) -> Any:
    """Raw micrograph windows ``(B, w, w)`` → model input ``(B, 1, S, S)`` float32 tensor (module docstring)."""
    import torch

    from cryoset.learn.vit_weights import model_input
    from cryoset.particles.extract import default_bg_radius_px, normalise_background

    x = np.asarray(windows, dtype=np.float32)
    if normalization["kind"] == "uint8":
        lo = x.min(axis=(1, 2), keepdims=True)
        hi = x.max(axis=(1, 2), keepdims=True)
        p = (x - lo) / np.maximum(hi - lo, 1e-8)
        if invert:
            p = 1.0 - p
        # already in [0, 1]: scale to the "stored byte" range so model_input's /255 applies
        return model_input(torch.from_numpy(np.ascontiguousarray(p * 255.0, dtype=np.float32)), normalization,
                           input_size, uint8_values=True)
    if invert:
        x = -x
    x = normalise_background(x, default_bg_radius_px(x.shape[-1]))
    return model_input(torch.from_numpy(x), normalization, input_size)


def pca_rgb(features: NDArray[Any], n_components: int = 3) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    """PCA of grid features ``(gy, gx, D)`` → colours ``(gy, gx, 3)`` uint8 and explained-variance ratios.

    Whitened components (deterministic: SVD in float64, each component's sign chosen so its
    largest-magnitude loading is positive), each min–max scaled to 0…255. Fewer than three
    components (tiny grids) leave the missing channels 0.
    """
    gy, gx, d = features.shape
    x = features.reshape(-1, d).astype(np.float64)
    x = x - x.mean(axis=0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    k = min(n_components, vt.shape[0])
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    n = max(x.shape[0] - 1, 1)
    var = sv ** 2 / n
    proj = (x @ comps.T) / np.sqrt(np.maximum(var[:k], 1e-300))
    out = np.zeros((x.shape[0], 3), np.uint8)
    for c in range(k):
        v = proj[:, c]
        span = v.max() - v.min()
        if span > 0:
            out[:, c] = np.rint((v - v.min()) / span * 255.0).astype(np.uint8)
    total = var.sum()
    ratios = var[:k] / total if total > 0 else np.zeros(k)
    return out.reshape(gy, gx, 3), ratios


def _paint(colours: NDArray[np.uint8], shape_yx: tuple[int, int], cy: NDArray[np.int64], cx: NDArray[np.int64],
           stride_px: int) -> NDArray[np.uint8]:
    """Full-size image: each pixel the colour of the window whose s × s centre cell holds it."""
    h, w = shape_yx
    start_y, start_x = int(cy[0]) - stride_px // 2, int(cx[0]) - stride_px // 2
    iy = np.floor_divide(np.arange(h) - start_y, stride_px)
    ix = np.floor_divide(np.arange(w) - start_x, stride_px)
    vy = (iy >= 0) & (iy < len(cy))
    vx = (ix >= 0) & (ix < len(cx))
    out = np.zeros((h, w, colours.shape[-1]), np.uint8)
    sub = colours[np.clip(iy, 0, len(cy) - 1)][:, np.clip(ix, 0, len(cx) - 1)]
    mask = vy[:, None] & vx[None, :]
    out[mask] = sub[mask]
    return out


def feature_map(
    micrograph: PathLike,
    out_dir: PathLike,
    *,
    checkpoint: PathLike | None = None,
    window_px: int = 64,
    stride_px: int = 16,
    kind: str = "cls",
    invert: bool = True,
    batch_size: int = 64,
    device: str = "cpu",
    pixel_size_a: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Compute and write the feature map of one micrograph; returns the summary (see module docstring)."""
    import torch
    import zarr
    from PIL import Image

    from cryoset.io.images import read_image, scale_to_uint8
    from cryoset.learn.vit_weights import load_vit, resolve_vit_checkpoint
    from cryoset.workflows.embed import EMBEDDING_KINDS

    if kind not in EMBEDDING_KINDS:
        raise InputError("--kind", f"must be one of {', '.join(EMBEDDING_KINDS)}, got {kind!r}")
    if batch_size < 1:
        raise InputError("--batch-size", f"must be at least 1, got {batch_size}")
    mpath, out = Path(micrograph), Path(out_dir)
    ckpt = resolve_vit_checkpoint(checkpoint)
    image = read_image(mpath, pixel_size_a=pixel_size_a)
    data = np.asarray(image.data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise InputError(mpath, "holds NaN or infinite pixels")
    (gy, gx), (oy, ox), cy, cx = grid_geometry(data.shape, window_px, stride_px)
    model, meta = load_vit(ckpt)
    model = model.to(device).eval()
    norm, size = meta["normalization"], int(meta["input_size"])
    dim = model.feature_dim(kind)
    feats = np.empty((gy * gx, dim), np.float32)
    total = gy * gx
    top = oy + np.arange(gy) * stride_px
    left = ox + np.arange(gx) * stride_px
    with torch.inference_mode():
        for lo in range(0, total, batch_size):
            ids = np.arange(lo, min(lo + batch_size, total))
            wins = np.stack([data[top[i // gx]:top[i // gx] + window_px, left[i % gx]:left[i % gx] + window_px]
                             for i in ids])
            x = prepare_windows(wins, norm, size, invert=invert).to(device)
            feats[ids] = model.features(x, kind).float().cpu().numpy()
            if on_progress is not None:
                on_progress(int(ids[-1]) + 1, total)
    grid = feats.reshape(gy, gx, dim)
    colours, ratios = pca_rgb(grid)
    rgb = _paint(colours, data.shape, cy, cx, stride_px)
    gray = scale_to_uint8(data)
    overlay = np.rint(0.5 * rgb + 0.5 * gray[..., None]).astype(np.uint8)
    params = {"checkpoint": str(ckpt), "window_px": window_px, "stride_px": stride_px, "kind": kind,
              "invert": invert, "normalization": norm, "input_size": size, "batch_size": batch_size,
              "device": device}
    prov = make_provenance("featuremap", params, [mpath, ckpt], argv=argv)
    attrs = {"window_px": window_px, "stride_px": stride_px, "offset_yx_px": [oy, ox],
             "micrograph_shape_yx": list(data.shape), "micrograph": str(mpath), "kind": kind,
             "axes": ["y", "x", "feature"], "pca_explained_variance_ratio": [float(r) for r in ratios],
             "centre_convention": "centre_y_px[i] = offset_y + i*stride + window//2 (pixel centres on integers)",
             "provenance": json.loads(json.dumps(prov, default=str))}
    with staged_directory(out) as tmp:
        root = zarr.open_group(str(tmp / "features.zarr"), mode="w", zarr_format=3)
        root.attrs.update(attrs)
        arr = root.create_array("features", shape=grid.shape, chunks=grid.shape, dtype=np.float32)
        arr[:] = grid
        root.create_array("centre_y_px", shape=cy.shape, dtype=np.int64)[:] = cy
        root.create_array("centre_x_px", shape=cx.shape, dtype=np.int64)[:] = cx
        Image.fromarray(rgb).save(tmp / "pca_rgb.png", format="PNG")
        Image.fromarray(np.ascontiguousarray(_paint(colours[..., :1], data.shape, cy, cx, stride_px)[..., 0])).save(
            tmp / "pca_pc1.png", format="PNG")
        Image.fromarray(overlay).save(tmp / "pca_overlay.png", format="PNG")
        (tmp / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True, default=str) + "\n")
    return {"out": str(out), "grid_shape": [gy, gx], "dim": dim, "window_px": window_px, "stride_px": stride_px,
            "offset_yx_px": [oy, ox], "pca_explained_variance_ratio": [float(r) for r in ratios],
            "files": ["features.zarr", "pca_rgb.png", "pca_pc1.png", "pca_overlay.png", "provenance.json"],
            "provenance": prov}
