"""Particle store benchmarks.

1. Loader throughput: particles/s into batches from the store (StoreParticleStream +
   DataLoader) versus reading the same particles one at a time from an ``.mrcs`` with
   mrcfile (open + index per particle: the lazy path cryoDRGN users complain about), and the
   raw decode limit (Zarr chunk reads + uint8 decode, no torch).
2. Store bytes per million particles per codec.
3. Query latency over a synthetic catalogue of N annotation rows (default 37,000,000, the
   cryoPANDA size; ``CRYOSET_BENCH_ROWS`` or ``--rows`` overrides).

Particles (sections 1, 2 and the map-style loader): the real EMPIAR-10076 stack of the shared
data (``star/relion/empiar_10076_7.mrc``, 7 × 320², centre-cropped to the box and tiled with
shifts, plus 1 % noise). When it is absent the benchmark says so on stderr and in the result
(``particles_source``) and uses simulated noisy blobs; ``--require-real`` makes that an error.

The ``ratio`` of the loader is the in-process column (``ours_workers0``: no worker processes,
prefetch on) over mrcfile one-at-a-time; ``ratio_best_configuration`` is the best of the
configurations over the same.

Usage: ``python benchmarks/bench_store.py [--section loader|map_style|codecs|catalogue]...
[--rows N] [--require-real]`` (no ``--section``: all of them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: The real particle stack of the shared data (EMPIAR-10076, 7 particles of 320²).
REAL_STACK = ("star", "relion", "empiar_10076_7.mrc")
_SOURCE: dict[str, str] = {}
_REQUIRE_REAL = False


def _particles(n: int, box: int, rng: np.random.Generator) -> np.ndarray:
    from cryoset.testing import shared_data_root

    real = shared_data_root().joinpath(*REAL_STACK)
    if real.exists():
        import mrcfile

        # the header pixel size is 0 (unset: see the shared data README), hence permissive
        with mrcfile.open(real, permissive=True) as m:
            src = np.asarray(m.data, dtype=np.float32)
        if src.ndim != 3 or min(src.shape[-2:]) < box:
            raise SystemExit(f"{real}: shape {src.shape} cannot give {box}² particles")
        _SOURCE["particles_source"] = f"real: {real} {src.shape}, centre-cropped to {box}², tiled with shifts"
        c = src.shape[-1] // 2
        tiles = src[:, c - box // 2:c + box // 2, c - box // 2:c + box // 2]
        reps = int(np.ceil(n / len(tiles)))
        out = np.concatenate([np.roll(tiles, k, axis=-1) for k in range(reps)])[:n]
        return out + rng.standard_normal(out.shape).astype(np.float32) * 0.01 * float(src.std())
    message = (f"REAL PARTICLE STACK ABSENT: {real} does not exist; using SIMULATED noisy blobs "
               "(numbers are not comparable with the documented ones)")
    if _REQUIRE_REAL:
        raise SystemExit(message)
    print("!" * 8, message, file=sys.stderr)
    _SOURCE["particles_source"] = "SIMULATED (" + message + ")"
    yy, xx = np.mgrid[:box, :box] - box / 2
    blob = np.exp(-(yy**2 + xx**2) / (2 * (box / 6) ** 2)).astype(np.float32)
    return blob[None] + rng.standard_normal((n, box, box)).astype(np.float32) * 3


def _store(directory: str, images: np.ndarray, rng: np.random.Generator) -> Any:
    """A uint8 store (chunks of 256) holding ``images`` as experiment ``E`` with a defocus column."""
    from cryoset.store.dataset import ParticleStore

    store = ParticleStore.create(Path(directory) / "s", chunk_particles=256)
    store.add_experiment("E", images, pd.DataFrame({"defocus_u_a": rng.uniform(1e4, 3e4, len(images))}))
    return store


def bench_loader(n: int = 20000, box: int = 128, batch_size: int = 256) -> dict[str, Any]:
    import mrcfile
    import torch
    from torch.utils.data import DataLoader

    from cryoset.learn.particles import StoreParticleStream, decode_batch
    from cryoset.store.dataset import decode

    rng = np.random.default_rng(0)
    images = _particles(n, box, rng)
    res: dict[str, Any] = {"particles": n, "box": box, "batch_size": batch_size,
                           "batch_mb": batch_size * box * box * 4 / 1e6}
    with tempfile.TemporaryDirectory() as d:
        store = _store(d, images, rng)
        mrcs = Path(d) / "p.mrcs"
        with mrcfile.new(mrcs) as m:
            m.set_data(images)
        sel = store.select()
        torch.set_num_threads(1)
        # (workers, prefetch, encoded, shuffle, decode uint8 batches in the consumer)
        for workers, prefetch, encoded, shuffle, consumer_decodes in (
                (0, True, False, True, False), (0, False, False, True, False), (0, False, False, False, False),
                (2, True, False, True, False), (2, True, True, True, True), (0, True, True, True, False)):
            stream = StoreParticleStream(store, sel, columns=["defocus_u_a"], seed=0, batch_size=batch_size,
                                         prefetch=prefetch, encoded=encoded, shuffle=shuffle)
            best = 0.0
            for _ in range(2):  # the first epoch also pays numba's and the page cache's warm-up
                t0 = time.perf_counter()
                count = 0
                for images, ann in DataLoader(stream, batch_size=None, num_workers=workers):
                    batch = decode_batch(images, ann) if consumer_decodes else images  # float32 on the CPU
                    count += int(batch.shape[0])
                best = max(best, count / (time.perf_counter() - t0))
            key = (f"ours_workers{workers}" + ("" if prefetch else "_no_prefetch") + ("_encoded" if encoded else "")
                   + ("" if shuffle else "_unshuffled") + ("_undecoded" if encoded and not consumer_decodes else ""))
            res[f"{key}_particles_per_s"] = best
        arr = store.images_array("E")
        ann = store.annotations("E")
        off, sc = ann["image_offset"].to_numpy(np.float32), ann["image_scale"].to_numpy(np.float32)
        # The raw sequential loop, no shuffle, no batching: chunk reads (straight from the chunk
        # files, or through the zarr API) then the decode (compiled single pass, or numpy).
        for key, via_zarr, fast in (("decode_limit", False, True), ("decode_limit_zarr_api", True, True),
                                    ("decode_limit_numpy", False, False)):
            best = 0.0
            buffer = np.empty((256, box, box), np.float32)
            for _ in range(2):
                t0 = time.perf_counter()
                for c, lo in enumerate(range(0, n, 256)):
                    block = np.asarray(arr[lo:lo + 256]) if via_zarr else store.read_chunks([("E", c)])[0]
                    if fast:  # our compiled single-pass decode, into a reused buffer (no page faults)
                        _ = decode(block, off[lo:lo + 256], sc[lo:lo + 256], out=buffer[:len(block)])
                    else:  # plain numpy: cast, scale, offset
                        _ = block.astype(np.float32) * sc[lo:lo + 256, None, None] + off[lo:lo + 256, None, None]
                best = max(best, n / (time.perf_counter() - t0))
            res[f"{key}_particles_per_s"] = best
        m_n = min(n, 3000)
        order = np.random.default_rng(1).permutation(n)[:m_n]
        t0 = time.perf_counter()
        for i in order:
            with mrcfile.mmap(mrcs, mode="r") as m:
                _ = np.array(m.data[i], dtype=np.float32)
        res["mrcfile_one_at_a_time_particles_per_s"] = m_n / (time.perf_counter() - t0)
    best = max(res["ours_workers0_particles_per_s"], res["ours_workers0_no_prefetch_particles_per_s"],
               res["ours_workers2_particles_per_s"], res["ours_workers2_encoded_particles_per_s"])
    # the ratio is the in-process column (no worker processes); the best configuration beside it
    res["ratio"] = res["ours_workers0_particles_per_s"] / res["mrcfile_one_at_a_time_particles_per_s"]
    res["ratio_best_configuration"] = best / res["mrcfile_one_at_a_time_particles_per_s"]
    res.update(_SOURCE)
    res["fraction_of_decode_limit"] = best / res["decode_limit_particles_per_s"]
    print(f"   loader {box}² (batches of {batch_size}, {res['batch_mb']:.0f} MB): in-process {res['ours_workers0_particles_per_s']:.0f}/s "
          f"(no prefetch {res['ours_workers0_no_prefetch_particles_per_s']:.0f}/s, unshuffled "
          f"{res['ours_workers0_no_prefetch_unshuffled_particles_per_s']:.0f}/s), 2 workers "
          f"{res['ours_workers2_particles_per_s']:.0f}/s (uint8 batches decoded in the consumer "
          f"{res['ours_workers2_encoded_particles_per_s']:.0f}/s), uint8 batches for a device to decode "
          f"{res['ours_workers0_encoded_undecoded_particles_per_s']:.0f}/s, decode limit {res['decode_limit_particles_per_s']:.0f}/s "
          f"(via the zarr API {res['decode_limit_zarr_api_particles_per_s']:.0f}/s, numpy decode "
          f"{res['decode_limit_numpy_particles_per_s']:.0f}/s); "
          f"mrcfile one-at-a-time {res['mrcfile_one_at_a_time_particles_per_s']:.0f}/s: in-process ratio "
          f"{res['ratio']:.1f}x (best configuration {res['ratio_best_configuration']:.1f}x); {res['particles_source']}")
    return res


def bench_map_style(n: int = 20000, box: int = 128) -> dict[str, Any]:
    """Map-style ``StoreParticleDataset``: chunk-aware ``ChunkBatchSampler`` batches versus the
    plain shuffled sampler (``DataLoader(shuffle=True)``), which touches a different chunk for
    almost every particle (timed on the first 2,000 particles only)."""
    import torch
    from torch.utils.data import DataLoader

    from cryoset.learn.particles import ChunkBatchSampler, StoreParticleDataset

    rng = np.random.default_rng(0)
    images = _particles(n, box, rng)
    res: dict[str, Any] = {"particles": n, "box": box}
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        store = _store(d, images, rng)
        ds = StoreParticleDataset(store, store.select(), columns=["defocus_u_a"])
        t0 = time.perf_counter()
        count = sum(len(b[0]) for b in DataLoader(ds, batch_sampler=ChunkBatchSampler(ds, 256, seed=0)))
        res["chunk_batch_sampler_particles_per_s"] = count / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        count = 0
        for images_b, _ann in DataLoader(ds, batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(0)):
            count += len(images_b)
            if count >= 2000:
                break
        res["random_sampler_particles_per_s"] = count / (time.perf_counter() - t0)
    res["ratio"] = res["chunk_batch_sampler_particles_per_s"] / res["random_sampler_particles_per_s"]
    res.update(_SOURCE)
    print(f"   map-style {box}²: ChunkBatchSampler {res['chunk_batch_sampler_particles_per_s']:.0f}/s, "
          f"shuffled sampler {res['random_sampler_particles_per_s']:.0f}/s: ratio {res['ratio']:.0f}x")
    return res


def bench_codecs(n: int = 2000, box: int = 224) -> dict[str, Any]:
    import zarr

    rng = np.random.default_rng(0)
    images = _particles(n, box, rng)
    from cryoset.store.dataset import encode_uint8

    u8, _, _ = encode_uint8(images)
    f16 = images.astype(np.float16)
    codecs: dict[str, list[Any]] = {
        "none": [],
        "blosc-lz4-shuffle": [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
        "blosc-zstd3-bitshuffle": [zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")],
        "zstd9": [zarr.codecs.ZstdCodec(level=9)],
    }
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for dtype_name, data in (("uint8", u8), ("float16", f16)):
            for name, comp in codecs.items():
                path = Path(d) / f"{dtype_name}-{name}.zarr"
                t0 = time.perf_counter()
                a = zarr.create_array(store=str(path), shape=data.shape, chunks=(256, box, box), dtype=data.dtype,
                                      compressors=comp, zarr_format=3)
                a[:] = data
                write_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                _ = np.asarray(zarr.open_array(str(path), mode="r")[:])
                read_s = time.perf_counter() - t0
                size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                key = f"{dtype_name}/{name}"
                out[key] = {"gb_per_million": size / n * 1e6 / 1e9, "write_mb_s": data.nbytes / write_s / 1e6,
                            "read_mb_s": data.nbytes / read_s / 1e6}
                print(f"   {key:32s} {out[key]['gb_per_million']:7.1f} GB/M particles  "
                      f"write {out[key]['write_mb_s']:6.0f} MB/s  read {out[key]['read_mb_s']:6.0f} MB/s")
    out.update(_SOURCE)
    return out


def bench_catalogue(rows: int | None = None) -> dict[str, Any]:
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = rows or int(os.environ.get("CRYOSET_BENCH_ROWS", "37000000"))
    rng = np.random.default_rng(0)
    res: dict[str, Any] = {"rows": n}
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        per = 1_000_000
        files = []
        for k, start in enumerate(range(0, n, per)):
            m = min(per, n - start)
            exp = (start + np.arange(m)) * 252 // n
            table = pa.table({
                "experiment_id": pa.array([f"EMPIAR-{10000 + e}" for e in np.unique(exp)])
                .take(pa.array(exp - exp.min())),
                "particle_index": np.arange(start, start + m, dtype=np.int64),
                "defocus_u_a": rng.uniform(5000, 40000, m).astype(np.float32),
                "defocus_v_a": rng.uniform(5000, 40000, m).astype(np.float32),
                "voltage_kv": np.where(exp % 3 == 0, 200.0, 300.0).astype(np.float32),
                "pixel_size_a": rng.uniform(0.6, 1.8, m).astype(np.float32),
                "class_number": rng.integers(1, 51, m, dtype=np.int32),
                "class_resolution_a": rng.uniform(3, 30, m).astype(np.float32),
                "ess": rng.uniform(1, 100, m).astype(np.float32),
                "score": rng.random(m).astype(np.float32),
                "molecular_weight_kda": (exp * 37.0 % 5000).astype(np.float32),
            })
            f = Path(d) / f"part{k:03d}.parquet"
            pq.write_table(table, f, compression="zstd")
            files.append(str(f))
        res["write_s"] = time.perf_counter() - t0
        res["bytes"] = sum(Path(f).stat().st_size for f in files)
        con = duckdb.connect()
        con.execute(f"CREATE VIEW particles AS SELECT * FROM read_parquet({files!r})")
        queries = {
            "count by experiment": "SELECT experiment_id, count(*) FROM particles GROUP BY 1",
            "defocus 1-2 um, 300 kV": "SELECT count(*) FROM particles WHERE defocus_u_a BETWEEN 10000 AND 20000 AND voltage_kv = 300",
            "good classes of one experiment": "SELECT experiment_id, particle_index FROM particles WHERE experiment_id = 'EMPIAR-10100' AND class_resolution_a < 8",
            "top-score selection": "SELECT experiment_id, particle_index FROM particles WHERE score > 0.999 AND ess > 50",
        }
        for name, sql in queries.items():
            t0 = time.perf_counter()
            con.execute(sql).fetchall()
            res[name] = time.perf_counter() - t0
            print(f"   {name:32s} {res[name] * 1000:8.0f} ms over {n:,} rows")
        # the naive peer: pandas loading everything then filtering
        t0 = time.perf_counter()
        frame = pd.concat([pd.read_parquet(f, columns=["defocus_u_a", "voltage_kv"]) for f in files[:4]])
        _ = int(((frame.defocus_u_a.between(10000, 20000)) & (frame.voltage_kv == 300)).sum())
        res["pandas_same_filter_s_extrapolated"] = (time.perf_counter() - t0) * len(files) / min(4, len(files))
        res["ratio_filter"] = res["pandas_same_filter_s_extrapolated"] / res["defocus 1-2 um, 300 kV"]
        print(f"   pandas load+filter (extrapolated): {res['pandas_same_filter_s_extrapolated']:.1f} s, "
              f"ratio {res['ratio_filter']:.1f}x; parquet {res['bytes'] / 1e9:.2f} GB, written in {res['write_s']:.0f} s")
    return res


SECTIONS = ("loader", "map_style", "codecs", "catalogue")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen sections (default: all) and return their results."""
    global _REQUIRE_REAL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--section", action="append", choices=SECTIONS,
                        help="run only this section (repeatable; default: all)")
    parser.add_argument("--rows", type=int, default=None, help="catalogue rows (default 37,000,000)")
    parser.add_argument("--require-real", action="store_true",
                        help="fail when the real particle stack of the shared data is absent")
    args = parser.parse_args(argv)
    _REQUIRE_REAL = args.require_real
    sections = args.section or list(SECTIONS)
    out: dict[str, Any] = {}
    if "loader" in sections:
        # batches stay under 32 MB at 224² (glibc maps bigger blocks afresh each time: docs/store.md)
        out["loader_64"] = bench_loader(box=64)
        out["loader_128"] = bench_loader(box=128)
        out["loader_224"] = bench_loader(n=10000, box=224, batch_size=128)
    if "map_style" in sections:
        out["map_style"] = bench_map_style()
    if "codecs" in sections:
        out["codecs"] = bench_codecs()
    if "catalogue" in sections:
        out["catalogue"] = bench_catalogue(args.rows)
    print(json.dumps(out, indent=1, default=float))
    return out


if __name__ == "__main__":
    main()
