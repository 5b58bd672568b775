"""Smoke test of benchmarks/bench_ssl.py on a hand-made held-out store and a tiny random ViT:
it runs end to end, writes results.json with every task and baseline, and its probes find a
protein identity planted in the pixels (PCA baseline) while chance-level labels stay at chance."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cryoset.learn.vit import VisionTransformer, ViTConfig
from cryoset.learn.vit_weights import save_vit
from cryoset.store.dataset import ParticleStore

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_ssl", ROOT / "benchmarks" / "bench_ssl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _heldout(root: Path) -> None:
    """3 proteins × 2 settings × 24 particles of 32 px; protein k is a bright disc of radius 3+3k."""
    store = ParticleStore.create(root / "heldout-store", encoding="float16")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32] - 16
    for k, protein in enumerate(("p0", "p1", "p2")):
        for s, (lo, hi) in enumerate(((5000.0, 15000.0), (15000.0, 30000.0))):
            n = 24
            disc = ((xx * xx + yy * yy) <= (3 + 3 * k) ** 2).astype(np.float32) * 3
            images = disc[None] + rng.standard_normal((n, 32, 32)).astype(np.float32)
            defocus = rng.uniform(lo, hi, n)
            ann = pd.DataFrame({"structure": protein, "acquisition": f"acq{s}", "defocus_a": defocus,
                                "defocus_u_a": defocus, "defocus_v_a": defocus, "source": "simulated"})
            store.add_experiment(f"sim-{protein}-acq{s}", images, ann)


def test_bench_ssl_runs_end_to_end(tmp_path: Path) -> None:
    _heldout(tmp_path / "corpus")
    torch.manual_seed(3)
    model = VisionTransformer(ViTConfig(embed_dim=32, depth=1, num_heads=2, img_size=32, n_storage_tokens=1))
    ckpt = save_vit(tmp_path / "vit.safetensors", model, metadata={"input_size": 32})
    bench = _bench()
    out = tmp_path / "out"
    results = bench.main(["--checkpoint", str(ckpt), "--corpus", str(tmp_path / "corpus"), "--out", str(out),
                          "--epochs", "60"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"].keys() == {"protein", "protein_across_settings", "defocus", "defocus_across_experiments"}
    for task in saved["tasks"].values():
        for encoder in ("trained", "random_init", "pca_pixels"):
            assert 0.0 <= task[encoder]["knn"] <= 1.0 and 0.0 <= task[encoder]["linear"] <= 1.0
    protein = results["tasks"]["protein"]
    assert protein["classes"] == 3 and protein["train"] == protein["test"] == 72
    # the planted disc size is read off the raw pixels by both probes, across settings too
    assert protein["pca_pixels"]["knn"] == 1.0 and protein["pca_pixels"]["linear"] == 1.0
    assert results["tasks"]["protein_across_settings"]["pca_pixels"]["linear"] == 1.0
    # defocus bins are not in these pixels: the probes stay near chance (4 bins)
    assert results["tasks"]["defocus"]["pca_pixels"]["linear"] < 0.6
    assert saved["collapse"]["trained"]["dim"] == 32 and saved["collapse"]["trained"]["effective_rank"] >= 1
    assert saved["throughput"]["embed_images_per_s"] > 0
