"""Reading chain sequences from FASTA files."""

from __future__ import annotations

import os
from pathlib import Path

from cryoset.errors import InputError
from cryoset.trace.residues import sequence_to_indices


def read_fasta(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Records of a FASTA file as ``(header, sequence)`` pairs, in file order.

    The header is the text after ``>`` (stripped); sequence lines are concatenated with
    whitespace removed. Every sequence must contain only amino-acid letters.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such FASTA file")
    records: list[tuple[str, list[str]]] = []
    for lineno, raw in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            records.append((line[1:].strip(), []))
        elif not records:
            raise InputError(p, f"line {lineno}: sequence data before the first '>' header")
        else:
            records[-1][1].append("".join(line.split()))
    out = [(name, "".join(parts)) for name, parts in records]
    if not out:
        raise InputError(p, "no FASTA records")
    for name, seq in out:
        if not seq:
            raise InputError(p, f"record {name!r} has an empty sequence")
        try:
            sequence_to_indices(seq)
        except ValueError as exc:
            raise InputError(p, f"record {name!r}: {exc}") from exc
    return out
