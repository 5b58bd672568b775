"""Safe extraction: unsafe members and corrupt archives are refused and leave nothing behind."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from cryoset.datasets.extract import archive_stem, safe_extract
from cryoset.errors import InputError


def _zip(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
        if symlink is not None:
            info = zipfile.ZipInfo("link")
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, symlink)
    return buf.getvalue()


def _tar(add: list[tarfile.TarInfo], bodies: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info in add:
            body = (bodies or {}).get(info.name)
            if body is not None:
                info.size = len(body)
            tf.addfile(info, io.BytesIO(body) if body is not None else None)
    return buf.getvalue()


def _left_over(parent: Path, dest: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{dest.name}.") or p == dest)


def test_zip_and_tar_extract_identically(tmp_path: Path) -> None:
    members = {"a/b.txt": b"hello", "a/c/d.bin": bytes(range(256))}
    (tmp_path / "x.zip").write_bytes(_zip(members))
    infos = [tarfile.TarInfo(n) for n in members]
    (tmp_path / "x.tar.gz").write_bytes(_tar(infos, members))
    for name in ("x.zip", "x.tar.gz"):
        dest = tmp_path / f"out_{archive_stem(name)}_{name[-3:]}"
        got = safe_extract(tmp_path / name, dest)
        assert sorted(got) == sorted(members)
        for k, v in members.items():
            assert (dest / k).read_bytes() == v
    assert archive_stem("10028.tar.gz") == "10028" and archive_stem("EMD-5168.zip") == "EMD-5168"


@pytest.mark.parametrize("bad", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_zip_path_traversal_refused(tmp_path: Path, bad: str) -> None:
    (tmp_path / "x.zip").write_bytes(_zip({"ok.txt": b"1", bad: b"evil"}))
    dest = tmp_path / "sub" / "out"
    with pytest.raises(InputError, match=r"absolute path|outside the destination"):
        safe_extract(tmp_path / "x.zip", dest)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists()
    assert _left_over(dest.parent, dest) == []


def test_zip_symlink_refused(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(_zip({"ok.txt": b"1"}, symlink="/etc/passwd"))
    with pytest.raises(InputError, match="symbolic link"):
        safe_extract(tmp_path / "x.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["symlink_out", "hardlink_out", "dotdot", "absolute", "device"])
def test_tar_unsafe_members_refused(tmp_path: Path, kind: str) -> None:
    ok = tarfile.TarInfo("ok.txt")
    evil = tarfile.TarInfo({"dotdot": "../evil.txt", "absolute": "/tmp/evil.txt"}.get(kind, "link"))
    if kind == "symlink_out":
        evil.type, evil.linkname = tarfile.SYMTYPE, "../../outside.txt"
    elif kind == "hardlink_out":
        evil.type, evil.linkname = tarfile.LNKTYPE, "/etc/passwd"
    elif kind == "device":
        evil.type = tarfile.CHRTYPE
    bodies = {"ok.txt": b"1", "../evil.txt": b"x", "/tmp/evil.txt": b"x"}
    (tmp_path / "x.tar.gz").write_bytes(_tar([ok, evil], bodies))
    dest = tmp_path / "out"
    with pytest.raises(InputError, match=r"unsafe|absolute path|outside"):
        safe_extract(tmp_path / "x.tar.gz", dest)
    assert not dest.exists() and _left_over(tmp_path, dest) == []
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "outside.txt").exists()


def test_corrupt_truncated_and_unknown_archives(tmp_path: Path) -> None:
    good = _zip({"a.txt": b"x" * 10000})
    (tmp_path / "trunc.zip").write_bytes(good[: len(good) // 2])
    (tmp_path / "notzip.zip").write_bytes(b"<html>503</html>")
    tgz = _tar([tarfile.TarInfo("a.txt")], {"a.txt": b"y" * 100000})
    (tmp_path / "trunc.tar.gz").write_bytes(tgz[: len(tgz) // 2])
    (tmp_path / "x.rar").write_bytes(b"Rar!\x1a\x07\x00")
    (tmp_path / "mismatch.zip").write_bytes(tgz)
    cases = {"trunc.zip": "corrupt", "notzip.zip": "not a valid .zip", "trunc.tar.gz": "corrupt",
             "x.rar": "not supported", "mismatch.zip": "content is a tar"}
    for name, message in cases.items():
        dest = tmp_path / f"out_{name}"
        with pytest.raises(InputError, match=message):
            safe_extract(tmp_path / name, dest)
        assert not dest.exists() and _left_over(tmp_path, dest) == [], name


def test_failed_extraction_keeps_previous_content(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    (tmp_path / "good.zip").write_bytes(_zip({"v1.txt": b"1"}))
    safe_extract(tmp_path / "good.zip", dest)
    bad = _zip({"v2.txt": b"2" * 5000})
    (tmp_path / "bad.zip").write_bytes(bad[:-40])
    with pytest.raises(InputError):
        safe_extract(tmp_path / "bad.zip", dest)
    assert sorted(p.name for p in dest.iterdir()) == ["v1.txt"]
