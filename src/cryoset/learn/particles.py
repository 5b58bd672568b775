"""PyTorch datasets streaming particles from a :class:`cryoset.store.ParticleStore`.

* :class:`StoreParticleStream` — iterable, the fast path, with **chunk-aware shuffling** (the
  order of Zarr chunks is shuffled per epoch, then particles are shuffled within a buffer of
  a few chunks: :class:`EpochOrder`), **sharding** across distributed ranks and DataLoader
  workers (each rank takes a contiguous, equally long span of the epoch's sequence, as
  ``DistributedSampler`` does — padded by repeating its start, or cut with ``drop_last`` — and
  each worker a contiguous run of its rank's batches: :func:`reader_span`), ready-made
  batches decoded in one compiled pass, a read-ahead thread, and optionally undecoded uint8
  batches (:func:`decode_batch` decodes them on the consumer's device). Every rank yields the
  same number of batches, ``len()`` says how many, whatever the number of workers.
* :class:`StoreParticleDataset` — map-style (random access, any sampler), with a small chunk
  cache and batched ``__getitems__``; :class:`ChunkBatchSampler` gives it chunk-aware
  shuffled batches, sharded across ranks the same way.
* :class:`RandomAugment` draws from a generator derived from ``(seed, epoch, rank, worker)``.

Both yield ``(image, annotations)`` where ``image`` is a float32 tensor ``(1, y, x)``
after the optional ``transform`` and ``annotations`` a dict of the selection's numeric
columns (as tensors when collated).
"""

from __future__ import annotations

import os
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

from cryoset.learn.vit_weights import resize_images
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
        return resize_images(image[None], self.size)[0]


def _distributed_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the given values, else ``torch.distributed``'s when initialised, else 0 / 1."""
    ready = torch.distributed.is_available() and torch.distributed.is_initialized()
    r = rank if rank is not None else (torch.distributed.get_rank() if ready else 0)
    w = world_size if world_size is not None else (torch.distributed.get_world_size() if ready else 1)
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"rank/world_size: need 0 <= rank < world_size, got rank {r}, world_size {w}")
    return int(r), int(w)


def _worker_id() -> int:
    info = get_worker_info()
    return info.id if info is not None else 0


