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
* Rollout target filters are evaluated over ``controllerId`` and target metadata only
  (``tests/fiql.py``); groups are filled as ``tests/hawkbit_fake_rollouts.py`` describes.
* HTTP 404 and 409 may be answered where the spec omits them (real hawkBit does that for
  "not found" and "already exists"); their bodies are still checked as ``ExceptionInfo``.
"""

from __future__ import annotations

import base64
import copy
import functools
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.hawkbit_fake_operations import ErrorReply, FakeState, MgmtCall, MgmtOperations
from tests.openapi_fake import Answer, Incoming, OpenApiFake, error_body
from tests.openapi_fake import json_answer as _json
from tests.openapi_spec import HAWKBIT_SCHEMAS, OpenApiSpec, parse_multipart

SPEC_PATH = HAWKBIT_SCHEMAS / "mgmt.openapi.json"
JSON_TYPES = ("application/json", "application/hal+json")


class MgmtSpec(OpenApiSpec):
    """``mgmt.openapi.json``: JSON and multipart/form-data requests, strict JSON responses."""

    undeclared_but_real = frozenset({404, 409})
    readable_media = frozenset({*JSON_TYPES, "multipart/form-data"})

    def _parse_body(self, media: str, content_type: str, body: bytes) -> Any:
        if media == "multipart/form-data":
            return parse_multipart(content_type, body)
        return super()._parse_body(media, content_type, body)

    def _check_body(self, oid: str, media: str, schema: dict[str, Any], parsed: Any) -> list[str]:
        if media != "multipart/form-data":
            return super()._check_body(oid, media, schema, parsed)
        props = schema.get("properties", {})
        problems = [
            f"multipart field {name!r} is required by {oid}"
            for name in schema.get("required", [])
            if name not in parsed
        ]
        for name, (filename, _) in parsed.items():
            if name not in props:
                if self.strict:
                    problems.append(f"multipart field {name!r} is not declared by {oid}")
            elif props[name].get("format") == "binary" and filename is None:
                problems.append(f"multipart field {name!r} must be a file part (binary)")
        return problems


@functools.cache
def load_spec(path: Path = SPEC_PATH, strict_properties: bool = True) -> MgmtSpec:
    """The parsed spec, shared between fakes (it is never modified after loading)."""
    return MgmtSpec(path, strict_properties=strict_properties)


class HawkbitFake(OpenApiFake):
    """The fake server; use as a context manager. See the module docstring for its limits."""

    log_name = "hawkbit fake"
    spec: MgmtSpec

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
        super().__init__(load_spec(spec_path, strict_properties))
        self.username, self.password, self.token = username, password, token
        self.operations = MgmtOperations(self.unimplemented, rollout_ready_after)
        self.state = self.operations.state
        self.calls: Counter[tuple[str, str]] = Counter()
        self._handlers = self.operations.handlers()

    # -- for tests -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

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

    def add_target(self, controller_id: str, metadata: Mapping[str, str] | None = None) -> None:
        self.state.targets[controller_id] = None
        self.state.metadata[controller_id] = dict(metadata or {})

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
        self._inject(status, body, content_type, times, method=method, prefix=path_prefix)

    def count(self, method: str, template: str) -> int:
        return self.calls[(method, template)]

    def snapshot(self) -> FakeState:
        with self._lock:
            return copy.deepcopy(self.state)

    # -- request handling --------------------------------------------------------------------

    def _answer(self, req: Incoming) -> Answer | None:
        op, params, query, headers = req.op, req.params, req.query, req.headers
        self.calls[(req.method, op.template if op else req.path)] += 1
        problems: list[str] = [req.reason]
        parsed: Any = None
        if op is not None:
            problems, parsed = self.spec.check_request(op, params, query, headers, req.body)
        if problems:
            self.spec_violations.append(f"{req.method} {req.path}: {'; '.join(problems)}")
        user = self._user(headers.get("authorization", ""))
        if user is None:
            return 401, {"WWW-Authenticate": 'Basic realm="hawkBit fake"'}, b""
        if op is None or problems:
            error = error_body("FakeSpecViolation", "fake.spec.violation", "; ".join(problems))
            return _json(400, error)
        accept = headers.get("accept", "*/*")
        if not any(t in accept for t in (*JSON_TYPES, "*/*", "application/*")):
            return 406, {}, b""
        failure = self._injected(op, req.path)
        if failure is not None:
            return failure.answer
        handler = self._handlers.get(op.operation_id)
        if handler is None:
            self.unimplemented.append(f"{op.method} {op.template} ({op.operation_id})")
            return 501, {}, b""
        try:
            reply = handler(MgmtCall(op, params, query, parsed, user))
        except ErrorReply as refusal:
            reply = refusal.reply
        answer = _json(reply.status, reply.body)
        if answer[0] != 501:  # a limitation of the fake, recorded in unimplemented
            self._check_drift(op, answer, "application/json")
        return answer

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
