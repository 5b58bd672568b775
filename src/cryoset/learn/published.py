"""PyTorch datasets for the published layouts, with the interfaces of our own datasets.

* Detection — :class:`MicrographBoxDataset`: ``(image, target)`` with ``image`` a float32
  tensor ``(1, y, x)`` and ``target = {"boxes": (n, 4) float32 xyxy, "labels": (n,) int64,
  "micrograph": str}``. Built from any micrographs + canonical picks table (ours), or from a
  CryoPPP / CryoVirusDB entry (:meth:`MicrographBoxDataset.from_cryoppp`).
* Segmentation — :class:`ZarrSubgridDataset` (the ``subgrids.zarr`` that ``cryoset map
  prepare`` writes) and :class:`NpzSubgridDataset` (Cryo2StructData ``.npz`` sub-grids)
  both yield ``(density, labels)``: ``density`` float32 ``(1, b, b, b)`` and ``labels`` a
  dict of int64 ``(b, b, b)`` tensors named like our Zarr arrays (``backbone``, ``amino``,
  ``secondary``, ``ca``), so one model trains on either.
* Particles — :class:`HDF5ParticleDataset` reads a cryoPANDA ``<EMPIAR>_particles.h5``
  lazily and yields ``(image (1, y, x) float32, annotations dict)`` exactly like
  :class:`cryoset.learn.particles.StoreParticleDataset` does after
  :func:`cryoset.store.exports.import_hdf5` (same decoding, same numeric columns).

Box convention: pixel centres are on integers (the canonical picks frame), a particle of
diameter ``d`` at ``(x, y)`` has the box ``(x - d/2, y - d/2, x + d/2, y + d/2)``; for a
downsampled (lite) image a coordinate maps as ``x' = (x + 0.5) s - 0.5`` with ``s`` the
image/original size ratio, and ``d' = d s``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from cryoset.errors import InputError

Transform = Callable[[torch.Tensor], torch.Tensor]
#: Detection label of a true particle and of a curated false positive.
PARTICLE_LABEL = 1
FALSE_POSITIVE_LABEL = 2


def boxes_xyxy(x_px: NDArray[Any], y_px: NDArray[Any], diameter_px: NDArray[Any],
               scale_yx: tuple[float, float] = (1.0, 1.0)) -> NDArray[np.float32]:
    """Boxes ``(n, 4)`` ``x1, y1, x2, y2`` around centres, optionally rescaled (pure)."""
    sy, sx = scale_yx
    x = (np.asarray(x_px, np.float64) + 0.5) * sx - 0.5
    y = (np.asarray(y_px, np.float64) + 0.5) * sy - 0.5
    d = np.asarray(diameter_px, np.float64)
    rx, ry = d * sx / 2, d * sy / 2
    return np.stack([x - rx, y - ry, x + rx, y + ry], axis=1).astype(np.float32).reshape(-1, 4)


class MicrographBoxDataset(Dataset[tuple[torch.Tensor, dict[str, Any]]]):
    """Micrographs with particle boxes for detection.

    Parameters
    ----------
    micrographs
        Micrograph name (the ``micrograph`` value of the picks) → image file (MRC, PNG,
        JPEG, TIFF).
    picks
        Canonical picks table (``micrograph``, ``x_px``, ``y_px``, ``diameter_px``) in the
        coordinate frame of ``coordinate_shapes``; an optional ``label`` column overrides
        the label 1.
    coordinate_shapes
        Name → ``(ny, nx)`` of the frame the picks are in, when it differs from the image
        (downsampled micrographs). Default: the image's own shape.
    default_diameter_px
        Used where ``diameter_px`` is NaN (InputError if needed and not given).
    transform
        Applied to the ``(1, y, x)`` image tensor (must not move pixels).
    """

    def __init__(self, micrographs: Mapping[str, str | os.PathLike[str]], picks: pd.DataFrame, *,
                 coordinate_shapes: Mapping[str, tuple[int, int]] | None = None,
                 default_diameter_px: float | None = None, transform: Transform | None = None) -> None:
        self.names = sorted(micrographs)
        self.paths = {k: Path(v) for k, v in micrographs.items()}
        self.coordinate_shapes = dict(coordinate_shapes or {})
        self.transform = transform
        table = picks.copy()
        diam = table["diameter_px"].to_numpy(np.float64) if "diameter_px" in table else np.full(len(table), np.nan)
        if np.isnan(diam).any():
            if default_diameter_px is None:
                raise InputError("picks", "some picks have no diameter_px: pass default_diameter_px")
            diam = np.where(np.isnan(diam), float(default_diameter_px), diam)
        table["diameter_px"] = diam
        if "label" not in table:
            table["label"] = PARTICLE_LABEL
        self._groups = {str(k): g for k, g in table.groupby("micrograph", sort=False)}

    @classmethod
    def from_cryoppp(cls, entry: Any, *, include_false_positives: bool = False,
                     default_diameter_px: float | None = None,
                     transform: Transform | None = None) -> MicrographBoxDataset:
        """From a :class:`cryoset.datasets.cryoppp.CryopppEntry` (true particles label 1,
        curated false positives label 2 when ``include_false_positives``)."""
        tables = [entry.particles.assign(label=PARTICLE_LABEL)]
        if include_false_positives and entry.false_positives is not None:
            tables.append(entry.false_positives.assign(label=FALSE_POSITIVE_LABEL))
        picks = pd.concat(tables, ignore_index=True)
        shapes = {m: entry.coordinate_shape(m) for m in entry.micrographs}
        return cls(entry.micrographs, picks, coordinate_shapes=shapes,
                   default_diameter_px=default_diameter_px, transform=transform)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        from cryoset.io.images import read_image

        name = self.names[i]
        image = read_image(self.paths[name], permissive=True).data
        ny, nx = image.shape
        oy, ox = self.coordinate_shapes.get(name, (ny, nx))
        rows = self._groups.get(name)
        if rows is None:
            boxes = np.zeros((0, 4), np.float32)
            labels = np.zeros(0, np.int64)
        else:
            boxes = boxes_xyxy(rows["x_px"].to_numpy(), rows["y_px"].to_numpy(), rows["diameter_px"].to_numpy(),
                               (ny / oy, nx / ox))
            labels = np.array(rows["label"].to_numpy(), dtype=np.int64)
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        if self.transform is not None:
            tensor = self.transform(tensor)
        return tensor, {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels), "micrograph": name}


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]
                      ) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """DataLoader ``collate_fn`` for detection: lists (images and box counts vary)."""
    return [b[0] for b in batch], [b[1] for b in batch]


def _label_tensors(arrays: Mapping[str, NDArray[Any]], i: int) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(v[i], dtype=np.int64)) for k, v in arrays.items()}


class ZarrSubgridDataset(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """Sub-grids of a ``subgrids.zarr`` written by ``cryoset map prepare`` / ``map subgrids``.

    Parameters
    ----------
    path
        The Zarr group (arrays ``density``, label arrays, ``starts``).
    labels
        Label arrays to return (default: every array but ``density`` and ``starts``).
    """

    def __init__(self, path: str | os.PathLike[str], labels: Sequence[str] | None = None) -> None:
        import zarr

        self.path = Path(path)
        try:
            group = zarr.open_group(store=str(self.path), mode="r")
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise InputError(self.path, f"is not a Zarr group ({exc})") from None
        if "density" not in group or any(k not in group.attrs for k in ("map_shape", "box", "overlap")):
            raise InputError(self.path, "is not a cryoset sub-grid store (no density array or attributes)")
        names = sorted(k for k in group.array_keys() if k not in ("density", "starts"))
        self.labels = list(labels) if labels is not None else names
        missing = [n for n in self.labels if n not in names]
        if missing:
            raise InputError(self.path, f"has no label array {', '.join(missing)} (arrays: {', '.join(names)})")
        self._arrays: dict[str, Any] = {k: group[k] for k in ["density", *self.labels]}
        self.attrs = dict(group.attrs)

    def __len__(self) -> int:
        return int(self._arrays["density"].shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        density = np.asarray(self._arrays["density"][i], dtype=np.float32)
        labels = {k: torch.from_numpy(np.asarray(self._arrays[k][i], dtype=np.int64)) for k in self.labels}
        return torch.from_numpy(density)[None], labels


class NpzSubgridDataset(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """Cryo2StructData ``.npz`` sub-grids (``protein_grid``, ``atom_grid``, ``amino_grid``).

    Yields the same ``(density (1, b, b, b), {"backbone", "amino"})`` as
    :class:`ZarrSubgridDataset`. Files are indexed once (each file holds one or ``n``
    sub-grids) and loaded on access.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], labels: Sequence[str] = ("backbone", "amino")
                 ) -> None:
        from cryoset.datasets.cryo2struct import read_npz_subgrids

        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise InputError("npz", "no sub-grid file given")
        self.labels = list(labels)
        index: list[tuple[int, int]] = []
        for f, p in enumerate(self.paths):
            arrays = read_npz_subgrids(p)
            missing = [n for n in self.labels if n not in arrays]
            if missing:
                raise InputError(p, f"has no {', '.join(missing)} sub-grids")
            index += [(f, j) for j in range(arrays["density"].shape[0])]
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from cryoset.datasets.cryo2struct import read_npz_subgrids

        f, j = self._index[i]
        arrays = read_npz_subgrids(self.paths[f])
        density = torch.from_numpy(np.asarray(arrays["density"][j], dtype=np.float32))[None]
        return density, _label_tensors({k: arrays[k] for k in self.labels}, j)


