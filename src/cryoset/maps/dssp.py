"""Secondary structure from backbone coordinates: a vectorised DSSP (Kabsch & Sander, 1983).

The kernel is pure: backbone coordinates in, one DSSP letter per residue out.

Algorithm
---------
* Amide hydrogen: ``H_i = N_i + (C_{i-1} - O_{i-1}) / |C_{i-1} - O_{i-1}|`` (1 Å along the
  previous carbonyl direction); residues that start a chain segment and prolines have no H
  and are never donors.
* H-bond energy between the C=O of residue ``a`` (acceptor) and the N-H of residue ``d``
  (donor), electrostatic model: ``E = 0.084 * 332 * (1/r_ON + 1/r_CH - 1/r_OH - 1/r_CN)``
  kcal/mol, rounded to 0.001, floored at -9.9 (also when any distance is < 0.5 Å). Only
  pairs with Cα-Cα < 9 Å are evaluated (``scipy.spatial.cKDTree``); the pair donor ``a+1`` /
  acceptor ``a`` is skipped. Each donor keeps its two lowest-energy acceptors; a bond exists
  when it is one of those and ``E < -0.5`` kcal/mol.
* n-turn at ``i`` (n = 3, 4, 5): bond CO(i) → NH(i+n) within one chain segment.
  Minimal helix: turns at ``i-1`` and ``i`` make residues ``i..i+n-1`` helical. Order: α (H)
  first, then 3₁₀ (G) only over residues still loop/G, then π (I) only over loop/I.
* Bridges (``|i-j| >= 3``, no break in ``i-1..i+1`` nor ``j-1..j+1``):
  parallel ``[CO(i-1)→NH(j) and CO(j)→NH(i+1)] or [CO(j-1)→NH(i) and CO(i)→NH(j+1)]``;
  antiparallel ``[CO(i)→NH(j) and CO(j)→NH(i)] or [CO(i-1)→NH(j+1) and CO(j-1)→NH(i+1)]``.
  Consecutive bridges of one type form ladders; ladders of one type joined by a β-bulge
  (gap < 6 on one strand and < 3 on the other, or < 3 on one) are merged. Ladders of one
  bridge give B, longer ones E over their whole span (bulge residues included).
* Turns (T) on residues inside any n-turn still loop; bends (S) where the Cα(i-2)-Cα(i)-Cα(i+2)
  angle exceeds 70°. Everything else is loop (``"-"``). Polyproline (P) is not assigned.

Three-state reduction (:func:`to_three_state`): H, G, I → ``H``; E, B → ``E``; all other → ``-``.
This is the reduction under which the reference assignments in the test data agree with DSSP.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.spatial import cKDTree

__all__ = [
    "HBOND_CUTOFF_KCAL",
    "assign_dssp",
    "hbond_energies",
    "q3",
    "to_three_state",
]

#: An H-bond exists below this energy (kcal/mol).
HBOND_CUTOFF_KCAL = -0.5
_COUPLING = 0.084 * 332.0
_MIN_ENERGY = -9.9
_MIN_DISTANCE_A = 0.5
_MAX_CA_DISTANCE_A = 9.0
_BEND_ANGLE_DEG = 70.0

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def _segments(chain_break_before: BoolArray) -> IntArray:
    brk = np.asarray(chain_break_before, dtype=bool).copy()
    if brk.size:
        brk[0] = True
    return np.cumsum(brk).astype(np.int64)


def _hydrogens(n_a: FloatArray, c_a: FloatArray, o_a: FloatArray, has_donor: BoolArray) -> FloatArray:
    h = n_a.copy()
    co = c_a[:-1] - o_a[:-1]
    norm = np.linalg.norm(co, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    h[1:] = np.where(has_donor[1:, None], n_a[1:] + co / norm, n_a[1:])
    return h


def hbond_energies(
    n_a: FloatArray,
    ca_a: FloatArray,
    c_a: FloatArray,
    o_a: FloatArray,
    *,
    chain_break_before: BoolArray,
    is_proline: BoolArray,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Every candidate backbone H-bond and its Kabsch-Sander energy.

    Parameters
    ----------
    n_a, ca_a, c_a, o_a : ndarray, shape (n, 3)
        Backbone atom coordinates in Å, one row per residue, in chain order.
    chain_break_before : bool ndarray, shape (n,)
        True where residue ``k`` is not bonded to residue ``k-1`` (new chain or gap).
    is_proline : bool ndarray, shape (n,)

    Returns
    -------
    acceptor, donor : int ndarray, shape (m,)
        Residue indices of the C=O (acceptor) and N-H (donor) groups.
    energy_kcal : float ndarray, shape (m,)
    """
    n = ca_a.shape[0]
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if n < 2:
        return empty
    seg = _segments(chain_break_before)
    first = np.r_[True, seg[1:] != seg[:-1]]
    has_donor = ~first & ~np.asarray(is_proline, dtype=bool)
    h_a = _hydrogens(n_a, c_a, o_a, has_donor)
    pairs = cKDTree(ca_a).query_pairs(_MAX_CA_DISTANCE_A, output_type="ndarray").astype(np.int64)
    if pairs.size == 0:
        return empty
    i, j = pairs[:, 0], pairs[:, 1]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    # both directions, skipping donor a+1 / acceptor a
    acc = np.concatenate([lo, hi])
    don = np.concatenate([hi, lo])
    keep = has_donor[don] & (don != acc + 1)
    acc, don = acc[keep], don[keep]
    r_on = np.linalg.norm(o_a[acc] - n_a[don], axis=1)
    r_ch = np.linalg.norm(c_a[acc] - h_a[don], axis=1)
    r_oh = np.linalg.norm(o_a[acc] - h_a[don], axis=1)
    r_cn = np.linalg.norm(c_a[acc] - n_a[don], axis=1)
    too_close = np.minimum.reduce([r_on, r_ch, r_oh, r_cn]) < _MIN_DISTANCE_A
    with np.errstate(divide="ignore"):
        e = _COUPLING * (1.0 / r_on + 1.0 / r_ch - 1.0 / r_oh - 1.0 / r_cn)
    e = np.round(e * 1000.0) / 1000.0
    e = np.where(too_close, _MIN_ENERGY, np.maximum(e, _MIN_ENERGY))
    return acc, don, e


