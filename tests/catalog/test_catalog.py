"""Catalogue: exact alignment, MMseqs2 agreement, clustering, representatives, splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoset.catalog.align import BLOSUM_ALPHABET, align_pair, blosum62, identity, identity_matrix
from cryoset.catalog.cluster import (
    align_pairs,
    cluster_experiments,
    cluster_sequences,
    clusters_from_pairs,
    mmseqs_pairs,
)
from cryoset.catalog.curate import curate, split_clusters
from cryoset.catalog.records import normalise_records, read_fasta, read_records
from cryoset.errors import InputError
from cryoset.testing import require_program, require_shared_data

AA = "ACDEFGHIKLMNPQRSTVWY"


def _random_seq(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list(AA), n))


def _mutate(rng: np.random.Generator, seq: str, fraction: float) -> str:
    s = list(seq)
    for k in rng.choice(len(s), round(fraction * len(s)), replace=False):
        s[k] = rng.choice([a for a in AA if a != s[k]])
    return "".join(s)


def _families(rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """Four families of three (25–45 % substitutions, one with an insertion) + two orphans."""
    seqs, truth = [], []
    for fam in range(4):
        base = _random_seq(rng, 140)
        for k, frac in enumerate((0.0, 0.25, 0.45)):
            s = _mutate(rng, base, frac)
            if k == 1:
                s = s[:60] + _random_seq(rng, 8) + s[60:]
            seqs.append(s)
            truth.append(fam)
    for orphan in range(2):
        seqs.append(_random_seq(rng, 100 + 20 * orphan))
        truth.append(4 + orphan)
    return seqs, truth


def test_blosum62_is_symmetric_with_known_entries() -> None:
    m = blosum62()
    idx = BLOSUM_ALPHABET.index
    assert np.array_equal(m, m.T)
    assert m[idx("W"), idx("W")] == 11 and m[idx("C"), idx("C")] == 9 and m[idx("A"), idx("A")] == 4
    assert m[idx("W"), idx("F")] == 1 and m[idx("E"), idx("D")] == 2 and m[idx("I"), idx("G")] == -4
    assert (np.diag(m)[:20] > 0).all()


def test_identity_counts_over_the_shorter_sequence(rng: np.random.Generator) -> None:
    base = _random_seq(rng, 100)
    assert identity(base, base) == 1.0
    assert identity(base, base[20:70]) == 1.0  # contained: free end gaps
    assert identity(base, _mutate(rng, base, 0.1)) == pytest.approx(0.9)
    inserted = base[:50] + "WWWWW" + base[50:]
    score, ident, aligned = align_pair(base, inserted)
    assert ident == 100 and aligned == 100
    assert score == align_pair(inserted, base)[0]
    assert score == sum(blosum62()[BLOSUM_ALPHABET.index(c)][BLOSUM_ALPHABET.index(c)] for c in base) - 11 - 4
    unrelated = identity(base, _random_seq(rng, 100))
    assert unrelated < 0.2


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=AA, min_size=1, max_size=40), st.text(alphabet=AA, min_size=1, max_size=40))
def test_alignment_is_symmetric_and_identity_bounded(a: str, b: str) -> None:
    sa, ia, _ = align_pair(a, b)
    sb, ib, _ = align_pair(b, a)
    assert sa == sb
    assert 0 <= ia <= min(len(a), len(b)) and 0 <= ib <= min(len(a), len(b))


@pytest.mark.slow
def test_mmseqs_and_exact_alignment_give_the_same_clusters(rng: np.random.Generator) -> None:
    require_program("mmseqs")
    seqs, truth = _families(rng)
    assert cluster_sequences(seqs, 0.3, method="align") == truth
    exact_pairs = align_pairs(seqs)
    mm_pairs = mmseqs_pairs(seqs)  # one MMseqs2 run (slow to start on a loaded machine)
    assert clusters_from_pairs(len(seqs), mm_pairs, 0.3) == truth
    assert clusters_from_pairs(len(seqs), exact_pairs, 0.3) == truth
    # the identities are comparable: same definition, within a few percent on linked pairs
    exact = exact_pairs.set_index(["i", "j"])["identity"]
    mm = mm_pairs.set_index(["i", "j"])["identity"]
    related = mm[mm >= 0.3]
    assert len(related) == 12
    assert np.abs(related - exact.loc[related.index]).max() < 0.05


def test_cluster_experiments_links_shared_sequences_and_keeps_orphans(rng: np.random.Generator) -> None:
    a, b, c = (_random_seq(rng, 80) for _ in range(3))
    labels = cluster_experiments({"E1": [a], "E2": [b, _mutate(rng, a, 0.2)], "E3": [b], "E4": [c],
                                  "E5": []}, method="align")
    assert labels["E1"] == labels["E2"] == labels["E3"]
    assert len({labels["E1"], labels["E4"], labels["E5"]}) == 3
    mat = identity_matrix([a, b, c])
    assert np.allclose(mat, mat.T) and np.allclose(np.diag(mat), 1)


def _records(rng: np.random.Generator) -> pd.DataFrame:
    fam = _random_seq(rng, 120)
    other = _random_seq(rng, 120)
    rows = [{"experiment_id": f"F{k}", "sequences": [_mutate(rng, fam, 0.1)], "resolution_a": res,
             "pixel_size_a": 1.0, "voltage_kv": 300.0}
            for k, res in enumerate([3.5, 2.8, 4.1, 2.8, 6.0, None])]
    rows.append({"experiment_id": "G0", "sequences": [other], "resolution_a": 3.0})
    return normalise_records(rows)


def test_curate_keeps_the_four_best_per_cluster(rng: np.random.Generator) -> None:
    cat = curate(_records(rng), method="align", seed=3)
    fam = cat[cat["experiment_id"].str.startswith("F")].set_index("experiment_id")
    assert fam["cluster"].nunique() == 1
    assert cat.loc[cat["experiment_id"] == "G0", "cluster"].item() != fam["cluster"].iloc[0]
    # resolution first; F1 and F3 tie at 2.8 Å and equal completeness → id order
    order = fam.sort_values("rank_in_cluster").index.tolist()
    assert order == ["F1", "F3", "F0", "F2", "F4", "F5"]
    assert fam["representative"].sum() == 4 and not fam.loc[["F4", "F5"], "representative"].any()
    assert (fam.loc[["F4", "F5"], "split"] == "").all()
    kept = cat[cat["representative"]]
    assert kept.groupby("cluster")["split"].nunique().max() == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=60), st.integers(0, 2**31 - 1),
       st.floats(0.05, 0.95))
def test_splits_never_cut_a_cluster(labels: list[int], seed: int, test_fraction: float) -> None:
    cluster = pd.Series(labels, index=[f"E{k}" for k in range(len(labels))])
    fractions = {"train": 1 - test_fraction, "test": test_fraction}
    split = split_clusters(cluster, fractions, seed)
    assert split.index.equals(cluster.index) and split.isin(["train", "test"]).all()
    assert pd.DataFrame({"c": cluster, "s": split}).groupby("c")["s"].nunique().max() == 1
    assert split.equals(split_clusters(cluster, fractions, seed))  # seeded: reproducible
    # greedy: no split exceeds its target by more than the largest cluster
    sizes = cluster.value_counts()
    for name, frac in fractions.items():
        assert (split == name).sum() <= frac * len(cluster) + sizes.max()


def test_read_records_from_deposition_json_csv_and_fasta(tmp_path, rng: np.random.Generator) -> None:
    dep = require_shared_data("metadata", "empiar_deposition_working_example.json")
    rec = read_records(dep)
    assert rec.loc[0, "emdb_ids"] == ["EMD-8000"]
    assert rec.loc[0, "num_micrographs"] == 16 and rec.loc[0, "image_width_px"] == 3838
    seq = _random_seq(rng, 30)
    (tmp_path / "r.csv").write_text(f"experiment_id,sequences,resolution_a\nA,{seq};{seq[:10]},3.2\nB,,\n")
    table = read_records(tmp_path / "r.csv")
    assert table.loc[0, "sequences"] == [seq, seq[:10]] and table.loc[1, "sequences"] == []
    (tmp_path / "dup.csv").write_text("experiment_id\nA\nA\n")
    with pytest.raises(InputError, match="duplicate experiment_id A"):
        read_records(tmp_path / "dup.csv")
    (tmp_path / "s.fasta").write_text(f">A|chain B\n{seq[:15]}\n{seq[15:]}\n>C desc\nMKV\n")
    assert read_fasta(tmp_path / "s.fasta") == {"A": [seq], "C": ["MKV"]}
