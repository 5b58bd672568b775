"""EMPIAR, EMDB and PDB clients against fixture responses served on 127.0.0.1."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryoset.archives.download import DownloadError, HttpClient
from cryoset.archives.emdb import EmdbClient, normalise_emdb_id, parse_header_xml
from cryoset.archives.empiar import EmpiarClient, normalise_empiar_id, parse_entry
from cryoset.archives.pdb import PdbClient, normalise_pdb_id, parse_fasta
from cryoset.archives.records import EXPERIMENT_COLUMNS, experiment_record
from cryoset.archives.testserver import Route, serve
from cryoset.testing import require_shared_data

_spec = importlib.util.spec_from_file_location("archive_fixtures", Path(__file__).with_name("fixtures.py"))
assert _spec is not None and _spec.loader is not None
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

MAP_BYTES = bytes(range(256)) * 64


def _routes() -> dict[str, Route]:
    return {
        "/empiar/api/entry/EMPIAR-10028/": Route(body=fx.empiar_json(), content_type="application/json"),
        "/empiar/files/10028/data/": Route(body=fx.DIR_INDEX.encode(), content_type="text/html"),
        "/empiar/files/10028/data/Micrographs/": Route(body=fx.MICS_INDEX.encode(), content_type="text/html"),
        "/empiar/files/10028/data/Micrographs/001.mrcs": Route(body=b"m1" * 1000),
        "/empiar/files/10028/data/Micrographs/002.mrcs": Route(body=b"m2" * 1000),
        "/empiar/files/10028/data/Micrographs/003.mrcs": Route(body=b"m3" * 1000),
        "/empiar/files/10028/data/gain_ref.mrc": Route(body=b"gain"),
        "/emdb/EMD-2660/header/emd-2660.xml": Route(body=fx.EMD_2660_XML, content_type="text/xml"),
        "/emdb/EMD-2660/map/emd_2660.map.gz": Route(body=gzip.compress(MAP_BYTES)),
        "/emdb/EMD-2660/other/emd_2660_half_map_1.map.gz": Route(body=gzip.compress(b"h1")),
        "/emdb/EMD-2660/other/emd_2660_half_map_2.map.gz": Route(body=gzip.compress(b"h2")),
        "/emdb/EMD-2660/masks/": Route(body=b'<html><a href="../">up</a><a href="emd_2660_msk_1.map.gz">m</a>'
                                       b'<a href="notes.txt">n</a></html>', content_type="text/html"),
        "/emdb/EMD-2660/masks/emd_2660_msk_1.map.gz": Route(body=gzip.compress(b"mask-bytes")),
        "/emdb/EMD-2660/masks/notes.txt": Route(body=b"notes"),
        "/pdb/fasta/3J79": Route(body=fx.FASTA_3J79.encode(), content_type="text/plain"),
        "/pdb/fasta/3J7A": Route(body=fx.FASTA_3J7A.encode(), content_type="text/plain"),
        "/pdb/files/3J79.cif.gz": Route(body=gzip.compress(b"data_3J79\n")),
    }


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[tuple[str, HttpClient]]:
    with serve(_routes()) as base:
        yield base, HttpClient(cache_dir=tmp_path / "cache", retries=1, backoff_s=0.0)


def test_ids() -> None:
    assert normalise_empiar_id("EMPIAR-10028") == normalise_empiar_id(10028) == "10028"
    assert normalise_emdb_id("emd_5168") == normalise_emdb_id("EMD-5168") == "5168"
    assert normalise_pdb_id("3mfp") == "3MFP"
    for bad, fn in (("EMD-1", normalise_empiar_id), ("abc", normalise_emdb_id), ("3MFPX", normalise_pdb_id)):
        with pytest.raises(ValueError):
            fn(bad)


def test_empiar_entry_listing_and_download(archive: tuple[str, HttpClient]) -> None:
    base, http = archive
    client = EmpiarClient(http, f"{base}/empiar/api", f"{base}/empiar/files")
    entry = client.entry("EMPIAR-10028")
    assert entry.emdb_ids == ("EMD-2660",)
    mics = entry.imagesets[0]
    assert (mics.pixel_width_a, mics.image_width_px, mics.num_images, mics.frames_per_image) == (1.34, 4096, 1081, 16)
    files = client.list_files(10028, pattern="*.mrcs", limit=2)
    assert files == ["data/Micrographs/001.mrcs", "data/Micrographs/002.mrcs"]
    assert "data/Micrographs/notes file.txt" in client.list_files(10028)
    assert client.gain_references(10028) == ["data/gain_ref.mrc"]
    paths = http.download_many(client.download_requests(10028, files))
    assert paths[1].read_bytes() == b"m2" * 1000
    assert paths[0] == http.cache_dir / "empiar" / "10028" / "data" / "Micrographs" / "001.mrcs"
    # metadata is cached: offline works afterwards
    offline = HttpClient(cache_dir=http.cache_dir, offline=True)
    assert EmpiarClient(offline, "http://127.0.0.1:9", "http://127.0.0.1:9").entry(10028).title == entry.title


def test_empiar_unknown_entry_is_clear(archive: tuple[str, HttpClient]) -> None:
    base, http = archive
    with pytest.raises(DownloadError, match="HTTP 404"):
        EmpiarClient(http, f"{base}/empiar/api", f"{base}/empiar/files").entry(10999)


def test_empiar_deposition_json_codes_decoded() -> None:
    path = require_shared_data("metadata", "empiar_deposition_working_example.json")
    entry = parse_entry("99999", json.loads(path.read_text()))
    assert entry.emdb_ids == ("EMD-8000",)
    s = entry.imagesets[0]
    assert s.category == "tilt series"  # ('T9', '')
    assert s.header_format in {"MRC", "MRCS", "TIFF", "IMAGIC", "DM3", "DM4", "SPIDER", "XML", "EER", "PNG",
                               "JPEG", "SMV", "EM", "TPX3"} or s.header_format
    assert s.num_images == 16 and s.frames_per_image == 121


def test_emdb_entry_and_maps(archive: tuple[str, HttpClient]) -> None:
    base, http = archive
    client = EmdbClient(http, f"{base}/emdb")
    e = client.entry("EMD-2660")
    assert e.resolution_a == 3.2 and e.method == "singleParticle"
    assert e.pdb_ids == ("3J79", "3J7A")
    assert (e.voltage_kv, e.cs_mm, e.dose_e_per_a2, e.pixel_size_a, e.map_size_px) == (300.0, 2.0, 20.0, 1.34, 300)
    assert e.symmetry == "C1" and e.software == ("RELION",) and e.molecular_weight_mda == 3.2
    assert e.citation_title.startswith("Cryo-EM structure")
    paths = http.download_many([client.map_request(2660), *client.half_map_requests(2660)])
    assert paths[0].read_bytes() == MAP_BYTES and paths[0].name == "emd_2660.map"
    assert paths[2].read_bytes() == b"h2"
    masks = http.download_many(client.mask_requests("EMD-2660"))
    assert [p.name for p in masks] == ["emd_2660_msk_1.map", "notes.txt"]
    assert masks[0].read_bytes() == b"mask-bytes"
    assert EmdbClient(http, f"{base}/emdb").mask_requests(1234) == []  # no masks directory: 404 → none


def test_emdb_bad_xml() -> None:
    with pytest.raises(DownloadError, match="not valid XML"):
        parse_header_xml("1", b"<emd><admin>")
    with pytest.raises(DownloadError, match="root element"):
        parse_header_xml("1", b"<html/>")


def test_pdb_sequences_and_model(archive: tuple[str, HttpClient]) -> None:
    base, http = archive
    client = PdbClient(http, f"{base}/pdb/files", f"{base}/pdb/fasta")
    seqs = client.sequences("3j79")
    assert [s.entity_id for s in seqs] == ["1", "2"]
    assert seqs[0].sequence == "ACGUACGUACGGAUCC"
    assert seqs[1].chains == ("B", "C")
    path = http.download(client.model_request("3J79"))
    assert gzip.decompress(path.read_bytes()) == b"data_3J79\n"
    with pytest.raises(DownloadError, match="header"):
        parse_fasta("1ABC", "MKV\n")


def test_experiment_record(archive: tuple[str, HttpClient]) -> None:
    base, http = archive
    entry = EmpiarClient(http, f"{base}/empiar/api", f"{base}/empiar/files").entry(10028)
    emdb = EmdbClient(http, f"{base}/emdb").entry(2660)
    pdb = PdbClient(http, f"{base}/pdb/files", f"{base}/pdb/fasta")
    rec = experiment_record(entry, [emdb], {p: pdb.sequences(p) for p in emdb.pdb_ids})
    assert tuple(rec) == EXPERIMENT_COLUMNS
    assert rec["experiment_id"] == "EMPIAR-10028" and rec["emdb_ids"] == ["EMD-2660"]
    assert rec["pixel_size_a"] == 1.34 and rec["voltage_kv"] == 300.0 and rec["resolution_a"] == 3.2
    assert rec["num_micrographs"] == 1081 and rec["pdb_ids"] == ["3J79", "3J7A"]
    assert "MAKLVSTKAGHRVEVNIPEKGKL" in rec["sequences"]


def test_cli_fetch(archive: tuple[str, HttpClient], run_cli, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                   tmp_path: Path) -> None:
    base, http = archive
    monkeypatch.setenv("CRYOSET_EMPIAR_API_URL", f"{base}/empiar/api")
    monkeypatch.setenv("CRYOSET_EMPIAR_FILES_URL", f"{base}/empiar/files")
    monkeypatch.setenv("CRYOSET_EMDB_FILES_URL", f"{base}/emdb")
    monkeypatch.setenv("CRYOSET_PDB_FILES_URL", f"{base}/pdb/files")
    monkeypatch.setenv("CRYOSET_PDB_FASTA_URL", f"{base}/pdb/fasta")
    cache = str(http.cache_dir)
    code, out, err = run_cli("fetch", "empiar", "10028", "--files", "*.mrcs", "--count", "1", "--cache", cache, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert len(summary["downloaded"]) == 1 and Path(summary["downloaded"][0]).exists()
    assert Path(summary["downloaded"][0] + ".provenance.json").exists()
    code, out, err = run_cli("fetch", "emdb", "EMD-2660", "--half-maps", "--masks", "--cache", cache, "--json")
    assert code == 0, err
    assert len(json.loads(out)["downloaded"]) == 5
    records = tmp_path / "experiments.json"
    code, out, err = run_cli("fetch", "record", "EMPIAR-10028", "--cache", cache, "--out", records, "--json")
    assert code == 0, err
    assert json.loads(records.read_text())[0]["experiment_id"] == "EMPIAR-10028"
    # offline from the cache still works; a missing entry offline is one clear line, exit 2
    code, out, err = run_cli("fetch", "emdb", "2660", "--metadata-only", "--offline", "--cache", cache, "--json")
    assert code == 0, err
    code, out, err = run_cli("fetch", "emdb", "9999", "--offline", "--cache", cache)
    assert code == 2 and err.startswith("error: ") and "offline" in err and len(err.strip().splitlines()) == 1
