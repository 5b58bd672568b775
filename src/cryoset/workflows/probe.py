"""``cryoset probe CONFIG.yaml -o OUT``: linear probes of frozen particle features with
experiment-level ID/OOD splits, with and without acquisition regress-out (docs/probes.md).

Configuration (YAML; relative paths are relative to the file)::

    store: probe-corpus/store       # a particle store
    embedding: cls                  # a stored embedding (``cryoset embed --name``) …
    checkpoint: model.safetensors   # … or features computed on the fly from a checkpoint
    kind: patch_mean                # on the fly: cls, patch_mean or both
    batch_size: 64
    device: cpu
    where: "source = 'simulated'"   # optional SQL condition on the particles view
    tasks: [symmetry, pixel_size, molecular_weight, max_diameter, emd_resolution, defocus,
            {column: snr, bins: 4}, {column: structure, kind: categorical}]
    split: {heldout_fraction: 0.15, id_eval_fraction: 0.125, seed: 37,
            max_particles_per_experiment: null}
    probe: {lrs: [0.001, 0.003, 0.01, 0.03, 0.1], epochs: 300, weight_decay: 0.0001,
            val_fraction: 0.2}
    regress_out: true               # or false, or {columns: [voltage_kv, pixel_size_a, …]}

Outputs (``OUT/``, all appear together when complete): ``probes.csv`` and ``probes.md`` (balanced
accuracy ID and OOD per task and variant), ``confusion.json`` (every confusion matrix with its
class labels and bin edges), ``probes.png`` (bars) and ``confusion.png`` (OOD matrices),
``split.json`` (experiments on each side, row counts, what was regressed out) and
``provenance.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.learn.probe_tasks import PAPER_TASKS, ProbeSettings, ProbeTask, TaskResult, parse_task

__all__ = ["ProbeConfig", "load_probe_config", "load_probe_features", "run_probe", "write_probe_report"]

PathLike = str | os.PathLike[str]
_KEYS = {"store", "embedding", "checkpoint", "kind", "batch_size", "device", "where", "tasks", "split",
         "probe", "regress_out"}


class ProbeConfig:
    """A validated probe configuration (see the module docstring)."""

    def __init__(self, source: Path, store: Path, embedding: str | None, checkpoint: Path | None, kind: str,
                 batch_size: int, device: str, where: str | None, tasks: list[ProbeTask], settings: ProbeSettings,
                 regress_out: bool, regress_columns: list[str] | None) -> None:
        self.source, self.store, self.embedding, self.checkpoint = source, store, embedding, checkpoint
        self.kind, self.batch_size, self.device, self.where = kind, batch_size, device, where
        self.tasks, self.settings = tasks, settings
        self.regress_out, self.regress_columns = regress_out, regress_columns

    def record(self) -> dict[str, Any]:
        """Plain values for the provenance."""
        return {"config": str(self.source), "store": str(self.store), "embedding": self.embedding,
                "checkpoint": None if self.checkpoint is None else str(self.checkpoint), "kind": self.kind,
                "where": self.where, "tasks": [asdict(t) for t in self.tasks], "settings": asdict(self.settings),
                "regress_out": self.regress_out, "regress_columns": self.regress_columns}


def load_probe_config(path: PathLike) -> ProbeConfig:
    """Read and check a probe configuration; :class:`InputError` names the first bad entry."""
    import yaml

    from cryoset.learn.regress_out import ACQUISITION_COLUMNS

    src = Path(path)
    if not src.is_file():
        raise InputError(src, "no such configuration file")
    try:
        raw = yaml.safe_load(src.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(src, f"is not valid YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise InputError(src, "must be a mapping (store:, embedding: or checkpoint:, tasks: …)")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise InputError(src, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    if "store" not in raw:
        raise InputError(src, "store: is required")
    store = (src.parent / str(raw["store"])).resolve()
    embedding = raw.get("embedding")
    ckpt = raw.get("checkpoint")
    if (embedding is None) == (ckpt is None):
        raise InputError(src, "give exactly one of embedding: (stored vectors) or checkpoint: (on the fly)")
    kind = str(raw.get("kind", "patch_mean"))
    if kind not in ("cls", "patch_mean", "both"):
        raise InputError(src, f"kind: must be cls, patch_mean or both, got {kind!r}")
    batch = raw.get("batch_size", 64)
    if not isinstance(batch, int) or batch < 1:
        raise InputError(src, f"batch_size: must be a positive integer, got {batch!r}")
    entries = raw.get("tasks", list(PAPER_TASKS))
    if not isinstance(entries, list) or not entries:
        raise InputError(src, "tasks: must be a non-empty list")
    try:
        tasks = [parse_task(e) for e in entries]
    except (ValueError, TypeError) as exc:
        raise InputError(src, f"tasks: {exc}") from None
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise InputError(src, "tasks: names must be unique")
    split = raw.get("split") or {}
    probe = raw.get("probe") or {}
    if not isinstance(split, dict) or not isinstance(probe, dict):
        raise InputError(src, "split: and probe: must be mappings")
    allowed_split = {"heldout_fraction", "id_eval_fraction", "seed", "max_particles_per_experiment"}
    allowed_probe = {"lrs", "epochs", "weight_decay", "val_fraction"}
    for sect, d, allowed in (("split", split, allowed_split), ("probe", probe, allowed_probe)):
        bad = sorted(set(d) - allowed)
        if bad:
            raise InputError(src, f"{sect}.{bad[0]}: unknown key (known: {', '.join(sorted(allowed))})")
    try:
        merged: dict[str, Any] = {**split, **{k: (tuple(float(x) for x in v) if k == "lrs" else v)
                                              for k, v in probe.items()}}
        settings = ProbeSettings(**merged)
        for name in ("heldout_fraction", "id_eval_fraction", "val_fraction"):
            v = float(getattr(settings, name))
            if not 0 < v < 1:
                raise ValueError(f"{name}: must be in (0, 1), got {v}")
        if not settings.lrs or not all(math.isfinite(x) and x > 0 for x in settings.lrs):
            raise ValueError("lrs: must be positive numbers")
        if int(settings.epochs) < 1:
            raise ValueError("epochs: must be >= 1")
        m = settings.max_particles_per_experiment
        if m is not None and (not isinstance(m, int) or m < 2):
            raise ValueError("max_particles_per_experiment: must be an integer >= 2")
    except (TypeError, ValueError) as exc:
        raise InputError(src, f"split/probe: {exc}") from None
    ro = raw.get("regress_out", True)
    cols: list[str] | None = None
    if isinstance(ro, dict):
        bad = sorted(set(ro) - {"columns"})
        if bad:
            raise InputError(src, f"regress_out.{bad[0]}: unknown key (known: columns)")
        cols = [str(c) for c in ro.get("columns", [])]
        known = {c[0] for c in ACQUISITION_COLUMNS}
        if not set(cols) <= known:
            raise InputError(src, f"regress_out.columns: unknown {sorted(set(cols) - known)} "
                                  f"(known: {', '.join(sorted(known))})")
        ro = True
    elif not isinstance(ro, bool):
        raise InputError(src, "regress_out: must be true, false or {columns: [...]}")
    where = raw.get("where")
    return ProbeConfig(src, store, None if embedding is None else str(embedding),
                       None if ckpt is None else (src.parent / str(ckpt)).resolve(), kind, batch,
                       str(raw.get("device", "cpu")), None if where is None else str(where), tasks, settings,
                       bool(ro), cols)


def load_probe_features(config: ProbeConfig, *, on_progress: Callable[[int, int], None] | None = None
                        ) -> tuple[pd.DataFrame, NDArray[np.float32], int | None, list[Path]]:
    """The particle table, one feature row per particle, the encoder input size and the input files."""
    from cryoset.store.dataset import ParticleStore

    store = ParticleStore.open(config.store)
    sql = "SELECT * FROM particles" + (f" WHERE {config.where}" if config.where else "")
    try:
        frame = store.query(sql)
    except Exception as exc:  # duckdb's errors: a bad condition is the user's input
        raise InputError(config.source, f"where: the query failed ({str(exc).splitlines()[0]})") from None
    frame = frame.sort_values(["experiment_id", "particle_index"], kind="stable").reset_index(drop=True)
    if frame.empty:
        raise InputError(config.store, "no particles match")
    inputs: list[Path] = [config.source]
    if config.embedding is not None:
        from cryoset.workflows.embed import read_embeddings

        index, vectors = read_embeddings(store, config.embedding)
        merged = frame.merge(index, on=["experiment_id", "particle_index"], how="inner", validate="one_to_one")
        if len(merged) < len(frame):
            raise InputError(config.store, f"embedding {config.embedding!r} lacks {len(frame) - len(merged)} of the "
                                           f"{len(frame)} selected particles (run cryoset embed on them)")
        feats = np.asarray(vectors[merged["row"].to_numpy(np.int64)], np.float32)
        input_size = None
        for exp in store.experiments():
            rec_path = store.root / "experiments" / exp / "embeddings" / config.embedding / "embedding.json"
            if rec_path.is_file():
                rec = json.loads(rec_path.read_text())
                input_size = int(rec.get("checkpoint_metadata", {}).get("input_size") or 0) or None
                break
        return merged.drop(columns=["row"]), feats, input_size, inputs
    import torch

    from cryoset.learn.vit_weights import load_vit, resolve_vit_checkpoint
    from cryoset.workflows.embed import embed_particles

    ckpt = resolve_vit_checkpoint(config.checkpoint)
    model, meta = load_vit(ckpt)
    model = model.to(config.device).eval()
    torch.manual_seed(0)
    parts: list[NDArray[np.float32]] = []
    done, total = 0, len(frame)
    block = store.chunk_particles
    for exp_id, sub in frame.groupby("experiment_id", sort=False):
        idx = sub["particle_index"].to_numpy(np.int64)
        for lo in range(0, len(idx), block):
            v = embed_particles(store, str(exp_id), idx[lo:lo + block], model, config.kind, meta, config.batch_size,
                             config.device)
            parts.append(v.astype(np.float32))
            done += len(v)
            if on_progress is not None:
                on_progress(done, total)
    inputs.append(ckpt)
    return frame, np.concatenate(parts), int(meta["input_size"]), inputs


def _markdown(table: pd.DataFrame) -> str:
    lines = ["| task | variant | classes | ID bal. acc. | OOD bal. acc. | n train | n ID | n OOD | lr |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        lines.append(f"| {r['task']} | {r['variant']} | {r['classes']} | {100 * r['id_balanced_accuracy']:.1f} | "
                     f"{100 * r['ood_balanced_accuracy']:.1f} | {r['n_train']} | {r['n_id']} | {r['n_ood']} | "
                     f"{r['lr']:g} |")
    for variant, sub in table.groupby("variant", sort=False):
        lines.append(f"| **mean** | {variant} | | {100 * sub['id_balanced_accuracy'].mean():.1f} | "
                     f"{100 * sub['ood_balanced_accuracy'].mean():.1f} | | | | |")
    return "\n".join(lines) + "\n"


def _plots(table: pd.DataFrame, results: list[TaskResult], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(table["task"]))
    variants = list(dict.fromkeys(table["variant"]))
    bars = [(v, s) for v in variants for s in ("id", "ood")]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(tasks) + 2), 3.6), dpi=120)
    width = 0.8 / len(bars)
    for k, (v, s) in enumerate(bars):
        vals = [float(table[(table["task"] == t) & (table["variant"] == v)][f"{s}_balanced_accuracy"].iloc[0])
                if ((table["task"] == t) & (table["variant"] == v)).any() else np.nan for t in tasks]
        ax.bar(np.arange(len(tasks)) + (k - (len(bars) - 1) / 2) * width, vals, width,
               label=f"{s.upper()} {v.replace('_', '-')}")
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=20)
    ax.set_ylabel("balanced accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("linear probes: in-distribution vs held-out experiments")
    fig.tight_layout()
    fig.savefig(dest / "probes.png")
    plt.close(fig)
    raw = [r for r in results if r.variant == "raw"]
    n = max(len(raw), 1)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), dpi=110, squeeze=False)
    for ax, r in zip(axes.ravel(), raw, strict=False):
        m = r.ood_confusion.astype(np.float64)
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{r.task} (OOD {100 * r.ood_balanced_accuracy:.0f}%)", fontsize=8)
        ax.set_xticks(range(len(r.classes)), r.classes, fontsize=6, rotation=90)
        ax.set_yticks(range(len(r.classes)), r.classes, fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    for ax in axes.ravel()[len(raw):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(dest / "confusion.png")
    plt.close(fig)


def write_probe_report(out: PathLike, results: list[TaskResult], split_info: dict[str, Any],
                       provenance: dict[str, Any]) -> pd.DataFrame:
    """Write the table (CSV, markdown), confusion matrices, plots, split and provenance into ``out``."""
    from cryoset.io.atomic import staged_directory

    table = pd.DataFrame([r.row() for r in results])
    if table.empty:
        raise InputError(split_info.get("store", out), "no task could be run: no task column has two or more "
                                                       "classes among the probe-train particles")
    conf = [{"task": r.task, "variant": r.variant, "classes": r.classes, "info": r.info,
             "validation_balanced_accuracy": {str(k): v for k, v in r.validation.items()},
             "id": r.id_confusion.tolist(), "ood": r.ood_confusion.tolist()} for r in results]
    with staged_directory(out) as tmp:
        table.to_csv(tmp / "probes.csv", index=False, float_format="%.6g")
        (tmp / "probes.md").write_text(_markdown(table), encoding="utf-8")
        (tmp / "confusion.json").write_text(json.dumps(conf, indent=1, default=str) + "\n", encoding="utf-8")
        (tmp / "split.json").write_text(json.dumps(split_info, indent=1, default=str) + "\n", encoding="utf-8")
        _plots(table, results, tmp)
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n",
                                             encoding="utf-8")
    return table


def _check_output(out: Path) -> None:
    """Refuse an output folder that cannot be made (before the expensive part)."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(out, f"cannot be created: {parent} is a regular file")
            return


