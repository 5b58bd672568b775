"""The particle store: encoding, atomic appends, queries, exports and imports."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.store.dataset import CODECS, ParticleStore, Selection, decode, encode_uint8
from cryoset.store.exports import (
    export_hdf5,
    export_relion,
    import_hdf5,
    import_relion,
    resize_images,
)
from cryoset.store.schema import SCHEMA_VERSION
from cryoset.testing import require_shared_data


def _experiment(rng: np.random.Generator, n: int, box: int = 24) -> tuple[np.ndarray, pd.DataFrame]:
    images = rng.standard_normal((n, box, box)).astype(np.float32)
    ann = pd.DataFrame({
        "defocus_u_a": rng.uniform(8000, 30000, n), "defocus_v_a": rng.uniform(8000, 30000, n),
        "defocus_angle_deg": rng.uniform(0, 180, n), "pixel_size_a": 1.5, "voltage_kv": 300.0,
        "micrograph": [f"mic{i // 7:03d}" for i in range(n)], "x_px": rng.uniform(0, 4000, n),
        "y_px": rng.uniform(0, 4000, n), "class_number": rng.integers(1, 5, n),
        "psi_deg": rng.uniform(-180, 180, n), "custom_score": rng.random(n),
    })
    return images, ann


def test_uint8_encoding_error_bound(rng: np.random.Generator) -> None:
    x = rng.standard_normal((20, 16, 16)).astype(np.float32) * 3 + 7
    stored, off, sc = encode_uint8(x, clip_percentile=0)
    back = decode(stored, off, sc)
    assert np.all(np.abs(back - x) <= sc[:, None, None] / 2 + 1e-6)
    stored, off, sc = encode_uint8(x, clip_percentile=1.0)
    back = decode(stored, off, sc)
    lo, hi = off[:, None, None], off[:, None, None] + 255 * sc[:, None, None]
    inside = (x >= lo) & (x <= hi)
    assert np.all(np.abs(back - x)[inside] <= (sc[:, None, None] / 2 + 1e-5).repeat(16, 1).repeat(16, 2)[inside])


@pytest.mark.parametrize("encoding", ["uint8", "float16"])
def test_add_read_query(tmp_path: Path, rng: np.random.Generator, encoding: str) -> None:
    store = ParticleStore.create(tmp_path / "s", encoding=encoding, chunk_particles=16)  # type: ignore[arg-type]
    x1, a1 = _experiment(rng, 50)
    x2, a2 = _experiment(rng, 37)
    assert store.add_experiment("EXP-A", x1, a1) == 50
    assert store.add_experiment("EXP-B", (x2[i:i + 10] for i in range(0, 37, 10)), a2) == 37
    store = ParticleStore.open(tmp_path / "s")
    assert store.experiments() == ["EXP-A", "EXP-B"]
    idx = np.array([36, 0, 17, 16, 5, 36])
    got = store.read_images("EXP-B", idx)
    tol = 0.05 if encoding == "uint8" else 5e-3
    clipped = np.abs(got - x2[idx])
    assert np.median(clipped) < tol / 5 and np.percentile(clipped, 99) < tol * 4
    counts = store.query("SELECT experiment_id, count(*) AS n FROM particles GROUP BY 1 ORDER BY 1")
    assert counts["n"].tolist() == [50, 37]
    sel = store.select("SELECT experiment_id, particle_index, defocus_u_a FROM particles "
                       "WHERE defocus_u_a < 15000 ORDER BY experiment_id, particle_index")
    expected = int((a1["defocus_u_a"] < 15000).sum() + (a2["defocus_u_a"] < 15000).sum())
    assert len(sel) == expected
    ann = store.annotations("EXP-A")
    np.testing.assert_allclose(ann["defocus_u_a"], a1["defocus_u_a"].astype(np.float32))
    assert ann["custom_score"].tolist() == a1["custom_score"].tolist()  # extra column kept exactly
    import pyarrow.parquet as pq

    meta = pq.read_schema(tmp_path / "s" / "experiments" / "EXP-A" / "annotations.parquet").metadata
    assert meta[b"cryoset_schema_version"] == SCHEMA_VERSION.encode()


def test_failed_append_is_invisible_and_others_untouched(tmp_path: Path, rng: np.random.Generator) -> None:
    store = ParticleStore.create(tmp_path / "s", chunk_particles=8)
    x, a = _experiment(rng, 20)
    store.add_experiment("GOOD", x, a)
    before = {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}

    def failing_blocks():  # type: ignore[no-untyped-def]
        yield x[:10]
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        store.add_experiment("BAD", failing_blocks(), a)
    assert store.experiments() == ["GOOD"]
    after = {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    assert after == before
    # a leftover in-flight directory (e.g. after SIGKILL) is not an experiment and not queried
    (tmp_path / "s" / "experiments" / ".GHOST.abc.part").mkdir()
    assert store.experiments() == ["GOOD"]
    assert int(store.query("SELECT count(*) AS n FROM particles")["n"][0]) == 20


def test_bad_input(tmp_path: Path, rng: np.random.Generator) -> None:
    with pytest.raises(InputError, match="not a particle store"):
        ParticleStore.open(tmp_path)
    store = ParticleStore.create(tmp_path / "s")
    with pytest.raises(InputError, match="already holds"):
        ParticleStore.create(tmp_path / "s")
    x, a = _experiment(rng, 5)
    with pytest.raises(InputError, match="experiment id"):
        store.add_experiment("../evil", x, a)
    with pytest.raises(InputError, match="annotation rows"):
        store.add_experiment("E", x, a.iloc[:3])
    store.add_experiment("E", x, a)
    with pytest.raises(InputError, match="never rewritten"):
        store.add_experiment("E", x, a)
    with pytest.raises(InputError, match="query"):
        store.query("SELECT nonsense FROM particles")
    with pytest.raises(InputError, match="lacks column"):
        Selection(pd.DataFrame({"experiment_id": ["E"]}))
    with pytest.raises(ValueError, match="encoding"):
        ParticleStore.create(tmp_path / "t", encoding="int4")  # type: ignore[arg-type]


def test_hdf5_round_trip_lossless(tmp_path: Path, rng: np.random.Generator) -> None:
    store = ParticleStore.create(tmp_path / "s", chunk_particles=16)
    x, a = _experiment(rng, 30, box=32)
    store.add_experiment("EXP", x, a)
    h5 = export_hdf5(store, store.select(), tmp_path / "exp.h5", size=32)
    with h5py.File(h5) as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (30, 32, 32)
        ann = json.loads(f["annotations"][()])
        assert set(ann) >= {"defocus_u_a", "micrograph", "image_offset"}
    store2 = ParticleStore.create(tmp_path / "s2", chunk_particles=16)
    import_hdf5(h5, store2, "EXP")
    np.testing.assert_array_equal(np.asarray(store2.images_array("EXP")[:]), np.asarray(store.images_array("EXP")[:]))
    pd.testing.assert_frame_equal(store2.annotations("EXP"), store.annotations("EXP"), check_dtype=False)
    # resized export (cryoPANDA's 224²) keeps the low frequencies
    h5b = export_hdf5(store, store.select(), tmp_path / "exp224.h5", size=64)
    with h5py.File(h5b) as f:
        assert f["images"].shape == (30, 64, 64)


def test_resize_images_preserves_mean_and_low_pass(rng: np.random.Generator) -> None:
    f = np.fft.fft2(rng.standard_normal((3, 32, 32)))
    f[:, 16, :] = 0  # band-limited: no Nyquist component, so Fourier resampling is exact
    f[:, :, 16] = 0
    x = (np.fft.ifft2(f).real + 5).astype(np.float32)
    up = resize_images(x, 64)
    np.testing.assert_allclose(up.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(resize_images(up, 32), x, atol=1e-4)


def test_corrupt_hdf5(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    store = ParticleStore.create(tmp_path / "s")
    with pytest.raises(InputError, match="HDF5"):
        import_hdf5(bad, store, "X")
    with h5py.File(tmp_path / "noann.h5", "w") as f:
        f["images"] = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(InputError, match="annotations"):
        import_hdf5(tmp_path / "noann.h5", store, "X")
    assert store.experiments() == []


def test_relion_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    store = ParticleStore.create(tmp_path / "s", encoding="float16", chunk_particles=8)
    x, a = _experiment(rng, 12, box=16)
    store.add_experiment("EXP", x, a)
    star = export_relion(store, store.select(), tmp_path / "relion")
    store2 = ParticleStore.create(tmp_path / "s2", encoding="float16", chunk_particles=8)
    assert import_relion(star, store2, "EXP") == 12
    np.testing.assert_array_equal(store2.read_images("EXP", np.arange(12)), store.read_images("EXP", np.arange(12)))
    a1, a2 = store.annotations("EXP"), store2.annotations("EXP")
    for col in ("defocus_u_a", "defocus_v_a", "defocus_angle_deg", "x_px", "y_px", "psi_deg", "class_number"):
        np.testing.assert_allclose(a2[col].astype(float), a1[col].astype(float), rtol=1e-5, atol=1e-3)
    assert a2["micrograph"].tolist() == a1["micrograph"].tolist()


@pytest.mark.parametrize("name", ["empiar_10076_7.star", "relion31.star"])
def test_import_real_relion_particles(tmp_path: Path, name: str) -> None:
    star = require_shared_data("star", "relion", name)
    store = ParticleStore.create(tmp_path / "s")
    n = import_relion(star, store, "REAL")
    from cryoset.io.mrc import read_stack
    from cryoset.io.particles import read_particles

    ps = read_particles(star)
    assert n == len(ps.table)
    first = ps.table.iloc[0]
    raw = read_stack(star.parent / str(first["image_path"]), permissive=True).images(int(first["image_index"]))
    got = store.read_images("REAL", [0])[0]
    _, off, sc = encode_uint8(raw[None])
    inside = (raw >= off[0]) & (raw <= off[0] + 255 * sc[0])
    assert np.max(np.abs(got - raw)[inside]) <= sc[0] / 2 + 1e-4


def test_cli_store_and_query(tmp_path: Path, rng: np.random.Generator, run_cli) -> None:  # type: ignore[no-untyped-def]
    store = ParticleStore.create(tmp_path / "s", chunk_particles=8)
    x, a = _experiment(rng, 20, box=16)
    store.add_experiment("EXP", x, a)
    code, out, err = run_cli("query", "SELECT experiment_id, particle_index FROM particles WHERE class_number = 1",
                             "--store", tmp_path / "s", "--out", tmp_path / "sel.parquet")
    assert code == 0, err
    n_sel = int((a["class_number"] == 1).sum())
    assert f"({n_sel} rows)" in out
    code, out, err = run_cli("store", "export", tmp_path / "s", "--format", "hdf5", "--out", tmp_path / "e.h5",
                             "--selection", tmp_path / "sel.parquet", "--size-px", "16")
    assert code == 0, err
    assert (tmp_path / "e.h5.provenance.json").exists()
    code, out, err = run_cli("store", "create", tmp_path / "s2")
    assert code == 0, err
    code, out, err = run_cli("store", "add", tmp_path / "s2", "--hdf5", tmp_path / "e.h5", "--experiment", "SEL")
    assert code == 0, err
    code, out, err = run_cli("store", "info", tmp_path / "s2", "--json")
    assert json.loads(out)["particles"] == n_sel
    code, out, err = run_cli("query", "SELECT broken(", "--store", tmp_path / "s2")
    assert code == 2 and err.startswith("error: query:") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("dtype", [np.uint8, np.float16])
def test_decode_gather_is_bit_identical_to_the_float32_formula(rng: np.random.Generator, dtype: type) -> None:
    stored: np.ndarray = (rng.integers(0, 256, (30, 9, 11)) if dtype is np.uint8
              else rng.standard_normal((30, 9, 11)) * 100).astype(dtype)
    off = rng.standard_normal(30).astype(np.float32) * 50
    sc = rng.random(30).astype(np.float32) * 3
    rows = rng.permutation(30)[:17]
    expected = stored[rows].astype(np.float32) * sc[rows, None, None] + off[rows, None, None]
    got = decode(stored, off, sc, rows=rows)
    assert got.dtype == np.float32 and np.array_equal(got, expected)  # every bit, float32 arithmetic
    out = np.full((17, 9, 11), np.nan, np.float32)
    assert decode(stored, off, sc, rows=rows, out=out) is out and np.array_equal(out, expected)
    assert np.array_equal(decode(stored, off, sc), stored.astype(np.float32) * sc[:, None, None] + off[:, None, None])
    with pytest.raises(ValueError, match="out"):
        decode(stored, off, sc, rows=rows, out=np.empty((16, 9, 11), np.float32))
    with pytest.raises(IndexError, match="rows"):
        decode(stored, off, sc, rows=np.array([30]))


@pytest.mark.parametrize("codec", CODECS)
def test_codecs_store_the_same_bits(tmp_path: Path, rng: np.random.Generator, codec: str, run_cli) -> None:  # type: ignore[no-untyped-def]
    images = rng.standard_normal((21, 12, 12)).astype(np.float32)
    s = ParticleStore.create(tmp_path / codec, codec=codec, chunk_particles=8)
    s.add_experiment("E", images, pd.DataFrame({"uid": np.arange(21)}))
    again = ParticleStore.open(tmp_path / codec)
    assert again.codec == codec
    meta = json.loads((tmp_path / codec / "experiments" / "E" / "images.zarr" / "zarr.json").read_text())
    names = [c["name"] for c in meta["codecs"]]
    assert names[0] == "bytes" and names[1:] == {"none": [], "zstd-9": ["zstd"],
                                                 "blosc-zstd-3-bitshuffle": ["blosc"]}[codec]
    stored, off, sc = again.read_stored("E", np.arange(21))
    assert np.array_equal(stored, encode_uint8(images)[0])
    with pytest.raises(ValueError, match="codec"):
        ParticleStore.create(tmp_path / "bad", codec="gzip")
    code, _out, err = run_cli(["store", "create", str(tmp_path / "bad2"), "--codec", "lzma"])
    assert code == 2 and "--codec" in err
    (tmp_path / codec / "store.json").write_text(json.dumps({**json.loads(
        (tmp_path / codec / "store.json").read_text()), "codec": "brotli"}))
    with pytest.raises(InputError, match="brotli"):
        ParticleStore.open(tmp_path / codec)


def test_read_stored_many_equals_one_at_a_time(tmp_path: Path, rng: np.random.Generator) -> None:
    s = ParticleStore.create(tmp_path / "s", chunk_particles=5)
    for name, n in (("A", 23), ("B", 12)):
        s.add_experiment(name, rng.standard_normal((n, 6, 6)).astype(np.float32), pd.DataFrame({"k": np.arange(n)}))
    s.add_experiment("C", rng.standard_normal((4, 7, 7)).astype(np.float32), pd.DataFrame({"k": np.arange(4)}))
    requests = [("A", np.array([22, 3, 4, 17])), ("B", np.arange(5, 10)), ("A", np.arange(10, 15)), ("B", [0])]
    stored, off, sc = s.read_stored_many(requests)
    singles = [s.read_stored(e, i) for e, i in requests]
    assert np.array_equal(stored, np.concatenate([x[0] for x in singles]))
    assert np.array_equal(off, np.concatenate([x[1] for x in singles]))
    assert np.array_equal(sc, np.concatenate([x[2] for x in singles]))
    whole = s.images_array("A")[:]
    assert np.array_equal(stored[:4], whole[[22, 3, 4, 17]])
    with pytest.raises(ValueError, match="image shapes"):
        s.read_stored_many([("A", [0]), ("C", [0])])
    with pytest.raises(IndexError, match="out of range"):
        s.read_stored_many([("B", [12])])


@pytest.mark.parametrize("encoding", ["uint8", "float16"])
@pytest.mark.parametrize("codec", CODECS)
def test_direct_chunk_reads_equal_zarr(tmp_path: Path, rng: np.random.Generator, encoding: str, codec: str) -> None:
    s = ParticleStore.create(tmp_path / "s", encoding=encoding, codec=codec, chunk_particles=8)  # type: ignore[arg-type]
    images = rng.standard_normal((29, 6, 5)).astype(np.float32) * 3
    images[8:16] = 0.0  # a chunk of zeros: float16 stores it as the fill value, which Zarr does not write
    s.add_experiment("E", images, pd.DataFrame({"k": np.arange(29)}))
    files = s.chunk_files("E")
    assert files is not None and files.codec == {"none": "none", "zstd-9": "zstd"}.get(codec, "blosc")
    arr = s.images_array("E")
    for c in range(4):  # the last chunk holds 5 rows
        assert np.array_equal(files.read(c), arr[c * 8:(c + 1) * 8])
        assert files.read(c).dtype == arr.dtype
    if encoding == "float16":
        assert not (tmp_path / "s" / "experiments" / "E" / "images.zarr" / "c" / "1" / "0" / "0").exists()
    with pytest.raises(IndexError):
        files.read(4)
    idx = rng.permutation(29)[:20]
    assert np.array_equal(s.read_stored("E", idx)[0], arr[:][idx])
    # whole chunks (incl. the fill-value chunk and the short last one) decompress straight into the output
    for lo, hi in ((0, 29), (8, 29), (8, 16), (16, 24), (3, 20)):
        assert np.array_equal(s.read_stored("E", np.arange(lo, hi))[0], arr[lo:hi])
    many = s.read_stored_many([("E", np.arange(24, 29)), ("E", np.arange(0, 8)), ("E", [28, 1])])[0]
    assert np.array_equal(many, np.concatenate([arr[24:29], arr[0:8], arr[[28, 1]]]))


def test_foreign_zarr_layout_is_read_through_zarr(tmp_path: Path, rng: np.random.Generator) -> None:
    import zarr

    s = ParticleStore.create(tmp_path / "s", chunk_particles=4)
    images = rng.standard_normal((10, 6, 6)).astype(np.float32)
    s.add_experiment("E", images, pd.DataFrame({"k": np.arange(10)}))
    stored = np.asarray(s.images_array("E")[:])
    # rewrite the array with chunks split along y too: not our layout
    target = tmp_path / "s" / "experiments" / "E" / "images.zarr"
    import shutil

    shutil.rmtree(target)
    a = zarr.create_array(store=str(target), shape=stored.shape, chunks=(4, 3, 6), dtype=np.uint8, zarr_format=3)
    a[:] = stored
    fresh = ParticleStore.open(tmp_path / "s")
    assert fresh.chunk_files("E") is None
    assert np.array_equal(fresh.read_stored("E", [9, 0, 5])[0], stored[[9, 0, 5]])


@pytest.mark.parametrize("codec", CODECS)
def test_corrupt_chunk_is_named(tmp_path: Path, rng: np.random.Generator, codec: str) -> None:
    s = ParticleStore.create(tmp_path / "s", codec=codec, chunk_particles=4)
    s.add_experiment("E", rng.standard_normal((8, 6, 6)).astype(np.float32), pd.DataFrame({"k": np.arange(8)}))
    chunk = tmp_path / "s" / "experiments" / "E" / "images.zarr" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-7])
    with pytest.raises(InputError, match=r"c/1/0/0"):
        s.read_stored("E", [5])


_CONCURRENT_ADD = """
import sys, time
from pathlib import Path
import numpy as np, pandas as pd
from cryoset.errors import InputError
from cryoset.store import ParticleStore

