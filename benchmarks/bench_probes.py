"""Benchmark (issue #19): linear probes ID/OOD with and without acquisition regress-out, and the
unsupervised feature picker on the real EMPIAR-10028 images.

Probes: on the probe corpus (``cryoset probe-corpus``; built into ``OUT/corpus`` when absent)
for three feature extractors — the trained encoder (``--checkpoint``), a randomly initialised
encoder of the same configuration (seed 0) and raw-pixel PCA (images resized to the encoder
input, 64 components fitted on the probe-train rows only) — each task's balanced accuracy ID and
OOD, raw and regressed out, as one markdown table (cf. cryoPANDA's: mean OOD 66.1 → 69.0 with
regress-out).

Picking: ``--method features`` at its fixed threshold 0.3 (no tuning) on the seven real
EMPIAR-10028 images, and with a threshold chosen on the dev images (061–063) and reported on
the held-out ones (064, 065, 311, 312) — the protocol of ``bench_picking.py`` — beside the blob
picker and RELION's LoG (when ``relion_autopick`` is installed), with seconds per micrograph.

Run::

    .venv/bin/python benchmarks/bench_probes.py --checkpoint src/cryoset/data/models/vit_tiny_ssl.safetensors
    .venv/bin/python benchmarks/bench_probes.py --checkpoint CKPT --smoke   # tiny corpus, one micrograph

Writes ``benchmarks/out/probes/results.json`` (or ``--out``) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.io.coords import read_coords
from cryoset.io.images import read_image
from cryoset.learn.probe_tasks import PAPER_TASKS, ProbeSettings, particle_split, run_probe_tasks
from cryoset.picking.base import PickerInputs
from cryoset.picking.blob import BlobSettings, pick_blobs
from cryoset.picking.features import FeaturePicker
from cryoset.testing import shared_data_root
from cryoset.workflows.pick import window_featurizer
from cryoset.workflows.probe import load_probe_config, load_probe_features
from cryoset.workflows.probe_corpus import ProbeCorpusOptions, build_probe_corpus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_picking import DEV, DIAMETER_A, HELD_OUT, PIXEL_A, _dev_then_held_out, _relion, _scores

TASKS = list(PAPER_TASKS.values())


def _random_twin(checkpoint: Path, dest: Path) -> Path:
    """A randomly initialised encoder of the checkpoint's configuration (seed 0), same metadata."""
    import torch

    from cryoset.learn.vit import VisionTransformer
    from cryoset.learn.vit_weights import load_vit, save_vit

    model, meta = load_vit(checkpoint)
    torch.manual_seed(0)
    twin = VisionTransformer(model.config)
    keep: dict[str, Any] = {k: meta[k] for k in ("normalization", "input_size") if k in meta}
    return save_vit(dest, twin, metadata={**keep, "provenance": {"random_init_seed": 0, "of": str(checkpoint)}})


def _encoder_features(store: Path, checkpoint: Path, tmp: Path, kind: str) -> tuple[pd.DataFrame, Any, int | None]:
    cfg = tmp / f"probe-{checkpoint.stem}.yaml"
    cfg.write_text(f"store: {store}\ncheckpoint: {checkpoint}\nkind: {kind}\nbatch_size: 128\n")
    frame, feats, input_size, _ = load_probe_features(load_probe_config(cfg))
    return frame, feats, input_size


