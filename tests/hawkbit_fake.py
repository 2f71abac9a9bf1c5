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
import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.fiql import FiqlUnsupported
from tests.hawkbit_fake_rollouts import Refusal, fill
from tests.openapi_fake import (
    HAWKBIT_SCHEMAS,
    Answer,
    Call,
    Incoming,
    OpenApiFake,
    OpenApiSpec,
    error_body,
    parse_multipart,
)
from tests.openapi_fake import json_answer as _json

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


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-able; None means no body


class _Answer(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.reply = Reply(status, error_body("Fake", code, message))


@dataclass
class _Call(Call):
    user: str


@dataclass
class FakeState:
    modules: dict[int, dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by module id
    blobs: dict[int, bytes] = field(default_factory=dict)  # by artifact id
    distribution_sets: dict[int, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, int | None] = field(default_factory=dict)  # controllerId -> DS id
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # by controllerId
    actions: list[dict[str, Any]] = field(default_factory=list)
    rollouts: dict[int, dict[str, Any]] = field(default_factory=dict)
    groups: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by rollout id
    members: dict[int, list[str]] = field(default_factory=dict)  # controllerIds by group id


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
        self.rollout_ready_after = rollout_ready_after
        self.state = FakeState()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.module_types = {"os": "OS", "application": "Application"}
        self.ds_types = {"os": {"os"}, "app": {"application"}, "os_app": {"os", "application"}}
        self._ids = itertools.count(1)
        self._clock = itertools.count(1_700_000_000_000, 1000)
        self._polls: Counter[int] = Counter()
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
            "getRolloutGroups": self._get_groups,
        }

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
            reply = handler(_Call(op, params, query, parsed, user))
        except _Answer as refusal:
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
            for group in self.state.groups[rollout["id"]]:
                group["status"] = "ready"
        return Reply(200, rollout)

    def _get_groups(self, call: _Call) -> Reply:
        return self._select(call, self.state.groups[self._rollout(call)["id"]], {"name", "status"})

    def _create_rollout(self, call: _Call) -> Reply:
        body = call.body
        if any(r["name"] == body["name"] for r in self.state.rollouts.values()):
            raise _Answer(409, "hawkbit.server.error.repo.entitiyAlreadyExists", body["name"])
        if body.get("distributionSetId") not in self.state.distribution_sets:
            raise _Answer(404, "hawkbit.server.error.repo.entitiyNotFound", "distribution set")
        known = {c: self.state.metadata.get(c, {}) for c in self.state.targets}
        try:
            groups = fill(body, known)
        except Refusal as refusal:
            raise _Answer(refusal.status, refusal.code, refusal.message) from None
        except FiqlUnsupported as exc:
            self.unimplemented.append(f"target filter: {exc}")
            raise _Answer(501, "fake.fiql", str(exc)) from None
        fields = {
            "name": body["name"],
            "description": body.get("description", ""),
            "status": "creating",
            "targetFilterQuery": body["targetFilterQuery"],
            "distributionSetId": body["distributionSetId"],
            "totalTargets": sum(len(g.members) for g in groups),
            "totalGroups": len(groups),
            "type": body.get("type", "forced"),
            "deleted": False,
        }
        rollout = self._new(call.user, "/rest/v1/rollouts", fields)
        self.state.rollouts[rollout["id"]] = rollout
        href = f"/rest/v1/rollouts/{rollout['id']}/deploygroups"
        self.state.groups[rollout["id"]] = []
        for group in groups:
            made = self._new(call.user, href, group.fields)
            self.state.groups[rollout["id"]].append(made)
            self.state.members[made["id"]] = group.members
        return Reply(201, rollout)

    def _start_rollout(self, call: _Call) -> Reply:
        rollout = self._rollout(call)
        if rollout["status"] != "ready":
            raise _Answer(400, "hawkbit.server.error.rollout.illegalstate", rollout["status"])
        rollout["status"] = "starting"
        return Reply(200)
