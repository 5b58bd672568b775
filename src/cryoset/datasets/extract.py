"""Safe extraction of downloaded archives (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``).

* The format is recognised from the file's first bytes, not only its name: a file called
  ``.zip`` that is not a ZIP archive is refused as corrupt.
* No member may escape the destination: absolute names, drive letters and ``..``
  components are refused; tar members go through Python's ``"data"`` extraction filter
  (PEP 706: no links pointing outside, no device files, no setuid bits); ZIP symlinks
  are refused (ZIP has no portable symlink, and ``zipfile`` would write the link target
  as a regular file).
* Member names go through :func:`cryoset.archives.download.safe_relative_path`, the same
  check the downloaders use (a ``\\`` is read as a separator first).
* Bounded by :class:`cryoset.archives.download.Limits`: at most ``max_members`` members
  and ``max_expanded_bytes`` in total (declared sizes, checked before anything is
  written); a compressed tar's stream and a ZIP's members may not expand beyond
  :meth:`~cryoset.archives.download.Limits.expansion_cap` of the archive's size (a
  decompression bomb is refused, not half-extracted).
* Extraction goes into a temporary directory beside the destination that is renamed into
  place only when every member was written and checked (ZIP CRCs, gzip/bz2/xz integrity):
  a failure leaves nothing half-extracted.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from cryoset.archives.download import Limits, UnsafePathError, human_bytes, safe_relative_path
from cryoset.errors import InputError
from cryoset.io.atomic import atomic_directory

_Decompressor = gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile
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


def _check_member_name(archive: Path, name: str, *, is_dir: bool = False) -> PurePosixPath:
    """The member's relative path (the shared check; ``\\`` read as ``/``); ``.`` only for a directory."""
    normal = name.replace("\\", "/")
    if is_dir and normal.strip("/") in ("", "."):
        return PurePosixPath()
    try:
        return safe_relative_path(normal, source=str(archive))
    except UnsafePathError as exc:
        raise InputError(archive, f"member {exc.message}") from None


def _refuse(archive: Path, message: str) -> InputError:
    return InputError(archive, f"{message}; refusing to extract")


def _check_totals(archive: Path, n_members: int, total_bytes: int, limits: Limits) -> None:
    if n_members > limits.max_members:
        raise _refuse(archive, f"has more than {limits.max_members} members")
    if total_bytes > limits.max_expanded_bytes:
        raise _refuse(archive, f"members add up to more than {human_bytes(limits.max_expanded_bytes)}")


def _extract_zip(archive: Path, dest: Path, limits: Limits) -> list[str]:
    names: list[str] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            # sizes from the central directory, checked before anything is written (a member's
            # output is cut at its declared size and then fails its CRC)
            total = sum(info.file_size for info in infos)
            _check_totals(archive, len(infos), total, limits)
            cap = limits.expansion_cap(archive.stat().st_size)
            if total > cap:
                raise _refuse(archive, f"members expand to {human_bytes(total)}, beyond the {human_bytes(cap)} "
                              f"limit ({limits.max_expansion_ratio:g}× the archive's size)")
            for info in infos:
                pure = _check_member_name(archive, info.filename, is_dir=info.is_dir())
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
    except (zipfile.BadZipFile, zlib.error, EOFError, lzma.LZMAError) as exc:
        raise InputError(archive, f"is a corrupt ZIP archive ({exc})") from None
    return names


class _BoundedStream:
    """A decompressed stream that refuses to be read or sought past ``cap`` bytes."""

    def __init__(self, raw: _Decompressor, cap: int, archive: Path, limits: Limits) -> None:
        self._raw, self.cap, self._archive, self._limits = raw, cap, archive, limits

    def too_far(self) -> InputError:
        """The error for reading past the cap."""
        if self.cap >= self._limits.max_expanded_bytes:
            return _refuse(self._archive, f"expands beyond the {human_bytes(self.cap)} limit")
        return _refuse(self._archive, f"expands beyond {human_bytes(self.cap)} "
                       f"({self._limits.max_expansion_ratio:g}× its compressed size)")

    def read(self, n: int = -1, /) -> bytes:
        pos = self._raw.tell()
        room = self.cap + 1 - pos
        data = self._raw.read(room if n < 0 else min(n, room))
        if pos + len(data) > self.cap:
            raise self.too_far()
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        target = offset if whence == os.SEEK_SET else self._raw.tell() + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR):
            raise OSError("seek from the end is not supported on a compressed stream")
        if target > self.cap:
            raise self.too_far()
        return self._raw.seek(target)

    def tell(self) -> int:
        return self._raw.tell()

    def write(self, b: bytes, /) -> int:
        raise OSError("the stream is read-only")

    def close(self) -> None:
        self._raw.close()


def _decompressed(archive: Path) -> _Decompressor | None:
    with open(archive, "rb") as fh:
        head = fh.read(6)
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(archive, "rb")
    if head[:3] == b"BZh":
        return bz2.BZ2File(archive, "rb")
    if head == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(archive, "rb")
    return None


def _extract_tar(archive: Path, dest: Path, limits: Limits) -> list[str]:
    names: list[str] = []
    raw: _Decompressor | None = None
    try:
        raw = _decompressed(archive)
        stream = None if raw is None else _BoundedStream(raw, limits.expansion_cap(archive.stat().st_size),
                                                         archive, limits)
        tf = tarfile.open(archive, "r:") if stream is None else tarfile.open(fileobj=stream, mode="r:")
        with tf:
            count = total = 0
            for member in tf:
                _check_member_name(archive, member.name, is_dir=member.isdir())
                count += 1
                total += member.size
                _check_totals(archive, count, total, limits)
                if stream is not None and member.offset_data + member.size > stream.cap:
                    raise stream.too_far()  # refused before a byte of it is written
                try:
                    tf.extract(member, dest, filter="data")
                except tarfile.FilterError as exc:
                    raise InputError(archive, f"member {member.name!r} is unsafe ({exc}); refusing to extract") from None
                if member.isfile():
                    names.append(PurePosixPath(member.name).as_posix())
    except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        raise InputError(archive, f"is a corrupt tar archive ({exc})") from None
    finally:
        if raw is not None:
            raw.close()
    return names


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                 limits: Limits | None = None) -> list[str]:
    """Extract ``archive`` into the directory ``dest`` (atomically); return the member files.

    Parameters
    ----------
    archive
        A ``.zip`` or tar archive (plain or gzip/bzip2/xz compressed).
    dest
        The directory to create; an existing one is replaced only after the new one is
        complete.
    limits
        Member count, total size and expansion caps (default :class:`Limits`).

    Raises
    ------
    InputError
        Unknown or unsupported format, a corrupt archive, an unsafe member (absolute
        path, ``..``, link out of the destination, device file), or an archive over the
        limits. ``dest`` is then left as it was (absent or the previous content).
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
    caps = limits if limits is not None else Limits()
    with atomic_directory(dest) as tmp:
        return _extract_zip(src, tmp, caps) if kind == "zip" else _extract_tar(src, tmp, caps)
