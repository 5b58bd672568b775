"""Sequence-identity clustering of experiments (cryoPANDA: > 30 % identity, single linkage).

Two sequences are linked when their identity (identical aligned pairs / length of the
shorter sequence) is at least the threshold. Clusters are the connected components of
that graph (single linkage); an experiment joins the cluster of every sequence it holds
(experiments sharing a linked sequence are one cluster), and an experiment without a
sequence is a cluster of its own.

The pairs come from MMseqs2 (``mmseqs easy-search``, exhaustive all-vs-all, identity
``round(fident · alnlen) / min(qlen, tlen)``) when it is installed, otherwise from the
exact alignment of :mod:`cryoset.catalog.align`. Both give the same clusters when the
families are well separated (tests/catalog/test_cluster.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cryoset.catalog.align import identity_matrix
from cryoset.errors import InputError

Method = Literal["auto", "mmseqs", "align"]


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def mmseqs_pairs(sequences: Sequence[str], *, executable: str = "mmseqs", threads: int = 1
                 ) -> pd.DataFrame:
    """All-vs-all identities with ``mmseqs easy-search`` (exhaustive, no masking).

    Returns
    -------
    DataFrame
        ``i``, ``j`` (indices, ``i < j``), ``identity`` = ``round(fident · alnlen) /
        min(qlen, tlen)``, the best hit per pair.
    """
    exe = shutil.which(executable)
    if exe is None:
        raise InputError(executable, "MMseqs2 is not installed")
    with tempfile.TemporaryDirectory(prefix="cryoset-mmseqs-") as tmp:
        d = Path(tmp)
        fasta = d / "seqs.fasta"
        fasta.write_text("".join(f">s{k}\n{s}\n" for k, s in enumerate(sequences)))
        out = d / "hits.m8"
        cmd = [exe, "easy-search", str(fasta), str(fasta), str(out), str(d / "work"),
               "--format-output", "query,target,fident,alnlen,qlen,tlen",
               "--exhaustive-search", "1", "-e", "1e6", "--mask", "0",
               "--threads", str(threads), "-v", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"mmseqs easy-search failed: {proc.stderr.strip()[-500:]}")
        text = out.read_text() if out.exists() else ""
    rows = []
    for line in text.splitlines():
        q, t, fident, alnlen, qlen, tlen = line.split("\t")
        i, j = int(q[1:]), int(t[1:])
        if i == j:
            continue
        nident = round(float(fident) * int(alnlen))
        rows.append((min(i, j), max(i, j), nident / min(int(qlen), int(tlen))))
    frame = pd.DataFrame(rows, columns=["i", "j", "identity"])
    if frame.empty:
        return frame
    best: pd.DataFrame = frame.groupby(["i", "j"], as_index=False).agg(identity=("identity", "max"))
    return best


def align_pairs(sequences: Sequence[str]) -> pd.DataFrame:
    """All-vs-all identities with the exact alignment (columns ``i``, ``j``, ``identity``)."""
    mat = identity_matrix(list(sequences))
    i, j = np.triu_indices(len(sequences), k=1)
    return pd.DataFrame({"i": i.astype(np.int64), "j": j.astype(np.int64), "identity": mat[i, j]})


def resolve_method(method: Method) -> Literal["mmseqs", "align"]:
    """``auto`` → ``mmseqs`` when the program is on PATH, else ``align``."""
    if method == "auto":
        return "mmseqs" if shutil.which("mmseqs") else "align"
    if method not in ("mmseqs", "align"):
        raise InputError("method", f"must be 'auto', 'mmseqs' or 'align', got {method!r}")
    return method


def cluster_sequences(sequences: Sequence[str], threshold: float = 0.3, *,
                      method: Method = "auto") -> list[int]:
    """Single-linkage clusters of sequences at an identity threshold.

    Parameters
    ----------
    sequences
        One-letter protein sequences (duplicates allowed).
    threshold
        Link two sequences when identity ≥ threshold (0…1).
    method
        ``mmseqs``, ``align`` or ``auto``.

    Returns
    -------
    list of int
        Cluster label per sequence, numbered 0, 1, … in order of first appearance.
    """
    if not 0 <= threshold <= 1:
        raise InputError("threshold", f"must be in [0, 1], got {threshold}")
    seqs = [s.strip().upper() for s in sequences]
    if any(not s for s in seqs):
        raise InputError("sequences", "empty sequence")
    unique = sorted(set(seqs))
    index = {s: k for k, s in enumerate(unique)}
    pairs = pd.DataFrame({"i": [], "j": [], "identity": []})
    if len(unique) > 1:
        pairs = mmseqs_pairs(unique) if resolve_method(method) == "mmseqs" else align_pairs(unique)
    labels = clusters_from_pairs(len(unique), pairs, threshold)
    return _relabel([labels[index[s]] for s in seqs])


def clusters_from_pairs(n: int, pairs: pd.DataFrame, threshold: float) -> list[int]:
    """Connected components of the pairs with ``identity >= threshold``.

    Parameters
    ----------
    n
        Number of sequences.
    pairs
        Columns ``i``, ``j``, ``identity`` (from :func:`mmseqs_pairs` or :func:`align_pairs`).
    threshold
        Identity threshold of a link.

    Returns
    -------
    list of int
        Label per sequence, 0, 1, … in order of first appearance.
    """
    uf = _UnionFind(n)
    linked = pairs[pairs["identity"] >= threshold]
    for i, j in zip(linked["i"], linked["j"], strict=True):
        uf.union(int(i), int(j))
    return _relabel([uf.find(k) for k in range(n)])


def _relabel(roots: Sequence[int]) -> list[int]:
    first: dict[int, int] = {}
    return [first.setdefault(r, len(first)) for r in roots]


def cluster_experiments(sequences: Mapping[str, Sequence[str]], threshold: float = 0.3, *,
                        method: Method = "auto") -> dict[str, int]:
    """Cluster experiments by the sequences they contain.

    Parameters
    ----------
    sequences
        experiment id → its sequences (may be empty).
    threshold, method
        As in :func:`cluster_sequences`.

    Returns
    -------
    dict
        experiment id → cluster label (0, 1, … in order of the sorted experiment ids).
    """
    ids = sorted(sequences)
    flat: list[str] = []
    owner: list[int] = []
    for k, eid in enumerate(ids):
        for s in sequences[eid]:
            if s and s.strip():
                flat.append(s)
                owner.append(k)
    uf = _UnionFind(len(ids))
    if flat:
        labels = cluster_sequences(flat, threshold, method=method)
        first_owner: dict[int, int] = {}
        for lab, k in zip(labels, owner, strict=True):
            uf.union(first_owner.setdefault(lab, k), k)
    roots = _relabel([uf.find(k) for k in range(len(ids))])
    return dict(zip(ids, roots, strict=True))

