"""Files in, files out: one real map end to end, model-less maps, splits, lists, Zarr store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cryoset.errors import InputError
from cryoset.io.mrc import read_map, validate_mrc
from cryoset.io.structure import read_structure
from cryoset.maps.dataset import (
    LABEL_FILES,
    NORMALISED_NAME,
    PrepareOptions,
    load_model,
    split_dataset,
)
from cryoset.maps.labels import voxel_indices
from cryoset.maps.validate import ca_round_trip
from cryoset.testing import require_shared_data
from cryoset.workflows.maps import (
    build_dataset,
    prepare_map,
    read_map_list,
    read_subgrids,
    stitch_zarr,
    write_subgrids,
)


@pytest.fixture(scope="module")
def emd_5168(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = require_shared_data("maps", "emd_5168")
    out = tmp_path_factory.mktemp("emd_5168")
    row = prepare_map(folder / "emd_5168.map", out, folder / "3MFP.pdb",
                      meta={"emdb_id": "EMD-5168", "pdb_id": "3MFP", "resolution_a": 6.6})
    return out, row


@pytest.mark.slow
def test_emd_5168_end_to_end_products_are_valid(emd_5168: tuple[Path, dict[str, Any]]) -> None:
    out, row = emd_5168
    for name in [NORMALISED_NAME, *LABEL_FILES.values()]:
        assert validate_mrc(out / name) == [], name
        assert (out / f"{name}.provenance.json").is_file()
    norm = read_map(out / NORMALISED_NAME)
    assert norm.data.shape == (174, 174, 174)  # 100 voxels of 1.742 Å → 174 of 1 Å
    assert norm.voxel_size_a == pytest.approx((1.0, 1.0, 1.0))
    assert norm.origin_a == pytest.approx((-87.1, -87.1, -87.1), abs=1e-4)  # voxel 0 keeps its place
    assert norm.data.min() >= 0.0 and norm.data.max() == 1.0
    assert row["secondary_source"] == "dssp" and row["mrc_valid"] and row["normalised_ok"]
    labels = {k: read_map(out / f).data for k, f in LABEL_FILES.items()}
    assert set(np.unique(labels["backbone"])) == {0, 1, 2, 3}
    assert set(np.unique(labels["secondary"])) == {0, 1, 2, 3}
    assert np.unique(labels["amino"]).max() <= 20
    np.testing.assert_array_equal(labels["ca"] != 0, labels["backbone"] == 1)
    np.testing.assert_array_equal(labels["ca"] != 0, labels["amino"] != 0)


@pytest.mark.slow
def test_emd_5168_round_trip_from_the_written_files(emd_5168: tuple[Path, dict[str, Any]]) -> None:
    """Every Cα inside the map is recovered exactly from the label file; outside ones are counted."""
    out, row = emd_5168
    ca_map = read_map(out / LABEL_FILES["ca"])
    model = read_structure(require_shared_data("maps", "emd_5168", "3MFP.pdb"))
    ca = model.atoms[model.atoms["atom_name"] == "CA"][["x_a", "y_a", "z_a"]].to_numpy()
    trip = ca_round_trip(ca_map.data, ca, ca_map.voxel_size_a, ca_map.origin_a)
    assert trip["exact_fraction"] == 1.0
    assert trip["n_ca_recovered"] == trip["n_ca_inside"] == trip["n_labelled"] == row["n_ca_labelled"]
    # independent count of backbone atoms outside the 1 Å grid (3MFP reaches z = -91.7 Å)
    bb = model.atoms[model.atoms["atom_name"].isin(["N", "CA", "C"])]
    idx = voxel_indices(bb[["x_a", "y_a", "z_a"]].to_numpy(), ca_map.origin_a, ca_map.voxel_size_a)
    outside = int((~np.all((idx >= 0) & (idx < 174), axis=1)).sum())
    assert row["n_atoms_outside"] == outside == 7
    report = json.loads((out / "labels_report.json").read_text())
    assert report["labels"]["n_outside"] == {"CA": 2, "N": 3, "C": 2}
    assert report["labels"]["n_collisions"]["ca"] == 0


@pytest.mark.slow
def test_emd_5168_subgrids_stitch_back_exactly(emd_5168: tuple[Path, dict[str, Any]]) -> None:
    out, _ = emd_5168
    density, attrs = stitch_zarr(out / "subgrids.zarr", "density")
    np.testing.assert_array_equal(density, read_map(out / NORMALISED_NAME).data)
    ca, _ = stitch_zarr(out / "subgrids.zarr", "ca")
    np.testing.assert_array_equal(ca.astype(np.int8), read_map(out / LABEL_FILES["ca"]).data.astype(np.int8))
    assert attrs["box"] == 32 and attrs["overlap"] == 6 and attrs["core"] == 20
    assert attrs["provenance"]["command"] == "map prepare"
    blocks, _ = read_subgrids(out / "subgrids.zarr", "secondary")
    assert blocks.shape == (9 * 9 * 9, 32, 32, 32) and blocks.dtype == np.uint8


def test_helix_sheet_records_are_used_when_present() -> None:
    loaded = load_model(require_shared_data("structures", "1J6Z.pdb"))
    assert loaded.source == "file"
    letters = "".join(loaded.secondary["dssp"])
    assert set(letters) == {"H", "E", "-"} and letters.count("H") > 80


@pytest.mark.parametrize("name", ["emd_1832.map", "emd_5625.map"])
def test_model_less_maps_get_map_products_only(tmp_path: Path, name: str) -> None:
    path = require_shared_data("maps", "model_less", name)
    row = prepare_map(path, tmp_path, options=PrepareOptions(voxel_size_a=3.0))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".json")) == [
        NORMALISED_NAME, "subgrids.zarr"]
    assert row["mrc_valid"] and row["normalised_ok"] and "n_ca" not in row
    src = read_map(path)
    norm = read_map(tmp_path / NORMALISED_NAME)
    assert norm.data.shape == tuple(round(n * v / 3.0) for n, v in zip(src.data.shape, src.voxel_size_a, strict=True))


def test_tiny_map_emd_3197(tmp_path: Path) -> None:
    path = require_shared_data("maps", "emd_3197", "EMD-3197.map")
    row = prepare_map(path, tmp_path, options=PrepareOptions(voxel_size_a=2.0, subgrids=False))
    assert (row["shape_z"], row["shape_y"], row["shape_x"]) == (114, 114, 114)
    assert row["mrc_valid"]


def test_split_is_stratified_seeded_and_keeps_the_test_list() -> None:
    res = np.r_[np.full(50, 1.5), np.full(200, 2.5), np.full(100, 3.5), np.full(10, np.nan)]
    table = pd.DataFrame({"emdb_id": [f"EMD-{k}" for k in range(res.size)], "resolution_a": res})
    test_ids = ["EMD-0", "EMD-60", "EMD-355"]
    split = split_dataset(table, validation_fraction=0.1, seed=7, test_ids=test_ids)
    assert split[table["emdb_id"].isin(test_ids)].eq("test").all()
    assert (split == "test").sum() == 3
    per_bin = pd.crosstab(np.nan_to_num(res, nan=-1), split)
    assert per_bin.loc[1.5, "validation"] == 5 and per_bin.loc[2.5, "validation"] == 20
    assert per_bin.loc[3.5, "validation"] == 10 and per_bin.loc[-1.0, "validation"] == 1
    pd.testing.assert_series_equal(split, split_dataset(table, validation_fraction=0.1, seed=7, test_ids=test_ids))
    assert not split.equals(split_dataset(table, validation_fraction=0.1, seed=8, test_ids=test_ids))


def test_map_list_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,path\nx,y\n")
    with pytest.raises(InputError, match="lacks column"):
        read_map_list(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("emdb_id,map\nEMD-1,a.map\nEMD-1,b.map\n")
    with pytest.raises(InputError, match="twice"):
        read_map_list(dup)
    good = tmp_path / "good.csv"
    good.write_text("# comment\nemdb_id,map,resolution_a\nEMD-1,sub/a.map,3.1\n")
    table = read_map_list(good)
    assert table.loc[0, "map"] == str(tmp_path / "sub" / "a.map") and table.loc[0, "resolution_a"] == 3.1
    assert table.loc[0, "model"] == ""


def test_zarr_store_round_trip_and_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    vol = rng.random((23, 41, 7)).astype(np.float32)
    lab = (vol > 0.5).astype(np.uint8)
    write_subgrids(tmp_path / "s.zarr", {"density": vol, "mask": lab}, box=16, overlap=4, attributes={"k": 1})
    back, attrs = stitch_zarr(tmp_path / "s.zarr", "density")
    np.testing.assert_array_equal(back, vol)
    np.testing.assert_array_equal(stitch_zarr(tmp_path / "s.zarr", "mask")[0], lab)
    assert attrs["k"] == 1 and attrs["map_shape"] == [23, 41, 7]
    with pytest.raises(InputError, match="no array"):
        read_subgrids(tmp_path / "s.zarr", "nope")
    with pytest.raises(ValueError, match="one shape"):
        write_subgrids(tmp_path / "t.zarr", {"a": vol, "b": vol[:3]})


@pytest.mark.slow
def test_build_runs_a_list_in_a_process_pool(tmp_path: Path) -> None:
    maps = require_shared_data("maps")
    listing = tmp_path / "maps.csv"
    listing.write_text(
        "emdb_id,map,model,resolution_a,pdb_id\n"
        f"EMD-3197,{maps / 'emd_3197' / 'EMD-3197.map'},,20.0,\n"
        f"EMD-1832,{maps / 'model_less' / 'emd_1832.map'},,12.0,\n"
        f"EMD-5625,{maps / 'model_less' / 'emd_5625.map'},,8.0,\n"
        f"EMD-0000,{tmp_path / 'missing.map'},,3.0,\n"
    )
    seen: list[str] = []
    table = build_dataset(listing, tmp_path / "out", options=PrepareOptions(voxel_size_a=4.0), workers=2,
                          test_ids=["EMD-1832"], on_done=lambda r: seen.append(r["emdb_id"]))
    assert sorted(seen) == sorted(table["emdb_id"]) and len(seen) == 4
    assert table["status"].tolist() == ["ok", "ok", "ok", "failed"]
    assert "no such file" in table.loc[3, "error"]
    assert table.loc[1, "split"] == "test"
    parquet = pq.read_table(tmp_path / "out" / "metadata.parquet")
    prov = json.loads(parquet.schema.metadata[b"cryoset_provenance"])
    assert prov["command"] == "map build" and prov["parameters"]["workers"] == 2
    csv = pd.read_csv(tmp_path / "out" / "metadata.csv")
    assert list(csv["emdb_id"]) == ["EMD-3197", "EMD-1832", "EMD-5625", "EMD-0000"]
    assert {"voxel_size_x_a", "resolution_a", "split", "status"} <= set(csv.columns)
    assert (tmp_path / "out" / "EMD-5625" / NORMALISED_NAME).is_file()


def test_map_without_positive_density_is_an_input_error(tmp_path: Path) -> None:
    from cryoset.io.mrc import write_map

    path = write_map(tmp_path / "neg.mrc", -np.ones((8, 8, 8), np.float32), 1.0)
    with pytest.raises(InputError, match="no positive value"):
        prepare_map(path, tmp_path / "out", options=PrepareOptions(subgrids=False))


def _pickle_payload_store(path: Path, marker: Path) -> Path:
    """A Zarr v2 sub-grid store whose density array declares the pickle filter; its one chunk
    is a pickle that creates ``marker`` when unpickled."""
    import pickle

    class _Payload:
        def __reduce__(self) -> tuple[Any, tuple[str, str]]:
            return (open, (str(marker), "w"))

    path.mkdir()
    (path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (path / ".zattrs").write_text(json.dumps({"map_shape": [8, 8, 8], "box": 8, "overlap": 2}))
    (path / "density").mkdir()
    (path / "density" / ".zarray").write_text(json.dumps({
        "shape": [1, 8, 8, 8], "chunks": [1, 8, 8, 8], "dtype": "<f4", "fill_value": 0.0, "order": "C",
        "filters": [{"id": "pickle", "protocol": 5}], "compressor": None, "dimension_separator": ".",
        "zarr_format": 2}))
    (path / "density" / "0.0.0.0").write_bytes(pickle.dumps(_Payload()))
    return path


def test_a_store_with_an_unpickling_codec_is_refused_before_any_chunk_is_read(tmp_path: Path) -> None:
    """Issue #16: ``map stitch`` on a pickle-codec Zarr (reading it could run code)."""
    marker = tmp_path / "pwned"
    store = _pickle_payload_store(tmp_path / "evil.zarr", marker)
    with pytest.raises(InputError, match=r"density/\.zarray: declares the codec 'pickle', which unpickles"):
        stitch_zarr(store, "density")
    assert not marker.exists()


