"""Exact pairwise protein alignment: Needleman–Wunsch with BLOSUM62 and affine gaps.

The alignment is global with **free end gaps** (an overhang of one sequence past the
other costs nothing), Gotoh's three-state recursion, gap of length ``k`` costing
``gap_open + (k − 1) · gap_extend`` (defaults 11 and 1, BLAST's). Ties in the traceback
prefer the match state, then a gap in the second sequence, then one in the first.

Identity of a pair = identical aligned residue pairs / length of the **shorter**
sequence (so a sequence contained in another has identity 1, and the value is directly
comparable with MMseqs2's ``nident / min(qlen, tlen)``; see docs/catalog.md).
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

#: Residue order of :data:`BLOSUM62` (the NCBI order); anything else maps to ``X``.
BLOSUM_ALPHABET = "ARNDCQEGHILKMFPSTWYVBZX*"

_BLOSUM62_ROWS = """
 4 -1 -2 -2  0 -1 -1  0 -2 -1 -1 -1 -1 -2 -1  1  0 -3 -2  0 -2 -1  0 -4
-1  5  0 -2 -3  1  0 -2  0 -3 -2  2 -1 -3 -2 -1 -1 -3 -2 -3 -1  0 -1 -4
-2  0  6  1 -3  0  0  0  1 -3 -3  0 -2 -3 -2  1  0 -4 -2 -3  3  0 -1 -4
-2 -2  1  6 -3  0  2 -1 -1 -3 -4 -1 -3 -3 -1  0 -1 -4 -3 -3  4  1 -1 -4
 0 -3 -3 -3  9 -3 -4 -3 -3 -1 -1 -3 -1 -2 -3 -1 -1 -2 -2 -1 -3 -3 -2 -4
-1  1  0  0 -3  5  2 -2  0 -3 -2  1  0 -3 -1  0 -1 -2 -1 -2  0  3 -1 -4
-1  0  0  2 -4  2  5 -2  0 -3 -3  1 -2 -3 -1  0 -1 -3 -2 -2  1  4 -1 -4
 0 -2  0 -1 -3 -2 -2  6 -2 -4 -4 -2 -3 -3 -2  0 -2 -2 -3 -3 -1 -2 -1 -4
-2  0  1 -1 -3  0  0 -2  8 -3 -3 -1 -2 -1 -2 -1 -2 -2  2 -3  0  0 -1 -4
-1 -3 -3 -3 -1 -3 -3 -4 -3  4  2 -3  1  0 -3 -2 -1 -3 -1  3 -3 -3 -1 -4
-1 -2 -3 -4 -1 -2 -3 -4 -3  2  4 -2  2  0 -3 -2 -1 -2 -1  1 -4 -3 -1 -4
-1  2  0 -1 -3  1  1 -2 -1 -3 -2  5 -1 -3 -1  0 -1 -3 -2 -2  0  1 -1 -4
-1 -1 -2 -3 -1  0 -2 -3 -2  1  2 -1  5  0 -2 -1 -1 -1 -1  1 -3 -1 -1 -4
-2 -3 -3 -3 -2 -3 -3 -3 -1  0  0 -3  0  6 -4 -2 -2  1  3 -1 -3 -3 -1 -4
-1 -2 -2 -1 -3 -1 -1 -2 -2 -3 -3 -1 -2 -4  7 -1 -1 -4 -3 -2 -2 -1 -2 -4
 1 -1  1  0 -1  0  0  0 -1 -2 -2  0 -1 -2 -1  4  1 -3 -2 -2  0  0  0 -4
 0 -1  0 -1 -1 -1 -1 -2 -2 -1 -1 -1 -1 -2 -1  1  5 -2 -2  0 -1 -1  0 -4
-3 -3 -4 -4 -2 -2 -3 -2 -2 -3 -2 -3 -1  1 -4 -3 -2 11  2 -3 -4 -3 -2 -4
-2 -2 -2 -3 -2 -1 -2 -3  2 -1 -1 -2 -1  3 -3 -2 -2  2  7 -1 -3 -2 -1 -4
 0 -3 -3 -3 -1 -2 -2 -3 -3  3  1 -2  1 -1 -2 -2  0 -3 -1  4 -3 -2 -1 -4
-2 -1  3  4 -3  0  1 -1  0 -3 -4  0 -3 -3 -2  0 -1 -4 -3 -3  4  1 -1 -4
-1  0  0  1 -3  3  4 -2  0 -3 -3  1 -1 -3 -1  0 -1 -3 -2 -2  1  4 -1 -4
 0 -1 -1 -1 -2 -1 -1 -1 -1 -1 -1 -1 -1 -1 -2  0  0 -2 -1 -1 -1 -1 -1 -4
