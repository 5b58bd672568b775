"""Benchmark: ``cryoset view``'s page load of a 4k micrograph (not asserted in tests).

A 4096 × 4096 micrograph (seeded noise with dark Gaussian blobs, 1.0 Å/px) is picked with
``cryoset pick`` (blob picker, 150 Å diameter); then, in-process through Starlette's
TestClient (the same app uvicorn serves), the requests the page makes to show the
micrograph view are timed: ``/``, ``/api/micrographs``, ``/api/micrographs/K/picks`` and
``/api/micrographs/K/image.png`` (read the MRC, bin to 1024 px, low-pass, contrast, PNG).
*cold*: a fresh app with an empty cache (the server-side render); *warm*: the same requests
again (the PNG from the cache); *contrast change*: a new contrast on the cached binned image.
Best and median of 5. The issue's target: page load ≤ 0.5 s.

Run: ``.venv/bin/python benchmarks/bench_view.py``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPEATS = 5
SIZE_PX = 4096


def _micrograph(path: Path) -> None:
    from cryoset.io.mrc import write_map

    rng = np.random.default_rng(0)
    img = rng.normal(0, 1, (SIZE_PX, SIZE_PX)).astype(np.float32)
    yy, xx = np.mgrid[-40:41, -40:41]
    blob = np.exp(-(xx**2 + yy**2) / (2 * 25.0**2)).astype(np.float32)
    for y, x in rng.integers(100, SIZE_PX - 100, size=(300, 2)):
        img[y - 40:y + 41, x - 40:x + 41] -= 1.5 * blob
    write_map(path, img[None], 1.0)


def _load_page(client: Any, key: str, contrast: float = 3.0) -> float:
    t0 = time.perf_counter()
    for url in ("/", "/api/micrographs", f"/api/micrographs/{key}/picks",
                f"/api/micrographs/{key}/image.png?contrast={contrast}&lowpass_a=20"):
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:200])
    return time.perf_counter() - t0


def main() -> dict[str, Any]:
    from starlette.testclient import TestClient

    from cryoset.cli.main import main as cli
    from cryoset.view.app import create_app
    from cryoset.view.project import CACHE_DIR

    root = Path(tempfile.mkdtemp(prefix="bench_view_"))
    try:
        mic = root / "mics" / "mic_4k.mrc"
        mic.parent.mkdir()
        _micrograph(mic)
        assert cli(["pick", str(mic), "--diameter-a", "150", "--out", str(root / "picks")]) == 0
        cold, warm, contrast = [], [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for i in range(REPEATS):
                shutil.rmtree(root / CACHE_DIR, ignore_errors=True)
                client = TestClient(create_app(root))
                cold.append(_load_page(client, "mic_4k"))
                warm.append(_load_page(client, "mic_4k"))
                contrast.append(_load_page(client, "mic_4k", contrast=2.0 + 0.5 * (i + 1)))
        n_picks = json.loads(TestClient(create_app(root)).get("/api/micrographs").text)["micrographs"][0]["picks"]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def stats(v: list[float]) -> dict[str, float]:
        return {"best_s": round(min(v), 4), "median_s": round(statistics.median(v), 4)}

    result = {"micrograph_px": SIZE_PX, "picks": n_picks, "repeats": REPEATS,
              "cold_page_load": stats(cold), "warm_page_load": stats(warm),
              "contrast_change_page_load": stats(contrast), "target_s": 0.5}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
