"""Tiny loopback HTTP(S) servers for redirect tests: each records the requests it got.

A server answers with a function of the request (method, path with query, lower-case
headers) -> (status, headers, body). Two of them on different ports are two origins.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names


Answer = tuple[int, dict[str, str], bytes]
Handler = Callable[[Seen], Answer]


@dataclass
class Server:
    url: str  # scheme://127.0.0.1:port
    seen: list[Seen] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def headers_named(self, name: str) -> list[str]:
        """The values of header ``name`` over every request this server got."""
        return [s.headers[name.lower()] for s in self.seen if name.lower() in s.headers]


@contextmanager
def serve(handler: Handler, tls: tuple[Path, Path] | None = None) -> Iterator[Server]:
    """Serve ``handler`` on a free loopback port (https with ``tls`` = (cert, key))."""
    record: list[Seen] = []

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
            record.append(seen)
            status, headers, body = handler(seen)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    with running(server) as port:
        yield Server(f"{scheme}://127.0.0.1:{port}", record)


@contextmanager
def running(server: ThreadingHTTPServer) -> Iterator[int]:
    """Serve ``server`` from a thread while the block runs; its port. Shut down after."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def presigned_storage(blobs: Callable[[str], bytes | None]) -> Handler:
    """Storage like S3 behind a presigned URL: it refuses a request that carries an
    ``Authorization`` header (or a cookie) besides the signature in its query."""

    def answer(seen: Seen) -> Answer:
        if "authorization" in seen.headers or "cookie" in seen.headers:
            body = (
                b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed;"
                b" only the X-Amz-Algorithm query parameter, Signature query string parameter"
                b" or the Authorization header should be specified</Message></Error>"
            )
            return 400, {"Content-Type": "application/xml"}, body
        if "X-Amz-Signature=" not in seen.path:
            return 403, {"Content-Type": "application/xml"}, b"<Error><Code>AccessDenied</Code>"
        data = blobs(seen.path.split("?", 1)[0])
        if data is None:
            return 404, {}, b"<Error><Code>NoSuchKey</Code></Error>"
        return 200, {"Content-Type": "application/octet-stream"}, data

    return answer
