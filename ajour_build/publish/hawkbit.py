"""Publish firmware to Eclipse hawkBit through its Management API (``/rest/v1``).

Every call below is checked against hawkBit's published OpenAPI spec (operationIds in
comments). The flow is find-or-create at each step, so publishing the same version and
content again changes nothing, and re-running after a failure picks up where it stopped.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from ajour_build.core.errors import PublishError
from ajour_build.core.files import sha256_file
from ajour_build.core.hosts import is_loopback
from ajour_build.core.spec.rollout import RolloutPolicy
from ajour_build.publish.hawkbit_api import API, ManagementApi
from ajour_build.publish.hawkbit_auth import AUTH_HINT, HawkbitAuth
from ajour_build.publish.hawkbit_rollout import RolloutPlan, deploy, plan
from ajour_build.publish.publisher import FirmwareArtifact, Published

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
VERSION_MAX = 64  # hawkBit's NamedVersionedEntity.VERSION_MAX_SIZE
URL_PARAMS = ("assign", "rollout", "filter", "type", "ds-type", "insecure")


@dataclass(frozen=True)
class Rollout:
    """A rollout to create (once) and start for the published distribution set."""

    name: str
    target_filter: str
    groups: int = 1


class HawkbitPublisher:
    """Upload one firmware file as a software module + distribution set, then deploy it."""

    def __init__(
        self,
        base_url: str,
        module: str,
        *,
        auth: HawkbitAuth,
        module_type: str = "os",
        ds_type: str = "os",
        assign_target: str | None = None,
        rollout: Rollout | None = None,
        application: str | None = None,
        policy: RolloutPolicy | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        deadline: float = 600.0,
        retries: int = 3,
        backoff: float = 0.5,
        poll_interval: float = 1.0,
        poll_timeout: float = 120.0,
    ) -> None:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host or parts.username is not None:
            raise PublishError(
                "hawkBit base URL: expected http(s)://host[:port] without credentials;"
                f" got scheme {parts.scheme!r}, host {host!r}"
            )
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise PublishError(
                f"hawkBit base URL: expected no path, query or fragment; got {parts.path!r}"
                " (hawkBit's API lives at /rest/v1 on the server's root)"
            )
        if parts.scheme == "http" and not insecure and not is_loopback(host):
            raise PublishError(
                f"refusing plain http to {host!r}: credentials and firmware would travel"
                " unencrypted; use https, or opt in with insecure=1 in the hawkbit:// URL"
            )
        for label, value in [("module", module), ("type", module_type), ("ds-type", ds_type)]:
            if not NAME.fullmatch(value):
                raise PublishError(
                    f"hawkBit {label} {value!r} is not allowed: use 1-64 letters, digits, . _ -"
                )
        if rollout is not None and not (NAME.fullmatch(rollout.name) and rollout.target_filter):
            raise PublishError(
                f"hawkBit rollout {rollout.name!r}: needs a name of letters, digits, . _ -"
                " and a non-empty target filter (RSQL, e.g. filter=controllerId==dev-*)"
            )
        if policy is not None and (rollout is not None or not application):
            raise PublishError(
                "hawkBit: a spec.rollout policy needs its application's name and replaces"
                " rollout=/filter= in the hawkbit:// URL; drop those parameters"
            )
        self.application, self.policy = application, policy
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self.insecure = parts.scheme == "http" and not is_loopback(host)
        self.module, self.module_type, self.ds_type = module, module_type, ds_type
        self.auth, self.assign_target, self.rollout = auth, assign_target, rollout
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        # per request: connect and read (between bytes) timeouts; per publish: a deadline
        self.connect_timeout, self.deadline = min(connect_timeout, timeout), deadline
        self.poll_interval, self.poll_timeout = poll_interval, poll_timeout

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str], **options: Any) -> HawkbitPublisher:
        """``hawkbit://host[:port]/<module>?assign=&rollout=&filter=&type=&ds-type=&insecure=1``."""
        parts = urlsplit(url)
        if "@" in parts.netloc:  # never echo the URL here: it holds a secret
            raise PublishError(
                "credentials in the hawkbit:// URL are not allowed (URLs end up in logs and in"
                f" the published record); remove 'user:password@' and {AUTH_HINT}"
            )
        syntax = "hawkbit://host[:port]/<module>?assign=<controllerId>&rollout=<name>&filter=<rsql>"
        if parts.scheme != "hawkbit" or not parts.hostname:
            raise PublishError(f"hawkBit URL {url!r}: expected {syntax}")
        module = parts.path.strip("/")
        if not module or "/" in module or parts.fragment:
            raise PublishError(f"hawkBit URL {url!r}: expected one path segment, the module name")
        params: dict[str, str] = {}
        for pair in filter(None, parts.query.split("&")):
            key, _, value = pair.partition("=")
            if key not in URL_PARAMS or key in params:
                why = "repeated" if key in params else "unknown"
                allowed = ", ".join(URL_PARAMS)
                raise PublishError(f"hawkBit URL: {why} parameter {key!r}; allowed once: {allowed}")
            params[key] = unquote(value)
        if params.get("insecure", "0") not in ("0", "1"):
            raise PublishError(f"hawkBit URL: insecure must be 1 or 0, got {params['insecure']!r}")
        if ("rollout" in params) != ("filter" in params):
            raise PublishError("hawkBit URL: rollout=<name> and filter=<rsql> go together")
        try:
            port = parts.port
        except ValueError as exc:
            raise PublishError(f"hawkBit URL {url!r}: bad port ({exc})") from None
        host = parts.hostname
        insecure = params.get("insecure") == "1"
        scheme = "http" if insecure or is_loopback(host) else "https"
        netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
        rollout = Rollout(params["rollout"], params["filter"]) if "rollout" in params else None
        return cls(
            f"{scheme}://{netloc}",
            module,
            auth=HawkbitAuth.from_env(env),
            module_type=params.get("type", "os"),
            ds_type=params.get("ds-type", "os"),
            assign_target=params.get("assign"),
            rollout=rollout,
            insecure=insecure,
            **options,
        )

    @property
    def url(self) -> str:
        """The canonical ``hawkbit://`` URL of this target, without credentials."""
        query = [("assign", self.assign_target)]
        if self.rollout:
            query += [("rollout", self.rollout.name), ("filter", self.rollout.target_filter)]
        query += [("type", None if self.module_type == "os" else self.module_type)]
        query += [("ds-type", None if self.ds_type == "os" else self.ds_type)]
        query += [("insecure", "1" if self.insecure else None)]
        text = "&".join(f"{k}={quote(v, safe='=*;,!~<>()')}" for k, v in query if v)
        netloc = self.base_url.split("://", 1)[1]
        return f"hawkbit://{netloc}/{self.module}" + (f"?{text}" if text else "")

    def publish(self, artifact: FirmwareArtifact) -> Published:
        artifact.check()
        if len(artifact.version) > VERSION_MAX:
            raise PublishError(
                f"version {artifact.version!r} is {len(artifact.version)} characters;"
                f" hawkBit allows at most {VERSION_MAX}: shorten it"
            )
        planned = None  # refuse a policy hawkBit cannot express before any request
        if self.policy is not None and self.application:
            planned = plan(self.policy, self.application, artifact.version)
        digest = sha256_file(artifact.path)
        until = time.monotonic() + self.deadline
        with requests.Session() as session:
            session.auth = self.auth
            session.headers["Accept"] = "application/json"
            api = ManagementApi(
                session,
                self.base_url,
                self.auth,
                until=until,
                deadline=self.deadline,
                timeout=self.timeout,
                connect_timeout=self.connect_timeout,
                retries=self.retries,
                backoff=self.backoff,
            )
            module_id = self._software_module(api, artifact.version)
            self._upload(api, module_id, artifact, digest)
            ds_id = self._distribution_set(api, module_id, artifact.version)
            if self.assign_target:
                self._assign(api, ds_id, self.assign_target)
            if self.rollout:
                self._rollout(api, ds_id, self.rollout)
            if planned is not None:
                self._deploy(api, ds_id, planned)
        return Published(
            target=self.url,
            reference=f"{self.base_url}{API}/distributionsets/{ds_id}",
            digest=f"sha256:{digest}",
            version=artifact.version,
        )

    # -- the steps ---------------------------------------------------------------------------

    def _software_module(self, api: ManagementApi, version: str) -> int:
        path = "/softwaremodules"
        found = [  # getSoftwareModules; filter exactly here too: RSQL may be case-insensitive
            m for m in api.find(path, self.module, version) if m.get("type") == self.module_type
        ]
        if found:
            return int(found[0]["id"])
        body = [{"name": self.module, "version": version, "type": self.module_type}]
        reply = api.call("POST", path, expect=201, json=body)  # createSoftwareModules
        log.info("hawkBit: created software module %s:%s", self.module, version)
        return api.one(reply)

    def _upload(
        self, api: ManagementApi, module_id: int, art: FirmwareArtifact, digest: str
    ) -> None:
        path = f"/softwaremodules/{module_id}/artifacts"
        name = art.path.name
        full = {"representation": "full"}  # the hashes decide idempotency: ask for everything
        listing = api.call("GET", path, expect=200, params=full)  # getArtifacts
        existing = api.parsed(listing, list)
        if not all(isinstance(item, dict) for item in existing):
            raise api.bad(listing, "a JSON list of artifact objects")
        for item in existing:
            sha = (item.get("hashes") or {}).get("sha256")
            if item.get("providedFilename") == name and sha == digest:
                log.info("hawkBit: %s already uploaded to module %d", name, module_id)
                return
        if existing:
            names = [
                f"{a.get('providedFilename')} (sha256 {(a.get('hashes') or {}).get('sha256')})"
                for a in existing
            ]
            raise api.fail(
                f"version {art.version} already published with different content: software"
                f" module {self.module}:{art.version} (id {module_id}) holds {', '.join(names)};"
                f" expected {name} (sha256 {digest}). Published versions are never overwritten;"
                " bump the version"
            )
        with art.path.open("rb") as fh:  # uploadArtifact: file part, checksums as query params
            params = {"filename": name, "sha256sum": digest}
            files = {"file": (name, fh, "application/octet-stream")}
            reply = api.call("POST", path, expect=201, params=params, files=files)
        if (api.parsed(reply, dict).get("hashes") or {}).get("sha256") != digest:
            raise api.bad(reply, f"the stored artifact's sha256 to be {digest}")
        log.info("hawkBit: uploaded %s to module %d", name, module_id)

    def _distribution_set(self, api: ManagementApi, module_id: int, version: str) -> int:
        path = "/distributionsets"
        found = api.find(path, self.module, version)  # getDistributionSets
        if found:
            ds = found[0]
            ds_id = int(ds["id"])
            modules = [m.get("id") for m in ds.get("modules") or [] if isinstance(m, dict)]
            if ds.get("type") != self.ds_type or module_id not in modules:
                raise api.fail(
                    f"distribution set {self.module}:{version} (id {ds_id}) exists with type"
                    f" {ds.get('type')!r} and modules {modules}; expected type {self.ds_type!r}"
                    f" containing module {module_id}. It was made by someone else: bump the"
                    " version or fix it in hawkBit"
                )
            return ds_id
        ds = {"name": self.module, "version": version, "type": self.ds_type}
        body = [{**ds, "modules": [{"id": module_id}], "requiredMigrationStep": False}]
        reply = api.call("POST", path, expect=201, json=body)  # createDistributionSets
        log.info("hawkBit: created distribution set %s:%s", self.module, version)
        return api.one(reply)

    def _assign(self, api: ManagementApi, ds_id: int, target: str) -> None:
        path = f"/distributionsets/{ds_id}/assignedTargets"  # createAssignedTarget
        reply = api.call("POST", path, expect=200, json=[{"id": target}])
        got = api.parsed(reply, dict)
        counts = [got.get("assigned"), got.get("alreadyAssigned")]
        if not all(isinstance(c, int) for c in counts):
            raise api.bad(reply, "integer 'assigned' and 'alreadyAssigned' counts")
        if not any(counts):  # hawkBit silently ignores unknown targets
            raise api.fail(
                f"hawkBit target {target!r} does not exist (assignment touched no target);"
                " check the controllerId in assign=, or register the device first"
            )

    def _rollout(self, api: ManagementApi, ds_id: int, rollout: Rollout) -> None:
        body = {"name": rollout.name, "amountGroups": rollout.groups}
        body["targetFilterQuery"] = rollout.target_filter
        self._deploy(api, ds_id, RolloutPlan(rollout.name, body))

    def _deploy(self, api: ManagementApi, ds_id: int, wanted: RolloutPlan) -> None:
        deploy(api, ds_id, wanted, poll_interval=self.poll_interval, poll_timeout=self.poll_timeout)