def _bond_keys(acc: IntArray, don: IntArray, energy: FloatArray, n: int) -> IntArray:
    """Sorted keys ``acceptor * n + donor`` of the bonds that count (two best per donor)."""
    ok = energy < HBOND_CUTOFF_KCAL
    acc, don, energy = acc[ok], don[ok], energy[ok]
    order = np.lexsort((energy, don))
    acc, don = acc[order], don[order]
    if don.size == 0:
        return np.zeros(0, np.int64)
    start = np.r_[True, don[1:] != don[:-1]]
    group_start = np.maximum.accumulate(np.where(start, np.arange(don.size), 0))
    rank = np.arange(don.size) - group_start
    sel = rank < 2
    return np.unique(acc[sel] * n + don[sel])


class _Bonds:
    """Membership test for ``CO(a) -> NH(d)`` bonds, vectorised over index arrays."""

    def __init__(self, keys: IntArray, n: int) -> None:
        self.keys = keys
        self.n = n

    def __call__(self, acc: IntArray, don: IntArray) -> BoolArray:
        acc = np.asarray(acc, dtype=np.int64)
        don = np.asarray(don, dtype=np.int64)
        valid = (acc >= 0) & (acc < self.n) & (don >= 0) & (don < self.n)
        key = np.where(valid, acc * self.n + don, -1)
        if self.keys.size == 0:
            return np.zeros(key.shape, dtype=bool)
        pos = np.clip(np.searchsorted(self.keys, key), 0, self.keys.size - 1)
        return valid & (self.keys[pos] == key)


def _same_segment(seg: IntArray, a: IntArray, b: IntArray) -> BoolArray:
    n = seg.size
    ok = (a >= 0) & (b < n) & (a <= b)
    return ok & (seg[np.clip(a, 0, n - 1)] == seg[np.clip(b, 0, n - 1)])


