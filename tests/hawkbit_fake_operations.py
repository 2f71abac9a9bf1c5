"""The Management API operations of the FAKE hawkBit (``tests/hawkbit_fake.py``): not hawkBit.

``MgmtOperations`` keeps the fake's entities in memory (``FakeState``) and answers the
operations Ajour's publisher uses, by operationId, the way hawkBit does as far as the
fake's docstring says. A request reaches it only after it passed the spec's checks.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.fiql import FiqlUnsupported
from tests.hawkbit_fake_rollouts import Refusal, fill
from tests.openapi_fake import Call, error_body


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-able; None means no body


class ErrorReply(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.reply = Reply(status, error_body("Fake", code, message))


@dataclass
class MgmtCall(Call):
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


class MgmtOperations:
    """The operations the fake serves, over its state; ``unimplemented`` is the fake's list."""

    def __init__(self, unimplemented: list[str], rollout_ready_after: int) -> None:
        self.state = FakeState()
        self.unimplemented = unimplemented
        self.rollout_ready_after = rollout_ready_after
        self.module_types = {"os": "OS", "application": "Application"}
        self.ds_types = {"os": {"os"}, "app": {"application"}, "os_app": {"os", "application"}}
        self._ids = itertools.count(1)
        self._clock = itertools.count(1_700_000_000_000, 1000)
        self._polls: Counter[int] = Counter()

    def handlers(self) -> dict[str, Callable[[MgmtCall], Reply]]:
        """The operations by operationId."""
        return {
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

    def _new(self, user: str, href: str, fields: dict[str, Any]) -> dict[str, Any]:
        ident = next(self._ids)
        now = next(self._clock)
        stamp = {"createdBy": user, "createdAt": now, "lastModifiedBy": user, "lastModifiedAt": now}
        return {"id": ident, **fields, **stamp, "_links": {"self": {"href": f"{href}/{ident}"}}}

    def _select(self, call: MgmtCall, items: Iterable[dict[str, Any]], fields: set[str]) -> Reply:
        selected = list(items)
        for q in call.query.get("q", []):
            for term in q.split(";"):
                if any(c in term for c in ",()") or "==" not in term:
                    self.unimplemented.append(f"FIQL term {term!r}")
                    raise ErrorReply(
                        501, "fake.fiql", f"the fake only supports a==b;c==d, got {q!r}"
                    )
                name, _, value = term.partition("==")
                if name not in fields:
                    raise ErrorReply(400, "hawkbit.server.error.rest.param.rsqlInvalidField", name)
                regex = re.compile(
                    "^" + ".*".join(map(re.escape, value.strip("\"'").split("*"))) + "$"
                )
                selected = [i for i in selected if regex.match(str(i.get(name, "")))]
        offset = int(call.query.get("offset", ["0"])[0])
        limit = int(call.query.get("limit", ["50"])[0])
        page = selected[offset : offset + limit]
        return Reply(200, {"content": page, "total": len(selected), "size": len(page)})

    def _get_modules(self, call: MgmtCall) -> Reply:
        return self._select(call, self.state.modules.values(), {"name", "version", "type"})

    def _create_modules(self, call: MgmtCall) -> Reply:
        created = []
        for item in call.body:
            key = (item["name"], item["version"], item["type"])
            if item["type"] not in self.module_types:
                raise ErrorReply(404, "hawkbit.server.error.repo.entitiyNotFound", item["type"])
            if any(
                (m["name"], m["version"], m["type"]) == key for m in self.state.modules.values()
            ):
                raise ErrorReply(409, "hawkbit.server.error.repo.entitiyAlreadyExists", str(key))
            extra = {"typeName": self.module_types[item["type"]], "encrypted": False}
            flags = {"locked": False, "deleted": False}
            module = self._new(call.user, "/rest/v1/softwaremodules", {**extra, **item, **flags})
            self.state.modules[module["id"]] = module
            self.state.artifacts[module["id"]] = []
            created.append(module)
        return Reply(201, created)

    def _module(self, call: MgmtCall) -> int:
        module_id = int(call.params["softwareModuleId"])
        if module_id not in self.state.modules:
            raise ErrorReply(
                404, "hawkbit.server.error.repo.entitiyNotFound", f"module {module_id}"
            )
        return module_id

    def _get_artifacts(self, call: MgmtCall) -> Reply:
        return Reply(200, self.state.artifacts[self._module(call)])

    def _upload_artifact(self, call: MgmtCall) -> Reply:
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
                raise ErrorReply(400, code, f"{algorithm} does not match the uploaded file")
        if any(a["providedFilename"] == name for a in self.state.artifacts[module_id]):
            raise ErrorReply(409, "hawkbit.server.error.repo.entitiyAlreadyExists", name)
        href = f"/rest/v1/softwaremodules/{module_id}/artifacts"
        fields = {"providedFilename": name, "size": len(data), "hashes": hashes}
        artifact = self._new(call.user, href, fields)
        self.state.artifacts[module_id].append(artifact)
        self.state.blobs[artifact["id"]] = data
        return Reply(201, artifact)

    def _get_sets(self, call: MgmtCall) -> Reply:
        return self._select(
            call, self.state.distribution_sets.values(), {"name", "version", "type"}
        )

    def _create_sets(self, call: MgmtCall) -> Reply:
        created = []
        for item in call.body:
            if not item.get("name") or not item.get("version"):
                raise ErrorReply(400, "hawkbit.server.error.rest.body.notReadable", "name, version")
            allowed = self.ds_types.get(item.get("type", "os"))
            if allowed is None:
                raise ErrorReply(
                    404, "hawkbit.server.error.repo.entitiyNotFound", str(item["type"])
                )
            key = (item["name"], item["version"])
            if any((d["name"], d["version"]) == key for d in self.state.distribution_sets.values()):
                raise ErrorReply(409, "hawkbit.server.error.repo.entitiyAlreadyExists", str(key))
            modules = []
            for ref in item.get("modules", []):
                module = self.state.modules.get(ref.get("id", -1))
                if module is None:
                    raise ErrorReply(404, "hawkbit.server.error.repo.entitiyNotFound", str(ref))
                if module["type"] not in allowed:
                    raise ErrorReply(400, "hawkbit.server.error.distributionset.type.undefined", "")
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

    def _assign_targets(self, call: MgmtCall) -> Reply:
        ds_id = int(call.params["distributionSetId"])
        if ds_id not in self.state.distribution_sets:
            raise ErrorReply(404, "hawkbit.server.error.repo.entitiyNotFound", f"set {ds_id}")
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

    def _get_rollouts(self, call: MgmtCall) -> Reply:
        return self._select(call, self.state.rollouts.values(), {"name", "status"})

    def _rollout(self, call: MgmtCall) -> dict[str, Any]:
        rollout = self.state.rollouts.get(int(call.params["rolloutId"]))
        if rollout is None:
            raise ErrorReply(404, "hawkbit.server.error.repo.entitiyNotFound", "rollout")
        return rollout

    def _get_rollout(self, call: MgmtCall) -> Reply:
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

    def _get_groups(self, call: MgmtCall) -> Reply:
        return self._select(call, self.state.groups[self._rollout(call)["id"]], {"name", "status"})

    def _create_rollout(self, call: MgmtCall) -> Reply:
        body = call.body
        if any(r["name"] == body["name"] for r in self.state.rollouts.values()):
            raise ErrorReply(409, "hawkbit.server.error.repo.entitiyAlreadyExists", body["name"])
        if body.get("distributionSetId") not in self.state.distribution_sets:
            raise ErrorReply(404, "hawkbit.server.error.repo.entitiyNotFound", "distribution set")
        known = {c: self.state.metadata.get(c, {}) for c in self.state.targets}
        try:
            groups = fill(body, known)
        except Refusal as refusal:
            raise ErrorReply(refusal.status, refusal.code, refusal.message) from None
        except FiqlUnsupported as exc:
            self.unimplemented.append(f"target filter: {exc}")
            raise ErrorReply(501, "fake.fiql", str(exc)) from None
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

    def _start_rollout(self, call: MgmtCall) -> Reply:
        rollout = self._rollout(call)
        if rollout["status"] != "ready":
            raise ErrorReply(400, "hawkbit.server.error.rollout.illegalstate", rollout["status"])
        rollout["status"] = "starting"
        return Reply(200)
