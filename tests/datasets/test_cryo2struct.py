"""Cryo2StructData layout: an EMD-5168 + 3MFP entry built by cryoset.maps, served by a mock
Dataverse, downloaded, read, cross-checked against our own `map prepare` and trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cryoset.archives.download import HttpClient
from cryoset.archives.testserver import serve
from cryoset.datasets.cryo2struct import (
    crosscheck,
    find_entries,
    label_agreement,
    read_cryo2struct_entry,
    read_npz_subgrids,
    read_table,
)
from cryoset.datasets.registry import download_dataset, get_spec
from cryoset.errors import InputError
from cryoset.io.mrc import write_map
from cryoset.learn.published import NpzSubgridDataset, ZarrSubgridDataset
from cryoset.maps.dataset import LABEL_FILES

from .builders import build_c2s_entry, dataverse_routes, zip_dir


@pytest.fixture(scope="module")
def downloaded(prepared_5168: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("c2s")
    entry = build_c2s_entry(prepared_5168, work / "src")
    files = [{"label": "EMD-5168.zip", "directoryLabel": "test", "body": zip_dir(entry, "EMD-5168")},
             {"label": "metadata.tab", "original": "metadata.csv",
              "body": b"EMD ID,PDB ID,Resolution\nemd_5168,3MFP,6.6\nemd_1111,1ABC,3.1\n"},
             {"label": "splits.csv", "body": b"emd_id,split\n5168,test\n1111,train\n"}]
    with serve(dataverse_routes("doi:10.7910/DVN/2GSSC9", files)) as base:
        client = HttpClient(cache_dir=work / "cache", retries=1, backoff_s=0.0, timeout_s=10)
        download_dataset(get_spec("cryo2structdata"), work / "out", client, subsets=["test"], base_url=base)
    return work / "out"


def test_published_entry_reads_with_labels_tables_and_subgrids(downloaded: Path) -> None:
    (d,) = find_entries(downloaded)
    assert d == downloaded / "test" / "EMD-5168" / "EMD-5168"
    entry = read_cryo2struct_entry(d)
    assert entry.emdb_id == "EMD-5168" and sorted(entry.labels) == sorted(LABEL_FILES)
    assert entry.density.voxel_size_a == pytest.approx((1.0, 1.0, 1.0))
    assert [m.name for m in entry.models] == ["3MFP.pdb"] and [f.name for f in entry.fasta] == ["3MFP.fasta"]
    # backbone labels: 369 Cα of 3MFP, codes 1..3 only; amino 1..20 only on Cα voxels
    assert set(np.unique(entry.labels["backbone"])) == {0, 1, 2, 3}
    assert np.count_nonzero(entry.labels["backbone"] == 1) == 369
    assert np.all((entry.labels["amino"] > 0) == (entry.labels["backbone"] == 1))
    assert len(entry.npz) == 48
    meta = read_table(downloaded / "metadata.csv")
    assert meta["emdb_id"].tolist() == ["EMD-5168", "EMD-1111"]
    splits = read_table(downloaded / "splits.csv")
    assert dict(zip(splits["emdb_id"], splits["split"], strict=True)) == {"EMD-5168": "test", "EMD-1111": "train"}


def test_crosscheck_with_our_prepare_is_perfect_and_detects_differences(
        downloaded: Path, prepared_5168: Path, tmp_path: Path) -> None:
    theirs_dir = find_entries(downloaded)[0]
    ours = read_cryo2struct_entry(prepared_5168)
    report = crosscheck(read_cryo2struct_entry(theirs_dir), ours)
    assert report["offset_vox"] == [0, 0, 0] and report["density_correlation"] == pytest.approx(1.0)
    assert report["density_max_abs_diff"] == 0.0
    assert all(r["dice"] == 1.0 for r in report["labels"])
    # a published grid cropped by 3 voxels in x (origin moved by +3 Å): same labels on the overlap
    crop = tmp_path / "EMD-5168"
    crop.mkdir()
    src = read_cryo2struct_entry(theirs_dir)
    origin = np.asarray(src.density.origin_a) + np.array([0.0, 0.0, 3.0])
    write_map(crop / "emd_normalized_map.mrc", src.density.data[:, :, 3:], (1.0, 1.0, 1.0), tuple(origin))
    moved = src.labels["backbone"][:, :, 3:].copy()
    ca = np.argwhere(moved == 1)[0]
    moved[tuple(ca)] = 0  # one Cα label removed...
    moved[tuple(ca + np.array([0, 0, 1]))] = 1  # ...and placed one voxel over
    write_map(crop / LABEL_FILES["backbone"], moved.astype(np.int8), (1.0, 1.0, 1.0), tuple(origin), dtype="int8")
    r2 = crosscheck(read_cryo2struct_entry(crop), ours)
    assert r2["offset_vox"] == [0, 0, 3] and r2["overlap_shape"] == [71, 75, 46]
    rows = {(r["map"], r["label"]): r for r in r2["labels"]}
    assert set(m for m, _ in rows) == {"backbone"}
    n_ca = rows[("backbone", 1)]["n_ours"]
    assert rows[("backbone", 1)]["n_both"] == n_ca - 1
    assert rows[("backbone", 1)]["dice"] == pytest.approx((n_ca - 1) / n_ca)
    # a grid off by half a voxel is refused
    half = tmp_path / "half"
    half.mkdir()
    write_map(half / "emd_normalized_map.mrc", src.density.data, (1.0, 1.0, 1.0),
              tuple(np.asarray(src.density.origin_a) + 0.5))
    with pytest.raises(InputError, match="not on the same grid"):
        crosscheck(read_cryo2struct_entry(half), ours)


def test_label_agreement_known_values() -> None:
    a = np.zeros((4, 4, 4), np.uint8)
    b = np.zeros((4, 4, 4), np.uint8)
    a[0, 0, :3] = 1
    b[0, 0, 1:4] = 1
    a[1, 1, 1] = b[1, 1, 1] = 2
    a[2, 2, 2] = 3
    t = label_agreement({"backbone": a}, {"backbone": b, "amino": b})
    rows = {int(r.label): r for r in t.itertuples()}
    assert (rows[1].n_ours, rows[1].n_theirs, rows[1].n_both, rows[1].dice) == (3, 3, 2, pytest.approx(2 / 3))
    assert rows[2].dice == 1.0 and (rows[3].n_ours, rows[3].n_theirs, rows[3].dice) == (1, 0, 0.0)
    assert (rows[-1].n_ours, rows[-1].n_theirs, rows[-1].n_both) == (5, 4, 3)
    assert rows[-1].voxel_agreement == pytest.approx(61 / 64)


def test_npz_and_our_zarr_subgrids_are_interchangeable_for_training(downloaded: Path, prepared_5168: Path) -> None:
    theirs = read_cryo2struct_entry(find_entries(downloaded)[0])
    npz = sorted(theirs.npz, key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    arrays = read_npz_subgrids(npz[0])
    assert sorted(arrays) == ["amino", "backbone", "density"] and arrays["density"].shape == (1, 32, 32, 32)
    ds_npz = NpzSubgridDataset(npz)
    ds_zarr = ZarrSubgridDataset(prepared_5168 / "subgrids.zarr", labels=["backbone", "amino"])
    assert len(ds_npz) == len(ds_zarr) == 48
    for i in (0, 17, 47):
        (d1, l1), (d2, l2) = ds_npz[i], ds_zarr[i]
        assert d1.shape == (1, 32, 32, 32) and d1.dtype == torch.float32
        assert torch.equal(d1, d2) and all(torch.equal(l1[k], l2[k]) for k in ("backbone", "amino"))
    # one model, both sources, one optimisation step each
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 4, 1)  # tiny: the point is one model for both sources
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for ds in (ds_npz, ds_zarr):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=False)
        density, labels = next(iter(loader))
        loss = torch.nn.functional.cross_entropy(model(density), labels["backbone"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)


def test_bad_npz_and_missing_map_are_input_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", atom_grid=np.zeros((32, 32, 32)))
    with pytest.raises(InputError, match="no protein_grid"):
        read_npz_subgrids(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", protein_grid=np.zeros((32, 32, 30)))
    with pytest.raises(InputError, match="cubes"):
        read_npz_subgrids(tmp_path / "y.npz")
    with pytest.raises(InputError, match="not a Cryo2StructData entry"):
        read_cryo2struct_entry(tmp_path)
