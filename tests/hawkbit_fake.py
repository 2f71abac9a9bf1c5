"""A FAKE hawkBit Management API server for tests. It is not hawkBit.

It implements only the operations Ajour's publisher uses, keeps its state in memory, and
checks every request against hawkBit's published OpenAPI spec (``mgmt.openapi.json``): the
method and path must match a path template, query parameters must be declared by the
operation, JSON bodies must validate against the operation's request schema and multipart
uploads must carry the declared fields. A request that fails gets HTTP 400 with the reason
and is recorded in ``spec_violations``. The fake validates its own responses against the
spec's response schemas too (drift is recorded in ``spec_violations`` as well), so it
cannot quietly answer in shapes real hawkBit never would.

Where the fake is stricter than the spec, or simpler than hawkBit, it says so:

* ``strict_properties`` (default on): objects may not carry properties the schema does not
  declare, and requests may not send ``readOnly`` ones. The spec allows extras; hawkBit
  ignores them, so an extra property in a request is almost always a typo.
* RSQL/FIQL queries: only ``field==value`` terms joined with ``;`` (AND), ``*`` wildcards.
  Anything else is answered 501 and recorded in ``unimplemented``.
* Rollout target filters are not evaluated: every known target counts.
* HTTP 404 and 409 may be answered where the spec omits them (real hawkBit does that for
  "not found" and "already exists"); their bodies are still checked as ``ExceptionInfo``.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import itertools
import json
import logging
import re
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import jsonschema

SPEC_PATH = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "schemas"
    / "hawkbit"
    / "mgmt.openapi.json"
)
UNDECLARED_BUT_REAL = frozenset({404, 409})
JSON_TYPES = ("application/json", "application/hal+json")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]

    @property
    def operation_id(self) -> str:
        return str(self.spec.get("operationId", "?"))

    def parameters(self, where: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.spec.get("parameters", []) if p["in"] == where}


def _tighten(node: Any, request: bool) -> Any:
    """Forbid undeclared properties (and, in requests, readOnly ones) in every object schema."""
    if isinstance(node, list):
        return [_tighten(item, request) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _tighten(value, request) for key, value in node.items()}
    props = out.get("properties")
    if (
        out.get("type") == "object"
        and isinstance(props, dict)
        and "additionalProperties" not in out
    ):
        if request:
            out["properties"] = {k: v for k, v in props.items() if not v.get("readOnly")}
        out["additionalProperties"] = False
    return out


def _coerce(schema: dict[str, Any], raw: str) -> Any:
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw


def _header_param(value: str, header: str, name: str) -> str | None:
    message = Message()
    message[header] = value
    got = message.get_param(name, header=header)
    return got if isinstance(got, str) else None


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Split a multipart/form-data body exactly (no line-ending rewriting)."""
    boundary = _header_param(content_type, "content-type", "boundary")
    if not boundary:
        raise ValueError("multipart/form-data without a boundary parameter")
    sections = body.split(b"--" + boundary.encode("latin-1"))
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        raise ValueError("multipart body is not terminated by its closing boundary")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for section in sections[1:-1]:
        head, sep, data = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep or not data.endswith(b"\r\n"):
            raise ValueError("malformed multipart part (missing CRLF framing)")
        headers = dict(
            line.split(":", 1) for line in head.decode("latin-1").split("\r\n") if ":" in line
        )
        disposition = {k.lower(): v.strip() for k, v in headers.items()}.get("content-disposition")
        name = disposition and _header_param(disposition, "content-disposition", "name")
        if not name:
            raise ValueError("multipart part without Content-Disposition: form-data; name=...")
        fields[name] = (
            _header_param(disposition or "", "content-disposition", "filename"),
            data[:-2],
        )
    return fields


