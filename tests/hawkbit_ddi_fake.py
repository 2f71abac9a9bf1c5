"""A FAKE hawkBit Direct Device Integration (DDI) server for tests. It is not hawkBit.

It serves one tenant, answers the DDI operations a gateway polling for a controller uses
(``getControllerBase``, ``getControllerDeploymentBaseAction``, ``downloadArtifact``,
``postDeploymentBaseActionFeedback``), keeps at most one open deployment in memory, and checks
every request against hawkBit's published OpenAPI spec (``ddi.openapi.json``): the method and
path must match a path template, path and query parameters must be declared and valid, JSON
bodies must validate (``$ref`` resolved) against the operation's request schema, and the
``Accept`` header must allow what the operation answers. A request that fails is answered 400
(404/405 for unknown paths/methods) and recorded in ``spec_violations``. The fake validates
its own answers against the declared response schemas too (drift lands in
``spec_violations``), so it cannot quietly answer in shapes real hawkBit never would. Only
``GatewayToken <token>`` authentication is accepted; anything else is answered 401 and
counted in ``auth_failures`` (not a spec violation: the spec declares 401).

Where the fake differs from the spec or from hawkBit, it says so:

* Spec quirk: ``DdiPolling.sleep`` has ``"pattern": "HH:MM:SS"``, which is prose, not a
  regular expression (as one it would only match the literal text "HH:MM:SS"). The fake
  checks ``^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$`` instead.
* Spec quirk: ``downloadArtifact`` declares its ``*/*`` body as ``{"type": "object"}``
  (springdoc's rendering of a byte stream); binary bodies are not schema-checked.
* Objects may not carry properties their schema does not declare (``strict_properties``):
  hawkBit ignores unknown JSON fields, so an extra field in a request is almost always a typo.
* HTTP 404 may be answered where the spec omits it (hawkBit does that for unknown actions);
  its body is still checked as ``ExceptionInfo``.
* Other controller ids get a base resource without links (hawkBit would auto-register them);
  another tenant is answered 401, as a tenant's gateway token is only valid for that tenant.
* Feedback with ``execution: closed`` and ``finished: success|failure`` closes the action,
  which removes the ``deploymentBase`` link. No ``installedBase``/``configData``/
  ``cancelAction`` links are offered (the fake does not serve them); ``Range`` is ignored.
* Declared operations other than the four above are answered 501 and recorded in
  ``unimplemented``. Injected failures (``fail_next``) are sent verbatim and not checked.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import re
import threading
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import jsonschema

SPEC_PATH = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "schemas"
    / "hawkbit"
    / "ddi.openapi.json"
)
SLEEP_REGEX = r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$"
UNDECLARED_BUT_REAL = frozenset({404})
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_EXC = "#/components/schemas/ExceptionInfo"
log = logging.getLogger(__name__)

Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]

    @property
    def operation_id(self) -> str:
        return str(self.spec.get("operationId", "?"))

    @property
    def specificity(self) -> tuple[int, int]:
        """Fewer parameters, then more literal text, wins (``{fileName}.MD5SUM``)."""
        literal = re.sub(r"\{[^}]+\}", "", self.template)
        return (self.template.count("{"), -len(literal))

    def parameters(self, where: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.spec.get("parameters", []) if p["in"] == where}


def _tighten(node: Any) -> Any:
    """Forbid undeclared properties in every object schema that does not say otherwise."""
    if isinstance(node, list):
        return [_tighten(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _tighten(value) for key, value in node.items()}
    if (
        out.get("type") == "object"
        and isinstance(out.get("properties"), dict)
        and "additionalProperties" not in out
    ):
        out["additionalProperties"] = False
    return out


def _coerce(schema: dict[str, Any], raw: str) -> Any:
    if schema.get("type") == "integer" and re.fullmatch(r"-?[0-9]+", raw):
        return int(raw)
    return raw


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}/]+\})", template)
    regex = "".join(
        f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part) for part in parts
    )
    return re.compile(f"^{regex}$")


class DdiSpec:
    """The operations of ``ddi.openapi.json`` and checks of requests and responses against it."""

    def __init__(self, path: Path, *, strict_properties: bool = True) -> None:
        self.document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        components = copy.deepcopy(self.document["components"])
        sleep = components["schemas"]["DdiPolling"]["properties"]["sleep"]
        if sleep.get("pattern") == "HH:MM:SS":  # prose, not a regex: see the module docstring
            sleep["pattern"] = SLEEP_REGEX
        self.strict = strict_properties
        self.components = _tighten(components) if strict_properties else components
        self.operations = sorted(
            (
                Operation(method.upper(), template, _template_regex(template), op)
                for template, item in self.document["paths"].items()
                for method, op in item.items()
                if method in METHODS
            ),
            key=lambda op: op.specificity,
        )

    def operation(self, operation_id: str) -> Operation:
        return next(op for op in self.operations if op.operation_id == operation_id)

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], int, str]:
        """The operation for a request, its path parameters, or an HTTP status and reason."""
        others = []
        for op in self.operations:
            found = op.pattern.match(path)
            if found and op.method == method:
                return op, {k: unquote(v) for k, v in found.groupdict().items()}, 200, ""
            if found:
                others.append(f"{op.method} {op.template}")
        if others:
            return None, {}, 405, f"{method} is not declared for {path}; the spec has {others}"
        return None, {}, 404, f"no path template in the spec matches {path}"

    def validate(self, schema: dict[str, Any], instance: Any, what: str) -> list[str]:
        root = {
            "allOf": [_tighten(schema) if self.strict else schema],
            "components": self.components,
        }
        errors = sorted(
            jsonschema.Draft4Validator(root).iter_errors(instance), key=lambda e: list(e.path)
        )
        return [
            f"{what} at /{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in errors[:5]
        ]

    def check_request(
        self,
        op: Operation,
        params: dict[str, str],
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[list[str], Any]:
        """The problems with a request, and its parsed JSON body."""
        oid = op.operation_id
        problems = self._check_params(op, params, query)
        problems += self._check_accept(op, headers.get("accept", "*/*"))
        request_body = op.spec.get("requestBody")
        if request_body is None:
            if body:
                problems.append(f"{oid} declares no request body, got {len(body)} bytes")
            return problems, None
        if not body:
            if request_body.get("required"):
                problems.append(f"{oid} requires a request body")
            return problems, None
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        content = request_body.get("content", {})
        if media not in content:
            problems.append(f"Content-Type {media!r} is not one of {oid}'s {sorted(content)}")
            return problems, None
        if media != "application/json":  # the fake does not speak CBOR
            problems.append(f"Content-Type {media!r}: the fake reads application/json of {oid}")
            return problems, None
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            return [*problems, f"{media} body does not parse: {exc}"], None
        schema = content[media].get("schema", {})
        return problems + self.validate(schema, parsed, "request body"), parsed

    def _check_params(
        self, op: Operation, params: dict[str, str], query: dict[str, list[str]]
    ) -> list[str]:
        problems: list[str] = []
        for name, raw in params.items():
            schema = op.parameters("path")[name]["schema"]
            problems += self.validate(schema, _coerce(schema, raw), f"path parameter {name}")
        declared = op.parameters("query")
        for name, values in query.items():
            if name not in declared:
                problems.append(f"query parameter {name!r} is not declared by {op.operation_id}")
                continue
            schema = declared[name]["schema"]
            if len(values) > 1:
                problems.append(f"query parameter {name!r} is repeated")
            for raw in values:
                problems += self.validate(schema, _coerce(schema, raw), f"query {name}")
        return problems + [
            f"required query parameter {name!r} is missing"
            for name, p in declared.items()
            if p.get("required") and name not in query
        ]

    def _check_accept(self, op: Operation, accept: str) -> list[str]:
        produced = set(op.spec.get("responses", {}).get("200", {}).get("content", {}))
        if not produced or "*/*" in produced:
            return []
        wanted = {part.split(";")[0].strip().lower() for part in accept.split(",")}
        if wanted & (produced | {"*/*", "application/*"}):
            return []
        return [f"Accept {accept!r} allows none of {op.operation_id}'s {sorted(produced)}"]

    def check_response(self, op: Operation, status: int, media: str, body: bytes) -> list[str]:
        """What is wrong with an answer of the fake for ``op``."""
        oid = op.operation_id
        responses = op.spec.get("responses", {})
        declared = responses.get(str(status))
        if declared is None and status in UNDECLARED_BUT_REAL:
            declared = {"content": {"application/json": {"schema": {"$ref": _EXC}}}}
        if declared is None:
            return [f"{oid} declares no HTTP {status} (only {sorted(responses)})"]
        content = declared.get("content", {})
        if not content:
            return [f"{oid} declares no body for HTTP {status}"] if body else []
        if media not in content and "*/*" not in content:
            return [f"{oid} HTTP {status} is not declared as {media} (only {sorted(content)})"]
        schema = content.get(media, {}).get("schema")
        if schema is None or not media.endswith("json") or not body:
            return []  # binary (*/*), or declared without a schema
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            return [f"{oid} HTTP {status}: body is not JSON ({exc})"]
        return self.validate(schema, parsed, f"{oid} HTTP {status} body")


@functools.cache
def load_spec(path: Path = SPEC_PATH, strict_properties: bool = True) -> DdiSpec:
    """The parsed spec, shared between fakes (never modified after loading)."""
    return DdiSpec(path, strict_properties=strict_properties)


@dataclass
class Deployment:
    """The one open deployment action: a chunk with one artifact.

    ``advertised_sha256``/``advertised_size`` override what the deployment resource claims
    (to test that a client refuses a mismatching download)."""

    action_id: int
    version: str
    artifact: bytes
    filename: str = "firmware.bin"
    module_id: int = 7
    part: str = "os"
    name: str = "firmware"
    advertised_sha256: str | None = None
    advertised_size: int | None = None


@dataclass
class _Failure:
    operation_id: str
    status: int
    body: bytes
    content_type: str
    times: int


@dataclass(frozen=True)
class Seen:
    """One request the fake received."""

    method: str
    path: str
    operation_id: str
    status: int


@dataclass
class _Request:
    op: Operation
    params: dict[str, str]
    query: dict[str, list[str]]
    body: Any
    media: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: HawkbitDdiFake

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.fake.crashes.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, payload = self.server.fake.handle(self.command, self.path, headers, body)
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("hawkbit DDI fake: " + format, *args)


@dataclass
class _State:
    deployment: Deployment | None = None
    feedback: list[dict[str, Any]] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)  # action ids closed by feedback


class HawkbitDdiFake:
    """The fake DDI server; use as a context manager. See the module docstring for its limits."""

    def __init__(
        self,
        *,
        tenant: str = "DEFAULT",
        controller_id: str = "device-1",
        gateway_token: str = "fake-gateway-token",
        sleep: str | None = "00:05:00",
        spec_path: Path = SPEC_PATH,
        strict_properties: bool = True,
    ) -> None:
        self.tenant, self.controller_id, self.gateway_token = tenant, controller_id, gateway_token
        self.sleep = sleep  # None: no config in the base resource
        self.spec = load_spec(spec_path, strict_properties)
        self.state = _State()
        self.spec_violations: list[str] = []
        self.crashes: list[str] = []  # tracebacks of bugs in the fake itself
        self.unimplemented: list[str] = []  # declared operations the fake does not serve (501)
        self.auth_failures = 0
        self.calls: Counter[str] = Counter()  # by operationId (or "unmatched")
        self.requests: list[Seen] = []
        self._next_action = 100
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))

    def __enter__(self) -> HawkbitDdiFake:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- for tests ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def deploy(self, version: str, artifact: bytes, **options: Any) -> Deployment:
        """Assign a new deployment (a new action) to the controller, replacing any open one."""
        with self._lock:
            self._next_action += 1
            deployment = Deployment(self._next_action, version, artifact, **options)
            self.state.deployment = deployment
            return deployment

    def clear(self) -> None:
        with self._lock:
            self.state.deployment = None

    def fail_next(
        self,
        operation_id: str,
        status: int,
        body: str | bytes = b"",
        *,
        times: int = 1,
        content_type: str = "application/json",
    ) -> None:
        """Answer the next ``times`` requests for ``operation_id`` (after the request checks)
        with ``status`` and ``body`` verbatim; the answer is not checked against the spec."""
        self.spec.operation(operation_id)  # fail loudly on a typo
        data = body.encode() if isinstance(body, str) else body
        self._failures.append(_Failure(operation_id, status, data, content_type, times))

    def count(self, operation_id: str) -> int:
        return self.calls[operation_id]

    @property
    def feedback(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self.state.feedback)

    # -- request handling --------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Answer:
        url = urlsplit(raw_path)
        query = parse_qs(url.query, keep_blank_values=True)
        with self._lock:
            op, params, status, reason = self.spec.match(method, url.path)
            self.calls[op.operation_id if op else "unmatched"] += 1
            if op is None:
                self.spec_violations.append(f"{method} {url.path}: {reason}")
                answer = _json(status, _error("fake.spec.violation", reason))
            else:
                answer = self._answer(op, params, query, headers, body)
            oid = op.operation_id if op else "unmatched"
            self.requests.append(Seen(method, url.path, oid, answer[0]))
            return answer

    def _answer(
        self,
        op: Operation,
        params: dict[str, str],
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Answer:
        problems, parsed = self.spec.check_request(op, params, query, headers, body)
        if problems:
            self.spec_violations.append(f"{op.method} {op.template}: {'; '.join(problems)}")
        if headers.get("authorization") != f"GatewayToken {self.gateway_token}" or (
            params.get("tenant") != self.tenant
        ):
            self.auth_failures += 1
            return 401, {}, b""
        if problems:
            return _json(400, _error("fake.spec.violation", "; ".join(problems)))
        for failure in self._failures:
            if failure.times > 0 and failure.operation_id == op.operation_id:
                failure.times -= 1
                return failure.status, {"Content-Type": failure.content_type}, failure.body
        handler = {
            "getControllerBase": self._base,
            "getControllerDeploymentBaseAction": self._deployment_base,
            "downloadArtifact": self._download,
            "postDeploymentBaseActionFeedback": self._feedback,
        }.get(op.operation_id)
        if handler is None:
            self.unimplemented.append(f"{op.method} {op.template} ({op.operation_id})")
            return _json(501, _error("fake.unimplemented", op.operation_id))
        accept = headers.get("accept", "")
        media = "application/hal+json" if "application/hal+json" in accept else "application/json"
        answer = handler(_Request(op, params, query, parsed, media))
        answered = answer[1].get("Content-Type", "")
        drift = self.spec.check_response(op, answer[0], answered, answer[2])
        if drift:
            self.spec_violations.append(f"fake response drift: {'; '.join(drift)}")
        return answer

    # -- operations ----------------------------------------------------------------------------

    def _controller_path(self, controller_id: str) -> str:
        return f"/{quote(self.tenant, safe='')}/controller/v1/{quote(controller_id, safe='')}"

    def _base(self, req: _Request) -> Answer:
        body: dict[str, Any] = {}
        if self.sleep is not None:
            body["config"] = {"polling": {"sleep": self.sleep}}
        deployment = self.state.deployment
        if req.params["controllerId"] == self.controller_id and deployment is not None:
            href = (
                f"{self.base_url}{self._controller_path(self.controller_id)}"
                f"/deploymentBase/{deployment.action_id}?c={_cache_buster(deployment)}"
            )
            body["_links"] = {"deploymentBase": {"href": href}}
        return _json(200, body, req.media)

    def _current(self, req: _Request) -> Deployment:
        deployment = self.state.deployment
        if req.params["controllerId"] != self.controller_id or deployment is None:
            raise _NotFound("no open action for this controller")
        if "actionId" in req.params and int(req.params["actionId"]) != deployment.action_id:
            raise _NotFound(f"action {req.params['actionId']} is not open")
        return deployment

    def _deployment_base(self, req: _Request) -> Answer:
        try:
            d = self._current(req)
        except _NotFound as exc:
            return _json(404, _error("hawkbit.server.error.repo.entitiyNotFound", str(exc)))
        path = (
            f"{self._controller_path(self.controller_id)}/softwaremodules/{d.module_id}"
            f"/artifacts/{quote(d.filename, safe='')}"
        )
        port = self._server.server_address[1]
        artifact = {
            "filename": d.filename,
            "hashes": {
                "sha1": hashlib.sha1(d.artifact).hexdigest(),
                "md5": hashlib.md5(d.artifact, usedforsecurity=False).hexdigest(),
                "sha256": d.advertised_sha256 or hashlib.sha256(d.artifact).hexdigest(),
            },
            "size": len(d.artifact) if d.advertised_size is None else d.advertised_size,
            "_links": {
                "download": {"href": f"https://127.0.0.1:{port}{path}"},  # not served: no TLS
                "download-http": {"href": f"{self.base_url}{path}"},
            },
        }
        chunk = {"part": d.part, "version": d.version, "name": d.name, "artifacts": [artifact]}
        body = {
            "id": str(d.action_id),
            "deployment": {
                "download": "forced",
                "update": "forced",
                "maintenanceWindow": "available",
                "chunks": [chunk],
            },
        }
        return _json(200, body, req.media)

    def _download(self, req: _Request) -> Answer:
        try:
            d = self._current(req)
        except _NotFound as exc:
            return _json(404, _error("hawkbit.server.error.repo.entitiyNotFound", str(exc)))
        wanted = (int(req.params["softwareModuleId"]), req.params["fileName"])
        if wanted != (d.module_id, d.filename):
            reason = f"artifact {wanted} is not assigned"
            return _json(404, _error("hawkbit.server.error.repo.entitiyNotFound", reason))
        return 200, {"Content-Type": "application/octet-stream"}, d.artifact

    def _feedback(self, req: _Request) -> Answer:
        try:
            d = self._current(req)
        except _NotFound as exc:  # the spec: 410 "Action is not active anymore"
            return _json(410, _error("hawkbit.server.error.action.closed", str(exc)))
        self.state.feedback.append({"actionId": d.action_id, **req.body})
        status = req.body["status"]
        if status["execution"] == "closed" and status["result"]["finished"] != "none":
            self.state.closed.append(d.action_id)
            self.state.deployment = None
        return 200, {}, b""


class _NotFound(Exception):
    pass


def _cache_buster(deployment: Deployment) -> int:
    """hawkBit's ``c`` query parameter: a signed int32 that changes with the action."""
    return zlib.crc32(f"{deployment.action_id}:{deployment.version}".encode()) - 2**31


def _error(code: str, message: str) -> dict[str, str]:
    return {"exceptionClass": "FakeDdi", "errorCode": code, "message": message}


def _json(status: int, body: Any, media: str = "application/json") -> Answer:
    return status, {"Content-Type": media}, json.dumps(body).encode()
