"""Low-level STAR files (RELION flavour): data blocks of loops or key/value pairs.

A STAR file is a sequence of ``data_<name>`` blocks. Each block is either a ``loop_`` (a
table: one ``_label`` line per column, then one row per line) or a list of ``_label value``
pairs. :func:`read_star` returns ``{block name: DataFrame}``; a key/value block becomes a
one-row table whose ``attrs["star_loop"]`` is False, so :func:`write_star` writes it back as
pairs. Labels lose their leading underscore (``_rlnImageName`` → ``rlnImageName``).

Types: a column whose values all parse as integers is int64, else all as floats float64,
else text. Columns whose label contains ``Name`` (``rlnImageName``, ``rlnMicrographName``,
``rlnOpticsGroupName``…) are always text. Floats are written with the shortest text that
reads back to the same float64, so read → write → read is exact.

Quoting: values may be quoted with ``'`` or ``"`` (RELION ≥ 4 writes quotes); a ``#`` at
the start of a token starts a comment that runs to the end of the line. The writer quotes
empty values and values containing whitespace.

Speed: big loop bodies are tokenised and converted in bulk by pandas' C parser, which gives
exactly the tables the line-by-line reader gives (see the comment above
:func:`_loop_columns`); bodies it cannot read exactly go line by line.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_path

#: Key of ``DataFrame.attrs`` telling whether a block is a loop (True) or key/value pairs.
LOOP_ATTR = "star_loop"

_TOKEN = re.compile(r"""'([^']*)'(?=\s|$)|"([^"]*)"(?=\s|$)|(\S+)""")


def _tokens(line: str) -> list[str]:
    """Split one line into tokens, honouring quotes and dropping a trailing comment."""
    if "'" not in line and '"' not in line:
        if "#" not in line:
            return line.split()
        out = line.split()
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


def _is_text_label(label: str) -> bool:
    return "Name" in label


def _column(values: list[str], label: str) -> pd.Series:
    """Convert the text of one column to int64, float64 or str (Python's exact parsers)."""
    if not _is_text_label(label) and values:
        try:
            return pd.Series(np.array(list(map(int, values)), dtype=np.int64), name=label)
        except (ValueError, OverflowError):
            pass
        try:
            return pd.Series(np.array(list(map(float, values)), dtype=np.float64), name=label)
        except ValueError:
            pass
    return pd.Series(values, dtype=str, name=label)


def _table(labels: list[str], rows: list[list[str]], loop: bool) -> pd.DataFrame:
    n = len(labels)
    flat = list(itertools.chain.from_iterable(rows))
    return _frame(labels, [_column(flat[i::n], label) for i, label in enumerate(labels)], loop)


def _frame(labels: list[str], columns: list[pd.Series], loop: bool) -> pd.DataFrame:
    df = pd.DataFrame(dict(zip(labels, columns, strict=True)), columns=labels)
    df.attrs[LOOP_ATTR] = loop
    return df


# Bulk path for loop bodies --------------------------------------------------------------
#
# A loop body (the rows of a ``loop_``) is tokenised and converted by pandas' C parser when
# that provably gives what the line-by-line path gives: the body is ASCII without quotes or
# ``#``, its only whitespace is space, tab and newline (where ``str.split`` and the C
# tokeniser agree), and every non-blank line has one value per label. pandas decides a
# column's type only as int64 (its integer grammar, ``[+-]?digits``, is a subset of
# Python's ``int``), float64 (pandas ≥ 3.1 parses with fast_float, older pandas is asked
# for Python's own ``float_precision="round_trip"`` parser: correctly rounded either way, so
# the same float64 as ``float()``; ``inf``/``infinity`` as Python) or text. Every other
# outcome (text, booleans, uint64, mixed objects) sends that column's raw tokens through
# :func:`_column`, the exact reference converter (also for numbers under a ``Name`` label).
# Anything else (or a body the parser refuses) goes line by line. ``tests/io/test_star.py``
# checks that the two paths agree on every shared file and on fuzzed tokens.

