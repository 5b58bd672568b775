"""PyTorch loaders over the particle store: exactly-once sharding, chunk-aware shuffling, transforms."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from cryoset.learn.particles import (
    ChunkBatchSampler,
    Normalize,
    RandomAugment,
    Resize,
    StoreParticleDataset,
    StoreParticleStream,
    batches_per_rank,
    decode_batch,
    reader_span,
    samples_per_rank,
)
from cryoset.store.dataset import ParticleStore


@pytest.fixture
def store(tmp_path: Path, rng: np.random.Generator) -> ParticleStore:
    s = ParticleStore.create(tmp_path / "s", encoding="float16", chunk_particles=10)
    for name, n in (("A", 53), ("B", 31), ("C", 7)):
        images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 12, 12)).copy()
        images += rng.standard_normal(images.shape).astype(np.float32) * 0.01
        ann = pd.DataFrame({"defocus_u_a": rng.uniform(1e4, 3e4, n), "uid": np.arange(n) + {"A": 0, "B": 1000, "C": 2000}[name]})
        s.add_experiment(name, images, ann)
    return s


def _uids(loader: DataLoader) -> list[int]:  # type: ignore[type-arg]
    out: list[int] = []
    for _img, ann in loader:
        out.extend(int(u) for u in torch.as_tensor(ann["uid"]).reshape(-1))
    return out


@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_reader_spans_partition_equal_rank_spans(batch_size: int | None, drop_last: bool) -> None:
    for n in (0, 1, 5, 23, 64):
        for world in (1, 2, 3):
            per_rank = samples_per_rank(n, world, drop_last)
            assert per_rank == (n // world if drop_last else -(-n // world))
            for rank in range(world):
                for workers in (1, 2, 3, 5):
                    spans = [reader_span(n, rank=rank, world_size=world, worker=w, num_workers=workers,
                                         batch_size=batch_size, drop_last=drop_last) for w in range(workers)]
                    # the workers' spans tile the rank's span, in order, each on batch boundaries
                    assert spans[0][0] == rank * per_rank
                    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
                    assert all(lo <= hi for lo, hi in spans)
                    used = spans[-1][1] - spans[0][0]
                    if batch_size is None:
                        assert used == per_rank
                    else:
                        assert all((lo - rank * per_rank) % batch_size == 0 for lo, _ in spans)
                        k = batches_per_rank(n, world, batch_size, drop_last)
                        assert used == (k * batch_size if drop_last else per_rank)
    with pytest.raises(ValueError, match="rank"):
        reader_span(5, rank=3, world_size=3)


def test_each_particle_once_per_epoch_across_workers_and_ranks(store: ParticleStore) -> None:
    sel = store.select("SELECT * FROM particles WHERE particle_index % 3 != 1")
    n = len(sel)
    assert n % 2 == 1  # uneven over 2 ranks
    for drop_last in (False, True):
        per_rank: list[list[int]] = []
        for rank in range(2):
            stream = StoreParticleStream(store, sel, columns=["uid"], seed=7, rank=rank, world_size=2,
                                         drop_last=drop_last)
            per_rank.append(_uids(DataLoader(stream, batch_size=4, num_workers=2)))
        assert len(per_rank[0]) == len(per_rank[1]) == samples_per_rank(n, 2, drop_last)
        counts = Counter(per_rank[0] + per_rank[1])
        if drop_last:  # the epoch's last particle is dropped, no other is repeated or lost
            assert max(counts.values()) == 1 and len(counts) == n - 1
        else:  # every particle, and the epoch's first one once more (padding)
            assert set(counts) == set(sel.table["uid"].tolist()) and sum(counts.values()) == n + 1
            assert sorted(counts.values()) == [1] * (n - 1) + [2]


def test_chunk_aware_shuffle_is_seeded_and_changes_per_epoch(store: ParticleStore) -> None:
    sel = store.select()
    s1 = StoreParticleStream(store, sel, columns=["uid"], seed=3, buffer_chunks=2)
    s2 = StoreParticleStream(store, sel, columns=["uid"], seed=3, buffer_chunks=2)
    e0 = [a["uid"] for _i, a in s1]
    assert e0 == [a["uid"] for _i, a in s2]
    s1.set_epoch(1)
    e1 = [a["uid"] for _i, a in s1]
    assert sorted(e0) == sorted(e1) == sorted(sel.table["uid"].tolist()) and e0 != e1
    # chunk-aware: consecutive particles come from a window of at most buffer_chunks chunks
    chunk_of = {int(u): (int(u) // 1000, (int(u) % 1000) // 10) for u in sel.table["uid"]}
    for start in range(0, len(e0) - 20, 20):
        assert len({chunk_of[int(u)] for u in e0[start:start + 20]}) <= 4
    assert len(s1) == len(sel)


def test_images_match_the_particles(store: ParticleStore) -> None:
    sel = store.select("SELECT * FROM particles WHERE experiment_id = 'B'")
    ds = StoreParticleDataset(store, sel, columns=["uid", "particle_index"])
    img, ann = ds[5]
    assert img.shape == (1, 12, 12) and abs(float(img.mean()) - ann["particle_index"]) < 0.05
    batch = ds.get_batch([0, 9, 3])
    assert batch.shape == (3, 1, 12, 12)
    np.testing.assert_allclose(batch.mean(dim=(1, 2, 3)).numpy(), [0, 9, 3], atol=0.05)
    for img, ann in StoreParticleStream(store, sel, columns=["particle_index"], seed=1):
        assert abs(float(img.mean()) - ann["particle_index"]) < 0.05


def test_transforms(store: ParticleStore) -> None:
    ds = StoreParticleDataset(store, store.select(), transform=Normalize())
    img, _ = ds[60]
    assert abs(float(img.mean())) < 1e-4 and abs(float(img.std()) - 1) < 1e-3
    img2 = Normalize(radius_fraction=0.8)(torch.randn(1, 32, 32) * 3 + 2)
    assert img2.shape == (1, 32, 32)
    assert Resize(24)(torch.ones(1, 12, 12)).shape == (1, 24, 24)
    x = torch.arange(16.0).reshape(1, 4, 4)
    y = RandomAugment(seed=0)(x)
    assert sorted(y.flatten().tolist()) == sorted(x.flatten().tolist())


def test_batched_stream_same_particles(store: ParticleStore) -> None:
    sel = store.select()
    everyone: list[int] = []
    sizes: list[int] = []
    for drop_last in (False, True):
        everyone.clear()
        sizes.clear()
        for rank in range(2):
            stream = StoreParticleStream(store, sel, columns=["uid", "particle_index"], seed=5, rank=rank,
                                         world_size=2, batch_size=16, drop_last=drop_last)
            for images, ann in DataLoader(stream, batch_size=None, num_workers=2):
                assert images.shape[1:] == (1, 12, 12)
                np.testing.assert_allclose(images.mean(dim=(1, 2, 3)).numpy(), ann["particle_index"].numpy(),
                                           atol=0.05)
                everyone += ann["uid"].tolist()
                sizes.append(len(images))
        if drop_last:  # 91 over 2 ranks: 45 each, 2 full batches, no repeat
            assert len(everyone) == len(set(everyone)) == 2 * 32 and sizes == [16] * 4
        else:  # 46 each (one repeated): 16 + 16 + 14 per rank, every particle
            assert set(everyone) == set(sel.table["uid"].tolist()) and len(everyone) == 92
            assert sorted(sizes) == [14, 14, 16, 16, 16, 16]


def test_prefetch_changes_nothing_but_speed(tmp_path: Path, rng: np.random.Generator) -> None:
    s = ParticleStore.create(tmp_path / "u8", encoding="uint8", chunk_particles=8)
    n = 75
    s.add_experiment("E", rng.standard_normal((n, 10, 10)).astype(np.float32),
                     pd.DataFrame({"uid": np.arange(n)}))
    sel = s.select()
    runs = []
    for prefetch in (False, True):
        stream = StoreParticleStream(s, sel, columns=["uid"], seed=3, buffer_chunks=2, batch_size=16,
                                     prefetch=prefetch)
        runs.append([(img.numpy().copy(), ann["uid"].numpy().copy()) for img, ann in stream])
    assert len(runs[0]) == len(runs[1]) == 5
    for (a_img, a_uid), (b_img, b_uid) in zip(*runs, strict=True):
        assert np.array_equal(a_uid, b_uid) and np.array_equal(a_img, b_img)
    # each batch equals the store's decoded images of those particles, bit for bit
    for img, uid in runs[1]:
        assert np.array_equal(img[:, 0], s.read_images("E", uid))
    # leaving early shuts the reader thread down (no hang, no leaked read)
    it = iter(StoreParticleStream(s, sel, columns=["uid"], seed=3, buffer_chunks=1, batch_size=4))
    next(it)
    it.close()  # type: ignore[attr-defined]


def test_mixed_image_sizes_need_a_resizing_transform(tmp_path: Path, rng: np.random.Generator) -> None:
    s = ParticleStore.create(tmp_path / "mixed", chunk_particles=4)
    s.add_experiment("small", rng.standard_normal((9, 8, 8)).astype(np.float32), pd.DataFrame({"uid": np.arange(9)}))
    s.add_experiment("big", rng.standard_normal((6, 16, 16)).astype(np.float32),
                     pd.DataFrame({"uid": 100 + np.arange(6)}))
    sel = s.select()
    with pytest.raises(ValueError, match="mixes image sizes"):
        StoreParticleStream(s, sel, columns=["uid"], batch_size=4)
    stream = StoreParticleStream(s, sel, columns=["uid"], batch_size=4, transform=Resize(12), seed=2)
    seen: list[int] = []
    for images, ann in stream:
        assert images.shape[1:] == (1, 12, 12)
        seen += ann["uid"].tolist()
    assert sorted(seen) == sorted(sel.table["uid"].tolist())
    # per-particle mode keeps native sizes, whatever the buffer holds (one or both sizes)
    for buffer_chunks in (1, 4):
        shapes = {int(a["uid"]): tuple(img.shape)
                  for img, a in StoreParticleStream(s, sel, columns=["uid"], buffer_chunks=buffer_chunks)}
        assert shapes[0] == (1, 8, 8) and shapes[100] == (1, 16, 16) and len(shapes) == 15


def test_encoded_batches_decode_to_the_same_bits(tmp_path: Path, rng: np.random.Generator) -> None:
    s = ParticleStore.create(tmp_path / "u8", chunk_particles=8)
    n = 50
    s.add_experiment("E", rng.standard_normal((n, 10, 10)).astype(np.float32) * 4 + 2,
                     pd.DataFrame({"uid": np.arange(n)}))
    sel = s.select()
    stream = StoreParticleStream(s, sel, columns=["uid"], seed=1, batch_size=8, encoded=True)
    seen: list[int] = []
    for images, ann in DataLoader(stream, batch_size=None, num_workers=2):
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 10, 10)
        decoded = decode_batch(images, ann)
        assert decoded.dtype == torch.float32
        assert np.array_equal(decoded[:, 0].numpy(), s.read_images("E", ann["uid"].numpy()))
        seen += ann["uid"].tolist()
    assert sorted(seen) == list(range(n))
    with pytest.raises(ValueError, match="encoded"):
        StoreParticleStream(s, sel, encoded=True)  # needs batch_size
    with pytest.raises(ValueError, match="encoded"):
        StoreParticleStream(s, sel, batch_size=4, encoded=True, transform=Resize(8))


def test_chunk_batch_sampler_reads_each_chunk_once_per_batch(store: ParticleStore,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sel = store.select("SELECT * FROM particles WHERE particle_index % 4 != 2")
    ds = StoreParticleDataset(store, sel, columns=["uid", "particle_index"], cache_chunks=0)
    sampler = ChunkBatchSampler(ds, 8, seed=4, buffer_chunks=2)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    flat = [r for b in batches for r in b]
    assert sorted(flat) == list(range(len(sel)))  # every row exactly once per epoch
    assert flat != sorted(flat) and batches == list(ChunkBatchSampler(ds, 8, seed=4, buffer_chunks=2))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    chunks_per_batch = [len({(sel.table["experiment_id"][r], sel.table["particle_index"][r] // 10) for r in b})
                        for b in batches]
    assert max(chunks_per_batch) <= 4  # a batch spans at most two buffers of 2 chunks
    reads: list[int] = []
    original = store.read_stored
    monkeypatch.setattr(store, "read_stored", lambda e, i, out=None: (reads.append(1), original(e, i, out))[1])
    uids = []
    for images, ann in DataLoader(ds, batch_sampler=ChunkBatchSampler(ds, 8, seed=4, buffer_chunks=2)):
        np.testing.assert_allclose(images.mean(dim=(1, 2, 3)).numpy(), ann["particle_index"].numpy(), atol=0.05)
        uids += ann["uid"].tolist()
    assert sorted(uids) == sorted(sel.table["uid"].tolist())
    assert len(reads) == sum(chunks_per_batch)  # one chunk read per chunk a batch touches


def test_map_dataset_chunk_cache(store: ParticleStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = StoreParticleDataset(store, store.select(), columns=["uid"])
    reads: list[int] = []
    original = store.read_stored
    monkeypatch.setattr(store, "read_stored", lambda e, i, out=None: (reads.append(1), original(e, i, out))[1])
    images = [ds[i][0] for i in range(len(ds))]
    assert len(reads) == 6 + 4 + 1  # sequential access reads each chunk once (53, 31, 7 particles, chunks of 10)
    assert all(torch.equal(a, b) for a, b in zip(images, [ds[i][0] for i in range(len(ds))], strict=True))
    with pytest.raises(ValueError, match="cache_chunks"):
        StoreParticleDataset(store, store.select(), cache_chunks=-1)


@pytest.mark.parametrize("drop_last", [False, True])
def test_len_counts_the_batches_yielded_and_every_rank_gets_as_many(store: ParticleStore, drop_last: bool) -> None:
    sel = store.select("SELECT * FROM particles WHERE particle_index % 5 != 3")  # 73 particles, 3 ranks
    n, world, bs = len(sel), 3, 8
    counts = []
    for rank in range(world):
        batches_by_workers = []
        for workers in (0, 2):
            stream = StoreParticleStream(store, sel, columns=["uid"], seed=11, rank=rank, world_size=world,
                                         batch_size=bs, drop_last=drop_last)
            loader = DataLoader(stream, batch_size=None, num_workers=workers)
            batches = [tuple(ann["uid"].tolist()) for _img, ann in loader]
            assert len(loader) == len(stream) == len(batches)
            assert sum(map(len, batches)) == samples_per_rank(n, world, drop_last) - (
                samples_per_rank(n, world, drop_last) % bs if drop_last else 0)
            batches_by_workers.append(sorted(batches))
            counts.append(len(batches))
        assert batches_by_workers[0] == batches_by_workers[1]  # the rank's batches, whoever reads them
        # per-particle mode: len is the rank's particle count
        single = StoreParticleStream(store, sel, columns=["uid"], seed=11, rank=rank, world_size=world,
                                     drop_last=drop_last)
        assert len(single) == len(_uids(DataLoader(single, batch_size=None, num_workers=2)))
    assert len(set(counts)) == 1 and counts[0] == batches_per_rank(n, world, bs, drop_last)


def test_chunk_batch_sampler_gives_every_rank_as_many_batches(store: ParticleStore) -> None:
    ds = StoreParticleDataset(store, store.select(), columns=["uid"])  # 91 rows
    for drop_last in (False, True):
        per_rank = [list(ChunkBatchSampler(ds, 8, seed=2, rank=r, world_size=4, drop_last=drop_last))
                    for r in range(4)]
        lengths = [len(ChunkBatchSampler(ds, 8, seed=2, rank=r, world_size=4, drop_last=drop_last))
                   for r in range(4)]
        assert lengths == [len(b) for b in per_rank] == [2 if drop_last else 3] * 4
        rows = Counter(r for batches in per_rank for b in batches for r in b)
        if drop_last:  # 22 rows per rank: 2 full batches of 8 (the short one dropped), nothing repeated
            assert all(len(b) == 8 for batches in per_rank for b in batches) and max(rows.values()) == 1
        else:  # 23 rows per rank (one padded), every row
            assert set(rows) == set(range(91)) and sum(rows.values()) == 92


def test_random_augment_is_seeded_per_epoch_worker_and_rank(tmp_path: Path) -> None:
    # every particle is the same asymmetric image, so each output tells which of the 8 moves was drawn
    pattern = torch.arange(64.0).reshape(1, 8, 8)
    moves = [torch.flip(torch.rot90(pattern, k, dims=(-2, -1)), dims=(-1,)) if f else
             torch.rot90(pattern, k, dims=(-2, -1)) for k in range(4) for f in (0, 1)]
    s = ParticleStore.create(tmp_path / "same", encoding="float16", chunk_particles=8)
    s.add_experiment("E", np.broadcast_to(pattern[0].numpy(), (32, 8, 8)).copy(), pd.DataFrame({"uid": np.arange(32)}))
    sel = s.select()

    def drawn(stream: StoreParticleStream, workers: int) -> list[list[int]]:
        """The moves of each batch, in the loader's order."""
        out = []
        for images, _ann in DataLoader(stream, batch_size=None, num_workers=workers):
            out.append([next(i for i, m in enumerate(moves) if torch.equal(img, m)) for img in images])
        return out

    def stream(rank: int = 0, world: int = 1) -> StoreParticleStream:
        return StoreParticleStream(s, sel, transform=RandomAugment(seed=3), columns=["uid"], seed=1, batch_size=4,
                                   rank=rank, world_size=world)

    st = stream()
    epoch0 = drawn(st, 2)
    assert len(epoch0) == 8
    # in-order loading alternates the two workers' batches (4 each): their draws differ
    worker0, worker1 = epoch0[0::2], epoch0[1::2]
    assert worker0 != worker1
    assert drawn(st, 2) == epoch0  # the same (seed, epoch) again: the same draws
    assert drawn(stream(), 2) == epoch0  # from a new object, too
    st.set_epoch(1)
    epoch1 = drawn(st, 2)
    assert epoch1 != epoch0 and epoch1[0::2] != epoch0[0::2]  # a new epoch draws anew in each worker
    st.set_epoch(0)
    assert drawn(st, 2) == epoch0
    # without workers: reproducible per epoch as well, and another rank draws otherwise
    assert drawn(stream(), 0) == drawn(stream(), 0)
    assert drawn(stream(0, 2), 0) != drawn(stream(1, 2), 0)
    # map-style: DataLoader workers draw differently; set_epoch changes the draws
    ds = StoreParticleDataset(s, sel, transform=RandomAugment(seed=3), columns=["uid"])

    def drawn_map() -> list[list[int]]:
        return [[next(i for i, m in enumerate(moves) if torch.equal(img, m)) for img in images]
                for images, _ann in DataLoader(ds, batch_size=4, num_workers=2)]

    first = drawn_map()
    assert first[0::2] != first[1::2] and drawn_map() == first
    ds.set_epoch(1)
    assert drawn_map() != first
    with pytest.raises(ValueError, match="seed"):
        RandomAugment(seed=-1)
