"""Published-dataset benchmarks: memory and speed of a large cryoPANDA import (issue #24).

A ``<EXPERIMENT>_particles.h5`` in the published layout (uint8 ``(n, 224, 224)`` images, the
48-key JSON annotations) is written, then imported into a particle store in a fresh
subprocess whose peak resident memory (``ru_maxrss``) is compared with the file size and with
the same import of a file a quarter as large. The import reads ``block_particles`` images at a
time, so the peak is set by the block and the annotation table, not by the images.

``CRYOSET_BENCH_PANDA_N`` sets the particle count (default 130,000, the size named in the
issue: 6.5 GB of images; the file is written in blocks and removed afterwards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

_CHILD = r"""
import json, resource, sys, time
from cryoset.datasets.cryopanda import import_cryopanda
from cryoset.store.dataset import ParticleStore
path, store_dir = sys.argv[1], sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
store = ParticleStore.create(store_dir, codec="none")
t = time.perf_counter()
n = import_cryopanda(path, store, block_particles=1024)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "seconds": dt, "peak_rss_mb": peak / 1024, "rss_before_import_mb": base / 1024}))
"""


def _annotations(n: int) -> dict[str, list[Any]]:
    rng = np.random.default_rng(0)
    cols: dict[str, list[Any]] = {"uid": [int(v) for v in rng.integers(10**17, 10**18, n)]}
    for key in ("AngleRot", "AngleTilt", "AnglePsi", "OriginXAngst", "OriginYAngst", "DefocusU", "DefocusV",
                "DefocusAngle", "2DAlignmentClassESS", "ClassECA", "ClassResolution", "3DAlignmentError",
                "CoordinateX", "CoordinateY", "CoordinateYTransposed", "ParticleXFrac", "ParticleYFrac",
                "NCCScore"):
        cols[key] = np.round(rng.uniform(0, 1000, n), 3).tolist()
    cols["ClassNumber"] = rng.integers(0, 50, n).tolist()
    cols["MicrographName"] = [f"J1/mic_{i // 200:05d}.mrc" for i in range(n)]
    for key, value in (("EMPIAR_ID", "10004"), ("Voltage", 300.0), ("ImageSize", 320),
                       ("ImagePixelSize", 1.08), ("Symmetry", "C3"), ("ProteinClass", "Viral Systems")):
        cols[key] = [value] * n
    return cols


def _write(path: Path, n: int, block: int = 4096) -> None:
    import h5py

    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as h5:
        images = h5.create_dataset("images", shape=(n, 224, 224), dtype=np.uint8)
        for start in range(0, n, block):
            k = min(block, n - start)
            images[start:start + k] = rng.integers(0, 256, (k, 224, 224), dtype=np.uint8)
        h5.create_dataset("annotations", data=json.dumps(_annotations(n)))


def _measure(n: int, work: Path) -> dict[str, Any]:
    path = work / f"{n}" / "10004_particles.h5"
    path.parent.mkdir(parents=True)
    _write(path, n)
    size_mb = path.stat().st_size / 2**20
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(work / f"store_{n}")], check=True,
                         capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["file_mb"] = size_mb
    result["particles_per_s"] = n / result["seconds"]
    path.unlink()
    return result


def main() -> dict[str, Any]:
    n = int(os.environ.get("CRYOSET_BENCH_PANDA_N", "130000"))
    with tempfile.TemporaryDirectory(prefix="bench_panda_") as tmp:
        t = time.perf_counter()
        small = _measure(max(n // 4, 1), Path(tmp))
        large = _measure(n, Path(tmp))
        total = time.perf_counter() - t
    res = {"small": small, "large": large, "seconds_total": total,
           "peak_growth_mb": large["peak_rss_mb"] - small["peak_rss_mb"],
           "peak_over_file": large["peak_rss_mb"] / large["file_mb"]}
    print(f"   cryoPANDA import, {n:,} particles ({large['file_mb']:.0f} MB file): peak RSS "
          f"{large['peak_rss_mb']:.0f} MB ({small['peak_rss_mb']:.0f} MB for a quarter of it), "
          f"{large['particles_per_s']:,.0f} particles/s")
    return res


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