def _bridges(bond: _Bonds, seg: IntArray, acc: IntArray, don: IntArray) -> list[tuple[int, int, str]]:
    n = seg.size
    if acc.size == 0:
        return []
    offs = np.array([-1, 0, 1])
    xx = np.repeat(acc[:, None] + offs[None, :], 3, axis=1).ravel()
    yy = np.tile(don[:, None] + offs[None, :], (1, 3)).ravel()
    i = np.minimum(xx, yy)
    j = np.maximum(xx, yy)
    ok = (j - i >= 3) & (i >= 1) & (j + 1 < n)
    pairs = np.unique(np.stack([i[ok], j[ok]], axis=1), axis=0)
    if pairs.size == 0:
        return []
    i, j = pairs[:, 0], pairs[:, 1]
    ok = _same_segment(seg, i - 1, i + 1) & _same_segment(seg, j - 1, j + 1)
    i, j = i[ok], j[ok]
    par = (bond(j, i + 1) & bond(i - 1, j)) | (bond(i, j + 1) & bond(j - 1, i))
    anti = (bond(j, i) & bond(i, j)) | (bond(j - 1, i + 1) & bond(i - 1, j + 1))
    out: list[tuple[int, int, str]] = []
    for a, b, p, q in zip(i.tolist(), j.tolist(), par.tolist(), anti.tolist(), strict=True):
        if p:
            out.append((a, b, "p"))
        elif q:
            out.append((a, b, "a"))
    out.sort()
    return out


def _ladders(bridges: list[tuple[int, int, str]], seg: IntArray) -> list[tuple[str, list[int], list[int]]]:
    ladders: list[tuple[str, list[int], list[int]]] = []
    for i, j, kind in bridges:
        for kind_l, li, lj in ladders:
            if kind_l != kind or i != li[-1] + 1:
                continue
            if kind == "p" and lj[-1] + 1 == j:
                li.append(i)
                lj.append(j)
                break
            if kind == "a" and lj[0] - 1 == j:
                li.append(i)
                lj.insert(0, j)
                break
        else:
            ladders.append((kind, [i], [j]))
    ladders.sort(key=lambda lad: (int(seg[lad[1][0]]), lad[1][0]))
    a = 0
    while a < len(ladders):
        b = a + 1
        while b < len(ladders):
            kind, ia, ja = ladders[a]
            kind_b, ib, jb = ladders[b]
            ibi, iei, jbi, jei = ia[0], ia[-1], ja[0], ja[-1]
            ibj, iej, jbj, jej = ib[0], ib[-1], jb[0], jb[-1]
            skip = (
                kind != kind_b
                or seg[min(ibi, ibj)] != seg[max(iei, iej)]
                or seg[min(jbi, jbj)] != seg[max(jei, jej)]
                or ibj - iei >= 6
                or (iei >= ibj and ibi <= iej)
            )
            if not skip:
                gap_i = ibj - iei
                gap_j = jbj - jei if kind == "p" else jbi - jej
                bulge = gap_i > 0 and gap_j > 0 and (
                    (gap_j < 6 and gap_i < 3) or (gap_j < 3 and gap_i < 6)
                )
                if bulge:
                    ia.extend(ib)
                    if kind == "p":
                        ja.extend(jb)
                    else:
                        ja[:0] = jb
                    del ladders[b]
                    continue
            b += 1
        a += 1
    return ladders


