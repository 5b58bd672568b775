"""cryoPANDA ``<EMPIAR>_particles.h5``: built from real EMPIAR-10076 particles, downloaded
with a record override, read lazily, and identical to the store path (import_hdf5)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from cryoset.archives.download import HttpClient
from cryoset.archives.testserver import serve
from cryoset.datasets.cryopanda import find_cryopanda_files, import_cryopanda, read_annotations
from cryoset.datasets.registry import download_dataset, get_spec
from cryoset.errors import InputError
from cryoset.learn.particles import StoreParticleDataset
from cryoset.learn.published import HDF5ParticleDataset
from cryoset.store.dataset import ParticleStore
from cryoset.store.exports import export_hdf5
from cryoset.testing import require_shared_data

from .builders import zenodo_routes


@pytest.fixture(scope="module")
def panda_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cryoset.io.mrc import read_stack

    work = tmp_path_factory.mktemp("panda")
    stack = np.asarray(read_stack(require_shared_data("star", "relion", "empiar_10076_7.mrc")).data[:], np.float32)
    table = pd.DataFrame({"micrograph": [f"mic_{i // 3}.mrc" for i in range(7)],
                          "x_px": np.arange(7) * 100.0 + 50, "y_px": np.arange(7) * 50.0 + 60,
                          "defocus_u_a": np.linspace(9000, 12000, 7), "pixel_size_a": 1.31})
    store = ParticleStore.create(work / "src_store")
    store.add_experiment("EMPIAR-10076", stack, table)
    return export_hdf5(store, store.select(), work / "10076_particles.h5")


def test_download_with_record_override_and_read(panda_file: Path, tmp_path: Path) -> None:
    body = panda_file.read_bytes()
    routes, fill = zenodo_routes("777", {"10076_particles.h5": body, "10017_particles.h5": b"other"})
    with serve(routes) as base:
        fill(base)
        client = HttpClient(cache_dir=tmp_path / "cache", retries=1, backoff_s=0.0, timeout_s=10)
        with pytest.raises(InputError, match=r"sciencedb\.27164"):  # no client for Science Data Bank
            download_dataset(get_spec("cryopanda"), tmp_path / "out", client, base_url=base)
        result = download_dataset(get_spec("cryopanda"), tmp_path / "out", client, subsets=["10076"],
                                  record="777", base_url=base)
    assert [f["extracted"] for f in result.files] == [False]
    files = find_cryopanda_files(tmp_path / "out")
    assert list(files) == ["EMPIAR-10076"] and files["EMPIAR-10076"].read_bytes() == body
    ann = read_annotations(files["EMPIAR-10076"])
    assert len(ann) == 7 and ann["micrograph"].tolist()[:4] == ["mic_0.mrc"] * 3 + ["mic_1.mrc"]
    with h5py.File(files["EMPIAR-10076"], "r") as h5:
        assert h5["images"].shape == (7, 224, 224) and h5["images"].dtype == np.uint8


def test_hdf5_dataset_equals_the_store_dataset_after_import(panda_file: Path, tmp_path: Path) -> None:
    ds_h5 = HDF5ParticleDataset(panda_file)
    store = ParticleStore.create(tmp_path / "store")
    assert import_cryopanda(panda_file, store) == 7
    assert store.experiments() == ["EMPIAR-10076"]
    ds_store = StoreParticleDataset(store, store.select())
    assert len(ds_h5) == len(ds_store) == 7
    for i in range(7):
        (a, ann_a), (b, ann_b) = ds_h5[i], ds_store[i]
        assert a.shape == (1, 224, 224) and a.dtype == torch.float32
        assert torch.equal(a, b)
        for key in ("x_px", "y_px", "defocus_u_a", "pixel_size_a"):
            assert ann_a[key] == pytest.approx(ann_b[key], rel=1e-6)
    loader = torch.utils.data.DataLoader(ds_h5, batch_size=4)
    images, ann = next(iter(loader))
    assert images.shape == (4, 1, 224, 224) and ann["x_px"].shape == (4,)


def test_malformed_files_are_input_errors(tmp_path: Path) -> None:
    bad = tmp_path / "10001_particles.h5"
    with h5py.File(bad, "w") as h5:
        h5.create_dataset("images", data=np.zeros((3, 8, 8), np.uint8))
        h5.create_dataset("annotations", data=json.dumps({"x_px": [1, 2]}))
    with pytest.raises(InputError, match="lengths"):
        read_annotations(bad)
    (tmp_path / "10002_particles.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):
        HDF5ParticleDataset(tmp_path / "10002_particles.h5")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match=r"no <EMPIAR>_particles\.h5"):
        find_cryopanda_files(tmp_path / "nothing")
