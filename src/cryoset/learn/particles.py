"""PyTorch datasets streaming particles from a :class:`cryoset.store.ParticleStore`.

* :class:`StoreParticleDataset` — map-style (random access, any sampler).
* :class:`StoreParticleStream` — iterable with **chunk-aware shuffling** (the order of
  Zarr chunks is shuffled per epoch, then particles are shuffled within a buffer of a few
  chunks, so every chunk is decoded once per epoch) and **sharding** across DataLoader
  workers and distributed ranks: chunk units are dealt round-robin to the
  ``world_size × num_workers`` readers, so each selected particle is yielded exactly once
  per epoch across all of them.

Both yield ``(image, annotations)`` where ``image`` is a float32 tensor ``(1, y, x)``
after the optional ``transform`` and ``annotations`` a dict of the selection's numeric
columns (as tensors when collated).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from cryoset.store.dataset import ParticleStore, Selection, decode

Transform = Callable[[torch.Tensor], torch.Tensor]


def _numeric_columns(selection: Selection, columns: Sequence[str] | None) -> list[str]:
    table = selection.table
    if columns is not None:
        return list(columns)
    return [c for c in table.columns
            if c not in ("image_offset", "image_scale") and pd.api.types.is_numeric_dtype(table[c])]


def _row_dict(values: dict[str, NDArray[Any]], i: int) -> dict[str, Any]:
    return {k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in values.items()}


@dataclass
class Normalize:
    """Per-image zero mean, unit variance (optionally inside a circle of ``radius_fraction``)."""

    radius_fraction: float | None = None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.radius_fraction is None:
            mean, std = image.mean(), image.std()
        else:
            ny, nx = image.shape[-2:]
            yy, xx = torch.meshgrid(torch.arange(ny) - ny // 2, torch.arange(nx) - nx // 2, indexing="ij")
            outside = (yy**2 + xx**2) > (self.radius_fraction * min(ny, nx) / 2) ** 2
            bg = image[..., outside]
            mean, std = bg.mean(), bg.std()
        return (image - mean) / torch.clamp(std, min=1e-6)


@dataclass
class Resize:
    """Fourier-free bilinear resize to ``size`` × ``size`` (antialiased when shrinking)."""

    size: int

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(image[None], size=(self.size, self.size), mode="bilinear",
                                               antialias=True, align_corners=False)[0]


@dataclass
class RandomAugment:
    """Random 90° rotations and flips (seeded per call through ``torch.Generator``)."""

    generator: torch.Generator

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, 4, (1,), generator=self.generator))
        out = torch.rot90(image, k, dims=(-2, -1))
        if bool(torch.randint(0, 2, (1,), generator=self.generator)):
            out = torch.flip(out, dims=(-1,))
        return out


class StoreParticleDataset(Dataset[tuple[torch.Tensor, dict[str, Any]]]):
    """Map-style dataset over a selection.

    Parameters
    ----------
    store
        The particle store.
    selection
        Which particles, in which order (``store.select(...)``).
    transform
        Applied to each ``(1, y, x)`` float32 tensor.
    columns
        Annotation columns to return (default: every numeric column of the selection).
    """

    def __init__(self, store: ParticleStore, selection: Selection, transform: Transform | None = None,
                 columns: Sequence[str] | None = None) -> None:
        self.store = store
        self.selection = selection
        self.transform = transform
        self.columns = _numeric_columns(selection, columns)
        self._values = {c: selection.table[c].to_numpy() for c in self.columns}
        self._exp = selection.table["experiment_id"].to_numpy()
        self._idx = selection.table["particle_index"].to_numpy(np.int64)

    def __len__(self) -> int:
        return len(self.selection)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image = self.store.read_images(str(self._exp[i]), [int(self._idx[i])])
        tensor = torch.from_numpy(image)  # (1, y, x)
        if self.transform is not None:
            tensor = self.transform(tensor)
        return tensor, _row_dict(self._values, i)

    def get_batch(self, rows: Sequence[int]) -> torch.Tensor:
        """Images of several rows at once (chunk-efficient), ``(k, 1, y, x)``."""
        rows_arr = np.asarray(rows, dtype=np.int64)
        out: list[torch.Tensor | None] = [None] * len(rows_arr)
        exps = self._exp[rows_arr]
        for exp in np.unique(exps):
            pos = np.flatnonzero(exps == exp)
            imgs = self.store.read_images(str(exp), self._idx[rows_arr[pos]])
            for p, img in zip(pos, imgs, strict=True):
                t = torch.from_numpy(img)[None]
                out[p] = self.transform(t) if self.transform is not None else t
        return torch.stack([t for t in out if t is not None])


def shard_units(n_units: int, rank: int, world_size: int, worker: int, num_workers: int) -> NDArray[np.int64]:
    """Unit positions (0..n_units-1) that reader ``(rank, worker)`` owns: round-robin.

    Every unit belongs to exactly one of the ``world_size × num_workers`` readers.
    """
    if not (0 <= rank < world_size) or not (0 <= worker < num_workers):
        raise ValueError(f"rank/worker: need 0 <= rank < {world_size} and 0 <= worker < {num_workers}")
    reader = rank * num_workers + worker
    return np.arange(reader, n_units, world_size * num_workers, dtype=np.int64)


class StoreParticleStream(IterableDataset[tuple[torch.Tensor, dict[str, Any]]]):
    """Iterable dataset with chunk-aware shuffling and worker/rank sharding.

    Parameters
    ----------
    store, selection, transform, columns
        As :class:`StoreParticleDataset`.
    shuffle
        Shuffle chunk order and particles within the buffer.
    seed
        Base seed; the epoch's permutation uses ``seed + epoch`` (call :meth:`set_epoch`).
    buffer_chunks
        How many chunks are pooled before particles are shuffled among them.
    rank, world_size
        Distributed rank (default from ``torch.distributed`` when initialised, else 0 / 1).
    batch_size
        When set, yield ready batches ``(images (B, 1, y, x), {column: tensor (B,)})`` built
        with vectorised slicing (use ``DataLoader(stream, batch_size=None)``): much faster
        than per-particle collation. Batches are full except the reader's last one.
    """

    def __init__(self, store: ParticleStore, selection: Selection, transform: Transform | None = None,
                 columns: Sequence[str] | None = None, *, shuffle: bool = True, seed: int = 0,
                 buffer_chunks: int = 4, rank: int | None = None, world_size: int | None = None,
                 batch_size: int | None = None) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if buffer_chunks < 1:
            raise ValueError(f"buffer_chunks: must be >= 1, got {buffer_chunks}")
        self.store = store
        self.selection = selection
        self.transform = transform
        self.columns = _numeric_columns(selection, columns)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.buffer_chunks = buffer_chunks
        self.batch_size = batch_size
        dist_ready = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if dist_ready else 0)
        self.world_size = world_size if world_size is not None else (
            torch.distributed.get_world_size() if dist_ready else 1)
        # Units: (experiment, chunk) → selection rows in that chunk.
        table = selection.table
        chunk = table["particle_index"].to_numpy(np.int64) // store.chunk_particles
        keys = table["experiment_id"].astype(str).to_numpy()
        frame_rows: dict[tuple[str, int], list[int]] = {}
        for row, (e, c) in enumerate(zip(keys, chunk, strict=True)):
            frame_rows.setdefault((e, int(c)), []).append(row)
        self.units = sorted(frame_rows)
        self.unit_rows = [np.asarray(frame_rows[u], dtype=np.int64) for u in self.units]
        self._values = {c: table[c].to_numpy() for c in self.columns}
        self._idx = table["particle_index"].to_numpy(np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffling of the next iteration (as DistributedSampler.set_epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        wid = info.id if info is not None else 0
        mine = shard_units(len(self.units), self.rank, self.world_size, wid, workers)
        return int(sum(len(self.unit_rows[u]) for u in mine))

    def _unit_order(self) -> NDArray[np.int64]:
        order = np.arange(len(self.units), dtype=np.int64)
        if self.shuffle:
            np.random.default_rng(self.seed + self.epoch).shuffle(order)
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        wid = info.id if info is not None else 0
        order = self._unit_order()
        mine = order[shard_units(len(order), self.rank, self.world_size, wid, workers)]
        rng = np.random.default_rng((self.seed, self.epoch, self.rank, wid))
        # The buffer holds stored (uint8/float16) values; decoding happens per batch.
        carry: tuple[NDArray[Any], NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]] | None = None
        for start in range(0, len(mine), self.buffer_chunks):
            units = mine[start:start + self.buffer_chunks]
            parts = [self.store.read_stored(self.units[u][0], self._idx[self.unit_rows[u]]) for u in units]
            stored = np.concatenate([p[0] for p in parts])
            off = np.concatenate([p[1] for p in parts])
            sc = np.concatenate([p[2] for p in parts])
            rows = np.concatenate([self.unit_rows[u] for u in units])
            perm = rng.permutation(len(rows)) if self.shuffle else np.arange(len(rows))
            if self.batch_size is None:
                for p in perm:
                    image = decode(stored[p:p + 1], off[p:p + 1], sc[p:p + 1])
                    tensor = torch.from_numpy(image)
                    if self.transform is not None:
                        tensor = self.transform(tensor)
                    yield tensor, _row_dict(self._values, int(rows[p]))
                continue
            if carry is not None:
                stored, off, sc, rows = (np.concatenate([carry[0], stored]), np.concatenate([carry[1], off]),
                                         np.concatenate([carry[2], sc]), np.concatenate([carry[3], rows]))
                perm = np.concatenate([np.arange(len(carry[3])), len(carry[3]) + perm])
            bs = self.batch_size
            full = len(perm) // bs * bs
            for b in range(0, full, bs):
                sel = perm[b:b + bs]
                yield self._batch(decode(stored[sel], off[sel], sc[sel]), rows[sel])
            rest = perm[full:]
            carry = (stored[rest], off[rest], sc[rest], rows[rest]) if len(rest) else None
        if self.batch_size is not None and carry is not None:
            yield self._batch(decode(carry[0], carry[1], carry[2]), carry[3])

    def _batch(self, images: NDArray[np.float32], rows: NDArray[np.int64]) -> tuple[torch.Tensor, dict[str, Any]]:
        tensor = torch.from_numpy(images)[:, None]
        if self.transform is not None:
            tensor = torch.stack([self.transform(t) for t in tensor])
        return tensor, {k: torch.as_tensor(v[rows]) for k, v in self._values.items()}