def _pixel_pca(store: Path, frame: pd.DataFrame, input_size: int, settings: ProbeSettings,
               n_components: int = 64) -> np.ndarray:
    import torch

    from cryoset.store.dataset import ParticleStore

    s = ParticleStore.open(store)
    rows: list[np.ndarray] = []
    for exp, sub in frame.groupby("experiment_id", sort=False):
        imgs = torch.from_numpy(s.read_images(str(exp), sub["particle_index"].to_numpy(np.int64)))[:, None]
        imgs = torch.nn.functional.interpolate(imgs, size=(input_size, input_size), mode="bilinear",
                                               antialias=True, align_corners=False)
        rows.append(imgs.reshape(len(imgs), -1).numpy())
    x = np.concatenate(rows).astype(np.float64)
    split = particle_split(frame["experiment_id"].to_numpy(), settings.heldout_fraction, settings.id_eval_fraction,
                           settings.seed, settings.max_particles_per_experiment)
    mu = x[split.train].mean(axis=0)
    _, _, vt = np.linalg.svd(x[split.train] - mu, full_matrices=False)
    return np.asarray((x - mu) @ vt[:n_components].T, dtype=np.float32)


def probes(checkpoint: Path, corpus: Path, settings: ProbeSettings, kind: str) -> dict[str, Any]:
    store = corpus / "store"
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        rand = _random_twin(checkpoint, tmp / "random.safetensors")
        frame, feats, size = _encoder_features(store, checkpoint, tmp, kind)
        extractors: dict[str, Any] = {"trained": feats}
        t0 = time.perf_counter()
        frame_r, feats_r, _ = _encoder_features(store, rand, tmp, kind)
        assert frame_r["particle_index"].equals(frame["particle_index"])
        extractors["random"] = feats_r
        embed_s = (time.perf_counter() - t0) / len(frame)
        extractors["pixel_pca"] = _pixel_pca(store, frame, int(size or 48), settings)
    for name, x in extractors.items():
        results, split, ro = run_probe_tasks(frame, x, TASKS, settings=settings, input_size=size, regress_out=True)
        out[name] = {"rows": [r.row() for r in results], "regress_out": ro,
                     "heldout_experiments": list(split.heldout_experiments)}
    out["embedding_seconds_per_particle"] = embed_s
    out["particles"] = len(frame)
    out["experiments"] = int(frame["experiment_id"].nunique())
    return out


def probe_table(res: dict[str, Any]) -> str:
    lines = ["| features | task | ID | OOD | ID + RO | OOD + RO |", "|---|---|---|---|---|---|"]
    for name in ("trained", "random", "pixel_pca"):
        rows = pd.DataFrame(res[name]["rows"])
        piv = rows.pivot(index="task", columns="variant", values=["id_balanced_accuracy", "ood_balanced_accuracy"])
        for task in piv.index:
            v = piv.loc[task]
            lines.append(f"| {name} | {task} | {100 * v[('id_balanced_accuracy', 'raw')]:.1f} | "
                         f"{100 * v[('ood_balanced_accuracy', 'raw')]:.1f} | "
                         f"{100 * v[('id_balanced_accuracy', 'regressed_out')]:.1f} | "
                         f"{100 * v[('ood_balanced_accuracy', 'regressed_out')]:.1f} |")
        m = piv.mean()
        lines.append(f"| {name} | **mean** | {100 * m[('id_balanced_accuracy', 'raw')]:.1f} | "
                     f"{100 * m[('ood_balanced_accuracy', 'raw')]:.1f} | "
                     f"{100 * m[('id_balanced_accuracy', 'regressed_out')]:.1f} | "
                     f"{100 * m[('ood_balanced_accuracy', 'regressed_out')]:.1f} |")
    return "\n".join(lines)


