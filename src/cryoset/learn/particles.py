"""PyTorch datasets streaming particles from a :class:`cryoset.store.ParticleStore`.

* :class:`StoreParticleStream` — iterable, the fast path, with **chunk-aware shuffling** (the
  order of Zarr chunks is shuffled per epoch, then particles are shuffled within a buffer of
  a few chunks, so every chunk is read once per epoch), **sharding** across DataLoader workers
  and distributed ranks (chunk units are dealt round-robin to the ``world_size × num_workers``
  readers, so each selected particle is yielded exactly once per epoch across all of them),
  ready-made batches decoded in one compiled pass, a read-ahead thread, and optionally
  undecoded uint8 batches (:func:`decode_batch` decodes them on the consumer's device).
* :class:`StoreParticleDataset` — map-style (random access, any sampler), with a small chunk
  cache and batched ``__getitems__``; :class:`ChunkBatchSampler` gives it chunk-aware
  shuffled batches.

Both yield ``(image, annotations)`` where ``image`` is a float32 tensor ``(1, y, x)``
after the optional ``transform`` and ``annotations`` a dict of the selection's numeric
columns (as tensors when collated).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

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
                 columns: Sequence[str] | None = None, *, cache_chunks: int = 4) -> None:
        if cache_chunks < 0:
            raise ValueError(f"cache_chunks: must be >= 0, got {cache_chunks}")
        self.store = store
        self.selection = selection
        self.transform = transform
        self.columns = _numeric_columns(selection, columns)
        self.cache_chunks = cache_chunks
        self._values = {c: selection.table[c].to_numpy() for c in self.columns}
        self._exp = selection.table["experiment_id"].astype(str).to_numpy()
        self._idx = selection.table["particle_index"].to_numpy(np.int64)
        self._cache: OrderedDict[tuple[str, int], tuple[NDArray[Any], NDArray[np.float32], NDArray[np.float32]]] = (
            OrderedDict())

    def __len__(self) -> int:
        return len(self.selection)

    def _chunk(self, exp: str, chunk: int) -> tuple[NDArray[Any], NDArray[np.float32], NDArray[np.float32]]:
        """Stored images, offsets and scales of one whole Zarr chunk (a small LRU cache)."""
        key = (exp, chunk)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        cp = self.store.chunk_particles
        lo, hi = chunk * cp, min((chunk + 1) * cp, self.store.num_particles(exp))
        block = self.store.read_stored(exp, np.arange(lo, hi))
        if self.cache_chunks:
            self._cache[key] = block
            while len(self._cache) > self.cache_chunks:
                self._cache.popitem(last=False)
        return block

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.__getitems__([int(i)])[0]

    def __getitems__(self, rows: Sequence[int]) -> list[tuple[torch.Tensor, dict[str, Any]]]:
        """Batched fetch (the DataLoader calls it with a sampler's batch): rows grouped by
        chunk, so each chunk is read at most once per batch whatever the order."""
        rows_arr = np.asarray(rows, dtype=np.int64)
        cp = self.store.chunk_particles
        groups: dict[tuple[str, int], list[int]] = {}
        for j, (e, c) in enumerate(zip(self._exp[rows_arr].tolist(), (self._idx[rows_arr] // cp).tolist(),
                                       strict=True)):
            groups.setdefault((e, c), []).append(j)
        images: list[torch.Tensor] = [torch.empty(0)] * len(rows_arr)
        for (e, c), members in groups.items():
            stored, off, sc = self._chunk(e, c)
            local = self._idx[rows_arr[members]] - c * cp
            decoded = torch.from_numpy(decode(stored, off, sc, rows=local))  # one compiled pass per chunk
            for j, image in zip(members, decoded, strict=True):
                tensor = image[None]  # (1, y, x)
                images[j] = self.transform(tensor) if self.transform is not None else tensor
        return [(img, _row_dict(self._values, int(r))) for img, r in zip(images, rows_arr, strict=True)]

    def get_batch(self, rows: Sequence[int]) -> torch.Tensor:
        """Images of several rows at once (chunk-efficient), ``(k, 1, y, x)``."""
        return torch.stack([img for img, _ in self.__getitems__(rows)])


class ChunkBatchSampler(Sampler[list[int]]):
    """Batches of dataset rows for :class:`StoreParticleDataset`, shuffled chunk-aware.

    The order of (experiment, chunk) units is shuffled per epoch, rows are shuffled within a
    buffer of ``buffer_chunks`` units and cut into batches: random batches that touch only a
    few chunks (a plain random sampler reads a whole chunk for almost every particle).
    Use as ``DataLoader(dataset, batch_sampler=ChunkBatchSampler(dataset, 256))``.
    """

    def __init__(self, dataset: StoreParticleDataset, batch_size: int, *, seed: int = 0, buffer_chunks: int = 4,
                 drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if buffer_chunks < 1:
            raise ValueError(f"buffer_chunks: must be >= 1, got {buffer_chunks}")
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.buffer_chunks = buffer_chunks
        self.drop_last = drop_last
        self.n_rows = len(dataset)
        self.units = _chunk_units(dataset.selection, dataset.store.chunk_particles)[1]

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffling of the next iteration."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.n_rows, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.units))
        carry = np.empty(0, np.int64)
        for start in range(0, len(order), self.buffer_chunks):
            rows = np.concatenate([carry, *(rng.permutation(self.units[u])
                                            for u in order[start:start + self.buffer_chunks])])
            full = len(rows) // self.batch_size * self.batch_size
            for b in range(0, full, self.batch_size):
                yield rows[b:b + self.batch_size].tolist()
            carry = rows[full:]
        if len(carry) and not self.drop_last:
            yield carry.tolist()


def _chunk_units(selection: Selection, chunk_particles: int
                 ) -> tuple[list[tuple[str, int]], list[NDArray[np.int64]], list[str]]:
    """(experiment, chunk) units of a selection, sorted, with their rows in selection order
    (vectorised: selections of tens of millions of rows), and the experiments involved."""
    table = selection.table
    chunk = table["particle_index"].to_numpy(np.int64) // chunk_particles
    exp_code, exp_names = pd.factorize(table["experiment_id"].astype(str), sort=True)
    n_chunks = int(chunk.max(initial=0)) + 1
    key = exp_code.astype(np.int64) * n_chunks + chunk
    by_key = np.argsort(key, kind="stable")
    ukeys, starts = np.unique(key[by_key], return_index=True)
    units = [(str(exp_names[k // n_chunks]), int(k % n_chunks)) for k in ukeys.tolist()]
    rows = np.split(by_key, starts[1:]) if len(by_key) else []
    return units, rows, [str(e) for e in exp_names]


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
    prefetch
        Read the next buffer of chunks in a background thread while the current one is
        decoded and consumed (default True; the order of particles does not depend on it).
    encoded
        With ``batch_size`` and a uint8 store: yield the *stored* uint8 images
        ``(B, 1, y, x)`` and put ``image_offset`` / ``image_scale`` in the annotations;
        :func:`decode_batch` turns them into float32 wherever the batch goes (e.g. on the
        GPU). A quarter of the bytes cross from DataLoader workers and to the device.
    """

    def __init__(self, store: ParticleStore, selection: Selection, transform: Transform | None = None,
                 columns: Sequence[str] | None = None, *, shuffle: bool = True, seed: int = 0,
                 buffer_chunks: int = 4, rank: int | None = None, world_size: int | None = None,
                 batch_size: int | None = None, prefetch: bool = True, encoded: bool = False) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if encoded and (batch_size is None or transform is not None or store.encoding != "uint8"):
            raise ValueError("encoded: needs batch_size, no transform and a uint8 store")
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
        self.prefetch = prefetch
        self.encoded = encoded
        dist_ready = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if dist_ready else 0)
        self.world_size = world_size if world_size is not None else (
            torch.distributed.get_world_size() if dist_ready else 1)
        # Units: (experiment, chunk) → selection rows in that chunk, sorted by experiment then chunk.
        table = selection.table
        self.units, self.unit_rows, exp_names = _chunk_units(selection, store.chunk_particles)
        self._values = {c: table[c].to_numpy() for c in self.columns}
        self._idx = table["particle_index"].to_numpy(np.int64)
        shapes = {str(e): tuple(store.images_array(str(e)).shape[1:]) for e in exp_names}
        self._uniform = len(set(shapes.values())) <= 1
        if not self._uniform and batch_size is not None and (transform is None or encoded):
            sizes = ", ".join(sorted({f"{y}x{x}" for y, x in shapes.values()}))
            raise ValueError(f"transform: the selection mixes image sizes ({sizes}); batches need a transform "
                             "that makes them equal, e.g. Resize(128)")

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

    def _read_buffer(self, units: NDArray[np.int64]
                     ) -> tuple[NDArray[Any], NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]:
        """Stored images, offsets, scales and selection rows of a few units (chunk reads).

        Images come as one ``(k, y, x)`` array of the stored dtype when the selection has one
        image size, else as an object array of ``(y, x)`` arrays.
        """
        rows = np.concatenate([self.unit_rows[u] for u in units])
        requests = [(self.units[u][0], self._idx[self.unit_rows[u]]) for u in units]
        if self._uniform:
            stored, off, sc = self.store.read_stored_many(requests)
            return stored, off, sc, rows
        parts = [self.store.read_stored(exp, idx) for exp, idx in requests]
        mixed = np.empty(len(rows), dtype=object)
        for i, image in enumerate(image for part in parts for image in part[0]):
            mixed[i] = image  # element-wise: a slice assignment would try to broadcast equal shapes
        return mixed, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]), rows

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        wid = info.id if info is not None else 0
        order = self._unit_order()
        mine = order[shard_units(len(order), self.rank, self.world_size, wid, workers)]
        rng = np.random.default_rng((self.seed, self.epoch, self.rank, wid))
        buffers = [mine[i:i + self.buffer_chunks] for i in range(0, len(mine), self.buffer_chunks)]
        # The buffer holds stored (uint8/float16) values; decoding happens per batch. With
        # ``prefetch`` a thread reads the next buffer's chunks while this one is consumed
        # (Zarr reads and the compiled decode release the GIL).
        pool = ThreadPoolExecutor(max_workers=1) if self.prefetch and len(buffers) > 1 else None
        carry: tuple[NDArray[Any], NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]] | None = None
        try:
            pending: Future[Any] | None = pool.submit(self._read_buffer, buffers[0]) if pool and buffers else None
            for k, units in enumerate(buffers):
                if pending is not None:
                    stored, off, sc, rows = pending.result()
                    pending = pool.submit(self._read_buffer, buffers[k + 1]) if pool and k + 1 < len(buffers) else None
                else:
                    stored, off, sc, rows = self._read_buffer(units)
                perm = rng.permutation(len(rows)) if self.shuffle else np.arange(len(rows))
                if self.batch_size is None:
                    for p in perm:
                        yield self._images(stored, off, sc, np.asarray([p]))[0], _row_dict(self._values, int(rows[p]))
                    continue
                if carry is not None:
                    stored, off, sc, rows = (np.concatenate([carry[0], stored]), np.concatenate([carry[1], off]),
                                             np.concatenate([carry[2], sc]), np.concatenate([carry[3], rows]))
                    perm = np.concatenate([np.arange(len(carry[3])), len(carry[3]) + perm])
                bs = self.batch_size
                full = len(perm) // bs * bs
                for b in range(0, full, bs):
                    sel = perm[b:b + bs]
                    yield self._batch(stored, off, sc, sel, rows[sel])
                rest = perm[full:]
                carry = (stored[rest], off[rest], sc[rest], rows[rest]) if len(rest) else None
            if self.batch_size is not None and carry is not None:
                yield self._batch(carry[0], carry[1], carry[2], np.arange(len(carry[3])), carry[3])
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _images(self, stored: NDArray[Any], off: NDArray[np.float32], sc: NDArray[np.float32],
                sel: NDArray[np.int64]) -> torch.Tensor:
        """Decoded, transformed images of buffer rows ``sel``: ``(k, 1, y, x)`` float32.

        Uniform buffers are gathered and decoded straight into a new tensor in one compiled
        pass; mixed-size buffers are decoded per image and must be made equal by the transform.
        """
        if stored.dtype != object:
            tensor = torch.empty((len(sel), *stored.shape[1:]), dtype=torch.float32)
            if get_worker_info() is not None:  # decode straight into shared memory: no copy to send it
                tensor.share_memory_()
            decode(stored, off, sc, rows=sel, out=tensor.numpy())
            images = tensor[:, None]
            if self.transform is None:
                return images
            return torch.stack([self.transform(t) for t in images])
        out = []
        for i in sel.tolist():
            t = torch.from_numpy(decode(stored[i][None], off[i:i + 1], sc[i:i + 1]))
            out.append(self.transform(t) if self.transform is not None else t)
        return torch.stack(out)

    def _batch(self, stored: NDArray[Any], off: NDArray[np.float32], sc: NDArray[np.float32],
               sel: NDArray[np.int64], rows: NDArray[np.int64]) -> tuple[torch.Tensor, dict[str, Any]]:
        ann = {k: torch.as_tensor(v[rows]) for k, v in self._values.items()}
        if not self.encoded:
            return self._images(stored, off, sc, sel), ann
        ann["image_offset"] = torch.from_numpy(off[sel])
        ann["image_scale"] = torch.from_numpy(sc[sel])
        return torch.from_numpy(stored[sel])[:, None], ann


def decode_batch(images: torch.Tensor, annotations: dict[str, torch.Tensor]) -> torch.Tensor:
    """Decode an ``encoded=True`` batch: ``offset + scale * stored`` in float32 on its device.

    Parameters
    ----------
    images : uint8 tensor, shape (B, 1, y, x)
    annotations
        The batch's dict, with ``image_offset`` and ``image_scale`` tensors ``(B,)``.

    Returns
    -------
    float32 tensor, shape (B, 1, y, x), on ``images.device``; the same bits as the store's
    own decoding (:func:`cryoset.store.dataset.decode`).
    """
    scale = annotations["image_scale"].to(images.device, torch.float32)[:, None, None, None]
    offset = annotations["image_offset"].to(images.device, torch.float32)[:, None, None, None]
    return images.to(torch.float32) * scale + offset