class OpenApiSpec:
    """The operations of an OpenAPI 3.0 document, and request/response checks against them."""

    def __init__(self, path: Path, *, strict_properties: bool = True) -> None:
        self.document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.strict = strict_properties
        components = self.document["components"]
        self._components = {
            True: _tighten(components, True) if self.strict else components,
            False: _tighten(components, False) if self.strict else components,
        }
        self.operations: list[Operation] = []
        for template, item in self.document["paths"].items():
            regex = "".join(
                f"/(?P<{seg[1:-1]}>[^/]+)" if seg.startswith("{") else "/" + re.escape(seg)
                for seg in template.strip("/").split("/")
            )
            for method, op in item.items():
                if method in METHODS:
                    self.operations.append(
                        Operation(method.upper(), template, re.compile(f"^{regex}$"), op)
                    )
        self.operations.sort(key=lambda op: op.template.count("{"))  # literal segments win

    def operation(self, operation_id: str) -> Operation:
        return next(op for op in self.operations if op.operation_id == operation_id)

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], str]:
        others = []
        for op in self.operations:
            found = op.pattern.match(path)
            if found and op.method == method:
                return op, found.groupdict(), ""
            if found:
                others.append(f"{op.method} {op.template}")
        if others:
            return None, {}, f"{method} is not declared for {path}; the spec has {others}"
        return None, {}, f"no path template in the spec matches {path}"

    def validate(
        self, schema: dict[str, Any], instance: Any, request: bool, what: str
    ) -> list[str]:
        root = {
            "allOf": [_tighten(schema, request) if self.strict else schema],
            "components": self._components[request],
        }
        errors = sorted(
            jsonschema.Draft4Validator(root).iter_errors(instance), key=lambda e: list(e.path)
        )
        return [
            f"{what} at /{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in errors[:5]
        ]

    def _check_params(
        self, op: Operation, path_params: Mapping[str, str], query: Mapping[str, list[str]]
    ) -> list[str]:
        oid = op.operation_id
        problems: list[str] = []
        for name, raw in path_params.items():
            schema = op.parameters("path")[name]["schema"]
            problems += self.validate(schema, _coerce(schema, raw), True, f"path parameter {name}")
        declared = op.parameters("query")
        for name, values in query.items():
            if name not in declared:
                problems.append(f"query parameter {name!r} is not declared by {oid}")
                continue
            schema = declared[name]["schema"]
            if len(values) > 1 and schema.get("type") != "array":
                problems.append(f"query parameter {name!r} is repeated")
            for raw in values:
                problems += self.validate(schema, _coerce(schema, raw), True, f"query {name}")
        problems += [
            f"required query parameter {name!r} is missing"
            for name, p in declared.items()
            if p.get("required") and name not in query
        ]
        return problems

    def check_request(
        self,
        op: Operation,
        path_params: Mapping[str, str],
        query: Mapping[str, list[str]],
        content_type: str,
        body: bytes,
    ) -> tuple[list[str], Any]:
        """Return the problems with a request, and its parsed body (JSON or multipart)."""
        oid = op.operation_id
        problems = self._check_params(op, path_params, query)
        request_body = op.spec.get("requestBody")
        if request_body is None:
            if body:
                problems.append(f"{oid} declares no request body, got {len(body)} bytes")
            return problems, None
        if not body:
            if request_body.get("required"):
                problems.append(f"{oid} requires a request body")
            return problems, None
        media = content_type.split(";")[0].strip().lower()
        content = request_body.get("content", {})
        if media not in content:
            problems.append(f"Content-Type {media!r} is not one of {oid}'s {sorted(content)}")
            return problems, None
        schema = content[media].get("schema", {})
        try:
            if media == "multipart/form-data":
                fields = parse_multipart(content_type, body)
                return problems + self._check_form(oid, schema, fields), fields
            parsed = json.loads(body)
        except ValueError as exc:
            return [*problems, f"{media} body does not parse: {exc}"], None
        return problems + self.validate(schema, parsed, True, "request body"), parsed

    def _check_form(
        self, oid: str, schema: dict[str, Any], fields: Mapping[str, tuple[str | None, bytes]]
    ) -> list[str]:
        props = schema.get("properties", {})
        problems = [
            f"multipart field {name!r} is required by {oid}"
            for name in schema.get("required", [])
            if name not in fields
        ]
        for name, (filename, _) in fields.items():
            if name not in props:
                if self.strict:
                    problems.append(f"multipart field {name!r} is not declared by {oid}")
            elif props[name].get("format") == "binary" and filename is None:
                problems.append(f"multipart field {name!r} must be a file part (binary)")
        return problems

    def check_response(self, op: Operation, status: int, body: bytes) -> list[str]:
        """What is wrong with a response (always sent as application/json) for ``op``."""
        responses = op.spec.get("responses", {})
        declared = responses.get(str(status))
        if declared is None and status in UNDECLARED_BUT_REAL:
            declared = {"content": {"application/json": {"schema": {"$ref": _EXC}}}}
        if declared is None:
            return [f"{op.operation_id} declares no HTTP {status} (only {sorted(responses)})"]
        media = declared.get("content", {})
        if not media:
            return [f"{op.operation_id} declares no body for HTTP {status}"] if body else []
        if "application/json" not in media:
            return [f"{op.operation_id} HTTP {status} is not declared as application/json"]
        schema = media["application/json"].get("schema")
        if schema is None:
            return []
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            return [f"{op.operation_id} HTTP {status}: body is not JSON ({exc})"]
        return self.validate(schema, parsed, False, f"{op.operation_id} HTTP {status} body")


