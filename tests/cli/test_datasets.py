"""``cryoset datasets``: list/info, download through a mock Zenodo, summary, import, crosscheck."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest

from cryoset.archives.testserver import Route, serve
from cryoset.io.cryovirusdb import write_cryovirusdb
from cryoset.io.mrc import write_map
from cryoset.maps.dataset import LABEL_FILES, NORMALISED_NAME


def _zenodo(record: str, files: dict[str, bytes]) -> tuple[dict[str, Route], Any]:
    routes = {f"/api/records/{record}/files/{k}/content": Route(body=v) for k, v in files.items()}
    api = Route(content_type="application/json")
    routes[f"/api/records/{record}"] = api

    def fill(base: str) -> None:
        api.body = json.dumps({"id": int(record), "files": [
            {"key": k, "size": len(v), "checksum": "md5:" + hashlib.md5(v).hexdigest(),
             "links": {"self": f"{base}/api/records/{record}/files/{k}/content"}} for k, v in files.items()]}).encode()

    return routes, fill


def _cryoppp_zip(tmp_path: Path) -> tuple[bytes, pd.DataFrame]:
    from PIL import Image

    root = tmp_path / "build" / "10028"
    (root / "micrographs").mkdir(parents=True)
    Image.fromarray(np.full((60, 80), 100, np.uint8)).save(root / "micrographs" / "m1.jpg")
    picks = pd.DataFrame({"x_px": [10.0, 40.5], "y_px": [5.0, 50.0], "diameter_px": [8.0, 8.0]})
    write_cryovirusdb(root / "ground_truth" / "particle_coordinates" / "m1.csv", picks, micrograph_shape=(60, 80),
                      variant="per_micrograph")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                zf.write(f, f"10028/{f.relative_to(root).as_posix()}")
    return buf.getvalue(), picks


def test_list_and_info_say_what_is_known(run_cli: Any) -> None:
    code, out, _ = run_cli("datasets", "list")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == [
        "cryovirusdb", "cryoppp", "cryo2structdata", "cryopanda"]
    code, out, _ = run_cli("datasets", "info", "cryo2structdata")
    assert code == 0
    for doi in ("FCDG0W", "CGUENL", "2GSSC9", "JMN60H", "SXNYRE", "DTV4JF"):
        assert f"doi:10.7910/DVN/{doi}" in out
    code, out, _ = run_cli("datasets", "info", "cryovirusdb")
    assert "zenodo" in out and "10397742" in out and "calla.rnet.missouri.edu/CryoVirusDB/" in out
    code, out, _ = run_cli("datasets", "info", "cryoppp")
    assert code == 0 and "unknown record id" in out and "not known:" in out and "--record" in out
    code, out, _ = run_cli("datasets", "info", "cryopanda")
    assert code == 0 and "sciencedb doi:10.57760/sciencedb.27164" in out and "not known:" in out
    code, _, err = run_cli("datasets", "info", "nope")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_download_summary_and_corrupt_archive(run_cli: Any, tmp_path: Path) -> None:
    good, picks = _cryoppp_zip(tmp_path)
    routes, fill = _zenodo("4242", {"10028.zip": good, "10093.zip": good[: len(good) // 2]})
    out = tmp_path / "out"
    with serve(routes) as base:
        fill(base)
        code, _, err = run_cli("datasets", "download", "cryoppp", "--out", out, "--subset", "10028")
        assert code == 2 and "no record is known" in err
        code, listing, _ = run_cli("datasets", "download", "cryoppp", "--record", "4242", "--base-url", base,
                                   "--out", out, "--dry-run")
        assert code == 0 and [line.split("\t")[1] for line in listing.splitlines()] == ["10028.zip", "10093.zip"]
        code, text, err = run_cli("datasets", "download", "cryoppp", "--record", "4242", "--base-url", base,
                                  "--out", out, "--subset", "10028")
        assert code == 0, err
        assert "10028.zip ->" in text and "extracted (2 files)" in text
        # the second archive is truncated (its checksum matches the truncated bytes): exit 2, nothing left
        code, _, err = run_cli("datasets", "download", "cryoppp", "--record", "4242", "--base-url", base,
                               "--out", out, "--subset", "EMPIAR-10093")
        assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1
    assert not (out / "10093").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".10093")]
    code, text, err = run_cli("datasets", "summary", out / "10028", "--layout", "cryoppp", "--out", tmp_path / "t.csv",
                              "--json")
    assert code == 0, err
    summary = json.loads(text)
    assert summary["n_particles"] == 2 and summary["micrograph_shapes"] == ["(60, 80)"]
    table = pd.read_csv(tmp_path / "t.csv")
    np.testing.assert_allclose(table[["x_px", "y_px"]].to_numpy(), picks[["x_px", "y_px"]].to_numpy())


def _prepared_like(d: Path, origin: tuple[float, float, float], voxel: float = 1.0) -> None:
    rng = np.random.default_rng(3)
    d.mkdir(parents=True)
    write_map(d / NORMALISED_NAME, rng.random((12, 10, 8)).astype(np.float32), voxel, origin)
    lab = np.zeros((12, 10, 8), np.int8)
    lab[2, 3, 4], lab[5, 5, 5], lab[6, 2, 1] = 1, 2, 3
    write_map(d / LABEL_FILES["backbone"], lab, voxel, origin, dtype="int8")


def test_crosscheck_and_import(run_cli: Any, tmp_path: Path) -> None:
    _prepared_like(tmp_path / "ours" / "EMD-1234", (0.0, 0.0, 0.0))
    _prepared_like(tmp_path / "theirs" / "EMD-1234", (0.0, 0.0, 0.0))
    code, text, err = run_cli("datasets", "crosscheck", tmp_path / "theirs" / "EMD-1234", tmp_path / "ours" / "EMD-1234",
                              "--out", tmp_path / "r.json")
    assert code == 0, err
    assert text.startswith("EMD-1234: offset [0, 0, 0]") and text.count("1.0000") == 5  # density r, 3 labels, all
    assert json.loads((tmp_path / "r.json").read_text())["density_correlation"] == pytest.approx(1.0)
    assert (tmp_path / "r.json.provenance.json").exists()
    _prepared_like(tmp_path / "other" / "EMD-1234", (0.0, 0.0, 0.0), voxel=1.5)
    code, _, err = run_cli("datasets", "crosscheck", tmp_path / "other" / "EMD-1234", tmp_path / "ours" / "EMD-1234")
    assert code == 2 and "voxel size" in err
    h5 = tmp_path / "panda" / "10001_particles.h5"
    h5.parent.mkdir()
    with h5py.File(h5, "w") as f:
        f.create_dataset("images", data=np.arange(3 * 16 * 16, dtype=np.uint32).reshape(3, 16, 16).astype(np.uint8))
        f.create_dataset("annotations", data=json.dumps({"x_px": [1.0, 2.0, 3.0], "y_px": [4.0, 5.0, 6.0],
                                                         "micrograph": ["a", "a", "b"]}))
    code, text, err = run_cli("datasets", "import", tmp_path / "panda", "--layout", "cryopanda",
                              "--store", tmp_path / "store")
    assert code == 0, err
    assert text.strip() == "EMPIAR-10001: 3 particles"
    from cryoset.store.dataset import ParticleStore

    store = ParticleStore.open(tmp_path / "store")
    # a file without image_offset/image_scale is re-quantised by the store: within half a step
    np.testing.assert_allclose(store.read_images("EMPIAR-10001", [2])[0],
                               (np.arange(512, 768) % 256).reshape(16, 16).astype(np.float32), rtol=0, atol=0.51)


def test_export_writes_the_published_cryopanda_layout(run_cli: Any, tmp_path: Path) -> None:
    from cryoset.store.dataset import ParticleStore

    store = ParticleStore.create(tmp_path / "store")
    rng = np.random.default_rng(0)
    store.add_experiment("EMPIAR-10076", rng.normal(size=(5, 32, 32)).astype(np.float32),
                         pd.DataFrame({"defocus_u_a": np.linspace(1e4, 2e4, 5), "pixel_size_a": 2.0,
                                       "score": np.arange(5.0)}))
    code, out, err = run_cli("datasets", "export", tmp_path / "store", "--layout", "cryopanda", "--out",
                             tmp_path / "panda", "--strict", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["particles"] == 5 and summary["files"] == [str(tmp_path / "panda" / "10076_particles.h5")]
    with h5py.File(tmp_path / "panda" / "10076_particles.h5", "r") as h5:
        assert list(h5) == ["annotations", "images"] and h5["images"].shape == (5, 224, 224)
        ann = json.loads(h5["annotations"][()])
    assert next(iter(ann)) == "uid" and "score" not in ann and len(ann) == 38
    probe = pd.DataFrame({"FileIndex": [0, 0], "FileName": ["10076_particles.h5"] * 2, "FileParticleIndex": [4, 1],
                          "BinIndex": [1, 0], "BinCenter": [1.0, 0.0], "AnnotationValue": [1.5, 0.2]})
    probe.to_parquet(tmp_path / "probe.parquet")
    code, out, err = run_cli("datasets", "export", tmp_path / "store", "--layout", "cryopanda", "--out",
                             tmp_path / "sub", "--selection", tmp_path / "probe.parquet")
    assert code == 0, err
    with h5py.File(tmp_path / "sub" / "10076_particles.h5", "r") as h5:
        assert h5["images"].shape == (2, 224, 224)
        ann = json.loads(h5["annotations"][()])
    assert ann["DefocusU"] == [20000.0, 12500.0] and ann["score"] == [4.0, 1.0]
