"""The HTTP transport: Drogue-compatible ``POST /v1/dfu``, status as JSON, publish events.

``POST /v1/dfu?application=<app>&device=<dev>&ct=<s>`` with the CBOR status as the body
(the device may instead be named by its basic-auth username ``device@app``, or by its TLS
client certificate) answers 200 with the CBOR command (``application/cbor``).
``GET /v1/status[/<app>[/<device>]]`` lists what the status store observed, and
``POST /v1/events`` takes a publish event or a registry notification; both need their
bearer token. ``/v1/rollouts`` is :mod:`delivery.rollout_api` (status and operator tokens).
The server is :mod:`delivery.httpd` (h11 on asyncio, bounded, with deadlines); the choice
is explained in docs/delivery.md.

Who is asked for what:

* devices: their spec's credentials (basic auth, compared in constant time), or a client
  certificate whose CN or a subjectAltName is ``<device>@<app>``; an unknown device gets
  the same 401 as a wrong password, after the same kind of comparison;
* ``/v1/status`` and ``/v1/events``: ``Authorization: Bearer <token>``, the status token
  and the events token (a registry sends it from ``notifications.endpoints[].headers``);
  without a configured token the endpoint refuses everyone;
* ``authenticate=False`` (``--insecure-no-auth``, loopback only) turns all of this off.

``GET /healthz`` and ``GET /readyz`` are the probes, open to everyone and telling nothing
but ``ok``: ``/healthz`` is answered by the event loop (the process serves), ``/readyz`` by
the handler pool (a device's request would be answered now).

Other routes (``GET /metrics``) plug in with :meth:`HttpTransport.add_route`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pydantic import TypeAdapter, ValidationError

from ajour_build.core.hosts import is_loopback
from ajour_build.core.listener import listen
from ajour_build.core.wire import EVENTS_TOKEN_ENV, STATUS_TOKEN_ENV, DeviceReport, PublishEvent
from delivery import device_auth
from delivery.errors import DeliveryError
from delivery.http_exchange import Accept, Limits, Request, Response, tls_context
from delivery.httpd import Server
from delivery.protocol import MAX_STATUS_BYTES
from delivery.rollout_api import ROLLOUTS, RolloutApi
from delivery.worker import Worker

REPORTS = TypeAdapter(list[DeviceReport])
log = logging.getLogger("delivery.http")
CBOR = "application/cbor"
JSON = "application/json"
MAX_EVENTS_BYTES = 1024 * 1024
PROBES = ("/healthz", "/readyz")  # open: no token, and an answer that names nothing
PROBE_OK = b'{"status":"ok"}'

Handler = Callable[[Request, bytes], Response]

__all__ = [
    "EVENTS_TOKEN_ENV",
    "STATUS_TOKEN_ENV",
    "Handler",
    "HttpSettings",
    "HttpTransport",
    "Limits",
    "Request",
    "Response",
    "TlsSettings",
]


@dataclass(frozen=True)
class TlsSettings:
    cert: Path
    key: Path
    client_ca: Path | None = None  # verify client certificates; CN/SAN <device>@<app>


@dataclass
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8081
    authenticate: bool = True  # only --insecure-no-auth turns it off, on loopback
    events_token: str = field(default="", repr=False)  # POST /v1/events: Bearer <it>
    status_token: str = field(default="", repr=False)  # GET /v1/status: Bearer <it>
    operator_token: str = field(default="", repr=False)  # POST /v1/rollouts/…: Bearer <it>
    tls: TlsSettings | None = None
    limits: Limits = field(default_factory=Limits)


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


def _basic(header: str) -> tuple[str, str] | None:
    if not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _bearer_matches(header: str, token: str) -> bool:
    """Constant time in the token and the header (both hashed to the same length first)."""
    scheme, _, given = header.strip().partition(" ")
    ok = hmac.compare_digest(_digest(given.strip()), _digest(token))
    return ok and scheme.lower() == "bearer" and bool(token)


def cert_identities(cert: Mapping[str, Any] | None) -> set[tuple[str, str]]:
    """(application, device) pairs a verified client certificate names as ``device@app``
    (its subject's CN, or an email, DNS or URI subjectAltName)."""
    if not cert:
        return set()
    names: list[str] = []
    for rdn in cert.get("subject", ()):
        names += [value for key, value in rdn if key == "commonName"]
    names += [
        value for kind, value in cert.get("subjectAltName", ()) if kind in ("email", "DNS", "URI")
    ]
    found = set()
    for name in names:
        device, sep, app = str(name).rpartition("@")
        if sep and device and app:
            found.add((app, device))
    return found


UNAUTHORIZED = Response.text(
    401,
    "authenticate the device: basic auth as <device>@<app> (or a username of its credentials"
    " with ?application=&device=) and its password, or a TLS client certificate for"
    " <device>@<app>",
    ("www-authenticate", 'Basic realm="ajour"'),
)


class DeliveryApp:
    """The routes, for :class:`delivery.httpd.Server`."""

    def __init__(self, worker: Worker, settings: HttpSettings) -> None:
        self.worker, self.settings = worker, settings
        self.extra: dict[str, tuple[str, Handler, Callable[[], str], int]] = {}
        # an unknown device's password is compared with a real device's credentials, so
        # both take the same kind of work (whatever device_auth does for that kind)
        self._decoy: Any = next(
            (
                d.credentials
                for d in worker.targets.fleet.devices.values()
                if device_auth.passwords(d.credentials)
            ),
            {"credentials": [{"pass": secrets.token_urlsafe(24)}]},
        )
        self.rollouts = RolloutApi(worker, settings, self._bearer, _bearer_matches)

    # routing, on the event loop: the head only, nothing that blocks -----------------------

    def route(self, request: Request) -> Response | Accept:
        path, method = request.path, request.method
        if path == "/v1/dfu":
            return self._only(method, "POST") or Accept(MAX_STATUS_BYTES, self._dfu)
        if path == "/v1/events":
            return (
                self._only(method, "POST")
                or self._bearer(request, self.settings.events_token, "events", EVENTS_TOKEN_ENV)
                or Accept(MAX_EVENTS_BYTES, self._events)
            )
        if path == "/v1/status" or path.startswith("/v1/status/"):
            return (
                self._only(method, "GET")
                or self._bearer(request, self.settings.status_token, "status", STATUS_TOKEN_ENV)
                or Accept(0, self._status)
            )
        if path == ROLLOUTS or path.startswith(ROLLOUTS + "/"):
            return self.rollouts.route(request)
        if path in PROBES:
            # liveness from the event loop itself; readiness from a free handler thread
            ok = Response(200, PROBE_OK, JSON)
            if path == "/healthz":
                return self._only(method, "GET") or ok
            return self._only(method, "GET") or Accept(0, lambda _request, _body: ok)
        if path in self.extra:
            want, handler, token, max_body = self.extra[path]
            return (
                self._only(method, want)
                or self._bearer(request, token(), path, "")
                or Accept(max_body, handler)
            )
        return Response.text(
            404,
            f"not found: {path}; the routes are POST /v1/dfu?application=<app>&device=<device>,"
            " GET /v1/status[/<app>[/<device>]], POST /v1/events and /v1/rollouts",
        )

    @staticmethod
    def _only(method: str, allowed: str) -> Response | None:
        if method == allowed:
            return None
        return Response.text(
            405, f"{method} is not allowed here; use {allowed}", ("allow", allowed)
        )

    def _bearer(self, request: Request, token: str, what: str, env: str) -> Response | None:
        if not self.settings.authenticate:
            return None
        if _bearer_matches(request.header("authorization"), token):
            return None
        self.worker.counters.add("unauthorized")
        hint = f"send 'Authorization: Bearer <the {what} token>'"
        if not token:
            where = f" (serve --{what}-token or {env})" if env else ""
            hint += f"; this worker has no {what} token configured{where}, so it refuses all"
        return Response.text(
            401, f"unauthorized: {hint}", ("www-authenticate", 'Bearer realm="ajour"')
        )

    def add(
        self, path: str, method: str, handler: Handler, token: Callable[[], str], max_body: int
    ) -> None:
        if path in ("/v1/dfu", "/v1/events", *PROBES) or path.startswith(("/v1/status", ROLLOUTS)):
            raise DeliveryError(f"{path} is one of the worker's own routes; choose another path")
        self.extra[path] = (method, handler, token, max_body)

    # handlers, on the thread pool ------------------------------------------------------

    def _dfu(self, request: Request, body: bytes) -> Response:
        app, device = request.param("application"), request.param("device")
        creds = _basic(request.header("authorization"))
        if creds and "@" in creds[0] and not device:
            device, app = creds[0].rsplit("@", 1)
        certified = cert_identities(request.peer_cert)
        if not app and not device and len(certified) == 1:
            app, device = next(iter(certified))
        if not app or not device:
            return Response.text(
                400,
                "name the device: ?application=<app>&device=<device>, basic auth as"
                " <device>@<app>, or a client certificate for <device>@<app>",
            )
        worker = self.worker
        if self.settings.authenticate:
            if not self._authorized(app, device, creds, certified):
                worker.counters.add("unauthorized")
                return UNAUTHORIZED
        elif not worker.targets.knows(app, device):
            worker.counters.add("unknown_device")
            return Response.text(404, f"unknown device {device!r} of application {app!r}")
        reply = worker.handle(app, device, body)
        if reply is None:
            return Response.text(400, "the status is not a valid embedded-update CBOR Status")
        return Response(200, reply, CBOR)

    def _authorized(
        self,
        app: str,
        device: str,
        creds: tuple[str, str] | None,
        certified: set[tuple[str, str]],
    ) -> bool:
        targets = self.worker.targets
        known = targets.knows(app, device)
        if known and (app, device) in certified:
            return True
        if creds is None:
            if not known:
                self.worker.counters.add("unknown_device")
            return False
        user, password = creds
        if not known:
            device_auth.check(self._decoy, password)  # the same work; the answer stays 401
            self.worker.counters.add("unknown_device")
            return False
        spec = targets.fleet.devices[(app, device)].credentials
        username = None if user in (device, f"{device}@{app}") else user
        return device_auth.check(spec, password, username)

    def _status(self, request: Request, _body: bytes) -> Response:
        parts = [unquote(p) for p in request.path.split("/") if p]
        if len(parts) > 4:
            return Response.text(404, "not found: GET /v1/status[/<app>[/<device>]]")
        rows = self.worker.statuses(parts[2] if len(parts) > 2 else None)
        if len(parts) == 4:
            rows = [r for r in rows if r.device == parts[3]]
            if not rows:
                return Response.text(404, f"device {parts[3]!r} is not in application {parts[2]!r}")
        rows = self.rollouts.annotate(rows)
        return Response(200, REPORTS.dump_json([r.report() for r in rows], by_alias=True), JSON)

    def _events(self, _request: Request, body: bytes) -> Response:
        """A publish event ``{image, tag, …}`` or a registry notification envelope."""
        try:
            data = json.loads(body)
        except ValueError as exc:
            return Response.text(400, f"events must be JSON: {exc}")
        dropped = 0
        for image, tag in _changed(data):
            dropped += self.worker.targets.invalidate(image, tag)
        self.worker.counters.add("events")
        return Response(200, json.dumps({"invalidated": dropped}).encode(), JSON)


class HttpTransport:
    """Serves the worker over HTTP(S) from a background thread: ``start()``, ``stop()``."""

    def __init__(self, worker: Worker, settings: HttpSettings) -> None:
        if not settings.authenticate and not is_loopback(settings.host):
            raise DeliveryError(
                f"--insecure-no-auth serves without authentication, so only on a loopback"
                f" address (127.0.0.1 or ::1), not on {settings.host!r}"
            )
        self.settings = settings
        self.app = DeliveryApp(worker, settings)
        tls = None
        if settings.tls is not None:
            t = settings.tls
            try:
                tls = tls_context(t.cert, t.key, t.client_ca)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise DeliveryError(
                    f"cannot load TLS files (cert {t.cert}, key {t.key}, client CA"
                    f" {t.client_ca or '-'}): {exc}; give a PEM certificate chain and its key"
                ) from None
        sock = listen(settings.host, settings.port, "ajour-delivery", "--http HOST:PORT")
        self.server = Server(self.app, sock, settings.limits, tls)
        self.host, self.port = self.server.address

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls else "http"
        host = f"[{self.host}]" if ":" in str(self.host) else str(self.host)
        return f"{scheme}://{host}:{self.port}"

    def add_route(
        self,
        path: str,
        handler: Handler,
        *,
        token: str | Callable[[], str],
        method: str = "GET",
        max_body: int = 0,
    ) -> None:
        """Serve ``method path`` with ``handler(request, body)`` on the thread pool, behind
        ``Authorization: Bearer <token>`` (refused for all when the token is empty, unless
        authentication is off). The hook for ``GET /metrics``."""
        self.app.add(path, method, handler, token if callable(token) else (lambda: token), max_body)

    def stats(self) -> dict[str, int]:
        """The server's counters and gauges (connections, timeouts, refusals …)."""
        return self.server.snapshot()

    def start(self) -> None:
        if self.settings.authenticate:
            for what, token in (
                ("status", self.settings.status_token),
                ("events", self.settings.events_token),
                ("operator", self.settings.operator_token),
            ):
                if not token:
                    log.warning("no %s token: every request to its endpoint is refused", what)
        self.server.start()

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (the drain timeout), close."""
        self.server.stop()