#: Characters other than ``\n`` at which ``str.splitlines`` breaks lines (text mode has
#: already turned ``\r`` into ``\n``). A file containing one is read line by line.
_OTHER_LINE_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")

#: Loop bodies shorter than this (characters) are read line by line: for a few hundred
#: rows that is faster than starting pandas' parser.
_BULK_MIN_CHARS = 1 << 15


def _pandas_float_options() -> dict[str, str]:
    """``read_csv`` options under which pandas parses floats exactly as ``float()``."""
    major, minor = (int(part) for part in re.findall(r"\d+", pd.__version__)[:2])
    # pandas >= 3.1 has a single, correctly rounded parser and deprecates the option.
    return {} if (major, minor) >= (3, 1) else {"float_precision": "round_trip"}


def _read_tokens(data: bytes, n_columns: int, as_text: list[int]) -> pd.DataFrame | None:
    """Tokenise a loop body with pandas' C parser (None when it refuses the text).

    The first line must hold ``n_columns`` values: pandas refuses a longer later line but
    only warns about (and drops values of) a longer first line.
    """
    try:
        return pd.read_csv(  # type: ignore[call-overload,no-any-return]
            io.BytesIO(data),
            sep=r"\s+",
            header=None,
            names=list(range(n_columns)),
            index_col=False,
            dtype=dict.fromkeys(as_text, str),
            engine="c",
            na_filter=False,
            quoting=csv.QUOTE_NONE,
            low_memory=False,
            skip_blank_lines=True,
            **_pandas_float_options(),
        )
    except (pd.errors.ParserError, ValueError, OverflowError):
        return None


def _is_raw_text(values: pd.Series) -> bool:
    return pd.api.types.infer_dtype(values, skipna=False) == "string"


def _loop_columns(data: bytes, labels: list[str]) -> tuple[list[pd.Series], int] | None:
    """The columns of a loop body parsed in bulk, or None where only the line path is exact.

    Parameters
    ----------
    data
        Whole lines holding the rows of one loop (no ``data_``/``loop_`` line), encoded as
        UTF-8 (only ASCII is handled).
    labels
        The loop's labels, one per column.

    Returns
    -------
    tuple or None
        Exactly what :func:`_column` makes of each column's tokens, and the number of
        newlines in ``data``; None when the body is outside what the bulk path handles
        (see the comment above).
    """
    if not labels or not data.isascii() or any(c in data for c in (b"'", b'"', b"#")):
        return None
    codes = np.frombuffer(data, dtype=np.uint8)
    n_control = int(np.count_nonzero(codes < 32))
    n_tabs = int(np.count_nonzero(codes == 9)) if b"\t" in data else 0
    n_newlines = int(np.count_nonzero(codes == 10))
    if n_control != n_newlines + n_tabs or b"\x7f" in data:
        return None  # control characters: str.split and the C tokeniser may disagree
    blank = codes <= 32  # space, tab, newline
    n_tokens = int(np.count_nonzero(blank[:-1] > blank[1:])) + int(not blank[0])
    n_columns = len(labels)
    first = data.find(b"\n")
    if len(data[: first if first >= 0 else len(data)].split()) != n_columns:
        return None
    frame = _read_tokens(data, n_columns, [])
    # One value per label on every non-blank line: no line has more (the parser would
    # refuse it), so the counts agree only if none has fewer.
    if frame is None or len(frame) == 0 or len(frame) * n_columns != n_tokens:
        return None
    str_dtype = pd.Series([], dtype=str).dtype
    columns: dict[int, pd.Series] = {}
    redo: list[int] = []
    for j, label in enumerate(labels):
        values = frame[j]
        text = _is_text_label(label)
        if not text and values.dtype in (np.dtype(np.int64), np.dtype(np.float64)):
            columns[j] = pd.Series(values.to_numpy(), name=label)
        elif not _is_raw_text(values):
            # numbers in a text column, booleans, uint64, Python ints: read the raw tokens
            redo.append(j)
        elif text and values.dtype == str_dtype:
            columns[j] = values.rename(label)
        else:
            columns[j] = _column(values.tolist(), label)
    if redo:
        again = _read_tokens(data, n_columns, redo)
        if again is None or len(again) != len(frame):
            return None
        for j in redo:
            if not _is_raw_text(again[j]):
                return None
            columns[j] = _column(again[j].tolist(), labels[j])
    return [columns[j] for j in range(n_columns)], n_newlines


