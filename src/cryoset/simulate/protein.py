"""Procedural proteins: a compact, clash-free polypeptide whose secondary structure is known exactly.

The chain is grown residue by residue with NeRF (natural extension reference frame)
placement from ideal bond lengths and angles (Engh & Huber values) and chosen backbone
torsions: α-helices at (φ, ψ) = (−57°, −47°), β-strands at (−120°, +130°), loops drawn
from the populated Ramachandran regions (αR, β, PPII, αL for glycine). Every residue has
``N, CA, C, O`` and, except glycine, ``CB`` (placed with the L-amino-acid chirality); side
chains beyond Cβ are not built.

Folding: the chain is built as units of *loop + secondary-structure element*. For every
unit several candidate loop conformations are tried; candidates whose atoms come closer
than :data:`CLASH_DISTANCE_A` to an atom of a residue three or more positions away are
rejected (backbone N–O pairs, which form hydrogen bonds, are allowed down to
:data:`HBOND_DISTANCE_A`), and among the rest the one giving the smallest radius of
gyration is kept, so the chain folds into a compact globule.

The per-residue secondary structure string (``H`` helix, ``E`` extended strand, ``C``
coil) is the truth by construction: it is the φ/ψ the residue was built with. ``E`` means
strand conformation; strands are not paired into hydrogen-bonded sheets, so DSSP need
not call them ``E``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gemmi
import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from cryoset.errors import InputError

#: Ideal bond lengths (Å) and angles (degrees) of the peptide backbone (Engh & Huber 1991).
BOND_N_CA_A = 1.458
BOND_CA_C_A = 1.525
BOND_C_N_A = 1.329
BOND_C_O_A = 1.231
BOND_CA_CB_A = 1.530
ANGLE_N_CA_C_DEG = 111.2
ANGLE_CA_C_N_DEG = 116.2
ANGLE_C_N_CA_DEG = 121.7
ANGLE_CA_C_O_DEG = 120.8
ANGLE_N_CA_CB_DEG = 110.5
#: Improper torsion C–N–CA–CB that gives L-amino acids.
TORSION_C_N_CA_CB_DEG = -122.5
OMEGA_DEG = 180.0

HELIX_PHI_PSI_DEG = (-57.0, -47.0)
STRAND_PHI_PSI_DEG = (-120.0, 130.0)
PROLINE_PHI_DEG = -65.0

#: Heavy atoms of residues ``|i - j| >= CLASH_MIN_SEPARATION`` apart must be this far apart.
CLASH_DISTANCE_A = 3.0
#: ... except backbone N–O pairs (hydrogen bonds), which may be this close.
HBOND_DISTANCE_A = 2.6
CLASH_MIN_SEPARATION = 3

#: UniProtKB/Swiss-Prot amino-acid frequencies (%).
BACKGROUND_FREQUENCY: dict[str, float] = {
    "A": 8.25, "R": 5.53, "N": 4.06, "D": 5.45, "C": 1.37, "Q": 3.93, "E": 6.75, "G": 7.07,
    "H": 2.27, "I": 5.96, "L": 9.66, "K": 5.84, "M": 2.42, "F": 3.86, "P": 4.70, "S": 6.56,
    "T": 5.34, "W": 1.08, "Y": 2.92, "V": 6.87,
}
# Chou–Fasman conformational preferences (helix, strand, turn/coil).
_PROPENSITY: dict[str, tuple[float, float, float]] = {
    "A": (1.42, 0.83, 0.66), "R": (0.98, 0.93, 0.95), "N": (0.67, 0.89, 1.56),
    "D": (1.01, 0.54, 1.46), "C": (0.70, 1.19, 1.19), "Q": (1.11, 1.10, 0.98),
    "E": (1.51, 0.37, 0.74), "G": (0.57, 0.75, 1.56), "H": (1.00, 0.87, 0.95),
    "I": (1.08, 1.60, 0.47), "L": (1.21, 1.30, 0.59), "K": (1.16, 0.74, 1.01),
    "M": (1.45, 1.05, 0.60), "F": (1.13, 1.38, 0.60), "P": (0.57, 0.55, 1.52),
    "S": (0.77, 0.75, 1.43), "T": (0.83, 1.19, 0.96), "W": (1.08, 1.37, 0.96),
    "Y": (0.69, 1.47, 1.14), "V": (1.06, 1.70, 0.50),
}
THREE_LETTER: dict[str, str] = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU",
    "G": "GLY", "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE",
    "P": "PRO", "S": "SER", "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL",
}
_AMINO_ACIDS = tuple(BACKGROUND_FREQUENCY)
# Loop (phi, psi) regions: centre (deg), weight; drawn with a 12 degree spread.
_LOOP_REGIONS: tuple[tuple[float, float, float], ...] = (
    (-63.0, -43.0, 0.30), (-120.0, 130.0, 0.25), (-65.0, 145.0, 0.33), (60.0, 40.0, 0.12),
)
_LOOP_SPREAD_DEG = 12.0

Vec = tuple[float, float, float]


@dataclass
class _Unit:
    """One placed unit of the chain (internal to :func:`build_protein`)."""

    xyz: NDArray[np.float64]
    names: list[str]
    res: NDArray[np.int64]
    seq: list[str]
    ss: list[str]
    phi: list[float]
    psi: list[float]
    end: tuple[Vec, Vec, Vec, float]
    last_res: int


@dataclass(frozen=True)
class Protein:
    """A procedural protein: atoms, sequence and exact secondary structure.

    Attributes
    ----------
    xyz_a : ndarray, shape (n_atoms, 3)
        Atom positions in Å, ``(x, y, z)`` order, centred on the centroid.
    elements, atom_names, residue_names : ndarray of str, shape (n_atoms,)
    residue_numbers : ndarray of int, shape (n_atoms,)
        1-based residue number of every atom.
    chain_ids : ndarray of str, shape (n_atoms,)
    b_factors_a2 : ndarray, shape (n_atoms,)
        Isotropic B-factors (Å²), growing from the core to the surface.
    sequence : str
        One-letter sequence, length ``n_residues``.
    secondary_structure : str
        Per-residue ``H`` / ``E`` / ``C``, the conformation each residue was built with.
    phi_deg, psi_deg : ndarray, shape (n_residues,)
        The backbone torsions used (φ of residue 1 and ψ of the last residue are nominal).
    seed : int
    """

    xyz_a: NDArray[np.float64]
    elements: NDArray[np.str_]
    atom_names: NDArray[np.str_]
    residue_names: NDArray[np.str_]
    residue_numbers: NDArray[np.int64]
    chain_ids: NDArray[np.str_]
    b_factors_a2: NDArray[np.float64]
    sequence: str
    secondary_structure: str
    phi_deg: NDArray[np.float64]
    psi_deg: NDArray[np.float64]
    seed: int

    @property
    def n_residues(self) -> int:
        """Number of residues."""
        return len(self.sequence)

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return int(self.xyz_a.shape[0])

    def radius_of_gyration_a(self) -> float:
        """Radius of gyration of all atoms (unweighted), in Å."""
        centred = self.xyz_a - self.xyz_a.mean(axis=0)
        return float(np.sqrt((centred**2).sum(axis=1).mean()))

    def segments(self) -> list[tuple[str, int, int]]:
        """Runs of equal secondary structure as ``(kind, first, last)`` 1-based residue numbers."""
        out: list[tuple[str, int, int]] = []
        ss = self.secondary_structure
        start = 0
        for i in range(1, len(ss) + 1):
            if i == len(ss) or ss[i] != ss[start]:
                out.append((ss[start], start + 1, i))
                start = i
        return out


# --- NeRF placement (pure Python: faster than numpy for single 3-vectors) -------------------

def _sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _cross(a: Vec, b: Vec) -> Vec:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _unit(a: Vec) -> Vec:
    n = math.sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2])
    return (a[0] / n, a[1] / n, a[2] / n)


def place_atom(a: Vec, b: Vec, c: Vec, bond_a: float, angle_deg: float, torsion_deg: float) -> Vec:
    """Place atom ``d`` bonded to ``c`` (NeRF).

    Parameters
    ----------
    a, b, c
        Positions (Å) of the three preceding atoms.
    bond_a
        Length of the bond ``c–d``.
    angle_deg
        Bond angle ``b–c–d``.
    torsion_deg
        Dihedral ``a–b–c–d``.

    Returns
    -------
    tuple of 3 floats
    """
    theta = math.radians(angle_deg)
    tau = math.radians(torsion_deg)
    d2 = (-bond_a * math.cos(theta),
          bond_a * math.sin(theta) * math.cos(tau),
          bond_a * math.sin(theta) * math.sin(tau))
    bc = _unit(_sub(c, b))
    n = _unit(_cross(_sub(b, a), bc))
    m = _cross(n, bc)
    return (c[0] + bc[0] * d2[0] + m[0] * d2[1] + n[0] * d2[2],
            c[1] + bc[1] * d2[0] + m[1] * d2[1] + n[1] * d2[2],
            c[2] + bc[2] * d2[0] + m[2] * d2[1] + n[2] * d2[2])


def _grow(prev: tuple[Vec, Vec, Vec, float], phis: list[float], psis: list[float],
          glycine: list[bool]) -> tuple[list[list[Vec]], tuple[Vec, Vec, Vec, float]]:
    """Append residues after ``prev = (N, CA, C, psi)`` of the previous residue.

    Returns per-residue atom lists ``[N, CA, C, O, (CB)]`` and the new ``prev``.
    """
    n_prev, ca_prev, c_prev, psi_prev = prev
    residues: list[list[Vec]] = []
    for phi, psi, gly in zip(phis, psis, glycine, strict=True):
        n = place_atom(n_prev, ca_prev, c_prev, BOND_C_N_A, ANGLE_CA_C_N_DEG, psi_prev)
        ca = place_atom(ca_prev, c_prev, n, BOND_N_CA_A, ANGLE_C_N_CA_DEG, OMEGA_DEG)
        c = place_atom(c_prev, n, ca, BOND_CA_C_A, ANGLE_N_CA_C_DEG, phi)
        o = place_atom(n, ca, c, BOND_C_O_A, ANGLE_CA_C_O_DEG, psi + 180.0)
        atoms = [n, ca, c, o]
        if not gly:
            atoms.append(place_atom(c, n, ca, BOND_CA_CB_A, ANGLE_N_CA_CB_DEG,
                                    TORSION_C_N_CA_CB_DEG))
        residues.append(atoms)
        n_prev, ca_prev, c_prev, psi_prev = n, ca, c, psi
    return residues, (n_prev, ca_prev, c_prev, psi_prev)


def _first_residue(psi: float, gly: bool) -> tuple[list[Vec], tuple[Vec, Vec, Vec, float]]:
    n: Vec = (0.0, 0.0, 0.0)
    ca: Vec = (BOND_N_CA_A, 0.0, 0.0)
    t = math.radians(180.0 - ANGLE_N_CA_C_DEG)
    c: Vec = (BOND_N_CA_A + BOND_CA_C_A * math.cos(t), BOND_CA_C_A * math.sin(t), 0.0)
    o = place_atom(n, ca, c, BOND_C_O_A, ANGLE_CA_C_O_DEG, psi + 180.0)
    atoms = [n, ca, c, o]
    if not gly:
        atoms.append(place_atom(c, n, ca, BOND_CA_CB_A, ANGLE_N_CA_CB_DEG, TORSION_C_N_CA_CB_DEG))
    return atoms, (n, ca, c, psi)


# --- secondary-structure plan and sequence ---------------------------------------------------

def _plan(length: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """Secondary-structure runs of the chain: ``[(kind, length), ...]`` summing to ``length``."""
    plan: list[tuple[str, int]] = []
    total = 0
    first_loop = int(rng.integers(2, 5))
    plan.append(("C", first_loop))
    total += first_loop
    while total < length:
        kind = "H" if rng.random() < 0.55 else "E"
        n_el = int(rng.integers(8, 17)) if kind == "H" else int(rng.integers(5, 10))
        n_loop = int(rng.integers(3, 7))
        plan.append((kind, n_el))
        plan.append(("C", n_loop))
        total += n_el + n_loop
    # trim to the requested length, from the end
    excess = total - length
    while excess > 0:
        kind, n = plan[-1]
        take = min(excess, n)
        if take == n:
            plan.pop()
        else:
            plan[-1] = (kind, n - take)
        excess -= take
    # an element shorter than its minimum becomes coil
    fixed: list[tuple[str, int]] = []
    for kind, n in plan:
        if (kind == "H" and n < 5) or (kind == "E" and n < 3):
            kind = "C"
        if fixed and fixed[-1][0] == kind:
            fixed[-1] = (kind, fixed[-1][1] + n)
        else:
            fixed.append((kind, n))
    return fixed


def _residue_weights(ss_index: int) -> NDArray[np.float64]:
    w = np.array([BACKGROUND_FREQUENCY[a] * _PROPENSITY[a][ss_index] for a in _AMINO_ACIDS])
    if ss_index in (0, 1):  # no proline inside helices or strands
        w[_AMINO_ACIDS.index("P")] = 0.0
    return w / w.sum()


def _sample_loop(n: int, rng: np.random.Generator) -> tuple[list[float], list[float], list[str]]:
    centres = np.array([(p, q) for p, q, _ in _LOOP_REGIONS])
    weights = np.array([w for _, _, w in _LOOP_REGIONS])
    region = rng.choice(len(_LOOP_REGIONS), size=n, p=weights / weights.sum())
    angles = centres[region] + rng.normal(0.0, _LOOP_SPREAD_DEG, size=(n, 2))
    coil_w = _residue_weights(2)
    letters: list[str] = []
    for k in range(n):
        if angles[k, 0] > 0:
            letters.append("G")
            continue
        aa = _AMINO_ACIDS[int(rng.choice(len(_AMINO_ACIDS), p=coil_w))]
        if aa == "P":
            angles[k, 0] = PROLINE_PHI_DEG
        letters.append(aa)
    return [float(a) for a in angles[:, 0]], [float(a) for a in angles[:, 1]], letters


# --- clash test -----------------------------------------------------------------------------

def _clashes(new_xyz: NDArray[np.float64], new_res: NDArray[np.int64], new_is_n: NDArray[np.bool_],
             new_is_o: NDArray[np.bool_], tree: cKDTree | None, old_res: NDArray[np.int64],
             old_is_n: NDArray[np.bool_], old_is_o: NDArray[np.bool_]) -> bool:
    """True when a new atom violates the clash rule against earlier or other new atoms."""
    def bad_pairs(i: NDArray[np.int64], j: NDArray[np.int64], res_i: NDArray[np.int64],
                  res_j: NDArray[np.int64], n_i: NDArray[np.bool_], o_i: NDArray[np.bool_],
                  n_j: NDArray[np.bool_], o_j: NDArray[np.bool_], dist: NDArray[np.float64]) -> bool:
        far = np.abs(res_i[i] - res_j[j]) >= CLASH_MIN_SEPARATION
        hbond = (n_i[i] & o_j[j]) | (o_i[i] & n_j[j])
        limit = np.where(hbond, HBOND_DISTANCE_A, CLASH_DISTANCE_A)
        return bool(np.any(far & (dist < limit)))

    if tree is not None:
        sdm = cKDTree(new_xyz).sparse_distance_matrix(tree, CLASH_DISTANCE_A, output_type="ndarray")
        if sdm.size and bad_pairs(sdm["i"], sdm["j"], new_res, old_res, new_is_n, new_is_o,
                                  old_is_n, old_is_o, sdm["v"]):
            return True
    own = cKDTree(new_xyz)
    pairs = own.query_pairs(CLASH_DISTANCE_A, output_type="ndarray")
    if pairs.size:
        d = np.linalg.norm(new_xyz[pairs[:, 0]] - new_xyz[pairs[:, 1]], axis=1)
        if bad_pairs(pairs[:, 0], pairs[:, 1], new_res, new_res, new_is_n, new_is_o,
                     new_is_n, new_is_o, d):
            return True
    return False


def build_protein(length: int, seed: int = 0, *, chain_id: str = "A",
                  candidates: int = 48, max_backtracks: int = 200) -> Protein:
    """Build a compact procedural protein of ``length`` residues.

    Parameters
    ----------
    length
        Number of residues (>= 5).
    seed
        Seed of the generator: the same seed gives the same protein, bit for bit.
    chain_id
        Chain name.
    candidates
        Conformations tried per unit (loop + element); more gives a more compact fold.
    max_backtracks
        How often a unit that cannot be placed may send the builder back one unit.

    Returns
    -------
    Protein

    Examples
    --------
    >>> p = build_protein(30, seed=1)
    >>> len(p.sequence), len(p.secondary_structure)
    (30, 30)
    """
    if length < 5:
        raise InputError("length", f"a protein needs at least 5 residues, got {length}")
    if candidates < 1:
        raise InputError("candidates", f"must be >= 1, got {candidates}")
    rng = np.random.default_rng(seed)
    plan = _plan(length, rng)
    helix_w, strand_w = _residue_weights(0), _residue_weights(1)

    def element(kind: str, n: int) -> tuple[list[float], list[float], list[str]]:
        phi, psi = HELIX_PHI_PSI_DEG if kind == "H" else STRAND_PHI_PSI_DEG
        w = helix_w if kind == "H" else strand_w
        letters = [_AMINO_ACIDS[int(k)] for k in rng.choice(len(_AMINO_ACIDS), size=n, p=w)]
        return [phi] * n, [psi] * n, letters

    # group the plan into units: (loop, element) pairs; a trailing loop is its own unit
    units: list[list[tuple[str, int]]] = []
    i = 0
    while i < len(plan):
        if plan[i][0] == "C" and i + 1 < len(plan):
            units.append([plan[i], plan[i + 1]])
            i += 2
        else:
            units.append([plan[i]])
            i += 1

    placed: list[_Unit] = []
    backtracks = 0
    u = 0
    while u < len(units):
        unit = units[u]
        prev = placed[-1].end if placed else None
        start_res = placed[-1].last_res + 1 if placed else 0
        all_old = [a for pu in placed for a in pu.xyz]
        old_xyz = np.array(all_old) if all_old else np.zeros((0, 3))
        tree = cKDTree(old_xyz) if all_old else None
        old_res = np.array([r for pu in placed for r in pu.res], dtype=np.int64)
        old_is_n = np.array([a == "N" for pu in placed for a in pu.names], dtype=bool)
        old_is_o = np.array([a == "O" for pu in placed for a in pu.names], dtype=bool)
        best: tuple[float, _Unit] | None = None
        for _ in range(candidates):
            u_phi: list[float] = []
            u_psi: list[float] = []
            u_seq: list[str] = []
            u_ss: list[str] = []
            for kind, n in unit:
                if kind == "C":
                    a, b, s = _sample_loop(n, rng)
                else:
                    a, b, s = element(kind, n)
                u_phi += a
                u_psi += b
                u_seq += s
                u_ss += [kind] * n
            gly = [a == "G" for a in u_seq]
            if prev is None:
                first, p0 = _first_residue(u_psi[0], gly[0])
                rest, p_end = _grow(p0, u_phi[1:], u_psi[1:], gly[1:])
                res_atoms = [first, *rest]
            else:
                res_atoms, p_end = _grow(prev, u_phi, u_psi, gly)
            new_xyz = np.array([a for r in res_atoms for a in r])
            new_names = [nm for r in res_atoms for nm in ("N", "CA", "C", "O", "CB")[: len(r)]]
            new_res = np.array([start_res + k for k, r in enumerate(res_atoms) for _ in r],
                               dtype=np.int64)
            new_is_n = np.array([a == "N" for a in new_names])
            new_is_o = np.array([a == "O" for a in new_names])
            if _clashes(new_xyz, new_res, new_is_n, new_is_o, tree, old_res, old_is_n, old_is_o):
                continue
            # compactness: smallest radius of gyration of the chain so far
            allxyz = np.concatenate([old_xyz, new_xyz])
            score = float(((allxyz - allxyz.mean(axis=0)) ** 2).sum(axis=1).mean())
            if best is None or score < best[0]:
                best = (score, _Unit(new_xyz, new_names, new_res, u_seq, u_ss, u_phi, u_psi,
                                     p_end, start_res + len(res_atoms) - 1))
        if best is None:
            backtracks += 1
            if not placed or backtracks > max_backtracks:
                raise RuntimeError(
                    f"could not place residues {start_res + 1}.. without clashes; try another seed")
            placed.pop()
            u -= 1
            continue
        placed.append(best[1])
        u += 1

    coords = np.concatenate([pu.xyz for pu in placed])
    names_arr = np.array([a for pu in placed for a in pu.names])
    res_arr = np.concatenate([pu.res for pu in placed])
    seq = [a for pu in placed for a in pu.seq]
    ss_str = "".join(a for pu in placed for a in pu.ss)
    phis = [a for pu in placed for a in pu.phi]
    psis = [a for pu in placed for a in pu.psi]
    coords = coords - coords.mean(axis=0)
    r = np.linalg.norm(coords, axis=1)
    b = 15.0 + 45.0 * (r / max(float(r.max()), 1e-6)) ** 2
    return Protein(
        xyz_a=coords,
        elements=np.array([nm[0] for nm in names_arr]),
        atom_names=names_arr,
        residue_names=np.array([THREE_LETTER[seq[k]] for k in res_arr]),
        residue_numbers=res_arr + 1,
        chain_ids=np.full(len(names_arr), chain_id),
        b_factors_a2=b,
        sequence="".join(seq),
        secondary_structure=ss_str,
        phi_deg=np.array(phis[:length]),
        psi_deg=np.array(psis[:length]),
        seed=seed,
    )


# --- output ---------------------------------------------------------------------------------

def to_gemmi_structure(protein: Protein, name: str = "cryoset_procedural") -> gemmi.Structure:
    """A gemmi structure with the atoms and HELIX/SHEET annotations of ``protein``.

    Each helix becomes an α-helix record (class 1); each strand becomes a one-strand
    sheet named ``S<k>`` (strands are not paired).
    """
    st = gemmi.Structure()
    st.name = name
    st.cell = gemmi.UnitCell(1.0, 1.0, 1.0, 90.0, 90.0, 90.0)
    model = gemmi.Model(1) if _gemmi_model_takes_int() else gemmi.Model("1")  # type: ignore[arg-type]
    chain_name = str(protein.chain_ids[0]) if protein.n_atoms else "A"
    chain = gemmi.Chain(chain_name)
    starts = np.flatnonzero(np.r_[True, np.diff(protein.residue_numbers) != 0])
    ends = np.r_[starts[1:], protein.n_atoms]
    serial = 1
    for s, e in zip(starts, ends, strict=True):
        res = gemmi.Residue()
        res.name = str(protein.residue_names[s])
        res.seqid = gemmi.SeqId(int(protein.residue_numbers[s]), " ")
        res.entity_type = gemmi.EntityType.Polymer
        for k in range(s, e):
            atom = gemmi.Atom()
            atom.name = str(protein.atom_names[k])
            atom.element = gemmi.Element(str(protein.elements[k]))
            atom.pos = gemmi.Position(*map(float, protein.xyz_a[k]))
            atom.b_iso = float(protein.b_factors_a2[k])
            atom.occ = 1.0
            atom.serial = serial
            serial += 1
            res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    n_sheet = 0
    for kind, first, last in protein.segments():
        start = gemmi.AtomAddress(chain_name, gemmi.SeqId(first, " "), THREE_LETTER[protein.sequence[first - 1]], "CA")
        end = gemmi.AtomAddress(chain_name, gemmi.SeqId(last, " "), THREE_LETTER[protein.sequence[last - 1]], "CA")
        if kind == "H":
            helix = gemmi.Helix()
            helix.start, helix.end = start, end
            helix.pdb_helix_class = gemmi.Helix.HelixClass.RAlpha
            helix.length = last - first + 1
            st.helices.append(helix)
        elif kind == "E":
            n_sheet += 1
            sheet = gemmi.Sheet(f"S{n_sheet}")
            strand = gemmi.Sheet.Strand()
            strand.start, strand.end = start, end
            strand.name = "1"
            strand.sense = 0
            sheet.strands.append(strand)
            st.sheets.append(sheet)
    return st


def _gemmi_model_takes_int() -> bool:
    try:
        gemmi.Model(1)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


def secondary_structure_from_structure(st: gemmi.Structure, n_residues: int) -> str:
    """Per-residue H/E/C string from a structure's HELIX/SHEET annotations (residues 1..n)."""
    out = ["C"] * n_residues

    def span(start: gemmi.AtomAddress, end: gemmi.AtomAddress) -> range:
        return range(int(start.res_id.seqid.num or 0), int(end.res_id.seqid.num or 0) + 1)

    for helix in st.helices:
        for k in span(helix.start, helix.end):
            if 1 <= k <= n_residues:
                out[k - 1] = "H"
    for sheet in st.sheets:
        for strand in sheet.strands:
            for k in span(strand.start, strand.end):
                if 1 <= k <= n_residues:
                    out[k - 1] = "E"
    return "".join(out)
