"""Provenance records and atomic writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cryoset import __version__
from cryoset.io.atomic import atomic_directory, atomic_path, write_text_atomic
from cryoset.provenance import (
    make_provenance,
    provenance_path_for,
    read_provenance,
    sha256_file,
    write_provenance,
)


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000
    p = tmp_path / "x.bin"
    p.write_bytes(data)
    assert sha256_file(p, chunk_bytes=1000) == hashlib.sha256(data).hexdigest()


def test_record_contents(tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("abc")
    sub = tmp_path / "dir"
    sub.mkdir()
    (sub / "b.txt").write_text("b")
    rec = make_provenance("demo", {"seed": 3, "path": tmp_path}, [inp, sub], argv=["cryoset", "demo"])
    assert rec["cryoset_version"] == __version__
    assert rec["command_line"] == ["cryoset", "demo"]
    assert rec["parameters"] == {"seed": 3, "path": str(tmp_path)}
    assert [f["sha256"] for f in rec["inputs"]] == [
        hashlib.sha256(b"abc").hexdigest(), hashlib.sha256(b"b").hexdigest()]
    out = tmp_path / "out.mrc"
    out.write_bytes(b"")
    path = write_provenance(out, rec)
    assert path == tmp_path / "out.mrc.provenance.json"
    assert read_provenance(out) == json.loads(json.dumps(rec))
    assert provenance_path_for(sub) == sub / "provenance.json"


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "a.star"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        assert tmp.suffix == ".star"
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "a.txt"
    write_text_atomic(dest, "old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("new")
        raise RuntimeError("boom")
    assert dest.read_text() == "old"
    write_text_atomic(dest, "new")
    assert dest.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_directory(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with atomic_directory(dest) as tmp:
        (tmp / "f").write_text("1")
    assert (dest / "f").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_directory(dest) as tmp:
        (tmp / "g").write_text("2")
        raise RuntimeError("boom")
    assert sorted(p.name for p in dest.iterdir()) == ["f"]
    with atomic_directory(dest) as tmp:
        (tmp / "h").write_text("3")
    assert sorted(p.name for p in dest.iterdir()) == ["h"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_input_error_survives_pickling() -> None:
    import pickle

    from cryoset.archives.download import DownloadError
    from cryoset.errors import InputError

    for exc in (InputError("a.star", "lacks rlnImageName"), InputError(None, "bad"), DownloadError("http://x", "404")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and back.path == exc.path