def _body_end(data: bytes, start: int) -> int:
    """Offset of the first line at or after ``start`` that opens a block or a loop.

    ``start`` is the start of a line; the answer is the start of the first line whose text
    after spaces and tabs begins with ``data_`` or ``loop_``, or ``len(data)``.
    """
    end = len(data)
    for keyword in (b"data_", b"loop_"):
        k = data.find(keyword, start, end)
        while k >= 0:
            line_start = max(data.rfind(b"\n", start, k) + 1, start)
            if not data[line_start:k].strip(b" \t"):
                end = line_start
                break
            k = data.find(keyword, k + 1, end)
    return end


class _StarParser:
    """The STAR grammar, one line at a time; a loop body may be handed over in bulk."""

    def __init__(self, path: Path, permissive: bool) -> None:
        self.path = path
        self.permissive = permissive
        self.blocks: dict[str, pd.DataFrame] = {}
        self.name: str | None = None
        self.pairs: dict[str, str] = {}
        self.labels: list[str] = []
        self.rows: list[list[str]] = []
        self.columns: list[pd.Series] | None = None
        self.skipped: list[int] = []
        self.state = "none"  # none | block | labels | rows

    def opens_rows(self, stripped: str) -> bool:
        """Whether the non-blank stripped line is the first row of a loop with labels."""
        return (
            self.state == "labels"
            and bool(self.labels)
            and not stripped.startswith(("#", "_", "data_", "loop_"))
        )

    def take_rows(self, columns: list[pd.Series]) -> None:
        """Accept the whole body of the current loop as parsed columns."""
        self.columns = columns
        self.state = "rows"

    def finish(self) -> None:
        """Close the current block (if any) and store its table."""
        p, name = self.path, self.name
        if name is None:
            return
        if self.labels and self.pairs:
            raise InputError(p, f"block data_{name} mixes key/value pairs and a loop")
        if self.labels and self.columns is not None:
            df = _frame(self.labels, self.columns, loop=True)
        elif self.labels:
            df = _table(self.labels, self.rows, loop=True)
        else:
            pairs = self.pairs
            df = _table(list(pairs), [list(pairs.values())] if pairs else [], loop=False)
        if self.skipped:
            df.attrs["star_skipped_lines"] = list(self.skipped)
        key = name
        if key in self.blocks:
            if not self.permissive:
                raise InputError(p, f"block data_{name} appears more than once")
            k = 2
            while f"{name}~{k}" in self.blocks:
                k += 1
            key = f"{name}~{k}"
        self.blocks[key] = df
        self.name, self.pairs, self.labels, self.rows = None, {}, [], []
        self.columns, self.skipped = None, []

    def line(self, lineno: int, raw: str) -> None:
        """Consume one line of the file."""
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
                if self.permissive:
                    self.skipped.append(lineno)
                    return
                raise InputError(
                    p,
                    f"line {lineno}: {len(toks)} values for {len(self.labels)} columns in data_{name}",
                )
            self.rows.append(toks)
            return
        if stripped.startswith("_"):
            raise InputError(p, f"line {lineno}: label after the rows of the loop in data_{name}")
        raise InputError(p, f"line {lineno}: unexpected text {stripped[:40]!r} in data_{name}")

    def close(self) -> dict[str, pd.DataFrame]:
        """Finish the last block and return every block."""
        self.finish()
        if not self.blocks:
            raise InputError(self.path, "no data_ block found (not a STAR file)")
        return self.blocks