def run_probe(config_path: PathLike, out: PathLike, *, on_progress: Callable[[int, int], None] | None = None,
              argv: list[str] | None = None) -> dict[str, Any]:
    """Load the features, run every task with the experiment-level split, write the report.

    Returns a summary: ``out``, ``table`` (rows of probes.csv), split sizes and regress-out info.
    """
    from cryoset.learn.probe_tasks import run_probe_tasks
    from cryoset.provenance import make_provenance

    config = load_probe_config(config_path)
    _check_output(Path(out))
    frame, feats, input_size, inputs = load_probe_features(config, on_progress=on_progress)
    if "experiment_id" not in frame or frame["experiment_id"].nunique() < 2:
        raise InputError(config.store, "an experiment-level split needs at least 2 experiments")
    if not np.isfinite(feats).all():
        raise InputError(config.store, "the features hold NaN or infinite values")
    results, split, ro = run_probe_tasks(frame, feats, config.tasks, settings=config.settings,
                                         input_size=input_size, regress_out=config.regress_out,
                                         regress_columns=config.regress_columns)
    split_info = {"store": str(config.store), "train_experiments": list(split.train_experiments),
                  "heldout_experiments": list(split.heldout_experiments),
                  "rows": {"train": len(split.train), "id_eval": len(split.id_eval), "ood_eval": len(split.ood_eval)},
                  "feature_dim": int(feats.shape[1]), "input_size": input_size, "regress_out": ro,
                  "skipped_tasks": sorted({t.name for t in config.tasks} - {r.task for r in results})}
    prov = make_provenance("probe", config.record(), inputs, argv=argv)
    table = write_probe_report(out, results, split_info, prov)
    return {"out": str(out), "table": json.loads(table.to_json(orient="records")), **split_info}


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """Human-readable lines of a :func:`run_probe` summary."""
    lines = [f"{r['task']:18s} {r['variant']:14s} ID {100 * r['id_balanced_accuracy']:5.1f}  "
             f"OOD {100 * r['ood_balanced_accuracy']:5.1f}" for r in summary["table"]]
    lines.append(f"{len(summary['train_experiments'])} training / {len(summary['heldout_experiments'])} held-out "
                 f"experiments → {summary['out']}")
    return lines
