"""PyTorch loaders over the particle store: exactly-once sharding, chunk-aware shuffling, transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from cryoset.learn.particles import (
    Normalize,
    RandomAugment,
    Resize,
    StoreParticleDataset,
    StoreParticleStream,
    shard_units,
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


def test_shard_units_partition() -> None:
    seen = np.concatenate([shard_units(23, r, 3, w, 2) for r in range(3) for w in range(2)])
    assert sorted(seen.tolist()) == list(range(23))
    with pytest.raises(ValueError, match="rank"):
        shard_units(5, 3, 3, 0, 1)


def test_each_particle_once_per_epoch_across_workers_and_ranks(store: ParticleStore) -> None:
    sel = store.select("SELECT * FROM particles WHERE particle_index % 3 != 1")
    everyone: list[int] = []
    for rank in range(2):
        stream = StoreParticleStream(store, sel, columns=["uid"], seed=7, rank=rank, world_size=2)
        loader = DataLoader(stream, batch_size=4, num_workers=2)
        everyone += _uids(loader)
    assert sorted(everyone) == sorted(sel.table["uid"].tolist())
    assert len(everyone) == len(set(everyone))


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
    g = torch.Generator().manual_seed(0)
    x = torch.arange(16.0).reshape(1, 4, 4)
    y = RandomAugment(g)(x)
    assert sorted(y.flatten().tolist()) == sorted(x.flatten().tolist())


def test_batched_stream_same_particles(store: ParticleStore) -> None:
    sel = store.select()
    everyone: list[int] = []
    sizes: list[int] = []
    for rank in range(2):
        stream = StoreParticleStream(store, sel, columns=["uid", "particle_index"], seed=5, rank=rank,
                                     world_size=2, batch_size=16)
        for images, ann in DataLoader(stream, batch_size=None, num_workers=2):
            assert images.shape[1:] == (1, 12, 12)
            np.testing.assert_allclose(images.mean(dim=(1, 2, 3)).numpy(), ann["particle_index"].numpy(), atol=0.05)
            everyone += ann["uid"].tolist()
            sizes.append(len(images))
    assert sorted(everyone) == sorted(sel.table["uid"].tolist())
    assert sum(s < 16 for s in sizes) <= 4  # only each reader's last batch may be short
