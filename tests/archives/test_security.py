"""Issue #16 security items: names from a listing stay in the cache; downloads are bounded.

Everything runs against :mod:`cryoset.archives.testserver` on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import struct
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from cryoset.archives.download import (
    DownloadError,
    DownloadRequest,
    HttpClient,
    Limits,
    UnsafePathError,
    contained_path,
    gunzip_bounded,
    listing_names,
    mrc_size_from_header,
    redirect_refusal,
    safe_relative_path,
)
from cryoset.archives.emdb import EmdbClient
from cryoset.archives.empiar import EmpiarClient
from cryoset.archives.testserver import Route, serve
from cryoset.errors import InputError

_spec = importlib.util.spec_from_file_location("archive_fixtures", Path(__file__).with_name("fixtures.py"))
assert _spec is not None and _spec.loader is not None
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

ESCAPE = "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/"  # five levels up: out of any cache sub-directory


def _client(tmp_path: Path, **limits: int | float) -> HttpClient:
    return HttpClient(cache_dir=tmp_path / "cache", retries=2, backoff_s=0.0, timeout_s=10,
                      limits=Limits(**limits))  # type: ignore[arg-type]


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", [
    "%2e%2e/x", "%2E%2E/x", "a/%2e%2e/%2e%2e/x", "..%2fx", "%2e%2e%2fx", "%252e%252e/x", "%25252e%25252e/x",
    "%2fetc/passwd", "/etc/passwd", "%5c..%5cx", "a\\b", "C:/x", "c%3a/x", "x%00y", "..", "%2e%2e",
])
def test_unsafe_link_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafePathError, match=r"absolute path|outside the destination|backslash|control character"):
        safe_relative_path(name, source="http://mirror/listing/", percent_encoded=True)


def test_safe_names_decode_once_and_keep_their_text() -> None:
    assert safe_relative_path("Micro%20graphs/a%231.mrc", source="s", percent_encoded=True).as_posix() \
        == "Micro graphs/a#1.mrc"
    assert safe_relative_path("10%.mrc", source="s", percent_encoded=True).as_posix() == "10%.mrc"
    assert safe_relative_path("..a/b..", source="s").parts == ("..a", "b..")
    # a literal name is not decoded: "%2e%2e" is then a harmless directory name
    assert safe_relative_path("%2e%2e/x", source="s").parts == ("%2e%2e", "x")
    with pytest.raises(UnsafePathError, match="names no file"):
        safe_relative_path("./", source="s")


def test_contained_path_refuses_the_root_and_anything_outside(tmp_path: Path) -> None:
    assert contained_path(tmp_path, "a/b.txt", source="s") == tmp_path / "a" / "b.txt"
    for bad in ("../x", "a/../../x", "/abs", ".", "a/.."):
        with pytest.raises(UnsafePathError):
            contained_path(tmp_path, bad, source="s")


def test_listing_names_skips_navigation_and_refuses_escapes() -> None:
    index = (b'<a href="../">Parent</a><a href="?C=N;O=D">sort</a><a href="/pub/">root</a>'
             b'<a href="http://elsewhere/x">x</a><a href="mailto:a@b">m</a><a href="#top">t</a>'
             b'<a href="sub%20dir/">d</a><a href="file%231.mrc">f</a>')
    assert listing_names(index, source="s") == [(PurePosixPath("sub dir"), True), (PurePosixPath("file#1.mrc"), False)]
    with pytest.raises(UnsafePathError, match="outside the destination"):
        listing_names(b'<a href="ok.mrc">a</a><a href="%2e%2e/evil.mrc">b</a>', source="s")


def test_download_dest_must_stay_in_the_cache(tmp_path: Path) -> None:
    with serve({"/f.bin": Route(body=b"payload")}) as base:
        http = _client(tmp_path)
        for dest in (Path("../escape.bin"), Path("a/../../escape.bin"), tmp_path / "abs.bin"):
            with pytest.raises(UnsafePathError):
                http.download(DownloadRequest(f"{base}/f.bin", dest))
    assert not (tmp_path / "escape.bin").exists() and not (tmp_path / "abs.bin").exists()
    assert _files_under(tmp_path) == []


def test_emdb_mask_listing_cannot_write_outside_the_cache(tmp_path: Path) -> None:
    routes = {
        "/emdb/EMD-2660/masks/": Route(body=f'<a href="ok_msk.map.gz">ok</a><a href="{ESCAPE}evil.map.gz">x</a>'
                                       .encode(), content_type="text/html"),
        "/emdb/EMD-2660/masks/ok_msk.map.gz": Route(body=gzip.compress(b"mask")),
        "/evil.map.gz": Route(body=gzip.compress(b"pwned")),  # where a normalised ../ URL lands
    }
    with serve(routes) as base:
        http = _client(tmp_path)
        client = EmdbClient(http, f"{base}/emdb")
        with pytest.raises(UnsafePathError, match="outside the destination"):
            http.download_many(client.mask_requests("2660"))
        assert routes["/evil.map.gz"].hits == 0
    assert _files_under(tmp_path) == []


def test_empiar_listing_cannot_write_outside_the_cache(tmp_path: Path) -> None:
    routes = {
        "/files/10028/data/": Route(body=f'<a href="a.mrc">a</a><a href="{ESCAPE}evil.mrc">x</a>'.encode(),
                                    content_type="text/html"),
        "/files/10028/data/a.mrc": Route(body=b"a"),
        "/evil.mrc": Route(body=b"pwned"),
    }
    with serve(routes) as base:
        http = _client(tmp_path)
        client = EmpiarClient(http, f"{base}/api", f"{base}/files")
        with pytest.raises(UnsafePathError, match="outside the destination"):
            client.list_files("10028", "data", pattern="*")
        with pytest.raises(UnsafePathError):
            client.download_requests("10028", ["data/../../../../../evil.mrc"])
        with pytest.raises(UnsafePathError):
            client.list_files("10028", "../..")
        assert routes["/evil.mrc"].hits == 0
    assert _files_under(tmp_path) == []


def test_empiar_names_with_spaces_and_hashes_are_fetched_by_their_encoded_url(tmp_path: Path) -> None:
    routes = {
        "/files/10028/data/": Route(body=b'<a href="sub%20dir/">d</a>', content_type="text/html"),
        "/files/10028/data/sub%20dir/": Route(body=b'<a href="m%231.mrc">m</a>', content_type="text/html"),
        "/files/10028/data/sub%20dir/m%231.mrc": Route(body=b"movie"),
    }
    with serve(routes) as base:
        http = _client(tmp_path)
        client = EmpiarClient(http, f"{base}/api", f"{base}/files")
        files = client.list_files("10028", "data")
        assert files == ["data/sub dir/m#1.mrc"]
        (path,) = http.download_many(client.download_requests("10028", files))
    assert path == http.cache_dir / "empiar" / "10028" / "data" / "sub dir" / "m#1.mrc"
    assert path.read_bytes() == b"movie"


# --------------------------------------------------------------- schemes, redirects
@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/x", "127.0.0.1/x",
                                 "http:///nohost"])
def test_only_http_and_https_urls_are_fetched(tmp_path: Path, url: str) -> None:
    http = _client(tmp_path)
    with pytest.raises(DownloadError, match=r"only http:// and https://|no host") as info:
        http.download(DownloadRequest(url, Path("x")))
    assert "\n" not in str(info.value)
    with pytest.raises(DownloadError, match=r"only http:// and https://|no host"):
        http.get_bytes(url)
    assert _files_under(tmp_path) == []


@pytest.mark.parametrize("target,message", [
    ("file:///etc/passwd", "file://"), ("ftp://127.0.0.1/x", "ftp://"), ("gopher://127.0.0.1:70/x", "gopher://"),
    ("http://localhost:{port}/f.bin", "another host"), ("http://127.0.0.2:{port}/f.bin", "another host"),
    ("http://127.0.0.1:1/f.bin", "another port"),
])
def test_redirects_off_the_host_or_to_other_schemes_are_refused(tmp_path: Path, target: str, message: str) -> None:
    routes = {"/f.bin": Route(body=b"real"), "/r": Route(redirect_to="")}
    with serve(routes) as base:
        routes["/r"].redirect_to = target.format(port=base.rsplit(":", 1)[1])
        http = _client(tmp_path)
        with pytest.raises(DownloadError, match=message) as info:
            http.download(DownloadRequest(f"{base}/r", Path("f.bin")))
        assert "\n" not in str(info.value)
        with pytest.raises(DownloadError, match=message):
            http.get_bytes(f"{base}/r")
        assert routes["/f.bin"].hits == 0 and routes["/r"].hits == 2  # refused at once, not retried
    assert _files_under(tmp_path) == []


def test_same_host_redirects_are_followed_and_loops_are_bounded(tmp_path: Path) -> None:
    routes = {"/f.bin": Route(body=b"real"), "/r1": Route(redirect_to="/r2", redirect_status=301),
              "/r2": Route(redirect_to="f.bin", redirect_status=307), "/loop": Route(redirect_to="/loop")}
    with serve(routes) as base:
        http = _client(tmp_path, max_redirects=3)
        assert http.download(DownloadRequest(f"{base}/r1", Path("f.bin"))).read_bytes() == b"real"
        with pytest.raises(DownloadError, match="more than 3 redirects"):
            http.get_bytes(f"{base}/loop")
        assert routes["/loop"].hits == 4


def test_redirect_policy() -> None:
    assert redirect_refusal("https://a.org/x", "https://a.org/y") is None
    assert redirect_refusal("http://a.org/x", "https://a.org/y") is None  # upgrade
    assert "downgrade" in str(redirect_refusal("https://a.org/x", "http://a.org/y"))
    assert "another host" in str(redirect_refusal("https://a.org/x", "https://b.org/y"))
    assert "another port" in str(redirect_refusal("https://a.org/x", "https://a.org:8443/y"))
    assert redirect_refusal("https://a.org/x", "https://bucket.s3.amazonaws.com/k", ["*.s3.amazonaws.com"]) is None
    assert "downgrade" in str(redirect_refusal("https://a.org/x", "http://bucket.s3.amazonaws.com/k",
                                               ["*.s3.amazonaws.com"]))
    assert "file://" in str(redirect_refusal("https://a.org/x", "file:///etc/passwd", ["*"]))


# ---------------------------------------------------------------------- size caps
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "no-content-length"])
def test_oversized_download_is_refused_and_leaves_nothing(tmp_path: Path, rng: np.random.Generator,
                                                          chunked: bool) -> None:
    body = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    route = Route(body=body, chunked=chunked)
    with serve({"/big.bin": route}) as base:
        http = _client(tmp_path, max_download_bytes=50_000)
        with pytest.raises(DownloadError, match="download limit") as info:
            http.download(DownloadRequest(f"{base}/big.bin", Path("big.bin")))
        assert "\n" not in str(info.value)
        assert route.hits == 1  # final, not retried
        # within the cap the same server is fine, with or without Content-Length
        roomy = _client(tmp_path, max_download_bytes=200_000)
        assert roomy.download(DownloadRequest(f"{base}/big.bin", Path("ok.bin"))).read_bytes() == body
    assert _files_under(tmp_path / "cache") == ["ok.bin"]


def test_listed_size_over_the_cap_is_refused_before_any_request(tmp_path: Path) -> None:
    route = Route(body=b"x" * 100)
    with serve({"/f": route}) as base:
        with pytest.raises(DownloadError, match="archive lists"):
            _client(tmp_path, max_download_bytes=99).download(DownloadRequest(f"{base}/f", Path("f"), size_bytes=100))
    assert route.hits == 0


def test_a_resumable_partial_is_kept_but_never_renamed(tmp_path: Path, rng: np.random.Generator) -> None:
    body = rng.integers(0, 256, 30_000, dtype=np.uint8).tobytes()
    http = _client(tmp_path)
    part = http.cache_dir / "p.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:10_000])
    with serve({"/p.bin": Route(body=body), "/r": Route(redirect_to="file:///etc/passwd")}) as base:
        with pytest.raises(DownloadError, match="file://"):
            http.download(DownloadRequest(f"{base}/r", Path("p.bin")))
        assert part.read_bytes() == body[:10_000] and not (http.cache_dir / "p.bin").exists()
        assert http.download(DownloadRequest(f"{base}/p.bin", Path("p.bin"))).read_bytes() == body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "no-content-length"])
def test_oversized_metadata_is_refused(tmp_path: Path, chunked: bool) -> None:
    with serve({"/api.json": Route(body=b"[" + b"0," * 5000 + b"0]", chunked=chunked)}) as base:
        http = _client(tmp_path, max_metadata_bytes=1000)
        with pytest.raises(DownloadError, match="metadata limit"):
            http.get_json(f"{base}/api.json", cache_name="api.json")
    assert _files_under(tmp_path) == []


def test_default_limits_are_finite() -> None:
    lim = Limits()
    assert lim.max_download_bytes == 500 * 10**9 and lim.max_metadata_bytes == 64 << 20
    assert lim.expansion_cap(300_000) == max(16 << 20, 200 * 300_000) < 300 << 20
    with pytest.raises(ValueError, match="max_download_bytes"):
        Limits(max_download_bytes=0)


# ------------------------------------------------------------------------ gzip bombs
@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 300 KB of gzip that expands to 300 MiB of zeros."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    data = b"".join(comp.compress(zeros) for _ in range(300)) + comp.flush()
    assert len(data) < 400_000
    return data


def test_gzip_bomb_download_is_refused_with_default_limits(tmp_path: Path, gzip_bomb: bytes) -> None:
    with serve({"/emd_1.map.gz": Route(body=gzip_bomb)}) as base:
        http = HttpClient(cache_dir=tmp_path / "cache", retries=0)
        with pytest.raises(DownloadError, match="decompression bomb") as info:
            http.download(DownloadRequest(f"{base}/emd_1.map.gz", Path("emd_1.map"), decompress_gzip=True))
        assert "\n" not in str(info.value)
    assert _files_under(tmp_path) == []  # no map, no .unzip.part, no .gz kept


def _mrc_header(nx: int, ny: int, nz: int, mode: int = 2) -> bytes:
    head = bytearray(1024)
    head[0:16] = struct.pack("<4i", nx, ny, nz, mode)
    head[208:212] = b"MAP "
    head[212:214] = b"\x44\x44"
    return bytes(head)


def test_an_mrc_map_expands_to_exactly_what_its_header_declares(tmp_path: Path) -> None:
    """A mostly-empty binary mask compresses ~1000×: allowed as declared, refused beyond it."""
    strict = Limits(expansion_floor_bytes=0, max_expansion_ratio=2)
    mask = _mrc_header(64, 64, 64) + bytes(64 * 64 * 64 * 4)
    assert mrc_size_from_header(mask[:1024]) == len(mask)
    (tmp_path / "mask.gz").write_bytes(gzip.compress(mask))
    assert gunzip_bounded("u", tmp_path / "mask.gz", tmp_path / "mask.map", strict) == len(mask)
    assert (tmp_path / "mask.map").read_bytes() == mask
    (tmp_path / "lying.gz").write_bytes(gzip.compress(_mrc_header(8, 8, 8) + bytes(10 * 8 * 8 * 4)))
    with pytest.raises(DownloadError, match="MRC header declares"):
        gunzip_bounded("u", tmp_path / "lying.gz", tmp_path / "lying.map", strict)
    assert not (tmp_path / "lying.map").exists()
    (tmp_path / "plain.gz").write_bytes(gzip.compress(bytes(10_000)))
    with pytest.raises(DownloadError, match="expansion limit"):
        gunzip_bounded("u", tmp_path / "plain.gz", tmp_path / "plain.bin", strict)
    huge = Limits(max_expanded_bytes=1000)
    (tmp_path / "huge.gz").write_bytes(gzip.compress(_mrc_header(1000, 1000, 1000)))
    with pytest.raises(DownloadError, match=r"more than the 1\.0 kB limit"):
        gunzip_bounded("u", tmp_path / "huge.gz", tmp_path / "huge.map", huge)


# ---------------------------------------------------------------------------- CLI
def _fetch_env(monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    monkeypatch.setenv("CRYOSET_EMPIAR_API_URL", f"{base}/empiar/api")
    monkeypatch.setenv("CRYOSET_EMPIAR_FILES_URL", f"{base}/empiar/files")
    monkeypatch.setenv("CRYOSET_EMDB_FILES_URL", f"{base}/emdb")


def test_cli_fetch_refuses_traversal_redirects_and_oversized_files(run_cli, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                                   tmp_path: Path) -> None:
    routes = {
        "/empiar/api/entry/EMPIAR-10028/": Route(body=fx.empiar_json(), content_type="application/json"),
        "/empiar/files/10028/data/": Route(body=f'<a href="{ESCAPE}evil.mrc">x</a>'.encode(), content_type="text/html"),
        "/emdb/EMD-2660/header/emd-2660.xml": Route(body=fx.EMD_2660_XML, content_type="text/xml"),
        "/emdb/EMD-2660/map/emd_2660.map.gz": Route(body=gzip.compress(_mrc_header(4, 4, 4) + bytes(256))),
        "/emdb/EMD-2660/masks/": Route(body=f'<a href="{ESCAPE}evil.map.gz">x</a>'.encode(), content_type="text/html"),
        "/emdb/EMD-1234/header/emd-1234.xml": Route(redirect_to="file:///etc/passwd"),
        "/emdb/EMD-5555/header/emd-5555.xml": Route(body=fx.EMD_2660_XML, content_type="text/xml"),
        "/emdb/EMD-5555/map/emd_5555.map.gz": Route(redirect_to="file:///etc/passwd"),
    }
    cache = tmp_path / "cache"
    with serve(routes) as base:
        _fetch_env(monkeypatch, base)
        runs = {
            "empiar listing": ("fetch", "empiar", "10028", "--files", "*", "--cache", cache),
            "emdb masks": ("fetch", "emdb", "2660", "--masks", "--cache", cache),
            "file:// redirect (header)": ("fetch", "emdb", "1234", "--cache", cache),
            "file:// redirect (map)": ("fetch", "emdb", "5555", "--cache", cache),
            "too large": ("fetch", "emdb", "2660", "--cache", cache, "--max-download-gb", "1e-9"),
        }
        for what, args in runs.items():
            code, out, err = run_cli(*args)
            assert code == 2, (what, out, err)
            # (a stopped progress bar may leave an empty line before the message)
            assert err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1, (what, err)
            assert "Traceback" not in err
        code, out, err = run_cli("fetch", "emdb", "2660", "--cache", cache, "--json")
        assert code == 0, err
    assert not list(tmp_path.parent.glob("evil*")) and not list(tmp_path.rglob("evil*"))
    assert json.loads(out)["downloaded"] == [str(cache / "emdb" / "EMD-2660" / "emd_2660.map")]


def test_input_errors_are_input_errors() -> None:
    assert issubclass(UnsafePathError, InputError) and issubclass(DownloadError, InputError)
