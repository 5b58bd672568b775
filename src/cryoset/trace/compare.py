"""Compare a Cα model with a reference, as phenix.chain_comparison reports it.

Every reference Cα is matched to at most one predicted Cα within ``max_distance_a``
(3 Å by default) and vice versa: candidate pairs are taken in order of increasing
distance (greedy one-to-one assignment). The quantities:

- ``rmsd_a``: root mean square distance over matched pairs, Å;
- ``pct_matched``: 100 × matched / number of reference residues;
- ``pct_sequence_identity``: 100 × matched pairs with the same residue name / matched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class ModelComparison:
    """Result of :func:`compare_ca`."""

    n_reference: int
    n_predicted: int
    n_matched: int
    n_same_residue: int
    rmsd_a: float
    pct_matched: float
    pct_sequence_identity: float
    max_distance_a: float

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain-dict form for JSON (NaN, e.g. the RMSD of no match, becomes None)."""
        return {
            k: None if isinstance(v, float) and np.isnan(v) else v for k, v in asdict(self).items()
        }


def match_ca(
    predicted_a: npt.ArrayLike, reference_a: npt.ArrayLike, max_distance_a: float = 3.0
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Greedy one-to-one matching of Cα positions within a distance.

    Parameters
    ----------
    predicted_a, reference_a
        Positions, shapes (m, 3) and (n, 3), Å.
    max_distance_a
        Largest distance of a matched pair, Å.

    Returns
    -------
    pred_index, ref_index, distance_a
        Matched pairs, each shape (k,), sorted by reference index.
    """
    pred = np.asarray(predicted_a, dtype=np.float64).reshape(-1, 3)
    ref = np.asarray(reference_a, dtype=np.float64).reshape(-1, 3)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if pred.shape[0] == 0 or ref.shape[0] == 0:
        return empty
    sdm = cKDTree(pred).sparse_distance_matrix(cKDTree(ref), max_distance_a, output_type="ndarray")
    if sdm.size == 0:
        return empty
    order = np.lexsort((sdm["j"], sdm["i"], sdm["v"]))
    used_p = np.zeros(pred.shape[0], dtype=bool)
    used_r = np.zeros(ref.shape[0], dtype=bool)
    pi: list[int] = []
    ri: list[int] = []
    dist: list[float] = []
    for k in order:
        i, j = int(sdm["i"][k]), int(sdm["j"][k])
        if used_p[i] or used_r[j]:
            continue
        used_p[i] = used_r[j] = True
        pi.append(i)
        ri.append(j)
        dist.append(float(sdm["v"][k]))
    p_arr, r_arr, d_arr = np.asarray(pi, np.int64), np.asarray(ri, np.int64), np.asarray(dist)
    s = np.argsort(r_arr, kind="stable")
    return p_arr[s], r_arr[s], d_arr[s]


def compare_ca(
    predicted_a: npt.ArrayLike,
    predicted_names: npt.ArrayLike,
    reference_a: npt.ArrayLike,
    reference_names: npt.ArrayLike,
    max_distance_a: float = 3.0,
) -> ModelComparison:
    """RMSD, % matched and % sequence identity of a predicted Cα model.

    Parameters
    ----------
    predicted_a, reference_a
        Cα positions, shapes (m, 3) and (n, 3), Å.
    predicted_names, reference_names
        Residue names (three-letter), shapes (m,) and (n,).
    max_distance_a
        Match radius, Å.
    """
    p_names = np.asarray(predicted_names, dtype=object)
    r_names = np.asarray(reference_names, dtype=object)
    pi, ri, d = match_ca(predicted_a, reference_a, max_distance_a)
    n_ref = int(np.asarray(reference_a).reshape(-1, 3).shape[0])
    n_pred = int(np.asarray(predicted_a).reshape(-1, 3).shape[0])
    same = int(np.sum(p_names[pi] == r_names[ri])) if pi.size else 0
    return ModelComparison(
        n_reference=n_ref,
        n_predicted=n_pred,
        n_matched=int(pi.size),
        n_same_residue=same,
        rmsd_a=float(np.sqrt(np.mean(d**2))) if d.size else float("nan"),
        pct_matched=100.0 * pi.size / n_ref if n_ref else float("nan"),
        pct_sequence_identity=100.0 * same / pi.size if pi.size else float("nan"),
        max_distance_a=float(max_distance_a),
    )