def picking(checkpoint: Path, names: tuple[str, ...], with_relion: bool) -> dict[str, Any]:
    root = shared_data_root() / "micrographs" / "empiar_10028"
    truth = pd.concat([read_coords(root / "coords" / f"{n}.csv").assign(micrograph=n) for n in names],
                      ignore_index=True)
    images = {n: read_image(root / "images" / f"{n}.png").data for n in names}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmpd:
        rand = _random_twin(checkpoint, Path(tmpd) / "random.safetensors")
        for label, ckpt in (("features_trained", checkpoint), ("features_random", rand)):
            featurize, size, _ = window_featurizer(ckpt)
            runs: dict[str, list[pd.DataFrame]] = {"auto": [], "paper": [], "all": []}
            used: list[float] = []
            t0 = time.perf_counter()
            for n, img in images.items():
                picker = FeaturePicker.from_inputs(PickerInputs(DIAMETER_A, PIXEL_A, featurizer=featurize,
                                                                featurizer_input_px=size))
                prepared = picker.prepare(img, PIXEL_A)
                score = picker.score_map(prepared)
                # the same score map under three caps: max(0.3, Otsu) (default), 0.3 (paper), 0 (sweep)
                for key, thr in (("auto", None), ("paper", 0.3), ("all", 0.0)):
                    picker.threshold = thr
                    runs[key].append(picker.picks(prepared, score, picker.peaks(prepared, score), n))
                    if key == "auto":
                        used.append(picker.threshold_used)
            sec = (time.perf_counter() - t0) / len(images)
            picks = pd.concat(runs["all"], ignore_index=True)
            out[label] = {"default_threshold_auto": _pooled(pd.concat(runs["auto"], ignore_index=True), truth, 0.0),
                          "auto_thresholds": used,
                          "paper_threshold_0.3": _pooled(pd.concat(runs["paper"], ignore_index=True), truth, 0.0),
                          "seconds_per_micrograph": sec}
            if set(DEV + HELD_OUT) <= set(names):
                out[label].update(_dev_then_held_out(picks, truth))
    t0 = time.perf_counter()
    blob = pd.concat([pick_blobs(img, PIXEL_A, BlobSettings(DIAMETER_A, threshold=0.0), micrograph=n)
                      for n, img in images.items()], ignore_index=True)
    out["blob"] = {"default_threshold_3.5": _pooled(blob, truth, 3.5),
                   "seconds_per_micrograph": (time.perf_counter() - t0) / len(images)}
    if set(DEV + HELD_OUT) <= set(names):
        out["blob"].update(_dev_then_held_out(blob, truth))
        if with_relion:
            with tempfile.TemporaryDirectory() as tmpd:
                rel = _relion(root, Path(tmpd))
            if rel is not None:
                out["relion_log"] = {**_dev_then_held_out(rel[0], truth), "seconds_per_micrograph": rel[1]}
    return out


def _pooled(picks: pd.DataFrame, truth: pd.DataFrame, threshold: float) -> dict[str, float]:
    return _scores(picks, truth, tuple(truth["micrograph"].unique()), threshold)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, default=None, help="probe corpus folder (built when absent)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "probes")
    ap.add_argument("--kind", default="patch_mean")
    ap.add_argument("--smoke", action="store_true", help="tiny corpus, one micrograph, few epochs")
    ap.add_argument("--no-picking", action="store_true")
    ap.add_argument("--no-relion", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or args.out / ("corpus-smoke" if args.smoke else "corpus")
    if not (corpus / "store").is_dir():
        opts = (ProbeCorpusOptions(procedural_chains=2, real_chains=1, particles_per_experiment=24)
                if args.smoke else ProbeCorpusOptions())
        build_probe_corpus(corpus, opts, shared_data=shared_data_root())
    settings = (ProbeSettings(heldout_fraction=0.25, lrs=(0.01, 0.1), epochs=60) if args.smoke
                else ProbeSettings(heldout_fraction=0.25))
    result: dict[str, Any] = {"checkpoint": str(args.checkpoint), "smoke": args.smoke,
                              "probes": probes(args.checkpoint, corpus, settings, args.kind)}
    print(probe_table(result["probes"]))
    if not args.no_picking:
        names = ("061_10028",) if args.smoke else DEV + HELD_OUT
        result["picking"] = picking(args.checkpoint, names, with_relion=not (args.no_relion or args.smoke))
        print(json.dumps(result["picking"], indent=2, default=float))
    (args.out / ("results-smoke.json" if args.smoke else "results.json")).write_text(
        json.dumps(result, indent=2, default=float) + "\n")
    return result


if __name__ == "__main__":
    main()