-4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4  1
"""


def blosum62() -> NDArray[np.int32]:
    """The BLOSUM62 substitution matrix, shape (24, 24), in :data:`BLOSUM_ALPHABET` order."""
    return np.array(_BLOSUM62_ROWS.split(), dtype=np.int32).reshape(24, 24)


def encode_sequence(sequence: str) -> NDArray[np.int32]:
    """Map a one-letter sequence to indices into :data:`BLOSUM_ALPHABET` (unknown → ``X``).

    Returns
    -------
    ndarray of int32, shape (len(sequence),)
    """
    unknown = BLOSUM_ALPHABET.index("X")
    lookup = {c: i for i, c in enumerate(BLOSUM_ALPHABET)}
    return np.array([lookup.get(c, unknown) for c in sequence.upper()], dtype=np.int32)


@numba.njit(cache=True)  # type: ignore[misc]
def _gotoh(a: NDArray[np.int32], b: NDArray[np.int32], sub: NDArray[np.int32],
           gap_open: int, gap_extend: int) -> tuple[int, int, int]:  # pragma: no cover - numba
    n = a.shape[0]
    m = b.shape[0]
    neg = -(1 << 40)
    mat = np.full((n + 1, m + 1), neg, dtype=np.int64)  # a_i aligned to b_j
    gx = np.full((n + 1, m + 1), neg, dtype=np.int64)   # a_i aligned to a gap
    gy = np.full((n + 1, m + 1), neg, dtype=np.int64)   # b_j aligned to a gap
    tm = np.zeros((n + 1, m + 1), dtype=np.int8)
    tx = np.zeros((n + 1, m + 1), dtype=np.int8)
    ty = np.zeros((n + 1, m + 1), dtype=np.int8)
    mat[0, 0] = 0
    for i in range(1, n + 1):
        gx[i, 0] = 0  # free leading overhang of a
        tx[i, 0] = 1
    for j in range(1, m + 1):
        gy[0, j] = 0
        ty[0, j] = 2
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            # match state
            best = mat[i - 1, j - 1]
            arg = 0
            if gx[i - 1, j - 1] > best:
                best = gx[i - 1, j - 1]
                arg = 1
            if gy[i - 1, j - 1] > best:
                best = gy[i - 1, j - 1]
                arg = 2
            mat[i, j] = best + sub[a[i - 1], b[j - 1]]
            tm[i, j] = arg
            # a_i against a gap
            best = mat[i - 1, j] - gap_open
            arg = 0
            if gx[i - 1, j] - gap_extend > best:
                best = gx[i - 1, j] - gap_extend
                arg = 1
            if gy[i - 1, j] - gap_open > best:
                best = gy[i - 1, j] - gap_open
                arg = 2
            gx[i, j] = best
            tx[i, j] = arg
            # b_j against a gap
            best = mat[i, j - 1] - gap_open
            arg = 0
            if gy[i, j - 1] - gap_extend > best:
                best = gy[i, j - 1] - gap_extend
                arg = 2
            if gx[i, j - 1] - gap_open > best:
                best = gx[i, j - 1] - gap_open
                arg = 1
            gy[i, j] = best
            ty[i, j] = arg
    # free trailing overhang: best cell of the last row, then of the last column, any state
    best_score = neg
    bi = n
    bj = m
    bs = 0
    for c in range(m + n + 2):
        ci, cj = (n, c) if c <= m else (c - m - 1, m)
        for s in range(3):
            v = int(mat[ci, cj] if s == 0 else (gx[ci, cj] if s == 1 else gy[ci, cj]))
            if v > best_score:
                best_score = v
                bi = ci
                bj = cj
                bs = s
    # traceback, counting identical aligned pairs and aligned columns
    i = bi
    j = bj
    s = bs
    ident = 0
    aligned = 0
    while i > 0 and j > 0:
        if s == 0:
            if a[i - 1] == b[j - 1]:
                ident += 1
            aligned += 1
            s = int(tm[i, j])
            i -= 1
            j -= 1
        elif s == 1:
            s = int(tx[i, j])
            i -= 1
        else:
            s = int(ty[i, j])
            j -= 1
    return int(best_score), ident, aligned


def align_pair(seq_a: str, seq_b: str, *, gap_open: int = 11, gap_extend: int = 1
               ) -> tuple[int, int, int]:
    """Align two protein sequences (end-gap-free global alignment, BLOSUM62, affine gaps).

    Parameters
    ----------
    seq_a, seq_b
        One-letter sequences (non-empty).
    gap_open, gap_extend
        A gap of length ``k`` costs ``gap_open + (k − 1) · gap_extend``.

    Returns
    -------
    score, identical, aligned : int
        Alignment score, identical aligned pairs, aligned (non-gap) pairs.

    Examples
    --------
    >>> align_pair("MKTAYIAK", "MKTAYIAK")[1]
    8
    """
    if not seq_a or not seq_b:
        raise ValueError("sequences must be non-empty")
    score, ident, aligned = _gotoh(encode_sequence(seq_a), encode_sequence(seq_b), blosum62(),
                                   int(gap_open), int(gap_extend))
    return int(score), int(ident), int(aligned)


def identity(seq_a: str, seq_b: str, *, gap_open: int = 11, gap_extend: int = 1) -> float:
    """Sequence identity: identical aligned pairs / length of the shorter sequence (0…1).

    Examples
    --------
    >>> identity("MKTAYIAKQR", "MKTAYIAK")
    1.0
    """
    _score, ident, _aligned = align_pair(seq_a, seq_b, gap_open=gap_open, gap_extend=gap_extend)
    return ident / min(len(seq_a), len(seq_b))


def identity_matrix(sequences: list[str], *, gap_open: int = 11, gap_extend: int = 1
                    ) -> NDArray[np.float64]:
    """All-vs-all identities, shape (n, n), symmetric with ones on the diagonal."""
    n = len(sequences)
    out = np.eye(n, dtype=np.float64)
    sub = blosum62()
    enc = [encode_sequence(s) for s in sequences]
    for i in range(n):
        for j in range(i + 1, n):
            _s, ident, _al = _gotoh(enc[i], enc[j], sub, int(gap_open), int(gap_extend))
            out[i, j] = out[j, i] = ident / min(len(enc[i]), len(enc[j]))
    return out
