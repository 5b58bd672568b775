"""Safe extraction of downloaded archives (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``).

* The format is recognised from the file's first bytes, not only its name: a file called
  ``.zip`` that is not a ZIP archive is refused as corrupt.
* No member may escape the destination: absolute names, drive letters and ``..``
  components are refused; tar members go through Python's ``"data"`` extraction filter
  (PEP 706: no links pointing outside, no device files, no setuid bits); ZIP symlinks
  are refused (ZIP has no portable symlink, and ``zipfile`` would write the link target
  as a regular file).
* Extraction goes into a temporary directory beside the destination that is renamed into
  place only when every member was written and checked (ZIP CRCs, gzip/bz2/xz integrity):
  a failure leaves nothing half-extracted.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_directory

#: Archive kinds this module extracts.
ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
#: Archive kinds we recognise but cannot read (refused with a clear message).
UNSUPPORTED_SUFFIXES: tuple[str, ...] = (".rar", ".7z", ".zst", ".tar.zst", ".lz4", ".arj", ".cab")


def archive_suffix(name: str) -> str | None:
    """The archive suffix of ``name`` (lower case) or None when it is not an archive name."""
    low = name.lower()
    for suffix in sorted(ARCHIVE_SUFFIXES + UNSUPPORTED_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return suffix
    return None


def archive_stem(name: str) -> str:
    """``name`` without its archive suffix (``10028.tar.gz`` → ``10028``)."""
    suffix = archive_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def sniff_archive(path: str | os.PathLike[str]) -> str | None:
    """``"zip"``, ``"tar"`` (any compression) or None, from the file's content."""
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _check_member_name(archive: Path, name: str) -> PurePosixPath:
    normal = name.replace("\\", "/")
    pure = PurePosixPath(normal)
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":"):
        raise InputError(archive, f"member {name!r} has an absolute path; refusing to extract")
    if any(part == ".." for part in pure.parts):
        raise InputError(archive, f"member {name!r} would be written outside the destination")
    return pure


def _extract_zip(archive: Path, dest: Path) -> list[str]:
    names: list[str] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                pure = _check_member_name(archive, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise InputError(archive, f"member {info.filename!r} is a symbolic link; refusing to extract")
                target = dest.joinpath(*pure.parts) if pure.parts else dest
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    while block := src.read(1 << 20):
                        out.write(block)
                names.append(pure.as_posix())
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise InputError(archive, f"is a corrupt ZIP archive ({exc})") from None
    return names


def _extract_tar(archive: Path, dest: Path) -> list[str]:
    names: list[str] = []
    try:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf:
                _check_member_name(archive, member.name)
                try:
                    tf.extract(member, dest, filter="data")
                except tarfile.FilterError as exc:
                    raise InputError(archive, f"member {member.name!r} is unsafe ({exc}); refusing to extract") from None
                if member.isfile():
                    names.append(PurePosixPath(member.name).as_posix())
    except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error, OSError) as exc:
        raise InputError(archive, f"is a corrupt tar archive ({exc})") from None
    return names


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[str]:
    """Extract ``archive`` into the directory ``dest`` (atomically); return the member files.

    Parameters
    ----------
    archive
        A ``.zip`` or tar archive (plain or gzip/bzip2/xz compressed).
    dest
        The directory to create; an existing one is replaced only after the new one is
        complete.

    Raises
    ------
    InputError
        Unknown or unsupported format, a corrupt archive, or an unsafe member (absolute
        path, ``..``, link out of the destination, device file). ``dest`` is then left as
        it was (absent or the previous content).
    """
    src = Path(archive)
    suffix = archive_suffix(src.name)
    if suffix in UNSUPPORTED_SUFFIXES:
        raise InputError(src, f"{suffix} archives are not supported (supported: {', '.join(ARCHIVE_SUFFIXES)})")
    kind = sniff_archive(src)
    expected = None if suffix is None else ("zip" if suffix == ".zip" else "tar")
    if kind is None:
        what = f"not a valid {suffix} archive" if suffix else "not a recognised archive (ZIP or tar)"
        raise InputError(src, f"is {what}: corrupt or truncated download")
    if expected is not None and kind != expected:
        raise InputError(src, f"is named {suffix} but its content is a {kind} archive")
    with atomic_directory(dest) as tmp:
        return _extract_zip(src, tmp) if kind == "zip" else _extract_tar(src, tmp)
