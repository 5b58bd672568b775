"""The 20 standard amino acids: class order, one-letter codes and background frequencies.

Class ``k`` of every 20-channel amino-acid probability array is ``AMINO_ACIDS[k]``
(alphabetical by three-letter code: ALA, ARG, ASN, …, VAL). Background frequencies are
the UniProtKB/Swiss-Prot amino-acid composition (percent, release statistics), normalised
to sum to one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

#: Three-letter codes in class order.
AMINO_ACIDS: tuple[str, ...] = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
)  # fmt: skip

#: One-letter codes in class order.
ONE_LETTER: str = "ARNDCQEGHILKMFPSTWYV"

#: Class index used for a residue of unknown type (uniform emission).
UNKNOWN_INDEX: int = 20

_SWISSPROT_PERCENT: tuple[float, ...] = (
    8.25, 5.53, 4.06, 5.45, 1.37, 3.93, 6.75, 7.07, 2.27, 5.96,
    9.66, 5.84, 2.42, 3.86, 4.70, 6.56, 5.34, 1.08, 2.92, 6.87,
)  # fmt: skip


def background_frequencies() -> npt.NDArray[np.float64]:
    """Background amino-acid frequencies, shape (20,), in class order, summing to 1."""
    freq = np.asarray(_SWISSPROT_PERCENT, dtype=np.float64)
    return np.asarray(freq / freq.sum(), dtype=np.float64)


def sequence_to_indices(sequence: str) -> npt.NDArray[np.int64]:
    """Class indices, shape (len(sequence),), of a one-letter sequence.

    Letters outside the 20 standard ones (X, U, O, B, Z, J) map to ``UNKNOWN_INDEX``.
    Whitespace and ``*`` are ignored; any other character raises ``ValueError``.
    """
    lookup = {c: k for k, c in enumerate(ONE_LETTER)}
    out: list[int] = []
    for ch in sequence.upper():
        if ch.isspace() or ch == "*":
            continue
        if ch in lookup:
            out.append(lookup[ch])
        elif ch in "XUOBZJ":
            out.append(UNKNOWN_INDEX)
        else:
            raise ValueError(f"{ch!r} is not an amino-acid letter")
    return np.asarray(out, dtype=np.int64)


def three_to_index(name: str) -> int:
    """Class index of a three-letter residue name; ``UNKNOWN_INDEX`` for non-standard ones."""
    upper = name.strip().upper()
    aliases = {
        "MSE": "MET", "SEC": "CYS", "HYP": "PRO", "CSO": "CYS",
        "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HID": "HIS", "HIE": "HIS", "HIP": "HIS",
    }  # fmt: skip
    upper = aliases.get(upper, upper)
    return AMINO_ACIDS.index(upper) if upper in AMINO_ACIDS else UNKNOWN_INDEX


def one_letter_sequence(residue_names: Iterable[str]) -> str:
    """One-letter sequence of three-letter residue names (``X`` for non-standard ones)."""
    return "".join(ONE_LETTER[k] if k < 20 else "X" for k in (three_to_index(n) for n in residue_names))


def index_to_three(index: int) -> str:
    """Three-letter name of a class index (``UNK`` for ``UNKNOWN_INDEX``)."""
    return AMINO_ACIDS[index] if 0 <= index < 20 else "UNK"
