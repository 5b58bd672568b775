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
* **Contained**: every file lands inside the cache directory. Names that come from a
  server (directory listings, record listings) go through :func:`safe_relative_path`
  (percent-decoded, then refused when absolute, with a drive letter or a backslash, or
  with a ``..`` component) and :func:`contained_path` (the normalised path must stay
  strictly inside its root); :meth:`HttpClient.resolve` applies both to every download.
* **Bounded** (:class:`Limits`): only ``http://`` and ``https://`` URLs are fetched;
  redirects may not leave the host nor go from https to http, nor to any other scheme;
  a response larger than the cap (announced by ``Content-Length`` or counted while
  streaming) is refused; a ``.gz`` is expanded no further than its MRC header declares,
  or, for other content, than the expansion-ratio cap.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import json
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import requests

from cryoset.errors import InputError
from cryoset.io.atomic import write_bytes_atomic

#: Called with (url, bytes_done, bytes_total or None) as a download progresses.
ProgressCallback = Callable[[str, int, int | None], None]

_GB = 10**9
_MIB = 1 << 20
#: Schemes a URL (or a redirect) may use.
ALLOWED_SCHEMES = ("http", "https")
#: Percent-decoding rounds checked before a name must be stable (``%252e`` → ``%2e`` → ``.``).
_DECODE_ROUNDS = 4
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class DownloadError(InputError):
    """A download that failed for good (after retries), or failed verification."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(url, message)
        self.url = url


class UnsafePathError(InputError):
    """A name from a server (or an archive) that would be written outside its directory."""


@dataclass(frozen=True)
class Limits:
    """Caps on what a server or an archive can make us fetch and write.

    Parameters
    ----------
    max_download_bytes
        Largest file a download may have (``Content-Length``, the archive's listed size, or
        the bytes counted while streaming). Default 500 GB.
    max_metadata_bytes
        Largest metadata answer (JSON, XML, directory index, FASTA). Default 64 MiB.
    max_expanded_bytes
        Largest decompressed ``.gz`` download, and largest total size of an archive's
        members. Default 1 TB.
    max_expansion_ratio
        Largest decompressed / compressed size ratio of content that does not declare its
        own size (a ``.gz`` that is not an MRC map; a compressed tar's stream; a ZIP's
        members against the archive); checked once the output passes ``expansion_floor_bytes``.
    expansion_floor_bytes
        Output below this size is never refused for its ratio.
    max_members
        Most members an archive may have.
    max_redirects
        Most redirects one request may follow.
    """

    max_download_bytes: int = 500 * _GB
    max_metadata_bytes: int = 64 * _MIB
    max_expanded_bytes: int = 1000 * _GB
    max_expansion_ratio: float = 200.0
    expansion_floor_bytes: int = 16 * _MIB
    max_members: int = 1_000_000
    max_redirects: int = 10

    def __post_init__(self) -> None:
        for name in ("max_download_bytes", "max_metadata_bytes", "max_expanded_bytes", "max_members"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.max_expansion_ratio >= 1:
            raise ValueError(f"max_expansion_ratio: must be >= 1, got {self.max_expansion_ratio}")
        if self.expansion_floor_bytes < 0 or self.max_redirects < 0:
            raise ValueError("expansion_floor_bytes and max_redirects: must be >= 0")

    def expansion_cap(self, compressed_bytes: int) -> int:
        """Most bytes ``compressed_bytes`` of self-undescribed content may expand to."""
        by_ratio = int(self.max_expansion_ratio * compressed_bytes)
        return min(self.max_expanded_bytes, max(self.expansion_floor_bytes, by_ratio))


def human_bytes(n: int) -> str:
    """``1234567`` → ``"1.2 MB"`` (decimal units), for messages."""
    value = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} bytes"  # pragma: no cover - the loop always returns


# --------------------------------------------------------------------- safe names
def _check_stage(original: str, text: str, source: str) -> None:
    shown = original if text == original else f"{original} (decoded: {text})"
    if _CONTROL.search(text):
        raise UnsafePathError(source, f"name {shown!r} contains a control character; refusing it")
    if "\\" in text:
        raise UnsafePathError(source, f"name {shown!r} contains a backslash; refusing it")
    if text.startswith("/") or _DRIVE.match(text):
        raise UnsafePathError(source, f"name {shown!r} is an absolute path; refusing to write it")
    if any(part == ".." for part in text.split("/")):
        raise UnsafePathError(source, f"name {shown!r} would be written outside the destination; refusing it")


def safe_relative_path(name: str | os.PathLike[str], *, source: str,
                       percent_encoded: bool = False) -> PurePosixPath:
    """The relative path ``name`` stands for, refusing anything that could leave its directory.

    The one check every downloader and the archive extractor use for names that come from
    outside (directory listings, record listings, archive members).

    Parameters
    ----------
    name
        A ``/``-separated relative path.
    source
        Where the name came from (the listing URL, the archive), for the message.
    percent_encoded
        ``name`` is a link target: it is percent-decoded once to get the file name, and every
        further decoding is checked too (``%252e%252e`` is refused like ``..``).

    Returns
    -------
    PurePosixPath
        The (decoded) relative path, without ``.`` or empty components.

    Raises
    ------
    UnsafePathError
        An absolute path, a drive letter, a backslash, a ``..`` component, a control
        character, or a name that is empty or still changes after several decodings.
    """
    original = os.fspath(name)
    text = unquote(original) if percent_encoded else original
    _check_stage(original, text, source)
    if percent_encoded:
        stage = text
        for _ in range(_DECODE_ROUNDS):
            decoded = unquote(stage)
            if decoded == stage:
                break
            _check_stage(original, decoded, source)
            stage = decoded
        else:
            raise UnsafePathError(source, f"name {original!r} is percent-encoded too many times; refusing it")
    pure = PurePosixPath(text)
    if not pure.parts or pure == PurePosixPath("."):
        raise UnsafePathError(source, f"name {original!r} names no file; refusing it")
    return pure


def contained_path(root: str | os.PathLike[str], name: str | os.PathLike[str], *, source: str) -> Path:
    """``root / name``, refused unless its normalised form lies strictly inside ``root``.

    ``name`` goes through :func:`safe_relative_path` first (as a literal name). The check is
    lexical: symbolic links a user made inside ``root`` are followed as usual (downloads and
    extraction never create links).
    """
    pure = safe_relative_path(name, source=source)
    base = os.path.abspath(root)
    target = os.path.abspath(os.path.join(base, *pure.parts))
    if os.path.commonpath([base, target]) != base or target == base:
        raise UnsafePathError(source, f"name {os.fspath(name)!r} would be written outside {root}; refusing it")
    return Path(root).joinpath(*pure.parts)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def listing_names(index: bytes, *, source: str) -> list[tuple[PurePosixPath, bool]]:
    """Entries of an HTML directory index: ``(relative path, is_directory)`` per link.

    Navigation links are skipped (the parent ``../``, ``./``, sort links ``?…``, anchors,
    absolute paths ``/…`` and links to other sites); every other link target is decoded
    and checked with :func:`safe_relative_path` — one that would leave the directory makes
    the listing refused (:class:`UnsafePathError`), since only a broken or hostile server
    writes such a link.
    """
    parser = _Links()
    parser.feed(index.decode("utf-8", "replace"))
    out: list[tuple[PurePosixPath, bool]] = []
    for href in parser.hrefs:
        if href.startswith(("?", "#", "/")) or href in (".", "./", "..") or href.startswith("../"):
            continue
        try:
            parts = urlsplit(href)
        except ValueError:
            raise UnsafePathError(source, f"name {href!r} is not a valid link; refusing the listing") from None
        if len(parts.scheme) > 1 or parts.netloc:
            continue  # another site (http://…, mailto:…); a one-letter "scheme" is a drive letter
        target = href if len(parts.scheme) == 1 else parts.path
        if not target:
            continue
        name = safe_relative_path(target, source=source, percent_encoded=True)
        out.append((name, unquote(target).endswith("/")))
    return out


# ----------------------------------------------------------------------- URL policy
def check_url(url: str) -> None:
    """Refuse a URL that is not ``http://`` or ``https://`` with a host (one-line :class:`DownloadError`)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise DownloadError(url, f"not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise DownloadError(url, f"only http:// and https:// URLs are fetched, not {shown}")
    if not host:
        raise DownloadError(url, "the URL has no host")