_EXC = "#/components/schemas/ExceptionInfo"


@functools.cache
def load_spec(path: Path = SPEC_PATH, strict_properties: bool = True) -> OpenApiSpec:
    """The parsed spec, shared between fakes (it is never modified after loading)."""
    return OpenApiSpec(path, strict_properties=strict_properties)


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-able; None means no body


class _Answer(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.reply = Reply(
            status, {"exceptionClass": "Fake", "errorCode": code, "message": message}
        )


@dataclass
class _Failure:
    method: str | None
    prefix: str
    status: int | None
    body: bytes
    content_type: str
    times: int


@dataclass(frozen=True)
class Seen:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int


@dataclass
class _Call:
    op: Operation
    params: dict[str, str]
    query: dict[str, list[str]]
    body: Any
    user: str


@dataclass
class FakeState:
    modules: dict[int, dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by module id
    blobs: dict[int, bytes] = field(default_factory=dict)  # by artifact id
    distribution_sets: dict[int, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, int | None] = field(default_factory=dict)  # controllerId -> DS id
    actions: list[dict[str, Any]] = field(default_factory=list)
    rollouts: dict[int, dict[str, Any]] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: HawkbitFake

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
        log.debug("hawkbit fake: " + format, *args)


class HawkbitFake:
    """The fake server; use as a context manager. See the module docstring for its limits."""

    def __init__(
        self,
        *,
        username: str | None = "admin",
        password: str = "fake-admin-password",
        token: str | None = None,
        spec_path: Path = SPEC_PATH,
        strict_properties: bool = True,
        rollout_ready_after: int = 1,
    ) -> None:
        self.username, self.password, self.token = username, password, token
        self.spec = load_spec(spec_path, strict_properties)
        self.rollout_ready_after = rollout_ready_after
        self.state = FakeState()
        self.spec_violations: list[str] = []
        self.unimplemented: list[str] = []
        self.crashes: list[str] = []  # tracebacks of bugs in the fake itself
        self.calls: Counter[tuple[str, str]] = Counter()
        self.requests: list[Seen] = []
        self.module_types = {"os": "OS", "application": "Application"}
        self.ds_types = {"os": {"os"}, "app": {"application"}, "os_app": {"os", "application"}}
        self._ids = itertools.count(1)
        self._clock = itertools.count(1_700_000_000_000, 1000)
        self._polls: Counter[int] = Counter()
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._handlers: dict[str, Callable[[_Call], Reply]] = {
            "getSoftwareModules": self._get_modules,
            "createSoftwareModules": self._create_modules,
            "getArtifacts": self._get_artifacts,
            "uploadArtifact": self._upload_artifact,
            "getDistributionSets": self._get_sets,
            "createDistributionSets": self._create_sets,
            "createAssignedTarget": self._assign_targets,
            "getRollouts": self._get_rollouts,
            "getRollout": self._get_rollout,
            "create": self._create_rollout,
            "start": self._start_rollout,
        }
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))

    def __enter__(self) -> HawkbitFake:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- for tests -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables holding this fake's credentials."""
        if self.token is not None:
            return {"AJOUR_HAWKBIT_TOKEN": self.token}
        return {
            "AJOUR_HAWKBIT_USERNAME": self.username or "",
            "AJOUR_HAWKBIT_PASSWORD": self.password,
        }

    def url(self, module: str, **params: str) -> str:
        query = "&".join(f"{k.replace('_', '-')}={quote(v, safe='=*;')}" for k, v in params.items())
        return f"hawkbit://127.0.0.1:{self.port}/{module}" + (f"?{query}" if query else "")

    def add_target(self, controller_id: str) -> None:
        self.state.targets[controller_id] = None

    def fail_next(
        self,
        path_prefix: str,
        status: int | None,
        body: str | bytes = b"",
        *,
        method: str | None = None,
        times: int = 1,
        content_type: str = "application/json",
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` and ``body`` verbatim
        (no spec check of the answer); ``status=None`` drops the connection instead."""
        data = body.encode() if isinstance(body, str) else body
        self._failures.append(_Failure(method, path_prefix, status, data, content_type, times))

    def count(self, method: str, template: str) -> int:
        return self.calls[(method, template)]

    def snapshot(self) -> FakeState:
        with self._lock:
            return copy.deepcopy(self.state)

    # -- request handling --------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        url = urlsplit(raw_path)
        query = parse_qs(url.query, keep_blank_values=True)
        with self._lock:
            op, params, reason = self.spec.match(method, url.path)
            self.calls[(method, op.template if op else url.path)] += 1
            problems = [reason] if op is None else []
            parsed: Any = None
            if op is not None:
                content_type = headers.get("content-type", "")
                problems, parsed = self.spec.check_request(op, params, query, content_type, body)
            if problems:
                self.spec_violations.append(f"{method} {url.path}: {'; '.join(problems)}")
            answer = self._answer(op, url.path, params, query, parsed, headers, problems)
            self.requests.append(Seen(method, url.path, query, answer[0] if answer else 0))
            return answer

    def _answer(
        self,
        op: Operation | None,
        path: str,
        params: dict[str, str],
        query: dict[str, list[str]],
        parsed: Any,
        headers: Mapping[str, str],
        problems: list[str],
    ) -> tuple[int, dict[str, str], bytes] | None:
        user = self._user(headers.get("authorization", ""))
        if user is None:
            return 401, {"WWW-Authenticate": 'Basic realm="hawkBit fake"'}, b""
        if op is None or problems:
            error = {"exceptionClass": "FakeSpecViolation", "errorCode": "fake.spec.violation"}
            return _json(400, {**error, "message": "; ".join(problems)})
        accept = headers.get("accept", "*/*")
        if not any(t in accept for t in (*JSON_TYPES, "*/*", "application/*")):
            return 406, {}, b""
        for failure in self._failures:
            if failure.times > 0 and failure.method in (None, op.method):
                if path.startswith(failure.prefix):
                    failure.times -= 1
                    if failure.status is None:
                        return None
                    return failure.status, {"Content-Type": failure.content_type}, failure.body
        handler = self._handlers.get(op.operation_id)
        if handler is None:
            self.unimplemented.append(f"{op.method} {op.template} ({op.operation_id})")
            return 501, {}, b""
        try:
            reply = handler(_Call(op, params, query, parsed, user))
        except _Answer as answer:
            reply = answer.reply
        status, extra, payload = _json(reply.status, reply.body)
        if status != 501:  # a limitation of the fake, recorded in unimplemented
            drift = self.spec.check_response(op, status, payload)
            if drift:
                self.spec_violations.append(f"fake response drift: {'; '.join(drift)}")
        return status, extra, payload

    def _user(self, authorization: str) -> str | None:
        scheme, _, value = authorization.partition(" ")
        if self.username is None and self.token is None:
            return "anonymous"
        if scheme.lower() == "bearer" and self.token is not None and value == self.token:
            return "token-user"
        if scheme.lower() == "basic" and self.username is not None:
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                return None
            if (user, password) == (self.username, self.password):
                return user
        return None

    # -- operations ----------------------------------------------------------------------------

    def _new(self, user: str, href: str, fields: dict[str, Any]) -> dict[str, Any]:
        ident = next(self._ids)
        now = next(self._clock)
        stamp = {"createdBy": user, "createdAt": now, "lastModifiedBy": user, "lastModifiedAt": now}
        return {"id": ident, **fields, **stamp, "_links": {"self": {"href": f"{href}/{ident}"}}}

    def _select(self, call: _Call, items: Iterable[dict[str, Any]], fields: set[str]) -> Reply:
        selected = list(items)
        for q in call.query.get("q", []):
            for term in q.split(";"):
                if any(c in term for c in ",()") or "==" not in term:
                    self.unimplemented.append(f"FIQL term {term!r}")
                    raise _Answer(501, "fake.fiql", f"the fake only supports a==b;c==d, got {q!r}")
                name, _, value = term.partition("==")
                if name not in fields:
                    raise _Answer(400, "hawkbit.server.error.rest.param.rsqlInvalidField", name)
                regex = re.compile(
                    "^" + ".*".join(map(re.escape, value.strip("\"'").split("*"))) + "$"
                )
                selected = [i for i in selected if regex.match(str(i.get(name, "")))]
        offset = int(call.query.get("offset", ["0"])[0])
        limit = int(call.query.get("limit", ["50"])[0])
        page = selected[offset : offset + limit]
        return Reply(200, {"content": page, "total": len(selected), "size": len(page)})

    def _get_modules(self, call: _Call) -> Reply:
        return self._select(call, self.state.modules.values(), {"name", "version", "type"})

    def _create_modules(self, call: _Call) -> Reply:
        created = []
        for item in call.body:
            key = (item["name"], item["version"], item["type"])
            if item["type"] not in self.module_types:
                raise _Answer(404, "hawkbit.server.error.repo.entitiyNotFound", item["type"])
            if any(
                (m["name"], m["version"], m["type"]) == key for m in self.state.modules.values()
            ):
                raise _Answer(409, "hawkbit.server.error.repo.entitiyAlreadyExists", str(key))
            extra = {"typeName": self.module_types[item["type"]], "encrypted": False}
            flags = {"locked": False, "deleted": False}
            module = self._new(call.user, "/rest/v1/softwaremodules", {**extra, **item, **flags})
            self.state.modules[module["id"]] = module
            self.state.artifacts[module["id"]] = []
            created.append(module)
        return Reply(201, created)

    def _module(self, call: _Call) -> int:
        module_id = int(call.params["softwareModuleId"])
        if module_id not in self.state.modules:
            raise _Answer(404, "hawkbit.server.error.repo.entitiyNotFound", f"module {module_id}")
        return module_id

    def _get_artifacts(self, call: _Call) -> Reply:
        return Reply(200, self.state.artifacts[self._module(call)])

    def _upload_artifact(self, call: _Call) -> Reply:
        module_id = self._module(call)
        part_name, data = call.body["file"]
        name = call.query.get("filename", [part_name or "file"])[0]
        hashes = {
            "sha1": hashlib.sha1(data).hexdigest(),
            "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        for algorithm in ("sha1", "md5", "sha256"):
            given = call.query.get(f"{algorithm}sum", [hashes[algorithm]])[0]
            if given.lower() != hashes[algorithm]:
                code = (
                    f"hawkbit.server.error.artifact.uploadFailed.checksum.{algorithm}.notMatching"
                )
                raise _Answer(400, code, f"{algorithm} does not match the uploaded file")
        if any(a["providedFilename"] == name for a in self.state.artifacts[module_id]):
            raise _Answer(409, "hawkbit.server.error.repo.entitiyAlreadyExists", name)
        href = f"/rest/v1/softwaremodules/{module_id}/artifacts"
        fields = {"providedFilename": name, "size": len(data), "hashes": hashes}
        artifact = self._new(call.user, href, fields)
        self.state.artifacts[module_id].append(artifact)
        self.state.blobs[artifact["id"]] = data
        return Reply(201, artifact)

    def _get_sets(self, call: _Call) -> Reply:
        return self._select(
            call, self.state.distribution_sets.values(), {"name", "version", "type"}
        )

    def _create_sets(self, call: _Call) -> Reply:
        created = []
        for item in call.body:
            if not item.get("name") or not item.get("version"):
                raise _Answer(400, "hawkbit.server.error.rest.body.notReadable", "name, version")
            allowed = self.ds_types.get(item.get("type", "os"))
            if allowed is None:
                raise _Answer(404, "hawkbit.server.error.repo.entitiyNotFound", str(item["type"]))
            key = (item["name"], item["version"])
            if any((d["name"], d["version"]) == key for d in self.state.distribution_sets.values()):
                raise _Answer(409, "hawkbit.server.error.repo.entitiyAlreadyExists", str(key))
            modules = []
            for ref in item.get("modules", []):
                module = self.state.modules.get(ref.get("id", -1))
                if module is None:
                    raise _Answer(404, "hawkbit.server.error.repo.entitiyNotFound", str(ref))
                if module["type"] not in allowed:
                    raise _Answer(400, "hawkbit.server.error.distributionset.type.undefined", "")
                modules.append(copy.deepcopy(module))
            kind = item.get("type", "os")
            fields = {"requiredMigrationStep": False, **item, "type": kind, "modules": modules}
            flags = {"complete": bool(modules), "locked": False, "deleted": False, "valid": True}
            ds = self._new(
                call.user,
                "/rest/v1/distributionsets",
                {**fields, "typeName": kind.upper(), **flags},
            )
            self.state.distribution_sets[ds["id"]] = ds
            created.append(ds)
        return Reply(201, created)

    def _assign_targets(self, call: _Call) -> Reply:
        ds_id = int(call.params["distributionSetId"])
        if ds_id not in self.state.distribution_sets:
            raise _Answer(404, "hawkbit.server.error.repo.entitiyNotFound", f"set {ds_id}")
        already, actions = 0, []
        for item in call.body:
            target = item["id"]
            if target not in self.state.targets:
                continue  # hawkBit silently ignores unknown targets
            if self.state.targets[target] == ds_id:
                already += 1
                continue
            self.state.targets[target] = ds_id
            action = {"id": next(self._ids), "target": target, "distributionSetId": ds_id}
            self.state.actions.append(action)
            href = f"/rest/v1/targets/{target}/actions/{action['id']}"
            actions.append({"id": action["id"], "_links": {"self": {"href": href}}})
        total = already + len(actions)
        body = {"assigned": len(actions), "alreadyAssigned": already, "total": total}
        return Reply(200, {**body, "assignedActions": actions})

    def _get_rollouts(self, call: _Call) -> Reply:
        return self._select(call, self.state.rollouts.values(), {"name", "status"})

    def _rollout(self, call: _Call) -> dict[str, Any]:
        rollout = self.state.rollouts.get(int(call.params["rolloutId"]))
        if rollout is None:
            raise _Answer(404, "hawkbit.server.error.repo.entitiyNotFound", "rollout")
        return rollout

    def _get_rollout(self, call: _Call) -> Reply:
        rollout = self._rollout(call)
        self._polls[rollout["id"]] += 1
        if (
            rollout["status"] == "creating"
            and self._polls[rollout["id"]] >= self.rollout_ready_after
        ):
            rollout["status"] = "ready"
        return Reply(200, rollout)

    def _create_rollout(self, call: _Call) -> Reply:
        body = call.body
        if any(r["name"] == body["name"] for r in self.state.rollouts.values()):
            raise _Answer(409, "hawkbit.server.error.repo.entitiyAlreadyExists", body["name"])
        if body.get("distributionSetId") not in self.state.distribution_sets:
            raise _Answer(404, "hawkbit.server.error.repo.entitiyNotFound", "distribution set")
        if not body.get("targetFilterQuery"):
            raise _Answer(400, "hawkbit.server.error.rest.body.notReadable", "targetFilterQuery")
        fields = {
            "name": body["name"],
            "status": "creating",
            "targetFilterQuery": body["targetFilterQuery"],
            "distributionSetId": body["distributionSetId"],
            "totalTargets": len(self.state.targets),  # the fake does not evaluate the filter
            "totalGroups": body.get("amountGroups", 1),
            "type": body.get("type", "forced"),
            "deleted": False,
        }
        rollout = self._new(call.user, "/rest/v1/rollouts", fields)
        self.state.rollouts[rollout["id"]] = rollout
        return Reply(201, rollout)

    def _start_rollout(self, call: _Call) -> Reply:
        rollout = self._rollout(call)
        if rollout["status"] != "ready":
            raise _Answer(400, "hawkbit.server.error.rollout.illegalstate", rollout["status"])
        rollout["status"] = "starting"
        return Reply(200)


def _json(status: int, body: Any) -> tuple[int, dict[str, str], bytes]:
    if body is None:
        return status, {}, b""
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()