def assign_dssp(
    n_a: NDArray[np.floating],
    ca_a: NDArray[np.floating],
    c_a: NDArray[np.floating],
    o_a: NDArray[np.floating],
    *,
    chain_break_before: NDArray[np.bool_] | None = None,
    is_proline: NDArray[np.bool_] | None = None,
) -> NDArray[np.str_]:
    """Assign DSSP secondary structure to residues with complete backbones.

    Parameters
    ----------
    n_a, ca_a, c_a, o_a : ndarray, shape (n, 3)
        Backbone N, Cα, C and O coordinates in Å, one row per residue, chains concatenated
        in order. Residues missing any of the four atoms must be left out by the caller and
        flagged with ``chain_break_before`` on the residue that follows.
    chain_break_before : bool ndarray, shape (n,), optional
        True where residue ``k`` is not peptide-bonded to ``k-1``. When None, a break is
        placed wherever ``|C_{k-1} - N_k| > 2.5 Å``.
    is_proline : bool ndarray, shape (n,), optional
        Prolines are never H-bond donors.

    Returns
    -------
    ndarray of str, shape (n,)
        One of ``H G I E B T S -`` per residue.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.zeros((0, 3))
    >>> assign_dssp(z, z, z, z).tolist()
    []
    """
    n_xyz = np.asarray(n_a, dtype=np.float64).reshape(-1, 3)
    ca_xyz = np.asarray(ca_a, dtype=np.float64).reshape(-1, 3)
    c_xyz = np.asarray(c_a, dtype=np.float64).reshape(-1, 3)
    o_xyz = np.asarray(o_a, dtype=np.float64).reshape(-1, 3)
    n = ca_xyz.shape[0]
    ss = np.full(n, "-", dtype="<U1")
    if n == 0:
        return ss
    if chain_break_before is None:
        gap = np.linalg.norm(n_xyz[1:] - c_xyz[:-1], axis=1) > 2.5
        brk = np.r_[True, gap]
    else:
        brk = np.asarray(chain_break_before, dtype=bool).copy()
        gap = np.linalg.norm(n_xyz[1:] - c_xyz[:-1], axis=1) > 2.5
        brk[1:] |= gap
    pro = np.zeros(n, bool) if is_proline is None else np.asarray(is_proline, dtype=bool)
    seg = _segments(brk)
    acc, don, e = hbond_energies(
        n_xyz, ca_xyz, c_xyz, o_xyz, chain_break_before=brk, is_proline=pro
    )
    keys = _bond_keys(acc, don, e, n)
    bond = _Bonds(keys, n)
    idx = np.arange(n, dtype=np.int64)

    # beta ladders (assigned first; helices overwrite as in DSSP)
    bond_acc, bond_don = keys // n, keys % n
    for kind, li, lj in _ladders(_bridges(bond, seg, bond_acc, bond_don), seg):
        code = "E" if len(li) > 1 else "B"
        for lo, hi in ((li[0], li[-1]), (min(lj), max(lj))):
            span = ss[lo : hi + 1]
            span[span != "E"] = code
        del kind

    turns: dict[int, BoolArray] = {}
    for k in (3, 4, 5):
        turns[k] = bond(idx, idx + k) & _same_segment(seg, idx, idx + k)

    def helix_starts(k: int) -> IntArray:
        t = turns[k]
        start = np.zeros(n, bool)
        start[1:] = t[1:] & t[:-1]
        return np.flatnonzero(start)

    for i in helix_starts(4):
        ss[i : i + 4] = "H"
    for k, code in ((3, "G"), (5, "I")):
        for i in helix_starts(k):
            span = ss[i : i + k]
            if np.all((span == "-") | (span == code)):
                ss[i : i + k] = code

    turn_mask = np.zeros(n, bool)
    for k in (3, 4, 5):
        for i in np.flatnonzero(turns[k]):
            turn_mask[i + 1 : i + k] = True
    loop = ss == "-"
    ss[turn_mask & loop] = "T"

    if n >= 5:
        v1 = ca_xyz[2:-2] - ca_xyz[:-4]
        v2 = ca_xyz[4:] - ca_xyz[2:-2]
        cosang = np.einsum("ij,ij->i", v1, v2) / (
            np.linalg.norm(v1, axis=1) * np.linalg.norm(v2, axis=1) + 1e-12
        )
        kappa = np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0)))
        centre = np.arange(2, n - 2)
        bend = (kappa > _BEND_ANGLE_DEG) & _same_segment(seg, centre - 2, centre + 2)
        bend_mask = np.zeros(n, bool)
        bend_mask[centre[bend]] = True
        ss[bend_mask & (ss == "-")] = "S"
    return ss


def to_three_state(ss: NDArray[np.str_] | str) -> str:
    """Reduce DSSP letters to ``H`` (H, G, I), ``E`` (E, B) and ``-`` (everything else).

    Examples
    --------
    >>> to_three_state("HGIEBTS-")
    'HHHEE---'
    """
    letters = list(ss) if isinstance(ss, str) else [str(s) for s in np.asarray(ss).ravel()]
    out = []
    for s in letters:
        out.append("H" if s in "HGI" else "E" if s in "EB" else "-")
    return "".join(out)