class HDF5ParticleDataset(Dataset[tuple[torch.Tensor, dict[str, Any]]]):
    """Particles of a cryoPANDA-style HDF5 file (``images`` + ``annotations``).

    Parameters
    ----------
    path
        ``<EMPIAR>_particles.h5``.
    transform
        Applied to each ``(1, y, x)`` float32 tensor.
    columns
        Annotation columns to return (default: every numeric column except the
        ``image_offset`` / ``image_scale`` decoding columns).

    Images are decoded as ``image_offset + image_scale * stored`` when those columns are
    present (files written by :func:`cryoset.store.exports.export_hdf5`), else the stored
    uint8 values as float32.
    """

    def __init__(self, path: str | os.PathLike[str], transform: Transform | None = None,
                 columns: Sequence[str] | None = None) -> None:
        from cryoset.datasets.cryopanda import read_annotations

        self.path = Path(path)
        table = read_annotations(self.path)
        self.transform = transform
        numeric = [c for c in table.columns if c not in ("image_offset", "image_scale")
                   and pd.api.types.is_numeric_dtype(table[c])]
        self.columns = list(columns) if columns is not None else numeric
        missing = [c for c in self.columns if c not in table]
        if missing:
            raise InputError(self.path, f"annotations have no column {', '.join(missing)}")
        self._values = {c: table[c].to_numpy() for c in self.columns}
        has_scaling = "image_offset" in table and "image_scale" in table
        self._offset = table["image_offset"].to_numpy(np.float32) if has_scaling else None
        self._scale = table["image_scale"].to_numpy(np.float32) if has_scaling else None
        self._n = len(table)
        self._h5: Any = None
        self._pid = -1

    def __len__(self) -> int:
        return self._n

    def _images(self) -> Any:
        if self._h5 is None or self._pid != os.getpid():  # reopen in each DataLoader worker
            import h5py

            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5["images"]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        from cryoset.store.dataset import decode

        stored = np.asarray(self._images()[i])[None]
        if self._offset is not None and self._scale is not None:
            image = decode(stored, self._offset[i : i + 1], self._scale[i : i + 1])
        else:
            image = stored.astype(np.float32)
        tensor = torch.from_numpy(image)
        if self.transform is not None:
            tensor = self.transform(tensor)
        ann = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in self._values.items()}
        return tensor, ann
