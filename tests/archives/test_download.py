"""Downloads against a local HTTP server: resume, retries, verification, atomicity, offline mode."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cryoset.archives.download import DownloadError, DownloadRequest, HttpClient
from cryoset.archives.testserver import Route, serve


def _client(tmp_path: Path, **kw: object) -> HttpClient:
    return HttpClient(cache_dir=tmp_path / "cache", retries=3, backoff_s=0.0, timeout_s=10, **kw)  # type: ignore[arg-type]


def _payload(rng: np.random.Generator, n: int = 300_000) -> bytes:
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def test_dropped_connection_resumes_byte_identical(tmp_path: Path, rng: np.random.Generator) -> None:
    body = _payload(rng)
    route = Route(body=body, drop_after_bytes=123_457)
    with serve({"/f.bin": route}) as base:
        http = _client(tmp_path, chunk_bytes=4096)
        seen: list[int] = []
        out = http.download(DownloadRequest(f"{base}/f.bin", Path("f.bin"),
                                            checksum="sha256:" + hashlib.sha256(body).hexdigest()),
                            progress=lambda _u, done, _t: seen.append(done))
    assert out.read_bytes() == body
    assert route.range_requests and route.range_requests[0].startswith("bytes=")
    assert int(route.range_requests[0][6:-1]) > 0  # resumed, not restarted
    assert not list(out.parent.glob("*.part"))
    assert seen[-1] == len(body)


def test_partial_file_from_earlier_run_is_resumed(tmp_path: Path, rng: np.random.Generator) -> None:
    body = _payload(rng, 50_000)
    http = _client(tmp_path)
    part = http.cache_dir / "x.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:20_000])
    route = Route(body=body)
    with serve({"/x.bin": route}) as base:
        out = http.download(DownloadRequest(f"{base}/x.bin", Path("x.bin"), size_bytes=len(body)))
    assert out.read_bytes() == body
    assert route.range_requests == ["bytes=20000-"]


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path, rng: np.random.Generator) -> None:
    body = _payload(rng, 40_000)
    http = _client(tmp_path)
    part = http.cache_dir / "y.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage-prefix")
    with serve({"/y.bin": Route(body=body, ranges=False)}) as base:
        out = http.download(DownloadRequest(f"{base}/y.bin", Path("y.bin")))
    assert out.read_bytes() == body


def test_404_is_final_and_clear(tmp_path: Path) -> None:
    with serve({}) as base:
        http = _client(tmp_path)
        with pytest.raises(DownloadError, match="HTTP 404"):
            http.download(DownloadRequest(f"{base}/missing.map", Path("missing.map")))
    assert not (http.cache_dir / "missing.map").exists()


def test_500_then_success_is_retried(tmp_path: Path) -> None:
    route = Route(body=b"hello world", fail_first=2)
    sleeps: list[float] = []
    with serve({"/h.txt": route}) as base:
        http = HttpClient(cache_dir=tmp_path, retries=3, backoff_s=0.01, sleep=sleeps.append)
        out = http.download(DownloadRequest(f"{base}/h.txt", Path("h.txt")))
    assert out.read_bytes() == b"hello world"
    assert route.hits == 3
    assert sleeps == [0.01, 0.02]  # exponential back-off


def test_persistent_500_gives_up(tmp_path: Path) -> None:
    with serve({"/bad": Route(body=b"x", fail_first=100)}) as base:
        http = HttpClient(cache_dir=tmp_path, retries=2, backoff_s=0.0)
        with pytest.raises(DownloadError, match="3 attempts"):
            http.download(DownloadRequest(f"{base}/bad", Path("bad")))


def test_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    with serve({"/c.bin": Route(body=b"abcdef")}) as base:
        http = _client(tmp_path)
        with pytest.raises(DownloadError, match="checksum mismatch"):
            http.download(DownloadRequest(f"{base}/c.bin", Path("c.bin"), checksum="md5:" + "0" * 32))
    assert list(http.cache_dir.rglob("*")) == []


def test_size_mismatch(tmp_path: Path) -> None:
    with serve({"/s.bin": Route(body=b"abcdef")}) as base:
        http = _client(tmp_path)
        with pytest.raises(DownloadError, match="size mismatch"):
            http.download(DownloadRequest(f"{base}/s.bin", Path("s.bin"), size_bytes=10))


def test_truncated_json_is_clear_and_not_cached(tmp_path: Path) -> None:
    with serve({"/api.json": Route(body=b'{"EMPIAR-1": {"title": "x"', content_type="application/json")}) as base:
        http = _client(tmp_path)
        with pytest.raises(DownloadError, match="not valid JSON"):
            http.get_json(f"{base}/api.json", cache_name="a.json")
    assert not (http.cache_dir / "metadata" / "a.json").exists()


def test_gzip_decompressed_on_arrival_and_cache_and_offline(tmp_path: Path) -> None:
    import gzip

    raw = bytes(range(256)) * 100
    route = Route(body=gzip.compress(raw))
    with serve({"/m.map.gz": route}) as base:
        http = _client(tmp_path)
        req = DownloadRequest(f"{base}/m.map.gz", Path("m.map"), decompress_gzip=True)
        out = http.download(req)
        assert out.read_bytes() == raw
        http.download(req)  # cached: no second request
        assert route.hits == 1
    offline = _client(tmp_path, offline=True)
    assert offline.download(req).read_bytes() == raw
    with pytest.raises(DownloadError, match="offline"):
        offline.download(DownloadRequest("http://127.0.0.1:9/none", Path("none")))


def test_download_many_parallel(tmp_path: Path, rng: np.random.Generator) -> None:
    bodies = {f"/p{i}.bin": _payload(rng, 10_000 + i) for i in range(6)}
    with serve({k: Route(body=v) for k, v in bodies.items()}) as base:
        http = _client(tmp_path)
        paths = http.download_many([DownloadRequest(base + k, Path(k[1:])) for k in bodies], workers=3)
    assert [p.read_bytes() for p in paths] == list(bodies.values())


def test_bad_parameters_name_themselves(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retries"):
        HttpClient(cache_dir=tmp_path, retries=-1)
    with pytest.raises(ValueError, match="workers"):
        _client(tmp_path).download_many([], workers=0)


def test_corrupt_cached_json_is_a_clear_error(tmp_path: Path) -> None:
    http = _client(tmp_path, offline=True)
    bad = http.cache_dir / "metadata" / "e.json"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b'{"EMPIAR-1": ')
    with pytest.raises(DownloadError, match="not valid JSON"):
        http.get_json_cached("http://127.0.0.1:9/e", "e.json")