class RandomAugment:
    """Random 90° rotations and flips, reproducible per (seed, epoch, rank, DataLoader worker).

    The generator is derived from ``(seed, epoch, rank, worker id)`` (``numpy.random.SeedSequence``)
    in the process that draws, so DataLoader workers draw different sequences, every epoch
    draws new ones, and the same ``(seed, epoch)`` repeats exactly. :meth:`set_epoch` restarts
    the sequence; :class:`StoreParticleStream` calls it at the start of every iteration (and
    :meth:`StoreParticleDataset.set_epoch` / :meth:`StoreParticleStream.set_epoch` pass the
    epoch on), so nothing else is needed there.

    Parameters
    ----------
    seed
        Base seed (>= 0).
    rank
        Distributed rank (default: ``torch.distributed``'s when initialised, else 0; the
        stream sets its own).
    """

    def __init__(self, seed: int = 0, *, rank: int | None = None) -> None:
        if seed < 0:
            raise ValueError(f"seed: must be >= 0, got {seed}")
        self.seed = seed
        self.epoch = 0
        self.rank = rank
        self._generator: torch.Generator | None = None
        self._key: tuple[int, int, int, int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Draw the sequence of ``epoch`` from its start on the next call."""
        if epoch < 0:
            raise ValueError(f"epoch: must be >= 0, got {epoch}")
        self.epoch = epoch
        self._generator = None

    def set_rank(self, rank: int) -> None:
        """Use this distributed rank (restarts the sequence)."""
        self.rank = rank
        self._generator = None

    def __getstate__(self) -> dict[str, Any]:
        # a copy sent to a worker process starts its own sequence there
        return {**self.__dict__, "_generator": None, "_key": None}

    def generator(self) -> torch.Generator:
        """The generator of this (seed, epoch, rank, worker), made on first use in each process."""
        rank = self.rank if self.rank is not None else _distributed_rank_world(None, None)[0]
        key = (self.seed, self.epoch, rank, _worker_id(), os.getpid())
        if self._generator is None or key != self._key:
            words = np.random.SeedSequence(list(key[:4])).generate_state(2, np.uint32)
            self._generator = torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))
            self._key = key
        return self._generator

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        g = self.generator()
        k = int(torch.randint(0, 4, (1,), generator=g))
        out = torch.rot90(image, k, dims=(-2, -1))
        if bool(torch.randint(0, 2, (1,), generator=g)):
            out = torch.flip(out, dims=(-1,))
        return out


def set_transform_epoch(transform: Any, epoch: int, rank: int | None = None) -> None:
    """Pass ``epoch`` (and ``rank``) to a transform and to those it composes (``.transforms``).

    Any object with ``set_epoch(epoch)`` / ``set_rank(rank)`` (e.g. :class:`RandomAugment`)
    is told; other transforms are left alone.
    """
    pending = [transform]
    while pending:
        t = pending.pop()
        if t is None:
            continue
        if callable(getattr(t, "set_epoch", None)):
            t.set_epoch(epoch)
        if rank is not None and callable(getattr(t, "set_rank", None)):
            t.set_rank(rank)
        inner = getattr(t, "transforms", None)
        if isinstance(inner, (list, tuple)):
            pending.extend(inner)


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

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch to the transform (:func:`set_transform_epoch`): call it before each
        epoch, as for the sampler. DataLoader workers take a copy of the dataset when an
        epoch's iteration starts, so with ``persistent_workers=True`` they do not see it."""
        set_transform_epoch(self.transform, epoch)

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


@dataclass(frozen=True)
class EpochOrder:
    """The order of one epoch's particles: a sequence of positions ``0 … total - 1``.

    The (experiment, chunk) units are permuted with ``(seed, epoch)`` and grouped, in that
    order, into buffers of ``buffer_chunks`` units; the rows of buffer ``g`` (its units' rows
    concatenated) are permuted with ``(seed, epoch, g)``. The sequence is the buffers one after
    the other. Any reader can compute any part of it, so ranks and workers can take spans of
    one sequence (:func:`reader_span`); a span reads only the buffers it overlaps.

    Attributes
    ----------
    buffers
        Unit positions of each buffer, in sequence order.
    starts
        Sequence position where each buffer starts, then ``total``.
    """

    buffers: tuple[NDArray[np.int64], ...]
    starts: NDArray[np.int64]
    seed: int
    epoch: int
    shuffle: bool

    @classmethod
    def make(cls, unit_sizes: Sequence[int] | NDArray[np.int64], *, shuffle: bool, seed: int, epoch: int,
             buffer_chunks: int) -> EpochOrder:
        """The order of an epoch over units of ``unit_sizes`` rows each."""
        sizes = np.asarray(unit_sizes, dtype=np.int64)
        order = np.arange(len(sizes), dtype=np.int64)
        if shuffle:
            np.random.default_rng((seed, epoch)).shuffle(order)
        buffers = tuple(order[i:i + buffer_chunks] for i in range(0, len(order), buffer_chunks))
        starts = np.concatenate([[0], np.cumsum([int(sizes[b].sum()) for b in buffers], dtype=np.int64)])
        return cls(buffers, starts.astype(np.int64), seed, epoch, shuffle)

    @property
    def total(self) -> int:
        """Particles in the epoch (the selection's size)."""
        return int(self.starts[-1])

    def permutation(self, buffer: int) -> NDArray[np.int64]:
        """Order of the rows of ``buffer`` (indices into its units' rows, concatenated)."""
        n = int(self.starts[buffer + 1] - self.starts[buffer])
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng((self.seed, self.epoch, buffer)).permutation(n).astype(np.int64)

    def segments(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """``(buffer, start, stop)``: slices of permuted buffers that make positions ``[lo, hi)``.

        Positions past the end wrap around to the start (padding by repetition).
        """
        total = self.total
        out: list[tuple[int, int, int]] = []
        pos = lo
        while total and pos < hi:
            p = pos % total
            g = int(np.searchsorted(self.starts, p, side="right")) - 1
            start = p - int(self.starts[g])
            take = min(hi - pos, int(self.starts[g + 1]) - p)
            out.append((g, start, start + take))
            pos += take
        return out


def samples_per_rank(n: int, world_size: int, drop_last: bool) -> int:
    """Particles each rank yields per epoch: ``ceil(n / world_size)`` (the last ones padded by
    repeating the epoch's first) or, with ``drop_last``, ``floor`` (the epoch's tail dropped) —
    as ``torch.utils.data.DistributedSampler``."""
    return n // world_size if drop_last else -(-n // world_size)


def batches_per_rank(n: int, world_size: int, batch_size: int, drop_last: bool) -> int:
    """Batches each rank yields per epoch: its :func:`samples_per_rank` cut into batches, the
    last one short — or, with ``drop_last``, dropped when short."""
    per_rank = samples_per_rank(n, world_size, drop_last)
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)


def reader_span(n: int, *, rank: int, world_size: int, worker: int = 0, num_workers: int = 1,
                batch_size: int | None = None, drop_last: bool = False) -> tuple[int, int]:
    """Positions ``[lo, hi)`` of an epoch's sequence (:class:`EpochOrder`) that one reader yields.

    Rank ``r`` takes ``[r·S, (r + 1)·S)`` with ``S`` = :func:`samples_per_rank` (positions past
    ``n`` wrap to the start); DataLoader worker ``w`` of ``num_workers`` takes a contiguous run
    of its rank's batches (of its samples when ``batch_size`` is None). The spans of all
    workers of a rank partition it, whatever ``num_workers``, so the rank's batches — and their
    number — do not depend on how many workers read them.
    """
    if not 0 <= rank < world_size or not 0 <= worker < num_workers:
        raise ValueError(f"rank/worker: need 0 <= rank < {world_size} and 0 <= worker < {num_workers}")
    per_rank = samples_per_rank(n, world_size, drop_last)
    base = rank * per_rank
    if batch_size is None:
        return base + per_rank * worker // num_workers, base + per_rank * (worker + 1) // num_workers
    k = batches_per_rank(n, world_size, batch_size, drop_last)
    used = min(k * batch_size, per_rank)
    first, last = k * worker // num_workers, k * (worker + 1) // num_workers
    return base + min(first * batch_size, used), base + min(last * batch_size, used)


class ChunkBatchSampler(Sampler[list[int]]):
    """Batches of dataset rows for :class:`StoreParticleDataset`, shuffled chunk-aware.

    The epoch's order is an :class:`EpochOrder` (units shuffled per epoch, rows shuffled within
    buffers of ``buffer_chunks`` units): random batches that touch only a few chunks (a plain
    random sampler reads a whole chunk for almost every particle). Under DDP each rank takes
    its span of that order (:func:`reader_span`): every rank gets the same number of batches.
    Use as ``DataLoader(dataset, batch_sampler=ChunkBatchSampler(dataset, 256))``.

    Parameters
    ----------
    dataset
        The map-style dataset.
    batch_size
        Rows per batch.
    seed
        Base seed of the shuffling (call :meth:`set_epoch` every epoch).
    buffer_chunks
        Units pooled before rows are shuffled among them.
    drop_last
        False (default, as ``DistributedSampler``): each rank gets ``ceil(n / world_size)``
        rows, padded by repeating the epoch's first rows, and its last batch may be short.
        True: ``floor(n / world_size)`` rows (the epoch's tail dropped) and no short batch.
    rank, world_size
        Distributed rank (default from ``torch.distributed`` when initialised, else 0 / 1).
    """

    def __init__(self, dataset: StoreParticleDataset, batch_size: int, *, seed: int = 0, buffer_chunks: int = 4,
                 drop_last: bool = False, rank: int | None = None, world_size: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if buffer_chunks < 1:
            raise ValueError(f"buffer_chunks: must be >= 1, got {buffer_chunks}")
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.buffer_chunks = buffer_chunks
        self.drop_last = drop_last
        self.rank, self.world_size = _distributed_rank_world(rank, world_size)
        self.n_rows = len(dataset)
        self.units = _chunk_units(dataset.selection, dataset.store.chunk_particles)[1]

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffling of the next iteration."""
        self.epoch = epoch

    def __len__(self) -> int:
        return batches_per_rank(self.n_rows, self.world_size, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[list[int]]:
        order = EpochOrder.make([len(u) for u in self.units], shuffle=True, seed=self.seed, epoch=self.epoch,
                                buffer_chunks=self.buffer_chunks)
        lo, hi = reader_span(order.total, rank=self.rank, world_size=self.world_size, batch_size=self.batch_size,
                             drop_last=self.drop_last)
        carry = np.empty(0, np.int64)
        for g, a, b in order.segments(lo, hi):
            buffer_rows = np.concatenate([self.units[u] for u in order.buffers[g]])
            rows = np.concatenate([carry, buffer_rows[order.permutation(g)[a:b]]])
            full = len(rows) // self.batch_size * self.batch_size
            for start in range(0, full, self.batch_size):
                yield rows[start:start + self.batch_size].tolist()
            carry = rows[full:]
        if len(carry):  # the rank's last, short batch (never with drop_last: the span ends on a batch)
            yield carry.tolist()


class StoreParticleStream(IterableDataset[tuple[torch.Tensor, dict[str, Any]]]):
    """Iterable dataset with chunk-aware shuffling and rank/worker sharding.

    Parameters
    ----------
    store, selection, transform, columns
        As :class:`StoreParticleDataset`.
    shuffle
        Shuffle chunk order and particles within the buffer.
    seed
        Base seed; the epoch's order uses ``(seed, epoch)`` (call :meth:`set_epoch`).
    buffer_chunks
        How many chunks are pooled before particles are shuffled among them.
    rank, world_size
        Distributed rank (default from ``torch.distributed`` when initialised, else 0 / 1).
    batch_size
        When set, yield ready batches ``(images (B, 1, y, x), {column: tensor (B,)})`` built
        with vectorised slicing (use ``DataLoader(stream, batch_size=None)``): much faster
        than per-particle collation. Batches are full except the rank's last one.
    prefetch
        Read the next buffer of chunks in a background thread while the current one is
        decoded and consumed (default True; the order of particles does not depend on it).
    encoded
        With ``batch_size`` and a uint8 store: yield the *stored* uint8 images
        ``(B, 1, y, x)`` and put ``image_offset`` / ``image_scale`` in the annotations;
        :func:`decode_batch` turns them into float32 wherever the batch goes (e.g. on the
        GPU). A quarter of the bytes cross from DataLoader workers and to the device.
    drop_last
        How ranks are made equal, as ``torch.utils.data.DistributedSampler``: False (default)
        gives every rank ``ceil(n / world_size)`` particles, padding by repeating the first
        ones of the epoch; True gives ``floor(n / world_size)``, dropping the epoch's tail, and
        (with ``batch_size``) drops the rank's last batch when it is short. Either way every
        rank yields the same number of batches, so DDP never waits for a rank that ran out.

    Notes
    -----
    ``len(stream)`` is the rank's batch count (with ``batch_size``) or particle count, so
    ``len(DataLoader(stream, batch_size=None, num_workers=W))`` is exactly the number of
    batches the loader yields for any ``W``: each worker takes a contiguous run of the rank's
    batches (:func:`reader_span`). In per-particle mode a DataLoader that batches
    (``batch_size=b``) collates per worker, so with ``W > 1`` its count can exceed
    ``ceil(len / b)`` — use the stream's ``batch_size`` for exact counts.
    """

    def __init__(self, store: ParticleStore, selection: Selection, transform: Transform | None = None,
                 columns: Sequence[str] | None = None, *, shuffle: bool = True, seed: int = 0,
                 buffer_chunks: int = 4, rank: int | None = None, world_size: int | None = None,
                 batch_size: int | None = None, prefetch: bool = True, encoded: bool = False,
                 drop_last: bool = False) -> None:
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
        self.drop_last = drop_last
        self.rank, self.world_size = _distributed_rank_world(rank, world_size)
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
        """Change the shuffling (and the transform's random draws) of the next iteration, as
        ``DistributedSampler.set_epoch``."""
        self.epoch = epoch
        set_transform_epoch(self.transform, epoch, self.rank)

    def __len__(self) -> int:
        """The rank's batches per epoch (with ``batch_size``), else its particles."""
        if self.batch_size is None:
            return samples_per_rank(len(self.selection), self.world_size, self.drop_last)
        return batches_per_rank(len(self.selection), self.world_size, self.batch_size, self.drop_last)

    def epoch_order(self) -> EpochOrder:
        """The order of the current epoch (:class:`EpochOrder`)."""
        return EpochOrder.make([len(r) for r in self.unit_rows], shuffle=self.shuffle, seed=self.seed,
                               epoch=self.epoch, buffer_chunks=self.buffer_chunks)

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
        set_transform_epoch(self.transform, self.epoch, self.rank)  # this worker's draws, from their start
        order = self.epoch_order()
        lo, hi = reader_span(order.total, rank=self.rank, world_size=self.world_size, worker=wid,
                             num_workers=workers, batch_size=self.batch_size, drop_last=self.drop_last)
        segments = order.segments(lo, hi)
        # The buffer holds stored (uint8/float16) values; decoding happens per batch. With
        # ``prefetch`` a thread reads the next buffer's chunks while this one is consumed
        # (Zarr reads and the compiled decode release the GIL).
        pool = ThreadPoolExecutor(max_workers=1) if self.prefetch and len(segments) > 1 else None
        carry: tuple[NDArray[Any], NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]] | None = None
        try:
            pending: Future[Any] | None = (pool.submit(self._read_buffer, order.buffers[segments[0][0]])
                                           if pool and segments else None)
            for k, (g, a, b) in enumerate(segments):
                if pending is not None:
                    stored, off, sc, rows = pending.result()
                    pending = (pool.submit(self._read_buffer, order.buffers[segments[k + 1][0]])
                               if pool and k + 1 < len(segments) else None)
                else:
                    stored, off, sc, rows = self._read_buffer(order.buffers[g])
                perm = order.permutation(g)[a:b]
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
                for start in range(0, full, bs):
                    sel = perm[start:start + bs]
                    yield self._batch(stored, off, sc, sel, rows[sel])
                rest = perm[full:]
                carry = (stored[rest], off[rest], sc[rest], rows[rest]) if len(rest) else None
            if self.batch_size is not None and carry is not None:  # the rank's last, short batch
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
