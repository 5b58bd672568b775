"""Resumable, verified, atomic HTTP downloads with a cache and an offline mode.

* **Resumable**: a partial download lives at ``<dest>.part``; the next attempt asks for the
  rest with an HTTP ``Range: bytes=N-`` request and appends (a server that ignores the range
  and answers 200 makes us start again from zero).
* **Verified**: the final size must equal ``Content-Length`` (or the expected size), and
  the checksum (SHA-256 or MD5) must match when the archive gives one; a mismatch deletes
  the partial file and raises.
* **Atomic**: only a complete, verified file is renamed onto ``dest``; a partial file never
  has the final name.
* **Retried** with exponential back-off on connection errors and 5xx / 429 answers; 4xx
  (other than 429) are final.
* **Offline mode** uses only what is already in the cache and raises if it is missing.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from cryoset.errors import InputError
from cryoset.io.atomic import write_bytes_atomic

#: Called with (url, bytes_done, bytes_total or None) as a download progresses.
ProgressCallback = Callable[[str, int, int | None], None]


class DownloadError(InputError):
    """A download that failed for good (after retries), or failed verification."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(url, message)
        self.url = url


@dataclass(frozen=True)
class DownloadRequest:
    """One file to fetch.

    Parameters
    ----------
    url
        Where to get it.
    dest
        Final path (relative paths are taken under the client's cache directory).
    size_bytes
        Expected size, when the archive says.
    checksum
        ``"sha256:<hex>"`` or ``"md5:<hex>"``, when the archive gives one.
    decompress_gzip
        Store the gunzipped content at ``dest`` (the ``.gz`` stays in the cache as the
        resumable download).
    """

    url: str
    dest: Path
    size_bytes: int | None = None
    checksum: str | None = None
    decompress_gzip: bool = False


@dataclass
class HttpClient:
    """HTTP access shared by the archive clients.

    Parameters
    ----------
    cache_dir
        Where downloads and cached metadata live.
    offline
        Never touch the network; serve only from the cache.
    retries
        Attempts after the first for transient failures.
    backoff_s
        First back-off delay; doubled each retry.
    timeout_s
        Connect/read timeout per request.
    chunk_bytes
        Streaming chunk size.
    """

    cache_dir: Path
    offline: bool = False
    retries: int = 4
    backoff_s: float = 0.5
    timeout_s: float = 60.0
    chunk_bytes: int = 1 << 20
    session: requests.Session = field(default_factory=requests.Session, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)
        if self.retries < 0:
            raise ValueError(f"retries: must be >= 0, got {self.retries}")
        self.session.headers.setdefault("User-Agent", "cryoset (+https://pypi.org/project/cryoset)")

    # ------------------------------------------------------------------ requests
    def _with_retries(self, url: str, action: Callable[[], Any]) -> Any:
        delay = self.backoff_s
        last: str = ""
        for attempt in range(self.retries + 1):
            try:
                return action()
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                last = f"HTTP {status}"
                if status and status < 500 and status != 429:
                    raise DownloadError(url, f"the server answered {last}") from None
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                last = f"{type(exc).__name__}"
            if attempt < self.retries:
                self.sleep(delay)
                delay *= 2
        raise DownloadError(url, f"failed after {self.retries + 1} attempts (last: {last})")

    def get_bytes(self, url: str, *, cache_name: str | None = None) -> bytes:
        """GET a small resource (metadata), cached under ``cache_name`` when given."""
        cached = self.cache_dir / "metadata" / cache_name if cache_name else None
        if cached is not None and cached.exists():
            return cached.read_bytes()
        data = self._fetch_bytes(url)
        if cached is not None:
            write_bytes_atomic(cached, data)
        return data

    def _fetch_bytes(self, url: str) -> bytes:
        if self.offline:
            raise DownloadError(url, "offline mode and not in the cache")

        def action() -> bytes:
            resp = self.session.get(url, timeout=self.timeout_s)
            resp.raise_for_status()
            return resp.content

        data: bytes = self._with_retries(url, action)
        return data

    def get_json(self, url: str, *, cache_name: str | None = None) -> Any:
        """GET (always from the server) and parse JSON; a truncated or invalid body is a clear
        error and is not cached; a valid one is stored under ``cache_name`` when given."""
        data = self._fetch_bytes(url)
        parsed = _parse_json(url, data)
        if cache_name:
            write_bytes_atomic(self.cache_dir / "metadata" / cache_name, data)
        return parsed

    def get_json_cached(self, url: str, cache_name: str) -> Any:
        """Like :meth:`get_json`, but serve from the cache when present (always when offline)."""
        cached = self.cache_dir / "metadata" / cache_name
        if cached.exists():
            return _parse_json(str(cached), cached.read_bytes())
        return self.get_json(url, cache_name=cache_name)

    # ----------------------------------------------------------------- downloads
    def resolve(self, dest: str | os.PathLike[str]) -> Path:
        p = Path(dest)
        return p if p.is_absolute() else self.cache_dir / p

    def download(self, req: DownloadRequest, progress: ProgressCallback | None = None) -> Path:
        """Fetch one file (resuming a partial one), verify it and move it into place."""
        final = self.resolve(req.dest)
        stored = final.with_name(final.name + ".gz") if req.decompress_gzip else final
        if final.exists() and (req.decompress_gzip or _matches(stored, req)):
            return final
        if self.offline:
            raise DownloadError(req.url, f"offline mode and {final} is not in the cache")
        stored.parent.mkdir(parents=True, exist_ok=True)
        part = stored.with_name(stored.name + ".part")
        total: int | None = self._with_retries(req.url, lambda: self._fetch_into(req, part, progress))
        size = part.stat().st_size
        expected = req.size_bytes if req.size_bytes is not None else total
        if expected is not None and size != expected:
            part.unlink(missing_ok=True)
            raise DownloadError(req.url, f"size mismatch: got {size} bytes, expected {expected}")
        if req.checksum:
            _verify_checksum(req.url, part, req.checksum)
        os.replace(part, stored)
        if req.decompress_gzip:
            tmp = final.with_name(final.name + ".unzip.part")
            try:
                with gzip.open(stored, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, self.chunk_bytes)
            except (OSError, EOFError) as exc:
                tmp.unlink(missing_ok=True)
                raise DownloadError(req.url, f"not a valid gzip file ({exc})") from None
            os.replace(tmp, final)
        return final

    def _fetch_into(self, req: DownloadRequest, part: Path, progress: ProgressCallback | None) -> int | None:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self.session.get(req.url, headers=headers, stream=True, timeout=self.timeout_s) as resp:
            if resp.status_code == 416 and have:
                # Range not satisfiable: what we have may already be everything.
                if have == (_total_from_headers(resp) or have):
                    return have
                part.unlink()
                raise requests.ConnectionError("range not satisfiable; restarting")
            resp.raise_for_status()
            if have and resp.status_code == 200:
                have = 0  # server ignored the range: start again
            mode = "ab" if have else "wb"
            total: int | None = _total_from_headers(resp)
            if total is None and resp.headers.get("Content-Length") is not None:
                total = have + int(resp.headers["Content-Length"])
            done = have
            with open(part, mode) as fh:
                for chunk in resp.iter_content(self.chunk_bytes):
                    fh.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(req.url, done, total)
            if total is not None and done < total:
                raise requests.exceptions.ChunkedEncodingError(f"connection closed at {done} of {total} bytes")
            return total

    def download_many(self, requests_: Iterable[DownloadRequest], *, workers: int = 4,
                      progress: ProgressCallback | None = None) -> list[Path]:
        """Download several files in parallel threads; results in input order."""
        reqs = list(requests_)
        if workers < 1:
            raise ValueError(f"workers: must be >= 1, got {workers}")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda r: self.download(r, progress), reqs))


