"""Benchmark: frozen ViT features of held-out simulated experiments, against two baselines.

The held-out store of ``cryoset train ssl-corpus`` (proteins and acquisition settings never in
training) is embedded by

* the **trained** encoder (``--checkpoint``, read by :func:`cryoset.learn.vit_weights.load_vit`),
* (a) a **randomly initialised** encoder of the same configuration (``torch.manual_seed(seed)``),
* (b) **PCA of the raw pixels** to the same dimension (fitted on each probe's training rows only),

(images become model input through :func:`cryoset.learn.vit_weights.model_input`, as in
``cryoset embed``: the checkpoint's normalisation and input size), and every embedding is probed with the weighted cosine k-NN (k = 20, T = 0.07) and the linear
probe (multinomial logistic regression, learning rate chosen on a validation part of the probe's
training rows) of :mod:`cryoset.learn.probes`, scored by balanced accuracy:

* ``protein`` — protein identity (``structure``), particles of every held-out experiment split
  half/half (seeded) into probe-train and probe-test;
* ``protein_across_settings`` — the same label, probe trained on each protein's first
  acquisition setting and tested on its second (a new pixel size/voltage/defocus/dose);
* ``defocus`` — defocus bin (``n_bins`` quantile bins of ``defocus_a``, edges from the
  probe-train rows), the particle split of ``protein``;
* ``defocus_across_experiments`` — defocus bin with half of the held-out experiments (seeded)
  as probe-train and the other half as probe-test.

No collapse: per-dimension standard deviation of the features (mean and minimum over
dimensions) and the effective rank ``exp(H(p))``, ``p`` the normalised singular values of the
centred feature matrix (RankMe). Throughput: held-out images embedded per second by the trained
encoder on this machine (``torch.get_num_threads()`` threads), and the training throughput if
the run folder of the checkpoint has a ``metrics.csv`` with an images-per-second column.

Writes ``benchmarks/out/ssl/results.json`` and prints a Markdown table.

Run: ``python benchmarks/bench_ssl.py --checkpoint runs/ssl/model.safetensors --corpus build/ssl-corpus``
(defaults: the shipped checkpoint, ``build/ssl-corpus``; ``CRYOSET_SSL_CHECKPOINT`` /
``CRYOSET_SSL_CORPUS`` too). Build the corpus with
``cryoset train ssl-corpus --shared-data ../shared/data -o build/ssl-corpus --seed 0``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cryoset.learn.probes import (
    assign_bins,
    balanced_accuracy,
    confusion_matrix,
    fit_linear_probe,
    knn_classify,
    quantile_bins,
)
from cryoset.learn.vit import VisionTransformer
from cryoset.learn.vit_weights import load_vit, model_input, resolve_vit_checkpoint
from cryoset.store.dataset import ParticleStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "ssl"
LRS = (1e-3, 1e-2, 1e-1)


# ----------------------------------------------------------------------------- data
def load_heldout(corpus: Path, max_per_experiment: int | None, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Images (n, y, x) float32 and annotations of the held-out store (a seeded subset per experiment)."""
    store = ParticleStore.open(corpus / "heldout-store")
    rng = np.random.default_rng([seed, 17])
    images, tables = [], []
    for exp in store.experiments():
        table = store.annotations(exp)
        rows = np.arange(len(table))
        if max_per_experiment is not None and len(rows) > max_per_experiment:
            rows = np.sort(rng.choice(rows, max_per_experiment, replace=False))
        images.append(store.read_images(exp, rows))
        tables.append(table.iloc[rows].reset_index(drop=True))
    if not images:
        raise SystemExit(f"error: {corpus / 'heldout-store'}: no experiments")
    return np.concatenate(images), pd.concat(tables, ignore_index=True)


@torch.no_grad()
def embed(model: VisionTransformer, x: torch.Tensor, kind: str, batch_size: int) -> tuple[np.ndarray, float]:
    """Features (n, d) float32 and images per second."""
    model.eval()
    out = []
    start = time.perf_counter()
    for i in range(0, len(x), batch_size):
        out.append(model.features(x[i:i + batch_size], kind=kind).float())
    seconds = time.perf_counter() - start
    return torch.cat(out).numpy(), len(x) / max(seconds, 1e-9)


