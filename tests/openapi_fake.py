"""The shared server of the FAKE hawkBit servers in ``tests/`` (it is not hawkBit).

``OpenApiFake`` serves a fake on a local ``ThreadingHTTPServer``, checks each request and
its own answer against an ``OpenApiSpec`` (``tests/openapi_spec.py``), records what it sees
and injects failures.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tests.openapi_spec import OpenApiSpec, Operation

Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Seen:
    """One request a fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    operation_id: str  # "unmatched" if no operation of the spec matches
    status: int  # 0: the connection was dropped


@dataclass
class Failure:  # an injected answer, sent verbatim for the next ``times`` matching requests
    status: int | None  # None: drop the connection
    body: bytes
    content_type: str
    times: int
    operation_id: str | None = None  # None: any
    method: str | None = None  # None: any
    prefix: str = ""  # of the request path
    headers: dict[str, str] = field(default_factory=dict)  # extra answer headers (Location)

    def matches(self, op: Operation, path: str) -> bool:
        return (
            self.times > 0
            and self.operation_id in (None, op.operation_id)
            and self.method in (None, op.method)
            and path.startswith(self.prefix)
        )

    @property
    def answer(self) -> Answer | None:
        if self.status is None:
            return None
        return self.status, {"Content-Type": self.content_type, **self.headers}, self.body


@dataclass
class Call:  # what a fake's operation handler gets: a request that passed the checks
    op: Operation
    params: dict[str, str]
    query: dict[str, list[str]]
    body: Any  # parsed


@dataclass(frozen=True)
class Incoming:  # a request and its match in the spec: op and params, or status and reason
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    op: Operation | None
    params: dict[str, str]
    status: int
    reason: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: OpenApiFake

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.fake.crashes.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.server.fake.handle(self.command, self.path, headers, body)
        if answer is None:  # injected connection drop
            self.close_connection = True
            return
        status, extra, payload = answer
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        fake = self.server.fake
        logging.getLogger(type(fake).__module__).debug(f"{fake.log_name}: " + format, *args)


class OpenApiFake:
    """A fake server checked against ``spec``, answering in ``_answer``; a context manager."""

    log_name = "openapi fake"

    def __init__(self, spec: OpenApiSpec) -> None:
        self.spec = spec
        self.spec_violations: list[str] = []
        self.unimplemented: list[str] = []  # declared operations the fake does not serve
        self.crashes: list[str] = []  # tracebacks of bugs in the fake itself
        self.requests: list[Seen] = []
        self._failures: list[Failure] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _inject(
        self, status: int | None, body: str | bytes, content_type: str, times: int, **match: Any
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self._failures.append(Failure(status, data, content_type, times, **match))

    def _injected(self, op: Operation, path: str) -> Failure | None:  # and use it up by one
        for failure in self._failures:
            if failure.matches(op, path):
                failure.times -= 1
                return failure
        return None

    def handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> Answer | None:
        """Answer one request (lower-case header names); None drops the connection."""
        url = urlsplit(raw_path)
        query = parse_qs(url.query, keep_blank_values=True)
        with self._lock:
            op, params, status, reason = self.spec.match(method, url.path)
            match = Incoming(method, url.path, query, headers, body, op, params, status, reason)
            answer = self._answer(match)
            oid = op.operation_id if op else "unmatched"
            self.requests.append(Seen(method, url.path, query, oid, answer[0] if answer else 0))
            return answer

    def _answer(self, req: Incoming) -> Answer | None:
        raise NotImplementedError

    def _check_drift(self, op: Operation, answer: Answer, media: str) -> None:  # own answers
        drift = self.spec.check_response(op, answer[0], answer[2], media)
        if drift:
            self.spec_violations.append(f"fake response drift: {'; '.join(drift)}")


def json_answer(status: int, body: Any, media: str = "application/json") -> Answer:  # None: empty
    if body is None:
        return status, {}, b""
    return status, {"Content-Type": media}, json.dumps(body).encode()


def error_body(exception_class: str, code: str, message: str) -> dict[str, str]:  # ExceptionInfo
    return {"exceptionClass": exception_class, "errorCode": code, "message": message}
