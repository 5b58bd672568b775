"""A local HTTP server on 127.0.0.1 that mimics archive endpoints, for tests and demos.

Serves fixture responses from a dict ``path -> Route``, honours ``Range`` requests, and
can inject failures: drop the connection part-way through a body, answer an error status
for the first N requests, serve a body truncated on purpose, redirect anywhere (another
host, ``file://``, …) or send a body with no ``Content-Length`` (chunked). Bounded: it only serves
while the context manager is open and binds to the loopback address only.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """What the server answers for one path.

    Parameters
    ----------
    body
        The full content.
    content_type
        MIME type.
    status
        Status to answer (404, 500, …) instead of the body.
    fail_first
        Answer ``fail_status`` for this many requests before serving normally.
    drop_after_bytes
        On the first full-body request, send the headers for the whole body but close the
        connection after this many bytes.
    ranges
        Honour ``Range`` requests.
    redirect_to
        Answer ``redirect_status`` with this ``Location`` instead of the body.
    chunked
        Send the body with ``Transfer-Encoding: chunked`` and no ``Content-Length``.
    """

    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    fail_first: int = 0
    fail_status: int = 500
    drop_after_bytes: int | None = None
    ranges: bool = True
    redirect_to: str | None = None
    redirect_status: int = 302
    chunked: bool = False
    hits: int = field(default=0, init=False)
    range_requests: list[str] = field(default_factory=list, init=False)


def _make_handler(routes: dict[str, Route], lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            route = routes.get(path)
            if route is None:
                self._plain(404, b"not found")
                return
            with lock:
                route.hits += 1
                hit = route.hits
            if route.redirect_to is not None:
                self.send_response(route.redirect_status)
                self.send_header("Location", route.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route.status != 200:
                self._plain(route.status, b"error")
                return
            if route.chunked:
                self._chunked(route)
                return
            if hit <= route.fail_first:
                self._plain(route.fail_status, b"transient error")
                return
            body = route.body
            start = 0
            rng = self.headers.get("Range")
            if rng and route.ranges and rng.startswith("bytes="):
                route.range_requests.append(rng)
                start = int(rng[6:].split("-", 1)[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
            self.end_headers()
            payload = body[start:]
            if route.drop_after_bytes is not None and start == 0 and hit == route.fail_first + 1:
                self.wfile.write(payload[: route.drop_after_bytes])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            with contextlib.suppress(ConnectionError):  # a client that stops reading early
                self.wfile.write(payload)

        def _chunked(self, route: Route) -> None:
            self.send_response(200)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            step = 1 << 16
            with contextlib.suppress(ConnectionError):  # a client that stops reading early
                for start in range(0, len(route.body), step):
                    piece = route.body[start:start + step]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

        def _plain(self, status: int, text: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

    return Handler


@contextlib.contextmanager
def serve(routes: dict[str, Route]) -> Iterator[str]:
    """Serve ``routes`` on 127.0.0.1 (a free port); yield the base URL ``http://127.0.0.1:PORT``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(routes, threading.Lock()))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