def read_star(path: str | os.PathLike[str], *, permissive: bool = False) -> dict[str, pd.DataFrame]:
    """Read every data block of a STAR file.

    Loop bodies of plain files (ASCII, unquoted, no comments among the rows) are parsed in
    bulk by pandas' C parser with a correctly rounded float parser; anything else is read
    line by line. Both give the same tables, bit for bit.

    Parameters
    ----------
    path
        The ``.star`` file.
    permissive
        When True, loop rows with the wrong number of values are skipped (their line
        numbers are listed in ``df.attrs["star_skipped_lines"]``) and a repeated block
        name gets a ``~2``, ``~3``… suffix, instead of raising.

    Returns
    -------
    dict
        Block name (without ``data_``; ``""`` for a bare ``data_``) → table, in file order.

    Raises
    ------
    InputError
        When the file has no data block, a loop row has the wrong number of values, a
        label is repeated, a block name is repeated, or text appears outside a block.
    """
    return _read_star(path, permissive=permissive)


#: Block names that identify RELION's non-particle STAR files, first match wins.
_KNOWN_BLOCKS: tuple[tuple[str, str], ...] = (
    ("pipeline_general", "RELION pipeline"),
    ("optimiser_general", "RELION optimiser"),
    ("sampling_general", "RELION sampling"),
    ("model_general", "RELION model"),
    ("fsc", "RELION post-processing"),
    ("micrographs", "RELION micrograph"),
)


def describe_blocks(blocks: dict[str, pd.DataFrame]) -> str:
    """What a STAR file holds, from its block names, for one-line messages.

    Examples
    --------
    >>> import pandas as pd
    >>> describe_blocks({"general": pd.DataFrame(), "fsc": pd.DataFrame()})
    'RELION post-processing file (blocks: data_general, data_fsc)'
    """
    names = ", ".join(f"data_{n}" for n in blocks) or "none"
    kind = next((what for block, what in _KNOWN_BLOCKS if block in blocks), "STAR")
    return f"{kind} file (blocks: {names})"