def _authority(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port if port is not None else {"http": 80, "https": 443}.get(scheme)


def redirect_refusal(origin: str, target: str, allowed_hosts: Iterable[str] = ()) -> str | None:
    """Why a redirect from ``origin`` to ``target`` is refused, or None when it may be followed.

    Followed: the same scheme, host and port; an http → https upgrade on the same host; or
    an https target whose host matches one of ``allowed_hosts`` (``fnmatch`` patterns).
    Refused: any other scheme (``file://``, ``ftp://``, …), https → http, another host or port.
    """
    try:
        o_scheme, o_host, o_port = _authority(origin)
        t_scheme, t_host, t_port = _authority(target)
    except ValueError as exc:
        return f"redirected to an invalid URL {target!r} ({exc})"
    if t_scheme not in ALLOWED_SCHEMES:
        shown = f"a {t_scheme}:// URL" if t_scheme else f"{target!r}"
        return f"redirected to {shown}; only http(s) redirects are followed"
    if o_scheme == "https" and t_scheme == "http":
        return f"redirected from https to http ({target}); refusing the downgrade"
    if not t_host:
        return f"redirected to {target!r}, which has no host"
    if t_scheme == "https" and t_host != o_host and any(fnmatch.fnmatch(t_host, p.lower()) for p in allowed_hosts):
        return None
    if t_host != o_host:
        return f"redirected to another host ({t_host}); refusing it"
    if t_scheme == o_scheme and t_port != o_port:
        return f"redirected to another port ({t_host}:{t_port}); refusing it"
    return None


# ------------------------------------------------------------------ decompression
_MRC_BITS = {0: 8, 1: 16, 2: 32, 3: 32, 4: 64, 6: 16, 12: 16}


def mrc_size_from_header(head: bytes) -> int | None:
    """The file size an MRC2014 header (first 1024 bytes) declares, or None when it is not one."""
    if len(head) < 1024 or head[208:212] != b"MAP ":
        return None
    endian = ">" if head[212] == 0x11 else "<"
    nx, ny, nz, mode = struct.unpack(endian + "4i", head[:16])
    (nsymbt,) = struct.unpack(endian + "i", head[92:96])
    if min(nx, ny, nz) <= 0 or nsymbt < 0:
        return None
    if mode == 101:  # 4-bit, two voxels a byte, each row padded to a whole byte
        data = ny * nz * ((nx + 1) // 2)
    elif mode in _MRC_BITS:
        data = nx * ny * nz * _MRC_BITS[mode] // 8
    else:
        return None
    return 1024 + nsymbt + data


def gunzip_bounded(url: str, src: Path, dst: Path, limits: Limits, chunk_bytes: int = _MIB) -> int:
    """Decompress the gzip file ``src`` to ``dst`` without letting it expand without bound.

    An MRC map may expand to exactly the size its header declares (at most
    ``limits.max_expanded_bytes``); other content to :meth:`Limits.expansion_cap` of the
    compressed size. ``dst`` is removed when the data is refused or invalid.

    Returns
    -------
    int
        The decompressed size in bytes.
    """
    compressed = src.stat().st_size
    cap = limits.expansion_cap(compressed)
    what = f"the {human_bytes(cap)} expansion limit ({limits.max_expansion_ratio:g}× its compressed size)"
    done = 0
    try:
        with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
            head = fin.read(1024)
            declared = mrc_size_from_header(head)
            if declared is not None:
                if declared > limits.max_expanded_bytes:
                    raise DownloadError(url, f"its MRC header declares {human_bytes(declared)}, more than the "
                                        f"{human_bytes(limits.max_expanded_bytes)} limit; refusing to decompress")
                cap, what = declared, f"the {declared} bytes its MRC header declares"
            while head:
                done += len(head)
                if done > cap:
                    raise DownloadError(url, f"decompresses beyond {what}; refusing it (a decompression bomb?)")
                fout.write(head)
                head = fin.read(min(chunk_bytes, cap + 1 - done))
    except (OSError, EOFError, zlib.error) as exc:
        dst.unlink(missing_ok=True)
        raise DownloadError(url, f"not a valid gzip file ({exc})") from None
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    return done


# --------------------------------------------------------------------- downloads
@dataclass(frozen=True)
class DownloadRequest:
    """One file to fetch.

    Parameters
    ----------
    url
        Where to get it.
    dest
        Final path, relative to the client's cache directory (it must stay inside it).
    size_bytes
        Expected size, when the archive says.
    checksum
        ``"sha256:<hex>"`` or ``"md5:<hex>"``, when the archive gives one.
    decompress_gzip
        Store the gunzipped content at ``dest`` (the ``.gz`` stays in the cache as the
        resumable download).
    redirect_hosts
        Extra hosts (``fnmatch`` patterns) an https redirect may go to, for hosts known to
        hand files out from a storage service.
    """

    url: str
    dest: Path
    size_bytes: int | None = None
    checksum: str | None = None
    decompress_gzip: bool = False
    redirect_hosts: tuple[str, ...] = ()


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
    limits
        Size, expansion and redirect caps (:class:`Limits`).
    """

    cache_dir: Path
    offline: bool = False
    retries: int = 4
    backoff_s: float = 0.5
    timeout_s: float = 60.0
    chunk_bytes: int = 1 << 20
    limits: Limits = field(default_factory=Limits)
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
            except requests.exceptions.InvalidURL as exc:
                raise DownloadError(url, f"not a valid URL ({exc})") from None
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                last = f"{type(exc).__name__}"
            if attempt < self.retries:
                self.sleep(delay)
                delay *= 2
        raise DownloadError(url, f"failed after {self.retries + 1} attempts (last: {last})")

    @contextlib.contextmanager
    def _get(self, url: str, headers: dict[str, str] | None = None,
             redirect_hosts: Iterable[str] = ()) -> Iterator[requests.Response]:
        """A streamed GET that follows redirects itself, each one checked (:func:`redirect_refusal`)."""
        check_url(url)
        wanted = {"Accept-Encoding": "identity", **(headers or {})}
        current = url
        for _ in range(self.limits.max_redirects + 1):
            resp = self.session.get(current, headers=wanted, stream=True, timeout=self.timeout_s,
                                    allow_redirects=False)
            if not resp.is_redirect:
                if 300 <= resp.status_code < 400:
                    resp.close()
                    raise DownloadError(url, f"the server answered HTTP {resp.status_code} without a usable Location")
                try:
                    yield resp
                finally:
                    resp.close()
                return
            target = urljoin(current, resp.headers["Location"])
            resp.close()
            why = redirect_refusal(current, target, redirect_hosts)
            if why is not None:
                raise DownloadError(url, why)
            current = target
        raise DownloadError(url, f"more than {self.limits.max_redirects} redirects; refusing to follow more")

    def get_bytes(self, url: str, *, cache_name: str | None = None) -> bytes:
        """GET a small resource (metadata), cached under ``cache_name`` when given."""
        cached = self._metadata_path(cache_name) if cache_name else None
        if cached is not None and cached.exists():
            return cached.read_bytes()
        data = self._fetch_bytes(url)
        if cached is not None:
            write_bytes_atomic(cached, data)
        return data

    def _metadata_path(self, cache_name: str) -> Path:
        return contained_path(self.cache_dir / "metadata", cache_name, source="metadata cache")

    def _fetch_bytes(self, url: str) -> bytes:
        if self.offline:
            raise DownloadError(url, "offline mode and not in the cache")
        cap = self.limits.max_metadata_bytes

        def too_big(size: str) -> DownloadError:
            return DownloadError(url, f"the answer is {size}, more than the {human_bytes(cap)} metadata limit; "
                                 "refusing it")

        def action() -> bytes:
            with self._get(url) as resp:
                resp.raise_for_status()
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise too_big(human_bytes(int(declared)))
                buf = bytearray()
                for chunk in resp.iter_content(64 * 1024):
                    buf += chunk
                    if len(buf) > cap:
                        raise too_big("larger")
                return bytes(buf)

        data: bytes = self._with_retries(url, action)
        return data

    def get_json(self, url: str, *, cache_name: str | None = None) -> Any:
        """GET (always from the server) and parse JSON; a truncated or invalid body is a clear
        error and is not cached; a valid one is stored under ``cache_name`` when given."""
        data = self._fetch_bytes(url)
        parsed = _parse_json(url, data)
        if cache_name:
            write_bytes_atomic(self._metadata_path(cache_name), data)
        return parsed

    def get_json_cached(self, url: str, cache_name: str) -> Any:
        """Like :meth:`get_json`, but serve from the cache when present (always when offline)."""
        cached = self._metadata_path(cache_name)
        if cached.exists():
            return _parse_json(str(cached), cached.read_bytes())
        return self.get_json(url, cache_name=cache_name)

    # ----------------------------------------------------------------- downloads
    def resolve(self, dest: str | os.PathLike[str]) -> Path:
        """``dest`` under the cache directory; :class:`UnsafePathError` when it would leave it."""
        return contained_path(self.cache_dir, dest, source=str(dest))

    def download(self, req: DownloadRequest, progress: ProgressCallback | None = None) -> Path:
        """Fetch one file (resuming a partial one), verify it and move it into place."""
        final = self.resolve(req.dest)
        stored = final.with_name(final.name + ".gz") if req.decompress_gzip else final
        if final.exists() and (req.decompress_gzip or _matches(stored, req)):
            return final
        if self.offline:
            raise DownloadError(req.url, f"offline mode and {final} is not in the cache")
        check_url(req.url)
        cap = self.limits.max_download_bytes
        if req.size_bytes is not None and req.size_bytes > cap:
            raise DownloadError(req.url, f"the archive lists {human_bytes(req.size_bytes)}, more than the "
                                f"{human_bytes(cap)} download limit; refusing it")
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
                gunzip_bounded(req.url, stored, tmp, self.limits, self.chunk_bytes)
            except DownloadError:
                stored.unlink(missing_ok=True)  # refused or corrupt: not worth keeping as a cache
                raise
            os.replace(tmp, final)
        return final

    def _fetch_into(self, req: DownloadRequest, part: Path, progress: ProgressCallback | None) -> int | None:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        cap = self.limits.max_download_bytes

        def refuse(size: str) -> DownloadError:
            part.unlink(missing_ok=True)
            return DownloadError(req.url, f"the file is {size}, more than the {human_bytes(cap)} download limit; "
                                 "refusing it")

        with self._get(req.url, headers, req.redirect_hosts) as resp:
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
            if total is None and resp.headers.get("Content-Length", "").isdigit():
                total = have + int(resp.headers["Content-Length"])
            if total is not None and total > cap:
                raise refuse(human_bytes(total))
            done = have
            with open(part, mode) as fh:
                for chunk in resp.iter_content(self.chunk_bytes):
                    done += len(chunk)
                    if done > cap:
                        break
                    fh.write(chunk)
                    if progress is not None:
                        progress(req.url, done, total)
            if done > cap:  # a body without (or beyond) Content-Length: stop reading, keep nothing
                raise refuse("larger")
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
