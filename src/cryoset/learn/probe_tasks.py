"""Linear-probe tasks on frozen particle features with experiment-level ID/OOD splits.

Pure: tables and arrays in, results out (files are the workflow's business,
:mod:`cryoset.workflows.probe`).

**Tasks** (:data:`PAPER_TASKS`, cryoPANDA's final table; ml-anchors (c)); every task is a
classification:

=================  ===========================================  ======================
task               label                                        classes
=================  ===========================================  ======================
symmetry           ``symmetry`` (point group)                   categories
pixel_size         ``pixel_size_a × image_size_px / input_size``  5 quantile bins
                   (effective Å/px of the encoder input)
molecular_weight   ``molecular_weight_kda``                     5 quantile bins
max_diameter       ``max_diameter_a``                           4 quantile bins
emd_resolution     ``emd_resolution_a``                         4 quantile bins
defocus            ``defocus_a`` (else ``defocus_v_a``)         4 quantile bins
=================  ===========================================  ======================

plus any store column by name (:class:`ProbeTask` with ``kind="quantile"`` or
``"categorical"``). Bin edges are quantiles of the **probe-train** values only
(:func:`cryoset.learn.probes.quantile_bins`), applied to every split.

**Splits** (:func:`experiment_split`, :func:`particle_split`): a seeded fraction of the
experiments is held out entirely (OOD evaluation); the particles of the other (training)
experiments are split, seeded, into probe-train and ID-evaluation, disjoint. The learning
rate of each probe is chosen on a stratified validation part of the probe-train rows
(:func:`cryoset.learn.probes.fit_linear_probe`), never on a reported evaluation set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cryoset.learn.probes import (
    assign_bins,
    balanced_accuracy,
    confusion_matrix,
    fit_linear_probe,
    quantile_bins,
)
from cryoset.learn.regress_out import acquisition_matrix, fit_regress_out

__all__ = [
    "PAPER_TASKS",
    "ProbeSettings",
    "ProbeTask",
    "Split",
    "TaskResult",
    "experiment_split",
    "parse_task",
    "particle_split",
    "run_probe_tasks",
    "task_labels",
]


@dataclass(frozen=True)
class ProbeTask:
    """One probe task.

    Attributes
    ----------
    name
        Reported name.
    columns
        Store columns, the first present (non-null) one is used.
    kind
        ``"quantile"`` (numeric, binned) or ``"categorical"``.
    n_bins
        Quantile bins (``kind="quantile"``).
    scale_by_box
        Pixel-size label: multiply by ``image_size_px / input_size``.
    """

    name: str
    columns: tuple[str, ...]
    kind: str = "quantile"
    n_bins: int = 4
    scale_by_box: bool = False


PAPER_TASKS: dict[str, ProbeTask] = {
    "symmetry": ProbeTask("symmetry", ("symmetry",), "categorical"),
    "pixel_size": ProbeTask("pixel_size", ("pixel_size_a",), "quantile", 5, scale_by_box=True),
    "molecular_weight": ProbeTask("molecular_weight", ("molecular_weight_kda",), "quantile", 5),
    "max_diameter": ProbeTask("max_diameter", ("max_diameter_a",), "quantile", 4),
    "emd_resolution": ProbeTask("emd_resolution", ("emd_resolution_a",), "quantile", 4),
    "defocus": ProbeTask("defocus", ("defocus_a", "defocus_v_a"), "quantile", 4),
}


def parse_task(entry: str | Mapping[str, Any]) -> ProbeTask:
    """A task from a configuration entry.

    ``"symmetry"`` (a paper task), ``"some_column"`` (any other name: a store column, quantile
    bins if numeric else categorical — decided by :func:`task_labels`), or a mapping
    ``{column: NAME, kind: quantile|categorical, bins: 4, name: REPORTED}``.
    """
    if isinstance(entry, str):
        return PAPER_TASKS.get(entry, ProbeTask(entry, (entry,), "auto", 4))
    if not isinstance(entry, Mapping) or "column" not in entry:
        raise ValueError(f"a task is a name or a mapping with 'column', got {entry!r}")
    unknown = set(entry) - {"column", "kind", "bins", "name"}
    if unknown:
        raise ValueError(f"unknown task keys {sorted(unknown)}")
    kind = str(entry.get("kind", "auto"))
    if kind not in ("auto", "quantile", "categorical"):
        raise ValueError(f"task kind must be quantile or categorical, got {kind!r}")
    bins = int(entry.get("bins", 4))
    if bins < 2:
        raise ValueError(f"task bins must be >= 2, got {bins}")
    col = str(entry["column"])
    return ProbeTask(str(entry.get("name", col)), (col,), kind, bins)


@dataclass(frozen=True)
class Split:
    """Row numbers of the three parts and the experiments of each side."""

    train: NDArray[np.int64]
    id_eval: NDArray[np.int64]
    ood_eval: NDArray[np.int64]
    train_experiments: tuple[str, ...]
    heldout_experiments: tuple[str, ...]


def experiment_split(experiments: Sequence[str], heldout_fraction: float, seed: int
                     ) -> tuple[list[str], list[str]]:
    """``(training, held-out)`` experiments: a seeded ``heldout_fraction`` held out entirely.

    At least one experiment on each side when there are two or more.
    """
    exps = sorted(set(str(e) for e in experiments))
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    if len(exps) < 2:
        raise ValueError(f"an experiment-level split needs at least 2 experiments, got {len(exps)}")
    n_held = min(max(round(heldout_fraction * len(exps)), 1), len(exps) - 1)
    order = np.random.default_rng(seed).permutation(len(exps))
    held = sorted(exps[i] for i in order[:n_held])
    return [e for e in exps if e not in set(held)], held


def particle_split(experiment_ids: ArrayLike, heldout_fraction: float, id_eval_fraction: float, seed: int,
                   max_per_experiment: int | None = None) -> Split:
    """The three parts of a table whose row ``i`` belongs to experiment ``experiment_ids[i]``.

    Held-out experiments (:func:`experiment_split`) → ``ood_eval``; every training experiment's
    particles are shuffled (seeded) and ``id_eval_fraction`` of them → ``id_eval``, the rest →
    ``train``. ``max_per_experiment`` caps the rows used per experiment (a seeded subset).
    """
    ids = np.asarray(experiment_ids).astype(str)
    if not 0 < id_eval_fraction < 1:
        raise ValueError(f"id_eval_fraction must be in (0, 1), got {id_eval_fraction}")
    train_exps, held = experiment_split(ids.tolist(), heldout_fraction, seed)
    rng = np.random.default_rng([seed, 1])
    tr: list[NDArray[np.int64]] = []
    ide: list[NDArray[np.int64]] = []
    ood: list[NDArray[np.int64]] = []
    held_set = set(held)
    for e in sorted(set(ids.tolist())):
        rows = rng.permutation(np.flatnonzero(ids == e))
        if max_per_experiment is not None:
            rows = rows[:max_per_experiment]
        if e in held_set:
            ood.append(rows)
            continue
        n_eval = min(max(round(id_eval_fraction * len(rows)), 1 if len(rows) > 1 else 0), len(rows) - 1)
        ide.append(rows[:n_eval])
        tr.append(rows[n_eval:])

    def cat(parts: list[NDArray[np.int64]]) -> NDArray[np.int64]:
        return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

    return Split(cat(tr), cat(ide), cat(ood), tuple(train_exps), tuple(held))


def task_labels(task: ProbeTask, frame: pd.DataFrame, train_rows: NDArray[np.int64], *,
                input_size: int | None = None) -> tuple[NDArray[Any], NDArray[np.bool_], dict[str, Any]] | None:
    """Labels of every row for ``task``, which rows have one, and how they were made.

    Returns None when the table has no usable column for the task (absent or all missing, or
    fewer than two classes among the probe-train rows).

    Returns
    -------
    labels : (n,)
        Category names (categorical) or bin numbers (quantile); meaningless where not valid.
    valid : (n,) bool
    info
        ``column``, ``kind`` and, for quantile tasks, the bin ``edges`` (from ``train_rows``).
    """
    col = next((c for c in task.columns if c in frame.columns and frame[c].notna().any()), None)
    if col is None:
        return None
    series = frame[col]
    kind = task.kind
    if kind == "auto":
        kind = "quantile" if pd.api.types.is_numeric_dtype(series) else "categorical"
    info: dict[str, Any] = {"column": col, "kind": kind}
    if kind == "categorical":
        s = series.astype("string")
        valid = s.notna().to_numpy() & (s.fillna("") != "").to_numpy()
        labels = s.fillna("").to_numpy(dtype=object).astype(str)
    else:
        v = pd.to_numeric(series, errors="coerce").to_numpy(np.float64)
        if task.scale_by_box:
            if input_size is None or "image_size_px" not in frame.columns:
                return None
            v = v * pd.to_numeric(frame["image_size_px"], errors="coerce").to_numpy(np.float64) / float(input_size)
            info["label"] = f"{col} × image_size_px / {input_size}"
        valid = np.isfinite(v)
        tv = v[train_rows][valid[train_rows]]
        if len(np.unique(tv)) < 2:
            return None
        edges = np.unique(quantile_bins(tv, task.n_bins))
        info["edges"] = [float(e) for e in edges]
        labels = assign_bins(np.where(valid, v, 0.0), edges)
    tl = labels[train_rows][valid[train_rows]]
    if len(np.unique(tl)) < 2:
        return None
    return labels, valid, info


@dataclass(frozen=True)
class ProbeSettings:
    """Split and probe-fitting settings (the ``split:`` and ``probe:`` sections of the config)."""

    heldout_fraction: float = 0.15
    id_eval_fraction: float = 0.125
    seed: int = 37
    max_particles_per_experiment: int | None = None
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    epochs: int = 300
    weight_decay: float = 1e-4
    val_fraction: float = 0.2


@dataclass
class TaskResult:
    """One task under one feature variant (``raw`` or ``regressed_out``)."""

    task: str
    variant: str
    info: dict[str, Any]
    classes: list[str]
    lr: float
    n_train: int
    n_id: int
    n_ood: int
    id_balanced_accuracy: float
    ood_balanced_accuracy: float
    id_confusion: NDArray[np.int64]
    ood_confusion: NDArray[np.int64]
    validation: dict[float, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """A flat table row."""
        return {"task": self.task, "variant": self.variant, "column": self.info.get("column"),
                "kind": self.info.get("kind"), "classes": len(self.classes), "lr": self.lr,
                "n_train": self.n_train, "n_id": self.n_id, "n_ood": self.n_ood,
                "id_balanced_accuracy": self.id_balanced_accuracy,
                "ood_balanced_accuracy": self.ood_balanced_accuracy}


def _bacc(y: NDArray[Any], p: NDArray[Any]) -> float:
    return balanced_accuracy(y, p) if len(y) else float("nan")


def run_probe_tasks(frame: pd.DataFrame, features: ArrayLike, tasks: Sequence[ProbeTask], *,
                    settings: ProbeSettings = ProbeSettings(), input_size: int | None = None,
                    regress_out: bool = True, regress_columns: Sequence[str] | None = None
                    ) -> tuple[list[TaskResult], Split, dict[str, Any]]:
    """Fit and evaluate one linear probe per task (and again on regressed-out features).

    Parameters
    ----------
    frame
        One row per feature row: ``experiment_id`` and the task / acquisition columns.
    features : (n, d)
    regress_out
        Also run every task on features with the acquisition subspace removed
        (:mod:`cryoset.learn.regress_out`, fitted on the probe-train rows only).

    Returns
    -------
    results
        Per task: variant ``raw`` (and ``regressed_out``).
    split
        The rows of each part.
    regress_info
        ``columns`` regressed out, ``rank`` of the removed subspace, per-column training R².
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(frame):
        raise ValueError(f"features must be ({len(frame)}, d), got {x.shape}")
    split = particle_split(frame["experiment_id"].to_numpy(), settings.heldout_fraction,
                           settings.id_eval_fraction, settings.seed, settings.max_particles_per_experiment)
    variants: dict[str, NDArray[np.float32]] = {"raw": x}
    ro_info: dict[str, Any] = {"enabled": bool(regress_out)}
    if regress_out:
        train_mask = np.zeros(len(frame), bool)
        train_mask[split.train] = True
        nuis, names = acquisition_matrix(frame, train_mask, columns=regress_columns)
        proj = fit_regress_out(x[split.train], nuis[split.train], names=names)
        variants["regressed_out"] = proj.apply(x)
        ro_info.update({"columns": names, "rank": proj.rank,
                        "train_r2": dict(zip(names, proj.train_r2, strict=True))})
    results: list[TaskResult] = []
    for task in tasks:
        made = task_labels(task, frame, split.train, input_size=input_size)
        if made is None:
            continue
        labels, valid, info = made
        tr = split.train[valid[split.train]]
        seen = set(np.unique(labels[tr]).tolist())
        # as the paper: evaluation rows of a class absent from probe-train are dropped (counted)
        ide_all = split.id_eval[valid[split.id_eval]]
        ood_all = split.ood_eval[valid[split.ood_eval]]
        ide = ide_all[np.isin(labels[ide_all], list(seen))]
        ood = ood_all[np.isin(labels[ood_all], list(seen))]
        info = {**info, "dropped_unseen_class": {"id": int(len(ide_all) - len(ide)),
                                                 "ood": int(len(ood_all) - len(ood))}}
        for variant, feats in variants.items():
            probe = fit_linear_probe(feats[tr], labels[tr], lrs=settings.lrs, val_fraction=settings.val_fraction,
                                     seed=settings.seed, epochs=settings.epochs, weight_decay=settings.weight_decay)
            classes = probe.classes
            p_id = probe.predict(feats[ide]) if len(ide) else labels[ide]
            p_ood = probe.predict(feats[ood]) if len(ood) else labels[ood]
            cm_id, _ = confusion_matrix(labels[ide], p_id, labels=classes)
            cm_ood, _ = confusion_matrix(labels[ood], p_ood, labels=classes)
            results.append(TaskResult(
                task.name, variant, info, [str(c) for c in classes.tolist()], probe.lr, len(tr), len(ide), len(ood),
                _bacc(labels[ide], p_id), _bacc(labels[ood], p_ood), cm_id, cm_ood,
                dict(probe.validation_balanced_accuracy)))
    return results, split, ro_info