def q3(predicted: str, reference: str) -> float:
    """Fraction of positions where two equal-length three-state strings agree.

    Examples
    --------
    >>> q3("HHE-", "HHEE")
    0.75
    """
    if len(predicted) != len(reference):
        raise ValueError(f"lengths differ: {len(predicted)} != {len(reference)}")
    if not predicted:
        return 1.0
    return sum(a == b for a, b in zip(predicted, reference, strict=True)) / len(predicted)


_BACKBONE = ("N", "CA", "C", "O")
RESIDUE_KEYS = ("chain", "residue_number", "insertion_code")


def residue_backbone(atoms: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, FloatArray]]:
    """One row per residue (file order) and its backbone coordinates.

    Parameters
    ----------
    atoms : DataFrame
        The :mod:`cryoset.io.structure` atoms table (``chain``, ``residue_number``,
        ``insertion_code``, ``residue_name``, ``atom_name``, ``x_a``, ``y_a``, ``z_a``).
        For an atom name that occurs more than once in a residue (alternate locations) the
        first occurrence is used.

    Returns
    -------
    residues : DataFrame
        ``chain, residue_number, insertion_code, residue_name`` (one row per residue).
    coords : dict
        ``"N"``, ``"CA"``, ``"C"``, ``"O"`` → float ndarray (n_residues, 3), ``(x, y, z)`` in Å,
        NaN where the atom is missing.
    """
    chain = atoms["chain"].astype(str).to_numpy()
    number = atoms["residue_number"].astype(np.int64).to_numpy()
    icode = atoms["insertion_code"].fillna("").astype(str).to_numpy()
    key = np.char.add(np.char.add(np.char.add(chain.astype("U"), "\x00"), number.astype("U")),
                      np.char.add("\x00", icode.astype("U")))
    codes, uniques = pd.factorize(key)
    first_row = np.full(len(uniques), -1, dtype=np.int64)
    first_row[codes[::-1]] = np.arange(codes.size - 1, -1, -1)
    residues = atoms.iloc[first_row][[*RESIDUE_KEYS, "residue_name"]].reset_index(drop=True)
    residues["insertion_code"] = icode[first_row]
    xyz = atoms[["x_a", "y_a", "z_a"]].to_numpy(dtype=np.float64)
    names = atoms["atom_name"].astype(str).to_numpy()
    coords: dict[str, FloatArray] = {}
    for name in _BACKBONE:
        out = np.full((len(uniques), 3), np.nan)
        rows = np.flatnonzero(names == name)
        res, first = np.unique(codes[rows], return_index=True)
        out[res] = xyz[rows[first]]
        coords[name] = out
    return residues, coords


def secondary_structure_from_atoms(atoms: pd.DataFrame) -> pd.DataFrame:
    """DSSP letters for every residue of an atoms table.

    Residues with an incomplete backbone (missing N, Cα, C or O), non-amino-acid residues
    and waters get ``"-"`` and cut the chain (the residue after them starts a new segment),
    exactly as missing residues do.

    Returns
    -------
    DataFrame
        ``chain, residue_number, insertion_code, residue_name, dssp`` (one row per residue,
        file order).
    """
    table, coords = residue_backbone(atoms)
    ok = np.all([np.isfinite(c).all(axis=1) for c in coords.values()], axis=0)
    chain = table["chain"].astype(str).to_numpy()[ok]
    # a break wherever the chain changes or an incomplete residue was skipped
    pos = np.flatnonzero(ok)
    brk = np.r_[True, (chain[1:] != chain[:-1]) | (np.diff(pos) != 1)] if pos.size else np.zeros(0, bool)

    def xyz(name: str) -> FloatArray:
        return coords[name][ok]

    letters = assign_dssp(
        xyz("N"), xyz("CA"), xyz("C"), xyz("O"),
        chain_break_before=brk,
        is_proline=(table["residue_name"].astype(str).to_numpy() == "PRO")[ok],
    )
    out = table[[*RESIDUE_KEYS, "residue_name"]].copy()
    dssp = np.full(len(table), "-", dtype="<U1")
    dssp[ok] = letters
    out["dssp"] = dssp
    return out
