"""Pandas-free reading and writing of the formats ``cryoset extract`` uses on its fast path.

``import pandas`` alone costs about 0.4 s, more than RELION's whole ``relion_preprocess
--extract`` on a small data set, so the extract command reads coordinate STAR files and writes
its particle STAR and CryoVirusDB CSV files through this module (numpy and the standard library
only) when its inputs are plain (see :mod:`cryoset.workflows.extract`). Everything here gives
exactly what the full readers and writers give:

* :func:`read_star_blocks` parses a STAR file with the grammar of
  :func:`cryoset.io.star.read_star` (same blocks, labels, quoting, comments, errors) and converts
  each column as it does (int64 when every value parses as an integer, else float64 when every
  value parses as a float, else text; labels containing ``Name`` always text), but returns numpy
  arrays and lists instead of DataFrames (``tests/io/test_lean.py`` checks the values against
  ``read_star`` on every shared STAR file and on tricky ones);
* :func:`format_star_loops` writes loops exactly as :func:`cryoset.io.star.format_star`
  (shortest round-trip floats, the same quoting of text);
* :func:`cvdb_number_tokens` and :func:`format_csv` give the cells and bytes of
  :func:`cryoset.io.cryovirusdb.write_cryovirusdb` (which writes through pandas' ``to_csv``).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from cryoset.errors import InputError

__all__ = [
    "COORDINATE_SUFFIXES",
    "CVDB_FALSE_POSITIVE_COLUMNS",
    "PathStyle",
    "StarBlock",
    "cvdb_number_tokens",
    "float_tokens",
    "format_csv",
    "format_star_loops",
    "parse_plain_number",
    "read_csv_cells",
    "read_star_blocks",
    "relion_path",
    "star_text_token",
]

#: Suffixes of every coordinate format :mod:`cryoset.io.coords` reads (equal to its
#: ``COORDINATE_SUFFIXES``; a test keeps them in step).
COORDINATE_SUFFIXES: tuple[str, ...] = (".star", ".box", ".csv", ".txt", ".tsv", ".cbox", ".cs")

Column = NDArray[np.int64] | NDArray[np.float64] | list[str]

_TOKEN = re.compile(r"""'([^']*)'(?=\s|$)|"([^"]*)"(?=\s|$)|(\S+)""")
_OTHER_LINE_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _tokens(line: str) -> list[str]:
    """One line's tokens: quotes honoured, a token starting with ``#`` ends the line."""
    if "'" not in line and '"' not in line:
        out = line.split()
        if "#" in line:
            for i, tok in enumerate(out):
                if tok.startswith("#"):
                    return out[:i]
        return out
    result: list[str] = []
    for match in _TOKEN.finditer(line):
        single, double, bare = match.groups()
        if bare is not None:
            if bare.startswith("#"):
                break
            result.append(bare)
        else:
            result.append(single if single is not None else double)
    return result


def _convert(values: list[str], label: str) -> Column:
    """int64, float64 or text, decided as :func:`cryoset.io.star.read_star` does."""
    if "Name" not in label and values:
        try:
            return np.array(list(map(int, values)), dtype=np.int64)
        except (ValueError, OverflowError):
            pass
        try:
            return np.array(list(map(float, values)), dtype=np.float64)
        except ValueError:
            pass
    return list(values)


