"""Atomic file and directory writes: write to a temporary name, rename on success.

A reader never sees a half-written output: if the body of the ``with`` block raises,
the temporary file is removed and the destination is left untouched.

Modes follow the umask, as with any ``open``/``mkdir``: temporary directories are created
with ``os.mkdir(name, 0o777)`` and files with ``0o666``, and the kernel removes the umask
bits (``tempfile.mkdtemp`` would make every output folder ``0700``).

Concurrent writers:

- :func:`atomic_directory` with ``replace=False`` commits with a rename that fails when the
  destination exists (``renameat2(RENAME_NOREPLACE)`` on Linux; elsewhere a check and a rename,
  to be serialised with ``lock=``), raising :class:`DestinationExists`.
- A temporary directory is ``flock``-ed by its writer for as long as it is being written, so
  :func:`remove_stale_parts` removes only the ``.part`` directories of writers that died.
- :func:`exclusive_lock` is an ``flock`` on a lock file that records the holder's pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

#: Descriptors of the locks this process holds (:func:`exclusive_lock`); a forked child closes
#: its copies, so a lock is held by its process only (a child outliving it does not hold it).
_HELD_LOCK_FDS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in list(_HELD_LOCK_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)  # the child's copy only: the parent keeps its lock
    _HELD_LOCK_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)

#: ``renameat2`` flags (linux/fs.h).
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class DestinationExists(FileExistsError):
    """An exclusive commit found its destination already there (another writer won)."""


class LockHeld(BlockingIOError):
    """:func:`exclusive_lock` found the lock taken by another process.

    Attributes
    ----------
    lock_path
        The lock file.
    holder
        What the holder wrote into it (``"pid 1234 on host"``), or ``"unknown"``.
    """

    def __init__(self, lock_path: Path, holder: str) -> None:
        self.lock_path = lock_path
        self.holder = holder
        super().__init__(errno.EWOULDBLOCK, f"{lock_path}: held by {holder}")


def _renameat2() -> Callable[..., int] | None:
    """libc's ``renameat2`` (glibc ≥ 2.28), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the symbols of this process, libc's among them
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    call: Callable[..., int] = fn
    return call


_RENAMEAT2 = _renameat2()


