"""Publish firmware to Eclipse hawkBit through its Management API (``/rest/v1``).

Every call below is checked against hawkBit's published OpenAPI spec (operationIds in
comments). The flow is find-or-create at each step, so publishing the same version and
content again changes nothing, and re-running after a failure picks up where it stopped.
"""

from __future__ import annotations

import json
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
from ajour_build.publish.hawkbit_auth import AUTH_HINT, HawkbitAuth
from ajour_build.publish.hawkbit_rollout import RolloutPlan, deploy, hawkbit_message, plan
from ajour_build.publish.publisher import FirmwareArtifact, Published

log = logging.getLogger(__name__)

PERMISSIONS = "READ_REPOSITORY, CREATE_REPOSITORY, UPDATE_TARGET, CREATE_ROLLOUT, HANDLE_ROLLOUT"
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
VERSION_MAX = 64  # hawkBit's NamedVersionedEntity.VERSION_MAX_SIZE
RETRY_STATUS = frozenset({429, 502, 503, 504})
URL_PARAMS = ("assign", "rollout", "filter", "type", "ds-type", "insecure")
API = "/rest/v1"
JSON = dict[str, Any]


@dataclass(frozen=True)
class Rollout:
    """A rollout to create (once) and start for the published distribution set."""

    name: str
    target_filter: str
    groups: int = 1


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    where: str


