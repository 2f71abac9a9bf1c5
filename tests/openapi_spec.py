"""An OpenAPI 3.0 document's operations, for the FAKE hawkBit servers in ``tests/``.

``OpenApiSpec`` matches requests to the document's operations and checks them, and a
fake's own answers, against the declared schemas (``strict_properties``: no undeclared
properties, no ``readOnly`` ones in requests). The fakes themselves are served by
``tests/openapi_fake.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema

# hawkBit's OpenAPI specs, vendored (tests/data/README.md); tests/test_vendored compares them.
HAWKBIT_SCHEMAS = Path(__file__).resolve().parent / "data" / "hawkbit"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
EXCEPTION_INFO = "#/components/schemas/ExceptionInfo"


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


def tighten(node: Any, request: bool) -> Any:
    """Forbid undeclared properties (in requests, readOnly ones too) in every object schema."""
    if isinstance(node, list):
        return [tighten(item, request) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: tighten(value, request) for key, value in node.items()}
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


def coerce(schema: dict[str, Any], raw: str) -> Any:
    """A path or query parameter as the type its schema declares (if it looks like one)."""
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?[0-9]+", raw):
        return int(raw)
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw


def template_regex(template: str) -> re.Pattern[str]:
    """A path template as a regex; a parameter may share its segment (``{fileName}.MD5SUM``)."""
    parts = re.split(r"(\{[^}/]+\})", template)
    regex = "".join(
        f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part) for part in parts
    )
    return re.compile(f"^{regex}$")


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

    undeclared_but_real: frozenset[int] = frozenset()  # answered anyway, as ExceptionInfo
    readable_media: frozenset[str] = frozenset({"application/json"})  # request bodies read
    unquote_params = False  # percent-decode path parameters
    lenient_responses = False  # accept */* and non-JSON or empty bodies without a check

    def __init__(self, path: Path, *, strict_properties: bool = True) -> None:
        self.document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.strict = strict_properties
        components = self._adjust(self.document["components"])
        self._components = {
            request: tighten(components, request) if self.strict else components
            for request in (True, False)
        }
        self.operations = sorted(
            (
                Operation(method.upper(), template, template_regex(template), op)
                for template, item in self.document["paths"].items()
                for method, op in item.items()
                if method in METHODS
            ),
            key=self._order,
        )

    def _adjust(self, components: dict[str, Any]) -> dict[str, Any]:  # fix quirks of a spec
        return components

    @staticmethod
    def _order(op: Operation) -> Any:  # which operation wins if several match: fewer params
        return op.template.count("{")

    def operation(self, operation_id: str) -> Operation:
        return next(op for op in self.operations if op.operation_id == operation_id)

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], int, str]:
        """The operation for a request, its path parameters, or an HTTP status and reason."""
        others = []
        for op in self.operations:
            found = op.pattern.match(path)
            if found and op.method == method:
                params = {
                    k: unquote(v) if self.unquote_params else v
                    for k, v in found.groupdict().items()
                }
                return op, params, 200, ""
            if found:
                others.append(f"{op.method} {op.template}")
        if others:
            return None, {}, 405, f"{method} is not declared for {path}; the spec has {others}"
        return None, {}, 404, f"no path template in the spec matches {path}"

    def validate(
        self, schema: dict[str, Any], instance: Any, what: str, *, request: bool = False
    ) -> list[str]:
        root = {
            "allOf": [tighten(schema, request) if self.strict else schema],
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
        problems: list[str] = []
        for name, raw in path_params.items():
            schema = op.parameters("path")[name]["schema"]
            what = f"path parameter {name}"
            problems += self.validate(schema, coerce(schema, raw), what, request=True)
        declared = op.parameters("query")
        for name, values in query.items():
            if name not in declared:
                problems.append(f"query parameter {name!r} is not declared by {op.operation_id}")
                continue
            schema = declared[name]["schema"]
            if len(values) > 1 and schema.get("type") != "array":
                problems.append(f"query parameter {name!r} is repeated")
            for raw in values:
                problems += self.validate(
                    schema, coerce(schema, raw), f"query {name}", request=True
                )
        return problems + [
            f"required query parameter {name!r} is missing"
            for name, p in declared.items()
            if p.get("required") and name not in query
        ]

    def _check_headers(self, op: Operation, headers: Mapping[str, str]) -> list[str]:
        return []  # the problems with a request's headers

    def check_request(
        self,
        op: Operation,
        path_params: Mapping[str, str],
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[list[str], Any]:
        """The problems with a request (lower-case header names), and its parsed body."""
        oid = op.operation_id
        problems = self._check_params(op, path_params, query) + self._check_headers(op, headers)
        request_body = op.spec.get("requestBody")
        if request_body is None:
            if body:
                problems.append(f"{oid} declares no request body, got {len(body)} bytes")
            return problems, None
        if not body:
            if request_body.get("required"):
                problems.append(f"{oid} requires a request body")
            return problems, None
        content_type = headers.get("content-type", "")
        media = content_type.split(";")[0].strip().lower()
        content = request_body.get("content", {})
        if media not in content:
            problems.append(f"Content-Type {media!r} is not one of {oid}'s {sorted(content)}")
            return problems, None
        if media not in self.readable_media:
            readable = " or ".join(sorted(self.readable_media))
            problems.append(f"Content-Type {media!r}: the fake reads {readable} of {oid}")
            return problems, None
        try:
            parsed = self._parse_body(media, content_type, body)
        except ValueError as exc:
            return [*problems, f"{media} body does not parse: {exc}"], None
        schema = content[media].get("schema", {})
        return problems + self._check_body(oid, media, schema, parsed), parsed

    def _parse_body(self, media: str, content_type: str, body: bytes) -> Any:
        return json.loads(body)

    def _check_body(self, oid: str, media: str, schema: dict[str, Any], parsed: Any) -> list[str]:
        return self.validate(schema, parsed, "request body", request=True)

    def check_response(
        self, op: Operation, status: int, body: bytes, media: str = "application/json"
    ) -> list[str]:
        """What is wrong with an answer of the fake for ``op``."""
        oid = op.operation_id
        responses = op.spec.get("responses", {})
        declared = responses.get(str(status))
        if declared is None and status in self.undeclared_but_real:
            declared = {"content": {"application/json": {"schema": {"$ref": EXCEPTION_INFO}}}}
        if declared is None:
            return [f"{oid} declares no HTTP {status} (only {sorted(responses)})"]
        content = declared.get("content", {})
        if not content:
            return [f"{oid} declares no body for HTTP {status}"] if body else []
        if media not in content and not (self.lenient_responses and "*/*" in content):
            return [f"{oid} HTTP {status} is not declared as {media} (only {sorted(content)})"]
        schema = content.get(media, {}).get("schema")
        if schema is None or (self.lenient_responses and (not media.endswith("json") or not body)):
            return []  # declared without a schema; leniently: binary (*/*) or empty
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            return [f"{oid} HTTP {status}: body is not JSON ({exc})"]
        return self.validate(schema, parsed, f"{oid} HTTP {status} body")
