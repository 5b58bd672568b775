"""Registry and downloads through mock Zenodo / Dataverse APIs on 127.0.0.1 (no internet)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from cryoset.archives.download import DownloadError, HttpClient
from cryoset.archives.testserver import Route, serve
from cryoset.datasets.cryoppp import read_cryoppp
from cryoset.datasets.registry import (
    dataverse_files,
    download_dataset,
    get_spec,
    list_remote_files,
    parse_record,
    registry,
    resolve_sources,
)
from cryoset.errors import InputError

from .builders import dataverse_routes, md5, tar_dir, zenodo_routes, zip_dir


def _client(tmp_path: Path, offline: bool = False) -> HttpClient:
    return HttpClient(cache_dir=tmp_path / "cache", offline=offline, retries=2, backoff_s=0.0, timeout_s=10)


def test_registry_records_are_the_published_ones_and_unknowns_are_explicit() -> None:
    specs = registry()
    assert sorted(specs) == ["cryo2structdata", "cryopanda", "cryoppp", "cryovirusdb"]
    assert [(s.host, s.identifier, s.default) for s in specs["cryovirusdb"].sources] == [
        ("zenodo", "10397742", True),  # the labels (authors' README); the micrographs are elsewhere:
        ("listing", "https://calla.rnet.missouri.edu/CryoVirusDB/", False),  # the authors' server
        ("listing", "https://calla.rnet.missouri.edu/CryoVirusDB_Lite/", False)]
    assert [(s.host, s.identifier) for s in specs["cryopanda"].sources] == [
        ("sciencedb", "doi:10.57760/sciencedb.27164")]
    with pytest.raises(InputError, match=r"sciencedb\.27164.*open API"):
        resolve_sources(specs["cryopanda"])
    c2s = {s.subset: s.identifier for s in specs["cryo2structdata"].sources}
    assert c2s == {"full": "doi:10.7910/DVN/FCDG0W", "small": "doi:10.7910/DVN/CGUENL",
                   "test": "doi:10.7910/DVN/2GSSC9", "metadata": "doi:10.7910/DVN/JMN60H",
                   "models-full": "doi:10.7910/DVN/SXNYRE", "models-small": "doi:10.7910/DVN/DTV4JF"}
    assert all(s.identifier is None for s in specs["cryoppp"].sources)
    for name in ("cryoppp", "cryopanda"):
        with pytest.raises(InputError, match="--record"):
            resolve_sources(specs[name])
        (src, url), = resolve_sources(specs[name], record="4242", base_url="http://h/")
        assert (src.host, src.identifier, url) == ("zenodo", "4242", "http://h")
    assert parse_record("doi:10.7910/DVN/ABC") == ("dataverse", "doi:10.7910/DVN/ABC")
    assert parse_record("10.5281/zenodo.1") == ("dataverse", "doi:10.5281/zenodo.1")
    assert parse_record("https://h/CryoVirusDB") == ("listing", "https://h/CryoVirusDB/")
    with pytest.raises(InputError):
        parse_record("zenodo-x")
    with pytest.raises(InputError, match="subsets: full"):
        resolve_sources(specs["cryo2structdata"], subsets=["huge"])
    with pytest.raises(InputError, match="unknown dataset"):
        get_spec("cryo-nope")


def test_zenodo_subset_download_resumes_extracts_reads_back_and_works_offline(
        tmp_path: Path, cryoppp_full: tuple[Path, dict[str, Any]]) -> None:
    root, built = cryoppp_full
    archive = zip_dir(root, "10028")
    other = tar_dir(root / "ground_truth", "10017")
    routes, fill = zenodo_routes("10397742", {"10028.zip": archive, "EMPIAR-10017.tar.gz": other})
    content = routes["/api/records/10397742/files/10028.zip/content"]
    content.drop_after_bytes = len(archive) // 3
    spec = get_spec("cryovirusdb")
    with serve(routes) as base:
        fill(base)
        client = _client(tmp_path)
        result = download_dataset(spec, tmp_path / "out", client, subsets=["EMPIAR-10028"], base_url=base)
        assert routes["/api/records/10397742/files/EMPIAR-10017.tar.gz/content"].hits == 0
        assert content.range_requests, "the dropped download was resumed with a Range request"
        listed = list_remote_files(spec, client, base_url=base)
        assert {f.key for f in listed} == {"10028.zip", "EMPIAR-10017.tar.gz"}
        assert next(f.checksum for f in listed) == md5(archive)
    (f,) = result.files
    assert f["extracted"] and Path(f["path"]) == tmp_path / "out" / "10028"
    entry = read_cryoppp(tmp_path / "out" / "10028")
    truth = built["particles"]
    assert len(entry.particles) == len(truth) and len(entry.micrographs) == 3
    pd.testing.assert_series_equal(entry.particles["y_px"], truth["y_px"], check_names=False, rtol=0, atol=1e-9)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["files"][0]["checksum"] == md5(archive)
    assert (tmp_path / "out" / "provenance.json").exists()
    # offline: served from the cache with no server at all, and not re-extracted
    marker_mtime = (tmp_path / "out" / "10028" / ".cryoset-extracted.json").stat().st_mtime_ns
    again = download_dataset(spec, tmp_path / "out", _client(tmp_path, offline=True), subsets=["10028"], base_url=base)
    assert again.files[0]["n_members"] == f["n_members"]
    assert (tmp_path / "out" / "10028" / ".cryoset-extracted.json").stat().st_mtime_ns == marker_mtime
    with pytest.raises(DownloadError, match="offline"):
        download_dataset(spec, tmp_path / "out2", HttpClient(cache_dir=tmp_path / "empty", offline=True),
                         base_url=base)


def test_bad_checksum_and_unknown_subset_fail_cleanly(tmp_path: Path) -> None:
    routes, fill = zenodo_routes("10397742", {"10028.zip": b"PK\x05\x06" + bytes(18)}, corrupt_checksum=True)
    spec = get_spec("cryovirusdb")
    with serve(routes) as base:
        fill(base)
        with pytest.raises(DownloadError, match="checksum mismatch"):
            download_dataset(spec, tmp_path / "out", _client(tmp_path), base_url=base)
        with pytest.raises(InputError, match="no file for EMPIAR-10999"):
            download_dataset(spec, tmp_path / "out", _client(tmp_path), subsets=["10999"], base_url=base)
    assert not (tmp_path / "out" / "10028").exists()


def test_dataverse_listing_shapes_and_download(tmp_path: Path) -> None:
    doi = "doi:10.7910/DVN/2GSSC9"
    files = [{"label": "EMD-5168.zip", "directoryLabel": "test_data", "body": b"PK\x05\x06" + bytes(18)},
             {"label": "metadata.tab", "original": "metadata.csv", "body": b"emdb_id,pdb_id\nEMD-5168,3MFP\n"},
             {"label": "README.txt", "body": b"readme"}]
    routes = dataverse_routes(doi, files)
    answer = json.loads(routes["/api/datasets/:persistentId/"].body)
    listed = dataverse_files(answer, "http://h", "test", "api")
    assert [(f.key, f.url, f.size_bytes) for f in listed] == [
        ("test_data/EMD-5168.zip", "http://h/api/access/datafile/101", 22),
        ("metadata.csv", "http://h/api/access/datafile/102?format=original", len(files[1]["body"])),
        ("README.txt", "http://h/api/access/datafile/103", 6)]
    seen: list[str] = []
    spec = get_spec("cryo2structdata")
    with serve(routes) as base:
        client = _client(tmp_path)
        real_get_json = client.get_json

        def spy(url: str, **kw: Any) -> Any:
            seen.append(url)
            return real_get_json(url, **kw)

        client.get_json = spy  # type: ignore[method-assign]
        result = download_dataset(spec, tmp_path / "c2s", client, subsets=["test"], base_url=base)
    assert seen == [f"{base}/api/datasets/:persistentId/?persistentId={doi}"]
    assert (tmp_path / "c2s" / "metadata.csv").read_bytes() == files[1]["body"]
    assert (tmp_path / "c2s" / "test_data" / "EMD-5168").is_dir()
    assert [f["extracted"] for f in result.files] == [True, False, False]
    with pytest.raises(InputError, match="not a Dataverse dataset"):
        dataverse_files({"status": "ERROR", "message": "Dataset not found"}, "http://h", "x", "api")


def test_directory_index_download_resumes_verifies_size_and_works_offline(
        tmp_path: Path, cryoppp_full: tuple[Path, dict[str, Any]]) -> None:
    """The CryoVirusDB authors' server: a plain HTTP directory index of <EMPIAR>.tar.gz files."""
    root, built = cryoppp_full
    archive = tar_dir(root, "10028")
    index = (b'<html><body><h1>Index of /CryoVirusDB</h1><a href="?C=N;O=D">Name</a> '
             b'<a href="/">Parent Directory</a> <a href="10028.tar.gz">10028.tar.gz</a> '
             b'<a href="10017.tar.gz">10017.tar.gz</a> <a href="old/">old/</a></body></html>')
    content = Route(body=archive, content_type="application/gzip")
    content.drop_after_bytes = len(archive) // 2
    routes = {"/CryoVirusDB/": Route(body=index, content_type="text/html"),
              "/CryoVirusDB/10028.tar.gz": content, "/CryoVirusDB/10017.tar.gz": Route(body=b"x" * 10)}
    spec = get_spec("cryovirusdb")
    with serve(routes) as base:
        record = f"{base}/CryoVirusDB/"
        listed = list_remote_files(spec, _client(tmp_path), record=record)
        assert [f.key for f in listed] == ["10028.tar.gz", "10017.tar.gz"]
        assert all(f.size_bytes is None and f.checksum is None for f in listed)
        result = download_dataset(spec, tmp_path / "out", _client(tmp_path), subsets=["10028"], record=record)
        assert content.range_requests and routes["/CryoVirusDB/10017.tar.gz"].hits == 0
    (f,) = result.files
    assert f["extracted"] and Path(f["path"]) == tmp_path / "out" / "10028"
    entry = read_cryoppp(tmp_path / "out" / "10028")
    assert len(entry.particles) == len(built["particles"])
    again = download_dataset(spec, tmp_path / "out", _client(tmp_path, offline=True), subsets=["10028"],
                             record=record)
    assert again.files[0]["n_members"] == f["n_members"]
    routes_short = {"/CryoVirusDB/": Route(body=index, content_type="text/html"),
                    "/CryoVirusDB/10028.tar.gz": Route(body=archive[:100], ranges=False)}
    routes_short["/CryoVirusDB/10028.tar.gz"].drop_after_bytes = 50
    with serve(routes_short) as base, pytest.raises(InputError):
        download_dataset(spec, tmp_path / "out3", HttpClient(cache_dir=tmp_path / "c3", retries=0, backoff_s=0.0,
                                                             timeout_s=5), subsets=["10028"], record=f"{base}/CryoVirusDB/")
    assert not (tmp_path / "out3" / "10028").exists()