def test_nan_or_corrupt_subgrids_are_input_errors(tmp_path: Path) -> None:
    vol = np.full((12, 12, 12), np.nan, np.float32)
    write_subgrids(tmp_path / "nan.zarr", {"density": vol}, box=8, overlap=2)
    with pytest.raises(InputError, match=r"array .density. holds \d+ NaN or infinite values"):
        read_subgrids(tmp_path / "nan.zarr")
    write_subgrids(tmp_path / "cut.zarr", {"density": np.ones((12, 12, 12), np.float32)}, box=8, overlap=2)
    chunk = next(p for p in sorted((tmp_path / "cut.zarr" / "density").rglob("*"))
                 if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:40])
    with pytest.raises(InputError, match="a chunk is truncated or corrupt"):
        read_subgrids(tmp_path / "cut.zarr")


def test_prepare_checks_everything_before_writing_and_keeps_other_files(tmp_path: Path) -> None:
    """Issue #16: map prepare wrote into --out before reading the model; now it writes into a
    temporary folder, moved into --out only when complete (other files there are kept)."""
    from cryoset.io.mrc import write_map

    zz = np.mgrid[:12, :12, :12][0]
    write_map(tmp_path / "m.mrc", (1.0 + zz).astype(np.float32), 2.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    bad = tmp_path / "far.pdb"
    bad.write_text("ATOM      1  CA  GLY A   1     500.000 500.000 500.000  1.00  0.00           C\nEND\n")
    with pytest.raises(InputError, match="none of the 1 backbone atoms"):
        prepare_map(tmp_path / "m.mrc", out, bad, options=PrepareOptions(box=8, overlap=2))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.pdb", "m.mrc", "out"]
    prepare_map(tmp_path / "m.mrc", out, None, options=PrepareOptions(box=8, overlap=2))
    assert {"notes.txt", NORMALISED_NAME, "subgrids.zarr", "labels_report.json"} <= {p.name for p in out.iterdir()}


def _small_model(path: Path, origin_xyz: tuple[float, float, float]) -> None:
    """Eight residues of N/CA/C/O at fractional positions inside a 16 Å cube from ``origin_xyz``."""
    rng = np.random.default_rng(3)
    names = ("ALA", "GLY", "LEU", "SER", "MSE", "LYS", "VAL", "TRP")
    lines, serial = [], 1
    for r, name in enumerate(names, start=1):
        base = rng.uniform(2.3, 13.6, 3) + np.asarray(origin_xyz)
        for atom, off in (("N", (-1.2, 0.3, 0.1)), ("CA", (0, 0, 0)), ("C", (1.2, 0.6, -0.2)), ("O", (1.4, 1.8, 0))):
            x, y, z = base + np.asarray(off)
            lines.append(f"ATOM  {serial:5d}  {atom:<3} {name} A{r:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00"
                         f"           {atom[0]}")
            serial += 1
    path.write_text("\n".join([*lines, "END", ""]))


def test_prepare_label_rule_gives_the_nearest_or_the_formula1_labels(tmp_path: Path) -> None:
    """Issue #24: ``label_rule`` reaches ``label_maps``; cryo2struct = ``label_maps(rule="cryo2struct")``."""
    from cryoset.io.mrc import write_map
    from cryoset.maps.labels import label_maps

    origin_xyz = (2.0, -3.0, 5.0)
    zz = np.mgrid[:16, :16, :16][0]
    write_map(tmp_path / "m.mrc", (1.0 + zz).astype(np.float32), 1.0, origin_xyz[::-1])
    _small_model(tmp_path / "m.pdb", origin_xyz)
    loaded = load_model(tmp_path / "m.pdb")
    got: dict[str, dict[str, np.ndarray]] = {}
    for rule in ("nearest", "cryo2struct"):
        out = tmp_path / rule
        row = prepare_map(tmp_path / "m.mrc", out, tmp_path / "m.pdb",
                          options=PrepareOptions(subgrids=False, label_rule=rule))  # type: ignore[arg-type]
        assert row["mrc_valid"] and row["n_ca_labelled"] == 8
        norm = read_map(out / NORMALISED_NAME)
        want = label_maps(loaded.atoms, norm.data.shape, norm.voxel_size_a, norm.origin_a,
                          secondary=loaded.secondary, secondary_source=loaded.source, rule=rule)
        got[rule] = {name: read_map(out / LABEL_FILES[name]).data.astype(np.uint8) for name in LABEL_FILES}
        for name, vol in want.volumes().items():
            assert np.array_equal(got[rule][name], vol), (rule, name)
        assert json.loads((out / "labels_report.json").read_text())["labels"]["rule"] == rule
    assert PrepareOptions().label_rule == "nearest"
    assert not np.array_equal(got["nearest"]["backbone"], got["cryo2struct"]["backbone"])
