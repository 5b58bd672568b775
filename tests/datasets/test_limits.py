"""Issue #16 security items for datasets: record names stay in the output, archives are bounded."""

from __future__ import annotations

import bz2
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from cryoset.archives.download import (
    DownloadError,
    HttpClient,
    Limits,
    UnsafePathError,
    redirect_refusal,
)
from cryoset.archives.testserver import serve
from cryoset.datasets.extract import safe_extract
from cryoset.datasets.registry import (
    DATAVERSE_STORAGE_HOSTS,
    dataverse_files,
    download_dataset,
    get_spec,
)
from cryoset.errors import InputError

from .builders import dataverse_routes, zenodo_routes


def _client(tmp_path: Path, **limits: int | float) -> HttpClient:
    return HttpClient(cache_dir=tmp_path / "cache", retries=1, backoff_s=0.0, timeout_s=10,
                      limits=Limits(**limits))  # type: ignore[arg-type]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return buf.getvalue()


class _Zeros:
    """``n`` zero bytes, produced on demand (for bombs without holding them in memory)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def read(self, size: int = -1) -> bytes:
        k = self.left if size < 0 else min(size, self.left)
        self.left -= k
        return bytes(k)


def _tar(members: dict[str, int | bytes], mode: str = "w:gz", pax: dict[str, str] | None = None,
         dirs: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            if pax:
                info.pax_headers = dict(pax)
            if isinstance(body, int):
                info.size = body
                tf.addfile(info, _Zeros(body))  # type: ignore[arg-type]
            else:
                info.size = len(body)
                tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def _left_over(parent: Path, dest: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{dest.name}.") or p == dest)


# ------------------------------------------------------------------ archive bombs
def test_tar_gz_bomb_300kb_to_300mb_is_refused_before_writing(tmp_path: Path) -> None:
    (tmp_path / "bomb.tar.gz").write_bytes(_tar({"zeros.bin": 300 << 20}))
    assert (tmp_path / "bomb.tar.gz").stat().st_size < 400_000
    dest = tmp_path / "out"
    with pytest.raises(InputError, match="expands beyond") as info:
        safe_extract(tmp_path / "bomb.tar.gz", dest)
    assert "\n" not in str(info.value)
    assert not dest.exists() and _left_over(tmp_path, dest) == []


def test_tar_bz2_bomb_is_refused_with_default_limits(tmp_path: Path) -> None:
    (tmp_path / "bomb.tar.bz2").write_bytes(_tar({"zeros.bin": 20 << 20}, mode="w:bz2"))
    packed = (tmp_path / "bomb.tar.bz2").read_bytes()
    assert len(packed) < 10_000 and bz2.decompress(packed)[257:262] == b"ustar"  # a real tar.bz2, ratio > 2000
    with pytest.raises(InputError, match="expands beyond"):
        safe_extract(tmp_path / "bomb.tar.bz2", tmp_path / "out")
    assert not (tmp_path / "out").exists() and _left_over(tmp_path, tmp_path / "out") == []


def test_huge_tar_header_is_not_read_into_memory(tmp_path: Path) -> None:
    (tmp_path / "pax.tar.gz").write_bytes(_tar({"a.txt": b"a"}, pax={"comment": "x" * (40 << 20)}))
    with pytest.raises(InputError, match="expands beyond"):
        safe_extract(tmp_path / "pax.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_bomb_is_refused_before_writing(tmp_path: Path) -> None:
    (tmp_path / "bomb.zip").write_bytes(_zip({"a.txt": b"hello", "zeros.bin": bytes(4 << 20)}))
    lim = Limits(expansion_floor_bytes=0, max_expansion_ratio=50)
    with pytest.raises(InputError, match="members expand to"):
        safe_extract(tmp_path / "bomb.zip", tmp_path / "out", limits=lim)
    assert not (tmp_path / "out").exists() and _left_over(tmp_path, tmp_path / "out") == []
    assert sorted(safe_extract(tmp_path / "bomb.zip", tmp_path / "ok")) == ["a.txt", "zeros.bin"]  # defaults


@pytest.mark.parametrize("kind", ["zip", "tar.gz", "tar"])
def test_member_count_and_total_size_caps(tmp_path: Path, kind: str) -> None:
    members = {f"m{i}.txt": bytes([65 + i]) * 600 for i in range(4)}
    data = _zip(members) if kind == "zip" else _tar(dict(members), mode="w:gz" if kind == "tar.gz" else "w")
    (tmp_path / f"x.{kind}").write_bytes(data)
    with pytest.raises(InputError, match="more than 3 members"):
        safe_extract(tmp_path / f"x.{kind}", tmp_path / "a", limits=Limits(max_members=3))
    with pytest.raises(InputError, match=r"add up to more than 1.0 kB|expands beyond the 1.0 kB limit"):
        safe_extract(tmp_path / f"x.{kind}", tmp_path / "b", limits=Limits(max_expanded_bytes=1000))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert len(safe_extract(tmp_path / f"x.{kind}", tmp_path / "c", limits=Limits(max_members=4))) == 4


def test_tar_with_a_dot_directory_still_extracts(tmp_path: Path) -> None:
    (tmp_path / "dot.tar.gz").write_bytes(_tar({"./a.txt": b"a", "./sub/b.txt": b"b"}, dirs=(".", "./sub")))
    assert sorted(safe_extract(tmp_path / "dot.tar.gz", tmp_path / "out")) == ["a.txt", "sub/b.txt"]
    assert (tmp_path / "out" / "sub" / "b.txt").read_bytes() == b"b"


@pytest.mark.parametrize("bad", ["..\\evil.txt", "a\\..\\..\\evil.txt", "C:/evil.txt", "x/\x1bevil.txt"])
def test_zip_member_names_use_the_shared_check(tmp_path: Path, bad: str) -> None:
    (tmp_path / "x.zip").write_bytes(_zip({"ok.txt": b"1", bad: b"evil"}))
    with pytest.raises(InputError, match=r"absolute path|outside the destination|control character"):
        safe_extract(tmp_path / "x.zip", tmp_path / "sub" / "out")
    assert not (tmp_path / "sub" / "out").exists() and not (tmp_path / "evil.txt").exists()


# ------------------------------------------------------------------ record listings
@pytest.mark.parametrize("key", ["...zip", "..zip", ".zip", "sub/...tar.gz"])
def test_archive_named_to_extract_onto_its_parent_is_refused(tmp_path: Path, key: str) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_text("still here")
    routes, fill = zenodo_routes("77", {key: _zip({"a.txt": b"a"})})
    with serve(routes) as base:
        fill(base)
        with pytest.raises(InputError, match="no directory name"):
            download_dataset(get_spec("cryoppp"), tmp_path / "out", _client(tmp_path), record="77", base_url=base)
        assert routes[f"/api/records/77/files/{key}/content"].hits == 0
    assert keep.read_text() == "still here" and sorted(p.name for p in tmp_path.iterdir()) == ["cache", "keep.txt"]
    assert [p.relative_to(tmp_path).parts[:2] for p in (tmp_path / "cache").rglob("*") if p.is_file()] \
        == [("cache", "metadata")]


@pytest.mark.parametrize("key", ["../evil.txt", "a/../../evil.txt", "/tmp/evil.txt", "..\\evil.txt"])
def test_record_keys_outside_the_output_are_refused(tmp_path: Path, key: str) -> None:
    routes, fill = zenodo_routes("78", {key: b"evil"})
    with serve(routes) as base:
        fill(base)
        with pytest.raises(UnsafePathError):
            download_dataset(get_spec("cryoppp"), tmp_path / "out", _client(tmp_path), record="78", base_url=base)
    written = [p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [("cache", "metadata")] and not (tmp_path.parent / "evil.txt").exists()


def test_dataverse_directory_label_cannot_escape(tmp_path: Path) -> None:
    doi = "doi:10.7910/DVN/2GSSC9"
    routes = dataverse_routes(doi, [{"label": "x.txt", "directoryLabel": "../..", "body": b"evil"}])
    with serve(routes) as base:
        with pytest.raises(UnsafePathError, match="outside the destination"):
            download_dataset(get_spec("cryo2structdata"), tmp_path / "out", _client(tmp_path), subsets=["test"],
                             base_url=base)
    assert not (tmp_path / "x.txt").exists() and not (tmp_path.parent / "x.txt").exists()
    # the one off-host redirect a Dataverse download may follow: https to S3 storage
    answer = json.loads(routes["/api/datasets/:persistentId/"].body)
    assert dataverse_files(answer, "https://h", "test", "api")[0].redirect_hosts == DATAVERSE_STORAGE_HOSTS
    assert redirect_refusal("https://h/api/access/datafile/1", "https://dvn.s3.amazonaws.com/k?sig=1",
                            DATAVERSE_STORAGE_HOSTS) is None
    assert redirect_refusal("https://h/api/access/datafile/1", "https://evil.example/k", DATAVERSE_STORAGE_HOSTS)


def test_zenodo_download_redirected_off_host_is_refused(tmp_path: Path) -> None:
    routes, fill = zenodo_routes("80", {"10028.zip": _zip({"a.txt": b"a"})})
    routes["/api/records/80/files/10028.zip/content"].redirect_to = "http://localhost:1/10028.zip"
    with serve(routes) as base:
        fill(base)
        with pytest.raises(DownloadError, match="another host"):
            download_dataset(get_spec("cryoppp"), tmp_path / "out", _client(tmp_path), record="80", base_url=base)
    assert not (tmp_path / "out" / "10028").exists()


def test_download_dataset_extracts_with_the_clients_limits(tmp_path: Path) -> None:
    routes, fill = zenodo_routes("79", {"10028.zip": _zip({"a.txt": b"a", "b.txt": b"b"})})
    with serve(routes) as base:
        fill(base)
        with pytest.raises(InputError, match="more than 1 members"):
            download_dataset(get_spec("cryoppp"), tmp_path / "out", _client(tmp_path, max_members=1), record="79",
                             base_url=base)
        assert not (tmp_path / "out" / "10028").exists()
        result = download_dataset(get_spec("cryoppp"), tmp_path / "out", _client(tmp_path), record="79", base_url=base)
    assert result.files[0]["n_members"] == 2
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["files"][0]["key"] == "10028.zip"
