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
"""

from __future__ import annotations

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
    df = pd.DataFrame(
        {label: _column(flat[i::n], label) for i, label in enumerate(labels)},
        columns=labels,
    )
    df.attrs[LOOP_ATTR] = loop
    return df


def read_star(path: str | os.PathLike[str], *, permissive: bool = False) -> dict[str, pd.DataFrame]:
    """Read every data block of a STAR file.

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
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except IsADirectoryError:
        raise InputError(p, "is a directory, not a STAR file") from None
    if "\x00" in text[:4096]:
        raise InputError(p, "is a binary file, not a STAR file")
    blocks: dict[str, pd.DataFrame] = {}

    name: str | None = None
    pairs: dict[str, str] = {}
    labels: list[str] = []
    rows: list[list[str]] = []
    skipped: list[int] = []
    state = "none"  # none | block | labels | rows

    def finish() -> None:
        nonlocal name, pairs, labels, rows, skipped
        if name is None:
            return
        if labels and pairs:
            raise InputError(p, f"block data_{name} mixes key/value pairs and a loop")
        if labels:
            df = _table(labels, rows, loop=True)
        else:
            df = _table(list(pairs), [list(pairs.values())] if pairs else [], loop=False)
        if skipped:
            df.attrs["star_skipped_lines"] = list(skipped)
        key = name
        if key in blocks:
            if not permissive:
                raise InputError(p, f"block data_{name} appears more than once")
            k = 2
            while f"{name}~{k}" in blocks:
                k += 1
            key = f"{name}~{k}"
        blocks[key] = df
        name, pairs, labels, rows, skipped = None, {}, [], [], []

    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("data_"):
            finish()
            name = stripped.split()[0][5:]
            state = "block"
            continue
        if name is None:
            raise InputError(p, f"line {lineno}: text before the first data_ block")
        if stripped.startswith("loop_"):
            if labels or rows:
                raise InputError(p, f"line {lineno}: block data_{name} has more than one loop")
            state = "labels"
            continue
        if stripped.startswith("_") and state in ("labels", "block"):
            toks = _tokens(stripped)
            label = toks[0][1:]
            if state == "labels":
                if label in labels:
                    raise InputError(p, f"line {lineno}: label {label} repeated in data_{name}")
                labels.append(label)
            else:
                if len(toks) < 2:
                    raise InputError(p, f"line {lineno}: label {label} has no value")
                if label in pairs:
                    raise InputError(p, f"line {lineno}: label {label} repeated in data_{name}")
                pairs[label] = toks[1]
            continue
        if state in ("labels", "rows"):
            state = "rows"
            toks = _tokens(stripped)
            if not toks:
                continue
            if len(toks) != len(labels):
                if permissive:
                    skipped.append(lineno)
                    continue
                raise InputError(
                    p,
                    f"line {lineno}: {len(toks)} values for {len(labels)} columns in data_{name}",
                )
            rows.append(toks)
            continue
        if stripped.startswith("_"):
            raise InputError(p, f"line {lineno}: label after the rows of the loop in data_{name}")
        raise InputError(p, f"line {lineno}: unexpected text {stripped[:40]!r} in data_{name}")
    finish()
    if not blocks:
        raise InputError(p, "no data_ block found (not a STAR file)")
    return blocks


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