def _read_star(
    path: str | os.PathLike[str], *, permissive: bool, min_bulk: int = _BULK_MIN_CHARS
) -> dict[str, pd.DataFrame]:
    """:func:`read_star`, parsing loop bodies of at least ``min_bulk`` characters in bulk.

    ``min_bulk=-1`` reads every line one by one (the reference path); ``0`` parses every
    loop body it can in bulk (tests compare the two).
    """
    p = Path(path)
    try:
        content = p.read_bytes()
    except IsADirectoryError:
        raise InputError(p, "is a directory, not a STAR file") from None
    # Plain ASCII without "\r" reads the same in text mode; otherwise read as text (UTF-8
    # with replacement, universal newlines) and work on that text re-encoded.
    text: str | None = None
    if content.isascii() and b"\r" not in content:
        data = content
        line_by_line = any(c in data for c in (b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e"))
        if b"\x00" in data[:4096]:
            raise InputError(p, "is a binary file, not a STAR file")
    else:
        text = p.read_text(encoding="utf-8", errors="replace")
        if "\x00" in text[:4096]:
            raise InputError(p, "is a binary file, not a STAR file")
        line_by_line = any(c in text for c in _OTHER_LINE_BREAKS)
        data = text.encode("utf-8")
    parser = _StarParser(p, permissive)
    if min_bulk < 0 or line_by_line:
        if text is None:
            text = data.decode("ascii")
        for lineno, raw in enumerate(text.splitlines(), start=1):
            parser.line(lineno, raw)
        return parser.close()
    # Lines are exactly the b"\n"-separated pieces here (no other line breaks; UTF-8 has
    # no 0x0A byte inside a multi-byte character).
    pos, lineno, size = 0, 0, len(data)
    while pos < size:
        stop = data.find(b"\n", pos)
        if stop < 0:
            stop = size
        lineno += 1
        raw = data[pos:stop].decode("utf-8")
        stripped = raw.strip()
        if stripped and parser.opens_rows(stripped):
            end = _body_end(data, pos)
            bulk = _loop_columns(data[pos:end], parser.labels) if end - pos >= min_bulk else None
            if bulk is not None:
                parser.take_rows(bulk[0])
                lineno += bulk[1] - 1  # the body is whole lines
                pos = end
                continue
        parser.line(lineno, raw)
        pos = stop + 1
    return parser.close()


def _format_column(series: pd.Series) -> list[str]:
    """Format one column as STAR tokens (exact floats, quoted text when needed)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return ["1" if v else "0" for v in series.tolist()]
    if pd.api.types.is_integer_dtype(dtype) and not series.isna().any():
        return list(map(str, series.astype(np.int64).tolist()))
    if pd.api.types.is_float_dtype(dtype):
        return list(map(repr, series.astype(np.float64).tolist()))
    cache: dict[object, str] = {}
    out: list[str] = []
    for v in series.tolist():
        text = cache.get(v)
        if text is None:
            text = _format_text(v)
            cache[v] = text
        out.append(text)
    return out


_NEEDS_QUOTES = re.compile(r"""^$|\s|^[#_'"]|^loop_$|^data_""")


def _format_text(v: object) -> str:
    """One STAR token for a text (or missing) value."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return '""'
    if isinstance(v, float):
        return repr(v)
    s = str(v)
    if _NEEDS_QUOTES.search(s):
        quote = '"' if '"' not in s else "'"
        return f"{quote}{s}{quote}"
    return s


def format_star(
    blocks: Mapping[str, pd.DataFrame], *, comment: str | None = None, version: int | None = None
) -> str:
    """The text of a STAR file holding ``blocks`` (see :func:`write_star`)."""
    parts: list[str] = []
    if comment:
        parts.extend(f"# {line}".rstrip() for line in comment.splitlines())
        parts.append("")
    for name, df in blocks.items():
        if version is not None:
            parts.append(f"# version {version}")
            parts.append("")
        parts.append(f"data_{name}")
        parts.append("")
        labels = [str(c) for c in df.columns]
        is_loop = bool(df.attrs.get(LOOP_ATTR, True)) or len(df) != 1
        formatted = [_format_column(df[c]) for c in df.columns]
        if not is_loop:
            width = max((len(lab) for lab in labels), default=0) + 2
            for lab, col in zip(labels, formatted, strict=True):
                parts.append(f"_{lab:<{width}}{col[0]}")
            parts.append("")
            parts.append("")
            continue
        parts.append("loop_")
        for i, lab in enumerate(labels, start=1):
            parts.append(f"_{lab} #{i}")
        if formatted:
            parts.extend(" ".join(row) for row in zip(*formatted, strict=True))
        parts.append("")
        parts.append("")
    return "\n".join(parts)


def write_star(
    path: str | os.PathLike[str],
    blocks: Mapping[str, pd.DataFrame],
    *,
    comment: str | None = None,
    version: int | None = None,
) -> Path:
    """Write data blocks to a STAR file, atomically.

    Parameters
    ----------
    path
        Destination ``.star`` file.
    blocks
        Block name (without ``data_``) → table. A one-row table whose
        ``attrs["star_loop"]`` is False is written as key/value pairs, anything else as a
        ``loop_``. Column names are written as labels with a leading underscore.
    comment
        Text written at the top, each line prefixed with ``# `` (e.g. provenance).
    version
        When given, a ``# version <n>`` line precedes every block (RELION 3.1 writes
        ``30001``).

    Returns
    -------
    Path
        ``path``.
    """
    text = format_star(blocks, comment=comment, version=version)
    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out
