"""Particle images and their table from files: a particle STAR (or ``.cs``) or a store selection.

Loads a particle STAR file's images (stack names resolved as RELION does, relative to the
current directory, else relative to the STAR file's folder:
:func:`cryoset.io.particles.resolve_image_path`) or a :class:`cryoset.store.ParticleStore`
selection, optionally Fourier-cropped to a smaller box
(:func:`cryoset.fourier.crop.fourier_crop`; the pixel size grows by ``b / box``). Used by
``cryoset classify2d``, ``cryoset reconstruct`` and the build; the per-particle CTF arrays of
a table are :mod:`cryoset.classify.data`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryoset.errors import InputError

__all__ = ["ParticleImages", "check_image_size", "load_star", "load_store"]


@dataclass
class ParticleImages:
    """Images with their table.

    Attributes
    ----------
    images : ndarray, float32, shape (n, b, b)
        After optional Fourier cropping.
    table : DataFrame
        Canonical particle table, one row per image (same order).
    pixel_size_a
        Pixel size of ``images``.
    original_box, original_pixel_size_a
        Before cropping.
    """

    images: NDArray[np.float32]
    table: pd.DataFrame
    pixel_size_a: float
    original_box: int
    original_pixel_size_a: float


def _crop(images: NDArray[np.float32], box: int | None) -> NDArray[np.float32]:
    b = images.shape[-1]
    if box is None or box <= 0 or box >= b:
        return images
    from cryoset.fourier.crop import fourier_crop

    return fourier_crop(images, (box, box))


def _finish(images: NDArray[np.float32], table: pd.DataFrame, pixel: float, box: int | None,
            source: str | os.PathLike[str]) -> ParticleImages:
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise InputError(source, f"particle images must be square, got {images.shape[1:]}")
    if not (np.isfinite(pixel) and pixel > 0):
        raise InputError(source, f"the pixel size {pixel} Å is not a positive number")
    bad = ~np.isfinite(images).reshape(len(images), -1).all(axis=1)
    if bad.any():
        raise InputError(source, f"{int(bad.sum())} of {len(images)} particle images hold NaN or "
                         f"infinite pixels (first: image {int(np.argmax(bad)) + 1})")
    if box is not None and box > 0 and box % 2:
        raise InputError("--box-px", f"must be even, got {box}")
    b = images.shape[-1]
    cropped = _crop(images, box)
    return ParticleImages(cropped, table.reset_index(drop=True), pixel * b / cropped.shape[-1], b, pixel)


def check_image_size(rows: pd.DataFrame, stack_shape: tuple[int, int, int], star: Path, stack: str) -> None:
    """Raise :class:`InputError` (naming ``star``) when the particles' image size
    (``image_size_px``, RELION ``rlnImageSize``) contradicts the ``(n, y, x)`` shape of ``stack``."""
    if "image_size_px" not in rows.columns:
        return
    declared = pd.to_numeric(rows["image_size_px"], errors="coerce").dropna().unique()
    _, ny, nx = stack_shape
    wrong = [int(d) for d in declared if int(d) != nx or int(d) != ny]
    if wrong:
        raise InputError(star, f"rlnImageSize {wrong[0]} contradicts the {ny}×{nx} px images of {stack}")


def load_star(path: str | os.PathLike[str], *, box: int | None = None,
              permissive: bool = False) -> ParticleImages:
    """Images and canonical table of a particle STAR (or ``.cs``) file.

    The returned table's ``image_path`` holds the absolute paths of the stacks read.

    Raises
    ------
    InputError
        Missing image names, stacks or pixel size, or mixed image sizes.
    """
    from cryoset.io.mrc import read_stack
    from cryoset.io.particles import read_particles, resolve_image_path

    p = Path(path)
    table = read_particles(p, permissive=permissive, require=("image_path", "image_index")).table
    if len(table) == 0:
        raise InputError(p, "holds no particles")
    chunks: list[NDArray[np.float32]] = []
    order: list[NDArray[np.int64]] = []
    pixel_from_stack: float | None = None
    resolved: dict[str, str] = {}
    for stack_name, rows in table.groupby("image_path", sort=False).groups.items():
        stack_path = resolve_image_path(str(stack_name), p)
        resolved[str(stack_name)] = str(stack_path)
        stack = read_stack(stack_path, permissive=permissive)
        idx = table.loc[rows, "image_index"].to_numpy(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(stack)):
            raise InputError(p, f"image index out of range for {stack_name} ({len(stack)} images)")
        check_image_size(table.loc[rows], stack.shape, p, str(stack_name))
        chunk = np.asarray(stack.images(idx), np.float32)
        bad = ~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
        if bad.any():
            raise InputError(stack_path, f"{int(bad.sum())} of the {len(chunk)} particle images read hold "
                             f"NaN or infinite pixels (first: image {int(idx[np.argmax(bad)]) + 1})")
        chunks.append(chunk)
        order.append(np.asarray(rows, np.int64))
        pixel_from_stack = pixel_from_stack or stack.pixel_size_a
    sizes = {c.shape[1:] for c in chunks}
    if len(sizes) != 1:
        raise InputError(p, f"particle images have different sizes {sorted(sizes)}")
    images = np.empty((len(table), *next(iter(sizes))), np.float32)
    positions = pd.Index(table.index).get_indexer(pd.Index(np.concatenate(order)))
    images[positions] = np.concatenate(chunks)
    table = table.assign(image_path=table["image_path"].astype(str).map(resolved))
    if "pixel_size_a" in table.columns and table["pixel_size_a"].notna().all():
        pixel = float(table["pixel_size_a"].iloc[0])
    elif pixel_from_stack:
        pixel = float(pixel_from_stack)
    else:
        raise InputError(p, "no pixel size in the STAR file or the stack header")
    return _finish(images, table, pixel, box, p)


def load_store(root: str | os.PathLike[str], query: str | None, *, box: int | None = None) -> ParticleImages:
    """Images and annotations of a :class:`cryoset.store.ParticleStore` selection.

    Parameters
    ----------
    root
        Store directory.
    query
        SQL over the ``particles`` view returning ``experiment_id`` and ``particle_index``
        (None: every particle).
    """
    from cryoset.store.dataset import ParticleStore

    if not Path(root).is_dir():
        raise InputError(root, "no such store directory")
    store = ParticleStore.open(root)
    selection = store.select(query)
    if len(selection) == 0:
        raise InputError("--query", "selects no particles")
    images: list[NDArray[np.float32]] = []
    tables: list[pd.DataFrame] = []
    for exp, idx in selection.groups():
        images.append(store.read_images(exp, idx))
        ann = store.annotations(exp)
        key = ann["particle_index"].to_numpy(np.int64) if "particle_index" in ann.columns else np.arange(len(ann))
        pos = pd.Index(key).get_indexer(pd.Index(idx))
        tables.append(ann.iloc[pos].reset_index(drop=True))
    table = pd.concat(tables, ignore_index=True)
    if "pixel_size_a" not in table.columns or table["pixel_size_a"].isna().any():
        raise InputError(root, "selected particles lack pixel_size_a")
    pixels = table["pixel_size_a"].unique()
    if len(pixels) != 1:
        raise InputError("--query", f"selection mixes pixel sizes {sorted(pixels)}")
    stack = np.concatenate(images).astype(np.float32)
    return _finish(stack, table, float(pixels[0]), box, root)
