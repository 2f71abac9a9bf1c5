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
  ``unimplemented``. Injected failures (``fail_next``) are sent verbatim and not checked
  (a 302 with a ``Location`` header, which the spec does not declare, for instance).
* Links point at the fake itself, unless ``link_base`` (the base resource's links: hawkBit
  behind a proxy that rewrites the host) or a deployment's ``download_base`` (its artifact
  links: hawkBit's artifact URL patterns can name a CDN or file server) says otherwise.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.openapi_fake import Answer, Call, Incoming, OpenApiFake, error_body
from tests.openapi_fake import json_answer as _json
from tests.openapi_spec import HAWKBIT_SCHEMAS, OpenApiSpec, Operation

SPEC_PATH = HAWKBIT_SCHEMAS / "ddi.openapi.json"
SLEEP_REGEX = r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$"


class DdiSpec(OpenApiSpec):
    """``ddi.openapi.json``: its quirks, ``Accept`` checks, JSON requests (no CBOR)."""

    undeclared_but_real = frozenset({404})
    unquote_params = True
    lenient_responses = True  # binary downloads (*/*) and empty feedback answers

    def _adjust(self, components: dict[str, Any]) -> dict[str, Any]:
        components = copy.deepcopy(components)
        sleep = components["schemas"]["DdiPolling"]["properties"]["sleep"]
        if sleep.get("pattern") == "HH:MM:SS":  # prose, not a regex: see the module docstring
            sleep["pattern"] = SLEEP_REGEX
        return components

    @staticmethod
    def _order(op: Operation) -> tuple[int, int]:
        """Fewer parameters, then more literal text, wins (``{fileName}.MD5SUM``)."""
        literal = re.sub(r"\{[^}]+\}", "", op.template)
        return (op.template.count("{"), -len(literal))

    def _check_headers(self, op: Operation, headers: Mapping[str, str]) -> list[str]:
        accept = headers.get("accept", "*/*")
        produced = set(op.spec.get("responses", {}).get("200", {}).get("content", {}))
        if not produced or "*/*" in produced:
            return []
        wanted = {part.split(";")[0].strip().lower() for part in accept.split(",")}
        if wanted & (produced | {"*/*", "application/*"}):
            return []
        return [f"Accept {accept!r} allows none of {op.operation_id}'s {sorted(produced)}"]


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
    download_base: str | None = None  # artifact links on this origin (a CDN), not the fake's


@dataclass
class _Request(Call):
    media: str


@dataclass
class _State:
    deployment: Deployment | None = None
    feedback: list[dict[str, Any]] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)  # action ids closed by feedback


class HawkbitDdiFake(OpenApiFake):
    """The fake DDI server; use as a context manager. See the module docstring for its limits."""

    log_name = "hawkbit DDI fake"
    spec: DdiSpec

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
        super().__init__(load_spec(spec_path, strict_properties))
        self.tenant, self.controller_id, self.gateway_token = tenant, controller_id, gateway_token
        self.sleep = sleep  # None: no config in the base resource
        # links in the base resource on this origin instead of the fake's own (hawkBit behind
        # a proxy that rewrites the host, or a misconfigured forwarded host)
        self.link_base: str | None = None
        self.state = _State()
        self.auth_failures = 0
        self.calls: Counter[str] = Counter()  # by operationId (or "unmatched")
        self._next_action = 100

    # -- for tests ---------------------------------------------------------------------------

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
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests for ``operation_id`` (after the request checks)
        with ``status``, ``body`` and ``headers`` verbatim; the answer is not checked against
        the spec (hawkBit declares no redirects, for instance)."""
        self.spec.operation(operation_id)  # fail loudly on a typo
        extra = dict(headers or {})
        self._inject(status, body, content_type, times, operation_id=operation_id, headers=extra)

    def count(self, operation_id: str) -> int:
        return self.calls[operation_id]

    @property
    def feedback(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self.state.feedback)

    # -- request handling --------------------------------------------------------------------

    def _answer(self, req: Incoming) -> Answer | None:
        op, params, query, headers = req.op, req.params, req.query, req.headers
        self.calls[op.operation_id if op else "unmatched"] += 1
        if op is None:
            self.spec_violations.append(f"{req.method} {req.path}: {req.reason}")
            return _json(req.status, _error("fake.spec.violation", req.reason))
        problems, parsed = self.spec.check_request(op, params, query, headers, req.body)
        if problems:
            self.spec_violations.append(f"{op.method} {op.template}: {'; '.join(problems)}")
        if headers.get("authorization") != f"GatewayToken {self.gateway_token}" or (
            params.get("tenant") != self.tenant
        ):
            self.auth_failures += 1
            return 401, {}, b""
        if problems:
            return _json(400, _error("fake.spec.violation", "; ".join(problems)))
        failure = self._injected(op, req.path)
        if failure is not None:
            return failure.answer
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
        self._check_drift(op, answer, answer[1].get("Content-Type", ""))
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
                f"{self.link_base or self.base_url}{self._controller_path(self.controller_id)}"
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
        http_base, https_base = self.base_url, f"https://127.0.0.1:{port}"  # not served: no TLS
        if d.download_base is not None:  # hawkBit's artifact URL patterns can name a CDN
            http_base = https_base = d.download_base
        artifact = {
            "filename": d.filename,
            "hashes": {
                "sha1": hashlib.sha1(d.artifact).hexdigest(),
                "md5": hashlib.md5(d.artifact, usedforsecurity=False).hexdigest(),
                "sha256": d.advertised_sha256 or hashlib.sha256(d.artifact).hexdigest(),
            },
            "size": len(d.artifact) if d.advertised_size is None else d.advertised_size,
            "_links": {
                "download": {"href": f"{https_base}{path}"},
                "download-http": {"href": f"{http_base}{path}"},
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
    return error_body("FakeDdi", code, message)