# ---------------------------------------------------------------------------- numbers
def collapse_stats(features: np.ndarray) -> dict[str, float]:
    """Per-dimension std (mean, min) and effective rank (RankMe) of a feature matrix."""
    f = features.astype(np.float64)
    std = f.std(axis=0)
    s = np.linalg.svd(f - f.mean(axis=0), compute_uv=False)
    p = s / max(s.sum(), 1e-12) + 1e-12
    return {"feature_std_mean": float(std.mean()), "feature_std_min": float(std.min()),
            "effective_rank": float(np.exp(-(p * np.log(p)).sum())), "dim": int(f.shape[1])}


def pca_features(pixels: np.ndarray, train: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Raw pixels projected on the first ``dim`` principal axes of the ``train`` rows
    (randomised SVD, ``torch.svd_lowrank`` with 4 power iterations, seeded)."""
    x = torch.from_numpy(pixels.reshape(len(pixels), -1).astype(np.float32))
    rows = torch.tensor(np.flatnonzero(train), dtype=torch.long)
    mean = x[rows].mean(dim=0)
    centred = x - mean
    torch.manual_seed(seed)
    q = min(dim + 16, len(rows), x.shape[1])
    _, _, v = torch.svd_lowrank(centred[rows], q=q, niter=4)
    return (centred @ v[:, :dim]).numpy()


def splits(table: pd.DataFrame, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Probe-train / probe-test row masks of the four tasks (see the module docstring)."""
    rng = np.random.default_rng([seed, 23])
    n = len(table)
    particle_train = np.zeros(n, dtype=bool)
    for _, rows in table.groupby("experiment_id", sort=True).indices.items():
        perm = rng.permutation(rows)
        particle_train[perm[:len(perm) // 2]] = True
    first_setting = np.zeros(n, dtype=bool)
    for _, sub in table.groupby("structure", sort=True):
        settings = sorted(sub["acquisition"].unique())
        first_setting[sub.index[sub["acquisition"] == settings[0]]] = True
    exps = sorted(table["experiment_id"].unique())
    train_exps = {exps[i] for i in rng.permutation(len(exps))[:len(exps) // 2]}
    exp_train = table["experiment_id"].isin(train_exps).to_numpy()
    return {
        "protein": (particle_train, ~particle_train),
        "protein_across_settings": (first_setting, ~first_setting),
        "defocus": (particle_train, ~particle_train),
        "defocus_across_experiments": (exp_train, ~exp_train),
    }


def labels_for(task: str, table: pd.DataFrame, train: np.ndarray, n_bins: int) -> np.ndarray:
    if task.startswith("protein"):
        return table["structure"].astype(str).to_numpy()
    defocus = table["defocus_a"].to_numpy(np.float64)
    edges = quantile_bins(defocus[train], n_bins)  # edges from the probe-train rows only
    return assign_bins(defocus, edges)


def probe(features: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int,
          epochs: int) -> dict[str, Any]:
    knn = knn_classify(features[train], y[train], features[test], k=20, temperature=0.07)
    lin = fit_linear_probe(features[train], y[train], lrs=LRS, val_fraction=0.2, seed=seed, epochs=epochs)
    pred = lin.predict(features[test])
    matrix, labels = confusion_matrix(y[test], pred)
    return {"knn": balanced_accuracy(y[test], knn), "linear": balanced_accuracy(y[test], pred),
            "linear_lr": lin.lr, "confusion_linear": matrix.tolist(), "labels": [str(v) for v in labels]}


def evaluate(checkpoint: Path, corpus: Path, *, seed: int = 0, feature_kind: str = "cls",
             max_per_experiment: int | None = None, n_bins: int = 4, batch_size: int = 256,
             epochs: int = 200) -> dict[str, Any]:
    """Everything the module docstring lists, as a JSON-able dict."""
    images, table = load_heldout(corpus, max_per_experiment, seed)
    model, metadata = load_vit(checkpoint)
    size = int(metadata.get("input_size", model.config.img_size))
    x = model_input(torch.from_numpy(images), metadata.get("normalization") or {"kind": "store"}, size)
    trained, images_per_s = embed(model, x, feature_kind, batch_size)
    torch.manual_seed(seed)
    random_model = VisionTransformer(model.config)
    random_feats, _ = embed(random_model, x, feature_kind, batch_size)
    dim = trained.shape[1]
    tasks = splits(table, seed)
    results: dict[str, Any] = {"tasks": {}}
    pca_cache: dict[bytes, np.ndarray] = {}
    for task, (train, test) in tasks.items():
        y = labels_for(task, table, train, n_bins)
        key = np.packbits(train).tobytes()
        if key not in pca_cache:  # fitted on this probe's training rows only
            pca_cache[key] = pca_features(images, train, dim, seed)
        pca = pca_cache[key]
        entry: dict[str, Any] = {"classes": len(np.unique(y)), "chance": 1.0 / len(np.unique(y)),
                                 "train": int(train.sum()), "test": int(test.sum())}
        for name, feats in (("trained", trained), ("random_init", random_feats), ("pca_pixels", pca)):
            entry[name] = probe(feats, y, train, test, seed, epochs)
        results["tasks"][task] = entry
    pca_protein = pca_cache[np.packbits(tasks["protein"][0]).tobytes()]
    results["collapse"] = {"trained": collapse_stats(trained), "random_init": collapse_stats(random_feats),
                           "pca_pixels": collapse_stats(pca_protein)}
    results["throughput"] = {"embed_images_per_s": images_per_s, "torch_threads": torch.get_num_threads(),
                             "image_px": int(x.shape[-1]), "training": training_throughput(checkpoint)}
    results["setup"] = {
        "checkpoint": str(checkpoint), "corpus": str(corpus), "seed": seed, "feature_kind": feature_kind,
        "feature_dim": dim, "vit": model.config.to_dict(), "normalization": metadata.get("normalization"),
        "heldout_particles": len(table), "heldout_experiments": int(table["experiment_id"].nunique()),
        "heldout_structures": sorted(table["structure"].astype(str).unique().tolist()),
        "defocus_bins": n_bins, "knn": {"k": 20, "temperature": 0.07}, "linear_lrs": list(LRS),
        "linear_epochs": epochs,
    }
    return results


def training_throughput(checkpoint: Path) -> float | None:
    """Images/s of the last logged epoch in the run folder's metrics.csv, if it logs one."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        metrics = folder / "metrics.csv"
        if metrics.is_file():
            table = pd.read_csv(metrics)
            cols = [c for c in table.columns if "images_per_s" in c or c in ("img_per_s", "images_s")]
            if cols and len(table):
                value = table[cols[0]].dropna()
                return float(value.iloc[-1]) if len(value) else None
    return None


def markdown(results: dict[str, Any]) -> str:
    lines = ["| task | classes (chance) | k-NN trained | k-NN random init | k-NN PCA pixels "
             "| linear trained | linear random init | linear PCA pixels |", "|---|---|---|---|---|---|---|---|"]
    for task, e in results["tasks"].items():
        lines.append(f"| {task} | {e['classes']} ({e['chance']:.2f}) | "
                     + " | ".join(f"{e[m][p]:.3f}" for p in ("knn", "linear")
                                  for m in ("trained", "random_init", "pca_pixels")) + " |")
    lines += ["", "| features | std per dim (mean / min) | effective rank / dim |", "|---|---|---|"]
    for name, c in results["collapse"].items():
        lines.append(f"| {name} | {c['feature_std_mean']:.3g} / {c['feature_std_min']:.3g} | "
                     f"{c['effective_rank']:.1f} / {c['dim']} |")
    t = results["throughput"]
    train = f"{t['training']:.1f}" if t["training"] is not None else "n/a"
    lines += ["", f"embedding throughput: {t['embed_images_per_s']:.0f} images/s ({t['image_px']} px, "
              f"{t['torch_threads']} threads); training: {train} images/s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.environ.get("CRYOSET_SSL_CHECKPOINT"),
                        help="ViT weights (default: the shipped checkpoint)")
    parser.add_argument("--corpus", default=os.environ.get("CRYOSET_SSL_CORPUS", str(ROOT / "build" / "ssl-corpus")))
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", default="cls", choices=("cls", "patch_mean", "both"))
    parser.add_argument("--max-per-experiment", type=int, default=None)
    parser.add_argument("--defocus-bins", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=200, help="full-batch steps of the linear probe")
    args = parser.parse_args(argv if argv is not None else [])
    corpus = Path(args.corpus)
    if not (corpus / "heldout-store" / "store.json").is_file():
        raise SystemExit(f"error: {corpus}: no heldout-store (build it: cryoset train ssl-corpus "
                         "--shared-data ../shared/data -o build/ssl-corpus)")
    checkpoint = resolve_vit_checkpoint(args.checkpoint)
    results = evaluate(checkpoint, corpus, seed=args.seed, feature_kind=args.features,
                       max_per_experiment=args.max_per_experiment, n_bins=args.defocus_bins, epochs=args.epochs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
