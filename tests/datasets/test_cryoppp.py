"""CryoPPP / CryoVirusDB layout: frames, re-export identity, lite micrographs, stacks → store."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cryoset.datasets.cryoppp import import_cryoppp_stacks, read_cryoppp, write_cryoppp
from cryoset.errors import InputError
from cryoset.learn.published import MicrographBoxDataset

from .builders import MICS, SHAPE


def test_reader_undoes_the_y_flip_onto_the_expert_coordinates(cryoppp_full: tuple[Path, dict[str, Any]]) -> None:
    root, built = cryoppp_full
    entry = read_cryoppp(root.parent)  # found one level down
    assert entry.root == root and sorted(entry.micrographs) == list(MICS)
    assert entry.shapes == {m: SHAPE for m in MICS} and sorted(entry.stacks) == list(MICS)
    assert [s.name for s in entry.star_files] == ["10028_particles.star"]
    truth = built["particles"]
    for col in ("x_px", "y_px", "diameter_px"):
        np.testing.assert_allclose(entry.particles[col].to_numpy(), truth[col].to_numpy(), rtol=0, atol=1e-9)
    assert entry.particles["micrograph"].tolist() == truth["micrograph"].tolist()
    # the file itself holds the flipped y: Y = (ny - 1) - y
    with open(root / "ground_truth" / "particle_coordinates" / f"{MICS[0]}.csv") as fh:
        raw_y = np.array([float(r["Y-Coordinate"]) for r in csv.DictReader(fh)])
    first = truth[truth["micrograph"] == MICS[0]]["y_px"].to_numpy()
    np.testing.assert_allclose(raw_y, SHAPE[0] - 1 - first, rtol=0, atol=1e-9)
    # the 14-column file names micrographs with .mrc; the reader keys them by stem
    assert entry.selected is not None and set(entry.selected["micrograph"]) == set(MICS)
    np.testing.assert_allclose(entry.selected["y_px"].to_numpy(), truth["y_px"].to_numpy(), rtol=0, atol=1e-9)
    assert entry.false_positives is not None
    assert entry.false_positives["Reason"].tolist() == ["ice contamination", "aggregate", "carbon edge"]
    np.testing.assert_allclose(entry.false_positives["y_px"], [120.0, 520.0, 920.0], rtol=0, atol=1e-9)


def test_reexport_reads_back_identically_byte_for_byte(cryoppp_full: tuple[Path, dict[str, Any]],
                                                      tmp_path: Path) -> None:
    root, _ = cryoppp_full
    entry = read_cryoppp(root)
    out = write_cryoppp(entry, tmp_path / "10028")
    shutil.copytree(root / "micrographs", out / "micrographs")
    back = read_cryoppp(out)
    pd.testing.assert_frame_equal(back.particles, entry.particles)
    assert back.selected is not None and back.false_positives is not None
    pd.testing.assert_frame_equal(back.selected, entry.selected)
    pd.testing.assert_frame_equal(back.false_positives, entry.false_positives)
    for f in sorted((root / "ground_truth").rglob("*.csv")):
        rel = f.relative_to(root)
        assert (out / rel).read_bytes() == f.read_bytes(), rel


def test_lite_jpg_micrographs_scale_boxes_and_keep_the_image(cryoppp_lite: tuple[Path, dict[str, Any]],
                                                             cryoppp_full: tuple[Path, dict[str, Any]]) -> None:
    root, built = cryoppp_lite
    with pytest.raises(InputError, match=r"outside|off"):
        read_cryoppp(root)  # 512² JPGs: the 1024² coordinates fall off them without original_shape
    entry = read_cryoppp(root, original_shape=SHAPE)
    assert entry.shapes[MICS[0]] == (512, 512) and entry.scale(MICS[0]) == (0.5, 0.5)
    lite = MicrographBoxDataset.from_cryoppp(entry)
    full = MicrographBoxDataset.from_cryoppp(read_cryoppp(cryoppp_full[0]))
    img_l, tgt_l = lite[0]
    img_f, tgt_f = full[0]
    assert img_l.shape == (1, 512, 512) and img_f.shape == (1, 1024, 1024)
    np.testing.assert_allclose(tgt_l["boxes"].numpy(), (tgt_f["boxes"].numpy() + 0.5) / 2 - 0.5, atol=1e-4)
    # the JPG is the 2×2-binned real micrograph (JPEG at quality 95 smooths the pixel noise,
    # so compare at 8×8 binning) and is not flipped
    binned = img_f[0].numpy().reshape(128, 8, 128, 8).mean(axis=(1, 3))
    small = img_l[0].numpy().reshape(128, 4, 128, 4).mean(axis=(1, 3))
    assert np.corrcoef(binned.ravel(), small.ravel())[0, 1] > 0.99
    assert np.corrcoef(binned.ravel(), small[::-1].ravel())[0, 1] < 0.5
    truth = built["particles"]
    assert len(tgt_l["boxes"]) == int((truth["micrograph"] == MICS[0]).sum())


def test_stacks_import_into_the_store_in_csv_order(cryoppp_full: tuple[Path, dict[str, Any]],
                                                   tmp_path: Path) -> None:
    from cryoset.io.mrc import read_stack
    from cryoset.learn.particles import StoreParticleDataset
    from cryoset.store.dataset import ParticleStore

    root, built = cryoppp_full
    entry = read_cryoppp(root)
    store = ParticleStore.create(tmp_path / "store")
    n = import_cryoppp_stacks(entry, store, "EMPIAR-10028")
    assert n == len(built["particles"])
    ds = StoreParticleDataset(store, store.select())
    stack = np.asarray(read_stack(root / "particles_stack" / f"{MICS[0]}.mrc").data[:])
    for i in (0, 7):
        image, ann = ds[i]
        ref = stack[i]
        assert image.shape == (1, 64, 64)
        scale = (np.percentile(ref, 99.95) - np.percentile(ref, 0.05)) / 255
        inside = (ref > np.percentile(ref, 0.05)) & (ref < np.percentile(ref, 99.95))
        assert np.max(np.abs(image[0].numpy() - ref)[inside]) <= scale / 2 + 1e-3
        assert ann["x_px"] == pytest.approx(built["particles"]["x_px"].iloc[i], abs=1e-4)  # float32 in the store
    # the particle really is at the box centre: the stack equals the micrograph crop
    mic = built["images"][MICS[0]]
    x, y = (round(v) for v in built["particles"][["x_px", "y_px"]].iloc[7])
    if 32 <= x < 1024 - 32 and 32 <= y < 1024 - 32:
        np.testing.assert_array_equal(stack[7], mic[y - 32 : y + 32, x - 32 : x + 32])


def test_stack_count_mismatch_is_an_input_error(cryoppp_full: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from cryoset.io.mrc import write_stack
    from cryoset.store.dataset import ParticleStore

    root, _ = cryoppp_full
    copy = tmp_path / "10028"
    shutil.copytree(root, copy)
    write_stack(copy / "particles_stack" / f"{MICS[1]}.mrc", np.zeros((2, 64, 64), np.float32), 5.36)
    with pytest.raises(InputError, match="holds 2 particle images"):
        import_cryoppp_stacks(read_cryoppp(copy), ParticleStore.create(tmp_path / "s"), "x")


def test_real_cryoppp_truth_reads_in_the_picker_frame_and_reexports_byte_identically(tmp_path: Path) -> None:
    from scipy.spatial import cKDTree

    from cryoset.io.coords import read_coords
    from cryoset.testing import require_shared_data

    d = require_shared_data("coordinates", "empiar_10017")
    name = "Falcon_2012_06_12-14_33_35_0"
    src = d / f"cryoppp_groundtruth_{name}.csv"
    entry_dir = tmp_path / "10017"
    (entry_dir / "ground_truth" / "particle_coordinates").mkdir(parents=True)
    shutil.copyfile(src, entry_dir / "ground_truth" / "particle_coordinates" / f"{name}.csv")
    with pytest.raises(InputError, match="original_shape"):
        read_cryoppp(entry_dir)  # no micrograph to take the height from
    entry = read_cryoppp(entry_dir, original_shape=(4096, 4096))
    assert len(entry.particles) == 629 and set(entry.particles["micrograph"]) == {name}
    # independent picker (crYOLO, RELION STAR, no flip) agrees with the un-flipped truth only
    cryolo = read_coords(d / f"cassper_paper_crYOLO_{name}.star")
    tree = cKDTree(cryolo[["x_px", "y_px"]].to_numpy())
    xy = entry.particles[["x_px", "y_px"]].to_numpy()
    recall = np.mean(tree.query(xy)[0] <= 54)
    flipped_back = np.column_stack([xy[:, 0], 4095 - xy[:, 1]])
    assert recall > 0.9 and np.mean(tree.query(flipped_back)[0] <= 54) < 0.6
    out = write_cryoppp(entry, tmp_path / "out" / "10017")
    assert (out / "ground_truth" / "particle_coordinates" / f"{name}.csv").read_bytes() == src.read_bytes()
