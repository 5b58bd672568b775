"""cryoPANDA's published layout in both directions (issue #24): files written the way the authors'
code writes them import under our column names, query with our names, export back identical,
and a store of ours survives ours → theirs → ours with every annotation."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from cryoset.datasets.cryopanda import (
    CRYOPANDA_KEYS,
    export_cryopanda,
    import_cryopanda,
    read_probe_selection,
    resize_minmax_uint8,
)
from cryoset.errors import InputError
from cryoset.learn.particles import StoreParticleDataset
from cryoset.store.dataset import ParticleStore
from cryoset.store.schema import FIELD_TYPES

from .builders import (
    PANDA_KEYS_48,
    PANDA_MIC_KEYS,
    panda_annotations,
    panda_images,
    write_panda_file,
)

N = 10


@pytest.fixture()
def theirs(tmp_path: Path) -> Path:
    return write_panda_file(tmp_path / "10004_particles.h5", panda_images(N), panda_annotations(N))


def _raw(path: Path) -> tuple[bytes, dict[str, list[object]], np.ndarray, list[str], dict[str, object]]:
    with h5py.File(path, "r") as h5:
        text = h5["annotations"][()]
        return text, json.loads(text), np.asarray(h5["images"]), list(h5.keys()), dict(h5.attrs)


def test_every_published_key_has_a_schema_column_with_our_unit_suffix() -> None:
    assert [k for k, _, _ in CRYOPANDA_KEYS] == PANDA_KEYS_48
    columns = [c for _, c, _ in CRYOPANDA_KEYS]
    assert len(set(columns)) == 48 and all(c in FIELD_TYPES for c in columns)
    for col in ("uid", "ncc_score", "class_resolution_a", "alignment_error_3d", "coordinate_y_transposed",
                "dose_e_per_a2", "image_size_px", "reconstruction_resolution_a", "emd_resolution_a",
                "molecular_weight_kda", "subunits", "max_diameter_a", "symmetry", "dna", "rna", "protein_class",
                "sample_name", "number_of_particles", "data_source_type", "bad_reconstruction", "split"):
        assert col in FIELD_TYPES, col


def test_import_maps_the_48_keys_and_queries_with_our_names(theirs: Path, tmp_path: Path) -> None:
    frame = panda_annotations(N)
    store = ParticleStore.create(tmp_path / "store")
    assert import_cryopanda(theirs, store, block_particles=3) == N
    assert store.experiments() == ["EMPIAR-10004"]
    ann = store.annotations("EMPIAR-10004")
    assert set(PANDA_KEYS_48) & set(ann.columns) == {"uid"}  # one vocabulary: ours (uid is both)
    q = store.query("SELECT particle_index, defocus_u_a, defocus_v_a, class_resolution_a, x_px, y_px, "
                    "coordinate_y_transposed, empiar_id, emdb_id, pdb_id, pixel_size_a, box_pixel_size_a, "
                    "image_size_px, molecular_weight_kda, max_diameter_a, symmetry, protein_class, uid, dna "
                    "FROM particles WHERE protein_class = 'Viral Systems' AND symmetry = 'C3' "
                    "ORDER BY particle_index")
    assert len(q) == N
    np.testing.assert_allclose(q["defocus_u_a"], frame["DefocusU"], rtol=1e-7)
    np.testing.assert_allclose(q["x_px"], frame["CoordinateX"], rtol=1e-7)
    np.testing.assert_allclose(q["coordinate_y_transposed"], 4096 - frame["CoordinateY"], rtol=1e-7)
    assert q["class_resolution_a"].isna().tolist() == frame["ClassResolution"].isna().tolist()
    assert set(q["empiar_id"]) == {"EMPIAR-10004"} and set(q["emdb_id"]) == {"EMD-3332"}
    assert q["pdb_id"].isna().all()
    # the stored image is 224 px: its pixel size is ImagePixelSize · ImageSize / 224
    np.testing.assert_allclose(q["pixel_size_a"], 1.08 * 320 / 224, rtol=1e-6)
    np.testing.assert_allclose(q["box_pixel_size_a"], 1.08, rtol=1e-7)
    assert set(q["image_size_px"]) == {320} and set(q["dna"]) == {0}
    assert q["uid"].tolist() == frame["uid"].tolist()  # exact 18-digit integers
    # the images are the published bytes
    _, _, images, _, _ = _raw(theirs)
    stored, off, sc = store.read_stored("EMPIAR-10004", np.arange(N))
    assert np.array_equal(stored, images) and set(off) == {0.0} and set(sc) == {1.0}


@pytest.mark.parametrize("from_micrographs", [True, False])
def test_theirs_ours_theirs_is_byte_identical(tmp_path: Path, from_micrographs: bool) -> None:
    frame = panda_annotations(N, from_micrographs=from_micrographs)
    assert len(frame.columns) == (48 if from_micrographs else 38)
    src = write_panda_file(tmp_path / "10004_particles.h5", panda_images(N), frame)
    store = ParticleStore.create(tmp_path / "store")
    import_cryopanda(src, store)
    (out,) = export_cryopanda(store, store.select(), tmp_path / "out")
    assert out.name == "10004_particles.h5"
    text_in, ann_in, img_in, keys_in, attrs_in = _raw(src)
    text_out, ann_out, img_out, keys_out, attrs_out = _raw(out)
    assert keys_out == keys_in == ["annotations", "images"] and attrs_out == attrs_in == {}
    assert list(ann_out) == list(ann_in)  # key names and order
    assert text_out == text_in  # the JSON string, byte for byte
    assert img_out.dtype == np.uint8 and np.array_equal(img_out, img_in)


def test_id_forms_and_value_kinds_are_kept(tmp_path: Path) -> None:
    frame = panda_annotations(4)
    frame["EMPIAR_ID"] = 10004  # a number this time
    frame["PDB_ID"] = "5a20"
    frame["DNA"] = [True, False, True, False]
    src = write_panda_file(tmp_path / "10004_particles.h5", panda_images(4), frame)
    store = ParticleStore.create(tmp_path / "store")
    import_cryopanda(src, store)
    ann = store.annotations("EMPIAR-10004")
    assert set(ann["empiar_id"]) == {"EMPIAR-10004"} and set(ann["pdb_id"]) == {"5A20"}
    assert ann["dna"].tolist() == [1, 0, 1, 0]
    (out,) = export_cryopanda(store, store.select(), tmp_path / "out")
    assert _raw(out)[0] == _raw(src)[0]


def test_values_beyond_float32_come_back_within_float32_rounding(tmp_path: Path) -> None:
    frame = panda_annotations(4)
    frame["DefocusU"] = [12345.678912, 23456.789123, 9876.5432109, 15000.000001]
    src = write_panda_file(tmp_path / "10004_particles.h5", panda_images(4), frame)
    store = ParticleStore.create(tmp_path / "store")
    import_cryopanda(src, store)
    (out,) = export_cryopanda(store, store.select(), tmp_path / "out")
    ann_out = _raw(out)[1]
    np.testing.assert_allclose(ann_out["DefocusU"], frame["DefocusU"], rtol=2**-24)
    assert ann_out["AngleRot"] == frame["AngleRot"].tolist()  # ≤ 7 significant digits: exact


def test_ours_theirs_ours_keeps_every_annotation(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n, box = 12, 64
    images = panda_images(n, box=box, seed=3)
    ours = pd.DataFrame({
        "micrograph": [f"mic_{i // 4}.mrc" for i in range(n)], "x_px": np.round(rng.uniform(0, 1000, n), 2),
        "y_px": np.round(rng.uniform(0, 1000, n), 2), "score": np.round(rng.uniform(0, 1, n), 4),
        "diameter_px": 40.0, "defocus_u_a": np.round(rng.uniform(1e4, 2e4, n), 1), "defocus_v_a": 15000.5,
        "defocus_angle_deg": 12.5, "pixel_size_a": 1.31, "voltage_kv": 300.0, "cs_mm": 2.7,
        "amplitude_contrast": 0.07, "class_number": rng.integers(1, 5, n).astype(np.int32),
        "psi_deg": np.round(rng.uniform(-180, 180, n), 2), "max_prob": 0.5, "ctf_phase_flipped": np.int8(1),
        "molecular_weight_kda": 150.0, "symmetry": "D2", "protein_class": "Enzymes", "split": "train"})
    store = ParticleStore.create(tmp_path / "ours")
    store.add_experiment("EMPIAR-10076", images, ours)
    (out,) = export_cryopanda(store, store.select(), tmp_path / "theirs")
    _, ann, img, keys, attrs = _raw(out)
    assert keys == ["annotations", "images"] and attrs == {}
    assert list(ann)[:48] == PANDA_KEYS_48  # their key names in their order, then ours
    assert {"score", "diameter_px", "max_prob", "ctf_phase_flipped", "split"} <= set(list(ann)[48:])
    assert ann["ImageSize"] == [box] * n and ann["ImagePixelSize"] == [1.31] * n
    assert ann["EMPIAR_ID"] == ["10076"] * n and ann["DefocusV"] == [15000.5] * n
    # images: the published transform of the stored images (torch, antialiased bilinear, min-max)
    decoded = store.read_images("EMPIAR-10076", np.arange(n))
    t = torch.nn.functional.interpolate(torch.from_numpy(decoded)[:, None], size=(224, 224), mode="bilinear",
                                        align_corners=False, antialias=True)[:, 0]
    ref = torch.round((t - t.amin(dim=(1, 2), keepdim=True))
                      / (t.amax(dim=(1, 2), keepdim=True) - t.amin(dim=(1, 2), keepdim=True) + 1e-8) * 255)
    assert np.array_equal(img, ref.to(torch.uint8).numpy())
    assert img.shape == (n, 224, 224) and (img.min(axis=(1, 2)) == 0).all() and (img.max(axis=(1, 2)) == 255).all()
    back = ParticleStore.create(tmp_path / "back")
    import_cryopanda(out, back)
    again = back.annotations("EMPIAR-10076")
    for col in ours.columns:
        if col == "pixel_size_a":  # now that of the 224-px image; the box's is kept beside it
            np.testing.assert_allclose(again["box_pixel_size_a"], ours[col], rtol=1e-7)
            np.testing.assert_allclose(again[col], 1.31 * box / 224, rtol=1e-6)
        elif not pd.api.types.is_numeric_dtype(ours[col].dtype):
            assert again[col].tolist() == ours[col].tolist(), col
        else:
            np.testing.assert_allclose(again[col].astype(float), ours[col].astype(float), rtol=1e-7, err_msg=col)
    assert set(again["image_size_px"]) == {box}


def test_extras_can_be_left_out_for_the_strict_published_key_set(tmp_path: Path) -> None:
    store = ParticleStore.create(tmp_path / "ours")
    store.add_experiment("Kastritis_MIPS", panda_images(3, box=32),
                         pd.DataFrame({"score": [0.1, 0.2, 0.3], "pixel_size_a": 2.0}))
    (out,) = export_cryopanda(store, store.select(), tmp_path / "theirs", extras=False)
    assert out.name == "Kastritis_MIPS_particles.h5"
    ann = _raw(out)[1]
    assert list(ann) == [k for k in PANDA_KEYS_48 if k not in PANDA_MIC_KEYS]  # the 38 keys
    assert ann["uid"] == [None] * 3 and ann["ImageSize"] == [32] * 3


def test_resize_minmax_matches_the_published_formula_without_resize() -> None:
    x = np.random.default_rng(0).normal(size=(2, 224, 224)).astype(np.float32)
    u8 = resize_minmax_uint8(x)
    mn, mx = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    assert np.array_equal(u8, np.round((x - mn) / (mx - mn + np.float32(1e-8)) * 255).astype(np.uint8))


def test_probe_parquet_files_are_store_selections(theirs: Path, tmp_path: Path) -> None:
    store = ParticleStore.create(tmp_path / "store")
    import_cryopanda(theirs, store)
    probe = pd.DataFrame({"FileIndex": [0, 0, 0], "FileName": ["10004_particles.h5"] * 3,
                          "FileParticleIndex": [7, 2, 5], "BinIndex": [1, 0, 3],
                          "BinCenter": [15000.0, 5000.0, 35000.0], "AnnotationValue": [14000.5, 3000.0, 36000.0]})
    probe.to_parquet(tmp_path / "probe.parquet")
    sel = read_probe_selection(tmp_path / "probe.parquet", store)
    assert sel.table["experiment_id"].tolist() == ["EMPIAR-10004"] * 3
    assert sel.table["particle_index"].tolist() == [7, 2, 5] and sel.table["bin_index"].tolist() == [1, 0, 3]
    ds = StoreParticleDataset(store, sel)
    image, _ = ds[0]
    with h5py.File(theirs, "r") as h5:
        assert np.array_equal(image[0].numpy(), h5["images"][7].astype(np.float32))
    probe.loc[0, "FileParticleIndex"] = N
    probe.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="out of range"):
        read_probe_selection(tmp_path / "bad.parquet", store)
    probe.loc[0, "FileName"] = "10005_particles.h5"
    probe.to_parquet(tmp_path / "bad2.parquet")
    with pytest.raises(InputError, match="not in the store"):
        read_probe_selection(tmp_path / "bad2.parquet", store)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(InputError, match="not a readable Parquet"):
        read_probe_selection(tmp_path / "junk.parquet")


def test_import_streams_with_memory_bounded_by_the_block(tmp_path: Path) -> None:
    """Peak traced memory of an import grows with the annotations, not with the images (the
    benchmark measures it on large files: benchmarks/bench_store.py)."""
    peaks = {}
    for n in (100, 500):
        images = np.random.default_rng(0).integers(0, 256, (n, 224, 224), dtype=np.uint8)
        path = tmp_path / f"{n}" / "10004_particles.h5"
        path.parent.mkdir()
        with h5py.File(path, "w") as h5:
            h5.create_dataset("images", data=images)
            h5.create_dataset("annotations", data=json.dumps(panda_annotations(n).to_dict(orient="list")))
        del images
        store = ParticleStore.create(tmp_path / f"s{n}", chunk_particles=16)
        tracemalloc.start()
        import_cryopanda(path, store, block_particles=16)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    extra_images = 400 * 224 * 224  # 20 MB more images in the larger file
    assert peaks[500] - peaks[100] < extra_images / 5, (peaks, extra_images)
