"""Curation: cluster experiments, keep the best few per cluster, split train/test by cluster.

Quality order inside a cluster (best first), a lexicographic sort on:

1. ``resolution_a`` ascending (unknown last) — the published map's resolution;
2. metadata completeness descending — the fraction of the acquisition fields
   (:data:`QUALITY_FIELDS`) that are known;
3. ``num_particles`` (if the column exists) then ``num_micrographs`` descending;
4. ``pixel_size_a`` ascending (finer sampling; unknown last);
5. ``experiment_id`` ascending (deterministic ties).

Splits assign whole clusters (hence whole experiments) to one split: clusters are
shuffled with the seed and each goes to the split furthest below its target share of
experiments.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from cryoset.catalog.cluster import Method, cluster_experiments
from cryoset.errors import InputError

#: Fields whose presence counts towards metadata completeness.
QUALITY_FIELDS: tuple[str, ...] = (
    "pixel_size_a", "voltage_kv", "cs_mm", "dose_e_per_a2", "resolution_a", "num_micrographs",
    "image_width_px", "image_height_px", "symmetry", "molecular_weight_mda",
)


def _known(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip() != ""
    try:
        return not bool(pd.isna(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return True


def completeness(records: pd.DataFrame) -> pd.Series:
    """Fraction of :data:`QUALITY_FIELDS` known per record (0…1)."""
    cols = [c for c in QUALITY_FIELDS if c in records.columns]
    known = np.array([[_known(v) for v in records[c]] for c in cols], dtype=float)
    return pd.Series(known.sum(axis=0) / len(QUALITY_FIELDS), index=records.index)


def _numeric(records: pd.DataFrame, col: str) -> pd.Series:
    if col not in records.columns:
        return pd.Series(np.nan, index=records.index)
    return pd.to_numeric(records[col], errors="coerce")


def rank_in_clusters(records: pd.DataFrame, cluster: pd.Series) -> pd.Series:
    """Quality rank of each record inside its cluster (0 = best; see module docstring)."""
    key = pd.DataFrame({
        "cluster": cluster.to_numpy(),
        "res": _numeric(records, "resolution_a").fillna(np.inf).to_numpy(),
        "compl": -completeness(records).to_numpy(),
        "parts": -_numeric(records, "num_particles").fillna(-1).to_numpy(),
        "mics": -_numeric(records, "num_micrographs").fillna(-1).to_numpy(),
        "pix": _numeric(records, "pixel_size_a").fillna(np.inf).to_numpy(),
        "id": records["experiment_id"].astype(str).to_numpy(),
    }, index=records.index)
    ordered = key.sort_values(["cluster", "res", "compl", "parts", "mics", "pix", "id"], kind="stable")
    ranks = ordered.groupby("cluster").cumcount()
    return ranks.reindex(records.index).astype(np.int64)


def split_clusters(cluster: pd.Series, fractions: Mapping[str, float], seed: int) -> pd.Series:
    """Assign whole clusters to splits.

    Parameters
    ----------
    cluster
        Cluster label per experiment.
    fractions
        split name → target fraction of experiments (positive, summing to 1).
    seed
        Seed of the cluster shuffle.

    Returns
    -------
    Series of str
        Split per experiment (same index as ``cluster``).
    """
    if not fractions:
        raise InputError("fractions", "need at least one split")
    names = list(fractions)
    frac = np.array([float(fractions[n]) for n in names])
    if np.any(frac <= 0) or abs(frac.sum() - 1) > 1e-6:
        raise InputError("fractions", f"must be positive and sum to 1, got {dict(fractions)}")
    sizes = cluster.value_counts()
    labels = np.array(sorted(sizes.index.tolist(), key=str), dtype=object)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    total = float(len(cluster))
    counts = np.zeros(len(names))
    assign: dict[object, str] = {}
    for k in order:
        lab = labels[k]
        deficit = frac * total - counts
        choice = int(np.argmax(deficit))
        assign[lab] = names[choice]
        counts[choice] += sizes[lab]
    return cluster.map(assign).astype(object)


def curate(records: pd.DataFrame, *, threshold: float = 0.3, max_per_cluster: int = 4,
           fractions: Mapping[str, float] | None = None, seed: int = 0,
           method: Method = "auto") -> pd.DataFrame:
    """Cluster by sequence identity, rank, keep representatives and split.

    Parameters
    ----------
    records
        Experiment records (:func:`cryoset.catalog.records.read_records`).
    threshold
        Identity threshold of a link (0.3 as in cryoPANDA).
    max_per_cluster
        Representatives kept per cluster (4 as in cryoPANDA).
    fractions
        Split targets over the kept experiments; default ``{"train": 0.8, "test": 0.2}``.
    seed
        Seed of the split.
    method
        ``mmseqs``, ``align`` or ``auto`` (:func:`cryoset.catalog.cluster.cluster_sequences`).

    Returns
    -------
    DataFrame
        The records plus ``cluster`` (int), ``rank_in_cluster`` (int, 0 = best),
        ``completeness`` (0…1), ``representative`` (bool) and ``split`` (str; empty for
        experiments not kept).
    """
    if max_per_cluster < 1:
        raise InputError("max-per-cluster", f"must be >= 1, got {max_per_cluster}")
    out = records.reset_index(drop=True).copy()
    seqs = {eid: list(s) for eid, s in zip(out["experiment_id"], out["sequences"], strict=True)}
    labels = cluster_experiments(seqs, threshold, method=method)
    out["cluster"] = out["experiment_id"].map(labels).astype(np.int64)
    out["completeness"] = completeness(out)
    out["rank_in_cluster"] = rank_in_clusters(out, out["cluster"])
    out["representative"] = out["rank_in_cluster"] < max_per_cluster
    kept = out["representative"]
    split = pd.Series("", index=out.index, dtype=object)
    if kept.any():
        split[kept] = split_clusters(out.loc[kept, "cluster"],
                                     fractions or {"train": 0.8, "test": 0.2}, seed)
    out["split"] = split
    return out
