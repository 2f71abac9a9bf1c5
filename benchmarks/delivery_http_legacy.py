"""The delivery HTTP transport as it was before issue 12 (``http.server``), kept only for
``benchmarks/delivery_http.py`` to compare with. Not used by Ajour; do not fix it here.

The original docstring:

The HTTP transport: Drogue-compatible ``POST /v1/dfu``, plus status as JSON.

``POST /v1/dfu?application=<app>&device=<dev>&ct=<s>`` with the CBOR status as the body
(the device may instead be named by its basic-auth username ``device@app``) answers 200
with the CBOR command (``application/cbor``). ``GET /v1/status[/<app>[/<device>]]`` lists
what the status store observed. Standard library server, one thread per connection.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import TypeAdapter, ValidationError

from ajour_build.core.wire import DeviceReport, PublishEvent
from delivery import device_auth
from delivery.protocol import MAX_STATUS_BYTES
from delivery.worker import Worker

REPORTS = TypeAdapter(list[DeviceReport])
log = logging.getLogger("delivery.http")
CBOR = "application/cbor"


@dataclass
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8081
    authenticate: bool = True  # only --insecure-no-auth turns it off, for demos
    events_token: str = ""  # when set, POST /v1/events needs "Authorization: Bearer <it>"


def _changed(data: Any) -> list[tuple[str, str]]:
    """(image, tag) pairs named by an Ajour publish event or a registry notification."""
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        out = []
        for event in data["events"]:
            if not isinstance(event, dict) or event.get("action") != "push":
                continue
            target, request = event.get("target") or {}, event.get("request") or {}
            repo, host = target.get("repository"), request.get("host")
            if isinstance(repo, str) and isinstance(host, str):
                out.append((f"{host}/{repo}", str(target.get("tag") or "")))
        return out
    try:
        event = PublishEvent.model_validate(data)
    except ValidationError:
        return []
    return [(event.image, event.tag)]


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # headers and body are separate writes: without this, Nagle plus delayed ACKs
        # stall every keep-alive exchange by ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _reply(self, code: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, message: str) -> None:
        self._reply(code, (message + "\n").encode())

    def do_GET(self) -> None:
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if parts[:2] != ["v1", "status"] or len(parts) > 4:
            self._error(404, "not found: use POST /v1/dfu or GET /v1/status[/<app>[/<device>]]")
            return
        rows = self.server.worker.statuses(parts[2] if len(parts) > 2 else None)
        if len(parts) == 4:
            rows = [r for r in rows if r.device == parts[3]]
            if not rows:
                self._error(404, f"device {parts[3]!r} is not in application {parts[2]!r}")
                return
        data = REPORTS.dump_json([r.report() for r in rows], by_alias=True)
        self._reply(200, data, "application/json")

    def _events(self) -> None:
        """A publish event ``{image, tag, …}`` or a registry notification envelope."""
        token = self.server.settings.events_token
        given = self.headers.get("Authorization", "")
        if token and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            self._error(401, "events need the bearer token configured for this worker")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > 1024 * 1024:
            self._error(413, "event batch over 1 MiB")
            return
        try:
            data = json.loads(self.rfile.read(length))
        except ValueError:
            self._error(400, "events must be JSON")
            return
        dropped = 0
        for image, tag in _changed(data):
            dropped += self.server.worker.targets.invalidate(image, tag)
        self.server.worker.counters.add("events")
        self._reply(200, json.dumps({"invalidated": dropped}).encode(), "application/json")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/v1/events":
            self._events()
            return
        if url.path != "/v1/dfu":
            self._error(404, "not found: POST /v1/dfu?application=<app>&device=<device>")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_STATUS_BYTES:
            self._error(413, f"status is {length} bytes; the limit is {MAX_STATUS_BYTES}")
            return
        body = self.rfile.read(length)
        query = parse_qs(url.query)
        app = (query.get("application") or [""])[0]
        device = (query.get("device") or [""])[0]
        creds = _basic(self.headers.get("Authorization"))
        if creds and "@" in creds[0] and not device:
            device, app = creds[0].rsplit("@", 1)
        if not app or not device:
            self._error(
                400,
                "name the device: ?application=<app>&device=<device>,"
                " or basic auth as <device>@<app>",
            )
            return
        worker = self.server.worker
        if not worker.targets.knows(app, device):
            worker.counters.add("unknown_device")
            self._error(404, f"unknown device {device!r} of application {app!r}")
            return
        if self.server.settings.authenticate and not self._authorized(app, device, creds):
            worker.counters.add("unauthorized")
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="ajour"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        reply = worker.handle(app, device, body)
        if reply is None:
            self._error(400, "the status is not a valid embedded-update CBOR Status")
            return
        self._reply(200, reply, CBOR)

    def _authorized(self, app: str, device: str, creds: tuple[str, str] | None) -> bool:
        if creds is None:
            return False
        user, password = creds
        spec = self.server.worker.targets.fleet.devices[(app, device)].credentials
        username = None if user in (device, f"{device}@{app}") else user
        return device_auth.check(spec, password, username)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connects from busy fleets

    def __init__(self, worker: Worker, settings: HttpSettings) -> None:
        self.worker = worker
        self.settings = settings
        super().__init__((settings.host, settings.port), _Handler)


class HttpTransport:
    """Serves the worker over HTTP in a background thread."""

    def __init__(self, worker: Worker, settings: HttpSettings) -> None:
        self.server = _Server(worker, settings)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