def _parse_json(source: str, data: bytes) -> Any:
    """Parse JSON bytes; invalid or truncated text is a :class:`DownloadError` naming ``source``."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise DownloadError(source, f"the answer is not valid JSON ({exc.msg} at byte {exc.pos})") from None
    except UnicodeDecodeError:
        raise DownloadError(source, "the answer is not valid JSON (not UTF-8 text)") from None


def _total_from_headers(resp: requests.Response) -> int | None:
    cr = resp.headers.get("Content-Range")
    if cr and "/" in cr:
        tail = cr.rsplit("/", 1)[1].strip()
        if tail.isdigit():
            return int(tail)
    if resp.status_code == 200 and resp.headers.get("Content-Length", "").isdigit():
        return int(resp.headers["Content-Length"])
    return None


def _hasher(checksum: str) -> tuple[Any, str]:
    algo, _, digest = checksum.partition(":")
    algo = algo.lower()
    if algo not in {"sha256", "md5", "sha1"} or not digest:
        raise ValueError(f"checksum: expected 'sha256:<hex>' or 'md5:<hex>', got {checksum!r}")
    return hashlib.new(algo), digest.lower()


def _verify_checksum(url: str, path: Path, checksum: str) -> None:
    h, digest = _hasher(checksum)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    if h.hexdigest() != digest:
        path.unlink(missing_ok=True)
        raise DownloadError(url, f"checksum mismatch: got {h.name}:{h.hexdigest()}, expected {checksum}")


def _matches(path: Path, req: DownloadRequest) -> bool:
    if not path.exists():
        return False
    if req.size_bytes is not None and path.stat().st_size != req.size_bytes:
        return False
    if req.checksum:
        h, digest = _hasher(req.checksum)
        with contextlib.suppress(OSError), open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return bool(h.hexdigest() == digest)
    return True