def _rename_flags(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False when the call or the flag is not supported here."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # old kernel or file system without the flag
        return False
    if err == errno.EEXIST:
        raise DestinationExists(err, os.strerror(err), str(dst))
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def rename_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` to ``dst``; raise :class:`DestinationExists` if ``dst`` exists.

    Atomic with ``renameat2(RENAME_NOREPLACE)`` (Linux ≥ 3.15 on local file systems);
    elsewhere a check then a rename, which concurrent writers must serialise with a lock.
    """
    s, d = Path(src), Path(dst)
    if _rename_flags(s, d, _RENAME_NOREPLACE):
        return
    if os.path.lexists(d):
        raise DestinationExists(errno.EEXIST, os.strerror(errno.EEXIST), str(d))
    os.rename(s, d)


def _hidden_name(dest: Path, suffix: str) -> Path:
    """A fresh hidden name beside ``dest``: ``.<name>.<random>.<suffix>``."""
    return dest.parent / f".{dest.name}.{secrets.token_hex(6)}{suffix}"


def _make_hidden_dir(dest: Path, suffix: str) -> Path:
    """Create a new hidden directory beside ``dest`` with mode ``0o777 & ~umask``."""
    while True:
        tmp = _hidden_name(dest, suffix)
        try:
            os.mkdir(tmp, 0o777)  # the kernel applies the umask (and any default ACL)
        except FileExistsError:
            continue
        return tmp


def _try_flock(fd: int) -> bool | None:
    """Take an exclusive ``flock`` without waiting: True, False (held elsewhere), None (unsupported)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # e.g. a file system without flock on directories
        return None
    return True


@contextlib.contextmanager
def _part_directory(dest: Path) -> Iterator[Path]:
    """A new hidden ``.part`` directory beside ``dest``, flock-ed by this writer while in use."""
    while True:
        tmp = _make_hidden_dir(dest, ".part")
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        # a cleaner (remove_stale_parts) may take or remove it between mkdir and flock: then
        # leave it to the cleaner and make another
        mine = _try_flock(fd) is not False
        try:
            mine = mine and os.path.samestat(os.fstat(fd), os.stat(tmp))
        except FileNotFoundError:
            mine = False
        if mine:
            break
        os.close(fd)
    try:
        yield tmp
    finally:
        os.close(fd)


def remove_stale_parts(parent: str | os.PathLike[str], pattern: str = ".*.part") -> list[Path]:
    """Remove the temporary directories under ``parent`` whose writer is gone.

    A directory is removed only if its writer's ``flock`` can be taken (the writer died: the
    kernel released it); directories still being written, and any whose lock cannot be
    tested, are left alone. Returns the removed paths.
    """
    removed = []
    for part in sorted(Path(parent).glob(pattern)):
        try:
            fd = os.open(part, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:  # gone already, or not a directory
            continue
        try:
            if _try_flock(fd):
                shutil.rmtree(part, ignore_errors=True)
                removed.append(part)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, wait: bool = True) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on the lock file ``path`` (created, mode ``0o666 & ~umask``).

    The holder's pid and host are written into the file. With ``wait=False`` a lock held by
    another process raises :class:`LockHeld` at once. The kernel releases the lock when the
    holder dies, so a lock file left behind never blocks anyone; processes forked while it is
    held do not hold it.
    """
    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise LockHeld(lock, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        _HELD_LOCK_FDS.add(fd)
        try:
            yield lock
        finally:
            _HELD_LOCK_FDS.discard(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` that does not exist yet (the writer creates the file)."""
    while True:
        tmp = _hidden_name(path, ".part")
        if not os.path.lexists(tmp):
            return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The suffix of ``path`` is kept at the end of the temporary name (some writers
    choose the format from the suffix). The writer creates the file, so its mode follows
    the umask.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(dest)
    tmp = tmp.with_name(tmp.name + "".join(dest.suffixes))
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        raise


def _commit_directory(tmp: Path, dest: Path, replace: bool) -> None:
    """Rename the complete directory ``tmp`` onto ``dest`` (see :func:`atomic_directory`)."""
    if not replace:
        rename_noreplace(tmp, dest)
        return
    if not dest.exists():
        with contextlib.suppress(DestinationExists):  # someone committed meanwhile: swap below
            rename_noreplace(tmp, dest)
            return
    # swap atomically where the kernel can (readers never see no ``dest``), else in two steps
    if _rename_flags(tmp, dest, _RENAME_EXCHANGE):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old directory
        return
    old = _make_hidden_dir(dest, ".old")
    os.rmdir(old)
    os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, replace: bool = True,
                     lock: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; rename it onto ``path`` on success.

    Parameters
    ----------
    path
        The destination directory.
    replace
        True: an existing directory at ``path`` is replaced only after the new one is
        complete. False: the commit raises :class:`DestinationExists` (and the temporary
        directory is removed) when ``path`` exists by then — the first writer wins.
    lock
        A lock file held (:func:`exclusive_lock`, waiting) during the commit only, to
        serialise commits of concurrent writers.

    The temporary directory ``.<name>.<random>.part`` has mode ``0o777 & ~umask`` and is
    ``flock``-ed by this writer until the block ends (:func:`remove_stale_parts`).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _part_directory(dest) as tmp:
        try:
            yield tmp
            with exclusive_lock(lock) if lock is not None else contextlib.nullcontext():
                _commit_directory(tmp, dest, replace)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _merge_into(src: Path, dest: Path, merge: tuple[str, ...]) -> None:
    """Move every entry of ``src`` into the directory ``dest`` with one rename each: a file
    replaces a file of the same name; a directory replaces one of the same name whole (a Zarr
    store is one unit), except the names in ``merge``, whose contents are merged."""
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        is_dir = entry.is_dir() and not entry.is_symlink()
        if is_dir and target.is_dir() and entry.name in merge:
            _merge_into(entry, target, ())
        elif is_dir and target.is_dir() and not target.is_symlink():
            _commit_directory(entry, target, replace=True)
        else:
            os.replace(entry, target)


@contextlib.contextmanager
def staged_directory(path: str | os.PathLike[str], *, merge: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; move its contents into ``path`` on success.

    For commands that write several files into an output folder the user names (which may
    exist and hold other files): nothing appears in ``path`` (which is not even created) until
    the block succeeds; then each new entry is renamed into place, replacing one of the same
    name (sub-directories whole, except those named in ``merge``, e.g. a folder of plots, whose
    files are added). If the block raises, the temporary directory is removed and ``path`` is
    untouched.
    """
    dest = Path(path)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(errno.EEXIST, "exists and is not a directory", str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _part_directory(dest) as tmp:
        try:
            yield tmp
            dest.mkdir(exist_ok=True)
            _merge_into(tmp, dest, merge)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (which must not exist) with mode ``0o666 & ~umask`` and write ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        _write_new_file(tmp, data)
    return Path(path)
