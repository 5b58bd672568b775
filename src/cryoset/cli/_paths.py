"""Output-path checks made before a command starts working.

A command that will write under a path whose parent is a regular file would otherwise fail
only when it first writes (after downloading or computing for a while). These checks create
nothing: they walk up to the nearest existing ancestor.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryoset.errors import InputError


def blocking_file(path: str | os.PathLike[str]) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path`` itself) that is not a directory.

    None when that ancestor is a directory (``path`` can be created, permissions aside).

    Examples
    --------
    >>> blocking_file("/") is None
    True
    """
    p = Path(path)
    for candidate in (p, *p.parents):
        if candidate.is_dir():
            return None
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return None


def require_directory_location(path: str | os.PathLike[str], option: str) -> None:
    """Raise :class:`InputError` (naming the regular file in the way) unless ``path`` is, or
    can be created as, a directory."""
    blocker = blocking_file(path)
    if blocker is not None:
        where = "" if blocker == Path(path) else f", so {path} cannot be created under it"
        raise InputError(blocker, f"is a regular file, not a directory (given as {option}{where})")


def require_file_location(path: str | os.PathLike[str], option: str) -> None:
    """Raise :class:`InputError` unless the file ``path`` can be created or replaced: its
    parent must be (or become) a directory, and ``path`` must not be a directory."""
    p = Path(path)
    if p.is_dir():
        raise InputError(p, f"is a directory, not a file (given as {option})")
    require_directory_location(p.parent, option)