root, k, replace = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
store = ParticleStore.open(root / "s")
x = np.random.default_rng(k).standard_normal((30, 8, 8)).astype(np.float32) + 10 * k

def barrier(n: int) -> None:  # after the first block: both writers are past every early check
    (root / f"ready-{k}").touch()
    deadline = time.monotonic() + 60
    while not all((root / f"ready-{j}").exists() for j in (0, 1)):
        if time.monotonic() > deadline:
            raise SystemExit("the other writer never started")
        time.sleep(0.01)

try:
    n = store.add_experiment("EXP", (x[i:i + 10] for i in range(0, 30, 10)),
                             pd.DataFrame({"uid": np.arange(30) + 1000 * k}), progress=barrier, replace=replace)
    print(f"added {n}")
except InputError as exc:
    print(f"error {exc}")
"""


@pytest.mark.parametrize("replace", [False, True])
def test_concurrent_adds_of_one_experiment_commit_exactly_once(tmp_path: Path, replace: bool) -> None:
    import subprocess
    import sys

    ParticleStore.create(tmp_path / "s", chunk_particles=8)
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_ADD, str(tmp_path), str(k), str(int(replace))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    results = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _out, err in results]
    lines = [out.strip() for out, _err in results]
    store = ParticleStore.open(tmp_path / "s")
    assert store.experiments() == ["EXP"]
    winner = int(store.annotations("EXP")["uid"].iloc[0]) // 1000
    assert store.annotations("EXP")["uid"].tolist() == [1000 * winner + i for i in range(30)]  # one writer's, whole
    x = np.random.default_rng(winner).standard_normal((30, 8, 8)).astype(np.float32) + 10 * winner
    assert np.abs(store.read_images("EXP", np.arange(30)) - x).max() < 0.1
    if replace:  # serialised replacements: both succeed, the last one stays
        assert lines == ["added 30", "added 30"]
    else:  # the loser is told, naming the experiment; the winner's data are untouched
        assert sorted(line.split()[0] for line in lines) == ["added", "error"]
        loser = lines[1 - winner]
        assert "'EXP' is already in the store" in loser and "another writer added it first" in loser
        assert lines[winner] == "added 30"
    assert sorted(p.name for p in (tmp_path / "s" / "experiments").iterdir()) == ["EXP"]  # nothing left over


def test_replacing_an_experiment_is_explicit(tmp_path: Path, rng: np.random.Generator, run_cli) -> None:  # type: ignore[no-untyped-def]
    store = ParticleStore.create(tmp_path / "s", chunk_particles=8)
    x, a = _experiment(rng, 20, box=16)
    store.add_experiment("EXP", x, a)
    assert store.num_particles("EXP") == 20
    with pytest.raises(InputError, match="'EXP' is already in the store"):
        store.add_experiment("EXP", x[:5], a.iloc[:5])
    assert store.add_experiment("EXP", x[:5], a.iloc[:5], replace=True) == 5
    assert store.num_particles("EXP") == 5 and len(store.annotations("EXP")) == 5  # caches follow
    assert ParticleStore.open(tmp_path / "s").experiments() == ["EXP"]
    export_hdf5(store, store.select(), tmp_path / "e.h5", size=16)
    code, out, err = run_cli("store", "add", tmp_path / "s", "--hdf5", tmp_path / "e.h5", "--experiment", "EXP")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: ") and "'EXP' is already in the store" in err
    code, out, err = run_cli("store", "add", tmp_path / "s", "--hdf5", tmp_path / "e.h5", "--experiment", "EXP",
                             "--replace")
    assert code == 0, err
    assert "EXP: 5 particles added" in out


def test_phase_flip_flag_survives_the_store(tmp_path: Path, rng: np.random.Generator) -> None:
    """``ctf_phase_flipped`` (schema 1.1) goes into the store, out to classification (|CTF|), out to
    RELION (``rlnCtfDataArePhaseFlipped`` in data_optics) and back in."""
    from cryoset.classify.data import ctf_images
    from cryoset.io.star import read_star
    from cryoset.workflows.particle_images import load_store

    store = ParticleStore.create(tmp_path / "s", encoding="float16", chunk_particles=8)
    x1, a1 = _experiment(rng, 10, box=16)
    x2, a2 = _experiment(rng, 6, box=16)
    store.add_experiment("FLIPPED", x1, a1.assign(ctf_phase_flipped=1, cs_mm=2.7, amplitude_contrast=0.1))
    store.add_experiment("RAW", x2, a2.assign(cs_mm=2.7, amplitude_contrast=0.1))  # no column: not flipped
    assert store.annotations("FLIPPED")["ctf_phase_flipped"].tolist() == [1] * 10
    data = load_store(tmp_path / "s", None)
    flags = data.table["ctf_phase_flipped"].fillna(0).astype(int).to_numpy()
    assert flags.tolist() == [1] * 10 + [0] * 6
    ctf = ctf_images(data.table, 16, 1.5)
    plain = ctf_images(data.table.assign(ctf_phase_flipped=0), 16, 1.5)
    np.testing.assert_array_equal(ctf[:10], np.abs(plain[:10]))
    np.testing.assert_array_equal(ctf[10:], plain[10:])
    assert (plain[:10] < 0).any()
    star = export_relion(store, store.select(), tmp_path / "relion")
    optics = read_star(star)["optics"]
    assert dict(zip(optics["rlnOpticsGroupName"], optics["rlnCtfDataArePhaseFlipped"], strict=True)) == {
        "FLIPPED": 1, "RAW": 0}
    store2 = ParticleStore.create(tmp_path / "s2", encoding="float16", chunk_particles=8)
    import_relion(star, store2, "BACK")
    assert store2.annotations("BACK")["ctf_phase_flipped"].tolist() == [1] * 10 + [0] * 6