@dataclass
class StarBlock:
    """One data block: ``labels`` in file order, ``columns`` by label, ``loop`` False for pairs."""

    labels: list[str]
    columns: dict[str, Column] = field(default_factory=dict)
    loop: bool = True

    def __len__(self) -> int:
        return len(self.columns[self.labels[0]]) if self.labels else 0


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.blocks: dict[str, StarBlock] = {}
        self.name: str | None = None
        self.pairs: dict[str, str] = {}
        self.labels: list[str] = []
        self.rows: list[list[str]] = []
        self.state = "none"

    def finish(self) -> None:
        name = self.name
        if name is None:
            return
        if self.labels and self.pairs:
            raise InputError(self.path, f"block data_{name} mixes key/value pairs and a loop")
        if self.labels:
            n = len(self.labels)
            flat = [tok for row in self.rows for tok in row]
            block = StarBlock(list(self.labels), {lab: _convert(flat[i::n], lab)
                                                  for i, lab in enumerate(self.labels)}, True)
        else:
            block = StarBlock(list(self.pairs), {lab: _convert([v], lab) for lab, v in self.pairs.items()},
                              False)
        if name in self.blocks:
            raise InputError(self.path, f"block data_{name} appears more than once")
        self.blocks[name] = block
        self.name, self.pairs, self.labels, self.rows = None, {}, [], []

    def line(self, lineno: int, raw: str) -> None:
        p = self.path
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            return
        if stripped.startswith("data_"):
            self.finish()
            self.name = stripped.split()[0][5:]
            self.state = "block"
            return
        name = self.name
        if name is None:
            raise InputError(p, f"line {lineno}: text before the first data_ block")
        if stripped.startswith("loop_"):
            if self.labels or self.rows:
                raise InputError(p, f"line {lineno}: block data_{name} has more than one loop")
            self.state = "labels"
            return
        if stripped.startswith("_") and self.state in ("labels", "block"):
            toks = _tokens(stripped)
            label = toks[0][1:]
            if self.state == "labels":
                if label in self.labels:
                    raise InputError(p, f"line {lineno}: label {label} repeated in data_{name}")
                self.labels.append(label)
            else:
                if len(toks) < 2:
                    raise InputError(p, f"line {lineno}: label {label} has no value")
                if label in self.pairs:
                    raise InputError(p, f"line {lineno}: label {label} repeated in data_{name}")
                self.pairs[label] = toks[1]
            return
        if self.state in ("labels", "rows"):
            self.state = "rows"
            toks = _tokens(stripped)
            if not toks:
                return
            if len(toks) != len(self.labels):
                raise InputError(p, f"line {lineno}: {len(toks)} values for {len(self.labels)} columns in data_{name}")
            self.rows.append(toks)
            return
        if stripped.startswith("_"):
            raise InputError(p, f"line {lineno}: label after the rows of the loop in data_{name}")
        raise InputError(p, f"line {lineno}: unexpected text {stripped[:40]!r} in data_{name}")


def read_star_blocks(path: str | os.PathLike[str]) -> dict[str, StarBlock]:
    """Every data block of a STAR file (strict), as numpy columns.

    The values, labels, block names and errors are those of :func:`cryoset.io.star.read_star`
    (``permissive=False``): the same column is int64, float64 or text, with the same numbers.

    Raises
    ------
    InputError
        No data block, a loop row with the wrong number of values, a repeated label or block,
        text outside a block, or a binary file.
    """
    p = Path(path)
    try:
        content = p.read_bytes()
    except IsADirectoryError:
        raise InputError(p, "is a directory, not a STAR file") from None
    if content.isascii() and b"\r" not in content:
        text = content.decode("ascii")
    else:
        text = p.read_text(encoding="utf-8", errors="replace")
    if "\x00" in text[:4096]:
        raise InputError(p, "is a binary file, not a STAR file")
    parser = _Parser(p)
    if any(c in text for c in _OTHER_LINE_BREAKS):
        lines: Iterable[str] = text.splitlines()
    else:  # the same lines as splitlines(), without building the list twice
        lines = text.split("\n")
        if text.endswith("\n"):
            lines = lines[:-1]
    for lineno, raw in enumerate(lines, start=1):
        parser.line(lineno, raw)
    parser.finish()
    if not parser.blocks:
        raise InputError(p, "no data_ block found (not a STAR file)")
    return parser.blocks


# ------------------------------------------------------------------------------- writing

_NEEDS_QUOTES = re.compile(r"""^$|\s|^[#_'"]|^loop_$|^data_""")


def star_text_token(value: str) -> str:
    """One STAR token for a text value, quoted as :func:`cryoset.io.star.write_star` quotes it."""
    if _NEEDS_QUOTES.search(value):
        quote = '"' if '"' not in value else "'"
        return f"{quote}{value}{quote}"
    return value


def float_tokens(values: NDArray[np.floating] | Sequence[float]) -> list[str]:
    """Shortest round-trip text of each float (``repr``, as the STAR writer)."""
    return list(map(repr, np.asarray(values, dtype=np.float64).tolist()))