def _excerpt(body: bytes) -> str:
    return repr(body[:200].decode("utf-8", "replace"))


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
        self._until = float("inf")
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
        self._until = time.monotonic() + self.deadline
        with requests.Session() as session:
            session.auth = self.auth
            session.headers["Accept"] = "application/json"
            module_id = self._software_module(session, artifact.version)
            self._upload(session, module_id, artifact, digest)
            ds_id = self._distribution_set(session, module_id, artifact.version)
            if self.assign_target:
                self._assign(session, ds_id, self.assign_target)
            if self.rollout:
                self._rollout(session, ds_id, self.rollout)
            if planned is not None:
                deploy(self, session, ds_id, planned)
        return Published(
            target=self.url,
            reference=f"{self.base_url}{API}/distributionsets/{ds_id}",
            digest=f"sha256:{digest}",
            version=artifact.version,
        )

    # -- the steps ---------------------------------------------------------------------------

    def _software_module(self, s: requests.Session, version: str) -> int:
        path = "/softwaremodules"
        found = [  # getSoftwareModules; filter exactly here too: RSQL may be case-insensitive
            m for m in self._find(s, path, version) if m.get("type") == self.module_type
        ]
        if found:
            return int(found[0]["id"])
        body = [{"name": self.module, "version": version, "type": self.module_type}]
        reply = self._call(s, "POST", path, expect=201, json=body)  # createSoftwareModules
        log.info("hawkBit: created software module %s:%s", self.module, version)
        return self._one(reply)

    def _upload(
        self, s: requests.Session, module_id: int, art: FirmwareArtifact, digest: str
    ) -> None:
        path = f"/softwaremodules/{module_id}/artifacts"
        name = art.path.name
        full = {"representation": "full"}  # the hashes decide idempotency: ask for everything
        listing = self._call(s, "GET", path, expect=200, params=full)  # getArtifacts
        existing = self._json(listing, list)
        if not all(isinstance(item, dict) for item in existing):
            raise self._bad(listing, "a JSON list of artifact objects")
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
            raise self._fail(
                f"version {art.version} already published with different content: software"
                f" module {self.module}:{art.version} (id {module_id}) holds {', '.join(names)};"
                f" expected {name} (sha256 {digest}). Published versions are never overwritten;"
                " bump the version"
            )
        with art.path.open("rb") as fh:  # uploadArtifact: file part, checksums as query params
            params = {"filename": name, "sha256sum": digest}
            files = {"file": (name, fh, "application/octet-stream")}
            reply = self._call(s, "POST", path, expect=201, params=params, files=files)
        if (self._json(reply, dict).get("hashes") or {}).get("sha256") != digest:
            raise self._bad(reply, f"the stored artifact's sha256 to be {digest}")
        log.info("hawkBit: uploaded %s to module %d", name, module_id)

    def _distribution_set(self, s: requests.Session, module_id: int, version: str) -> int:
        path = "/distributionsets"
        found = self._find(s, path, version)  # getDistributionSets
        if found:
            ds = found[0]
            ds_id = int(ds["id"])
            modules = [m.get("id") for m in ds.get("modules") or [] if isinstance(m, dict)]
            if ds.get("type") != self.ds_type or module_id not in modules:
                raise self._fail(
                    f"distribution set {self.module}:{version} (id {ds_id}) exists with type"
                    f" {ds.get('type')!r} and modules {modules}; expected type {self.ds_type!r}"
                    f" containing module {module_id}. It was made by someone else: bump the"
                    " version or fix it in hawkBit"
                )
            return ds_id
        ds = {"name": self.module, "version": version, "type": self.ds_type}
        body = [{**ds, "modules": [{"id": module_id}], "requiredMigrationStep": False}]
        reply = self._call(s, "POST", path, expect=201, json=body)  # createDistributionSets
        log.info("hawkBit: created distribution set %s:%s", self.module, version)
        return self._one(reply)

    def _assign(self, s: requests.Session, ds_id: int, target: str) -> None:
        path = f"/distributionsets/{ds_id}/assignedTargets"  # createAssignedTarget
        reply = self._call(s, "POST", path, expect=200, json=[{"id": target}])
        got = self._json(reply, dict)
        counts = [got.get("assigned"), got.get("alreadyAssigned")]
        if not all(isinstance(c, int) for c in counts):
            raise self._bad(reply, "integer 'assigned' and 'alreadyAssigned' counts")
        if not any(counts):  # hawkBit silently ignores unknown targets
            raise self._fail(
                f"hawkBit target {target!r} does not exist (assignment touched no target);"
                " check the controllerId in assign=, or register the device first"
            )

    def _rollout(self, s: requests.Session, ds_id: int, rollout: Rollout) -> None:
        body = {"name": rollout.name, "amountGroups": rollout.groups}
        body["targetFilterQuery"] = rollout.target_filter
        deploy(self, s, ds_id, RolloutPlan(rollout.name, body))

    # -- HTTP --------------------------------------------------------------------------------

    def _find(self, s: requests.Session, path: str, version: str) -> list[JSON]:
        params = {"q": f"name=={self.module};version=={version}", "limit": 50}
        reply = self._call(s, "GET", path, expect=200, params=params)
        return [
            e for e in self._page(reply) if (e["name"], e.get("version")) == (self.module, version)
        ]

    def _call(
        self, s: requests.Session, method: str, path: str, *, expect: int, **kw: Any
    ) -> _Reply:
        url = f"{self.base_url}{API}{path}"
        where = f"{method} {url}"
        attempts = 1 + max(self.retries, 0) if method in ("GET", "HEAD") else 1
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                time.sleep(min(self.backoff * 2 ** (attempt - 2), self._left(where)))
            left = self._left(where)
            timeout = (min(self.connect_timeout, left), min(self.timeout, left))
            try:
                with s.request(method, url, timeout=timeout, allow_redirects=False, **kw) as r:
                    reply = _Reply(r.status_code, r.content, where)
            except requests.RequestException as exc:
                log.debug("hawkBit: %s failed (attempt %d/%d): %s", where, attempt, attempts, exc)
                self._left(where)
                if attempt < attempts:
                    continue
                tried = f"after {attempts} attempts" if attempts > 1 else "not retried"
                tried += "" if method in ("GET", "HEAD") else ": not idempotent"
                raise self._fail(
                    f"{where} failed ({tried}): {type(exc).__name__}: {exc}; check that hawkBit"
                    " is reachable, then publish again (publishing resumes safely)"
                ) from None
            log.debug("hawkBit: %s -> HTTP %d", where, reply.status)
            if reply.status not in RETRY_STATUS:
                break
        if reply.status == 401:
            raise self._fail(f"hawkBit rejected the credentials (HTTP 401) at {where}: {AUTH_HINT}")
        if reply.status == 403:
            raise self._fail(
                f"hawkBit refused {where} (HTTP 403): the account lacks a permission"
                f" ({PERMISSIONS}) or the entity is locked; body: {_excerpt(reply.body)};"
                f" {AUTH_HINT} to an account that has them"
            )
        if reply.status != expect:
            raise self._bad(reply, f"HTTP {expect}")
        return reply

    def _left(self, where: str) -> float:
        """Seconds left of this publish's deadline; PublishError when none are."""
        left = self._until - time.monotonic()
        if left <= 0:
            raise self._fail(
                f"{where}: the publish did not finish within its {self.deadline:g}s deadline;"
                " check that hawkBit answers, then publish again (publishing resumes safely)"
            )
        return left

    def _json(self, reply: _Reply, shape: type[list[Any]] | type[JSON]) -> Any:
        try:
            data = reply.body and json.loads(reply.body)
        except ValueError:
            data = None
        if not isinstance(data, shape):
            raise self._bad(reply, f"a JSON {shape.__name__} (is this URL a hawkBit server?)")
        return data

    def _entities(self, reply: _Reply, items: list[Any]) -> list[JSON]:
        for e in items:
            if not (isinstance(e, dict) and type(e.get("id")) is int and "name" in e):
                raise self._bad(reply, "entities with an integer 'id' and a 'name'")
        return items

    def _page(self, reply: _Reply) -> list[JSON]:
        content = self._json(reply, dict).get("content")
        if not isinstance(content, list):
            raise self._bad(reply, "a page with a 'content' list")
        return self._entities(reply, content)

    def _one(self, reply: _Reply) -> int:
        data = self._json(reply, list)
        if len(data) != 1:
            raise self._bad(reply, "a list with the one created entity")
        return int(self._entities(reply, data)[0]["id"])

    def _bad(self, reply: _Reply, expected: str) -> PublishError:
        said = hawkbit_message(reply.body) if reply.status >= 400 else None
        return self._fail(
            f"{reply.where}: expected {expected}; got HTTP {reply.status}, body:"
            f" {_excerpt(reply.body)}" + (f"; hawkBit says: {said}" if said else "")
        )

    def _fail(self, message: str) -> PublishError:
        for secret in self.auth.secrets():
            message = message.replace(secret, "***")
        return PublishError(message)