def format_star_loops(
    blocks: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]]]], *,
    comment: str | None = None, version: int | None = None,
) -> str:
    """The text of a STAR file of loops: ``(block name, labels, token columns)`` per block.

    The layout is :func:`cryoset.io.star.format_star`'s (comment lines, ``# version``, blank
    lines, numbered labels, one row per line).
    """
    parts: list[str] = []
    if comment:
        parts.extend(f"# {line}".rstrip() for line in comment.splitlines())
        parts.append("")
    for name, labels, columns in blocks:
        if len(labels) != len(columns):
            raise ValueError(f"block {name}: {len(labels)} labels for {len(columns)} columns")
        if version is not None:
            parts.append(f"# version {version}")
            parts.append("")
        parts.append(f"data_{name}")
        parts.append("")
        parts.append("loop_")
        for i, lab in enumerate(labels, start=1):
            parts.append(f"_{lab} #{i}")
        if columns:
            parts.extend(" ".join(row) for row in zip(*columns, strict=True))
        parts.append("")
        parts.append("")
    return "\n".join(parts)


def cvdb_number_tokens(values: NDArray[np.floating] | Sequence[float], allow_whole: bool) -> list[str]:
    """CryoVirusDB CSV cells of a float column: empty when not finite, whole numbers without
    ``.0`` when ``allow_whole`` and every finite value is whole, else the shortest exact text."""
    arr = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(arr)
    whole = allow_whole and bool(np.all(np.equal(np.round(arr[finite]), arr[finite])))
    return [("" if not np.isfinite(v) else (str(int(v)) if whole and abs(v) < 2**53 else repr(v)))
            for v in arr.tolist()]


def format_csv(header: Sequence[str], columns: Sequence[Sequence[str]]) -> bytes:
    """A CSV file of text cells, as pandas' ``DataFrame.to_csv(index=False)`` writes it (UTF-8,
    ``\\n`` line ends, minimal quoting)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(zip(*columns, strict=True))
    return buf.getvalue().encode("utf-8")


#: The 15 columns of a CryoVirusDB false-positive CSV, in order (as :mod:`cryoset.io.cryovirusdb`).
CVDB_FALSE_POSITIVE_COLUMNS: tuple[str, ...] = (
    "Micrographs Filename", "X-Coordinate", "Y-Coordinate", "Diameter", "Angle-Psi", "Origin X (Ang)",
    "Origin Y (Ang)", "Defocus U", "Defocus V", "Defocus Angle", "Phase Shift", "CTF B Factor",
    "Optics Group", "Class Number", "Reason")

_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def parse_plain_number(text: str) -> float | None:
    """A decimal number (``12``, ``-1.5``, ``.5``, ``3e-2``) as float64, NaN for an empty cell,
    None for anything else (``nan``, ``inf``, ``1_000``…: left to the full readers). Python's
    ``float`` is correctly rounded, as pandas' parser is for these strings."""
    if text == "":
        return float("nan")
    return float(text) if _PLAIN_NUMBER.fullmatch(text) else None


def read_csv_cells(path: str | os.PathLike[str]) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of a plain CSV file, every cell stripped of surrounding whitespace (as
    :func:`cryoset.io.cryovirusdb.read_cryovirusdb` reads them); None when the file is not
    plain: not UTF-8, a byte-order mark, blank lines, or a row of another length than the header."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, skipinitialspace=True))
    except (UnicodeDecodeError, csv.Error):
        return None
    if not rows or (rows[0] and rows[0][0].startswith("\ufeff")):
        return None
    header = [h.strip() for h in rows[0]]
    body = [[c.strip() for c in r] for r in rows[1:]]
    if any(len(r) != len(header) for r in body):
        return None
    return header, body


# ------------------------------------------------------------------------------- names

PathStyle = Literal["project", "star"]


def relion_path(target: str | os.PathLike[str], star_path: str | os.PathLike[str],
                style: PathStyle = "project") -> str:
    """The name to write in a STAR file for ``target`` (an image stack or micrograph).

    Parameters
    ----------
    target
        The file.
    star_path
        The STAR file being written.
    style
        ``"project"``: relative to the current directory, RELION's project directory, as
        RELION writes and resolves names (e.g. ``Extract/job001/Micrographs/x.mrcs``); a file
        outside the current directory is written absolute. ``"star"``: relative to the STAR
        file's folder (readable by cryoset from anywhere, by RELION only when run there).

    Returns
    -------
    str
        A POSIX path.
    """
    t = Path(target).resolve()
    if style == "star":
        return Path(os.path.relpath(t, Path(star_path).resolve().parent)).as_posix()
    if style != "project":
        raise ValueError(f"style: expected 'project' or 'star', got {style!r}")
    cwd = Path.cwd().resolve()
    return t.relative_to(cwd).as_posix() if t.is_relative_to(cwd) else t.as_posix()
