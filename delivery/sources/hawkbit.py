"""A hawkBit source: this worker polls hawkBit's Direct Device Integration API for one device.

The worker acts as a gateway for one controller (hawkBit's *target*), authenticated with the
tenant's gateway security token (``Authorization: GatewayToken <token>``). Each ``target()``
reads the controller base resource (``getControllerBase``), remembers its suggested polling
sleep as ``poll_seconds``, follows the ``deploymentBase`` link if hawkBit offers one
(``getControllerDeploymentBaseAction``) and downloads the first artifact that carries a
sha256 (``downloadArtifact``, via the ``download-http``/``download`` link), checking its size
and sha256 before serving it. The download is cached per action and sha256, so polling again
does not fetch the artifact again. ``feedback()`` reports progress and results on the
deployment's feedback channel (``postDeploymentBaseActionFeedback``).

Standard library only: the delivery side stays lean. The token never appears in logs,
errors or ``repr``; redirects are not followed (they would carry the token elsewhere); plain
http is refused unless the host is loopback or ``insecure=True``. TLS is always verified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from http.client import HTTPException
from typing import Any, Final, Literal, NoReturn, get_args
from urllib.parse import quote, urljoin, urlsplit

from ajour_build.core.hosts import is_loopback
from delivery.decision import FirmwareImage
from delivery.errors import DeliveryError
from delivery.sources.firmware_source import SourceUnavailable

log = logging.getLogger(__name__)

MAX_ARTIFACT: Final = 64 * 1024 * 1024
MAX_JSON: Final = 1024 * 1024
DEFAULT_POLL_SECONDS: Final = 300
EXCERPT: Final = 200
_SLEEP = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_ACTION_ID = re.compile(r"[0-9]{1,18}")

Finished = Literal["success", "failure", "none"]
Execution = Literal[
    "closed", "proceeding", "canceled", "scheduled", "rejected", "resumed", "downloaded", "download"
]
FINISHED: Final[tuple[str, ...]] = get_args(Finished)
EXECUTIONS: Final[tuple[str, ...]] = get_args(Execution)
JSON_ACCEPT: Final = "application/hal+json, application/json"


class HawkbitError(SourceUnavailable):
    """hawkBit cannot give a target now: unreachable, refused, or answered something unusable."""


def parse_sleep(text: str) -> int:
    """hawkBit's polling sleep ``HH:MM:SS`` (00:00:01 to 23:59:59) in seconds."""
    found = _SLEEP.fullmatch(text)
    if found is None:
        raise HawkbitError(f"hawkBit polling sleep {text[:40]!r} is not HH:MM:SS (e.g. '00:05:00')")
    hours, minutes, seconds = (int(part) for part in found.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total == 0:
        raise HawkbitError("hawkBit polling sleep '00:00:00' is zero: devices would never wait")
    return total


def format_sleep(seconds: int) -> str:
    """The inverse of ``parse_sleep``: 1 to 86399 seconds as ``HH:MM:SS``."""
    if not 0 < seconds < 24 * 3600:
        raise ValueError(f"a hawkBit polling sleep is 1 to 86399 seconds, got {seconds}")
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Answer 3xx as errors: following them would send the gateway token to another URL."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HawkbitSource:
    """The target firmware hawkBit assigns to one controller, fetched over DDI as a gateway."""

    def __init__(
        self,
        base_url: str,
        tenant: str,
        controller_id: str,
        gateway_token: str,
        timeout: float = 10,
        insecure: bool = False,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise DeliveryError(
                "hawkBit DDI base URL: expected http(s)://host[:port][/prefix] without"
                f" credentials; got scheme {parts.scheme!r}, host {parts.hostname or ''!r}"
            )
        if parts.query or parts.fragment:
            raise DeliveryError("hawkBit DDI base URL: expected no query or fragment")
        if not tenant or not controller_id:
            raise DeliveryError("hawkBit DDI: tenant and controller id must not be empty")
        if not gateway_token or any(c in gateway_token for c in "\r\n\0"):
            raise DeliveryError("hawkBit DDI: the gateway token is empty or has control chars")
        if timeout <= 0:
            raise DeliveryError(f"hawkBit DDI: timeout must be positive, got {timeout}")
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.tenant, self.controller_id = tenant, controller_id
        self.timeout, self.insecure = timeout, insecure
        self._token = gateway_token
        problem = self._url_problem(self.base_url)
        if problem is not None:
            raise DeliveryError(f"hawkBit DDI base URL: {problem}")
        self.controller_url = (
            f"{self.base_url}/{quote(tenant, safe='')}/controller/v1/"
            f"{quote(controller_id, safe='')}"
        )
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._poll_seconds = DEFAULT_POLL_SECONDS
        self._action_id: str | None = None
        self._cached: tuple[tuple[str, str], FirmwareImage] | None = None

    def __repr__(self) -> str:
        return (
            f"HawkbitSource({self.base_url!r}, tenant={self.tenant!r},"
            f" controller={self.controller_id!r})"
        )

    @property
    def poll_seconds(self) -> int:
        """hawkBit's suggested polling sleep, from the last controller base resource read."""
        return self._poll_seconds

    @property
    def action_id(self) -> str | None:
        """The deployment action of the last target served (for ``feedback``), if any."""
        return self._action_id

    def invalidate(self) -> None:
        """Nothing to forget: every ``target()`` asks hawkBit which action is current, and the
        artifact cache is keyed by action and sha256, so it cannot serve a stale firmware."""

    def target(self) -> FirmwareImage:
        base = self._get_json(self.controller_url, "the controller base resource")
        self._poll_seconds = self._sleep(base)
        href = _href(base.get("_links"), "deploymentBase")
        if href is None:
            raise HawkbitError(
                f"no deployment for controller {self.controller_id!r} on tenant"
                f" {self.tenant!r}: hawkBit offers no deploymentBase link"
            )
        url = urljoin(self.controller_url, href)
        deployment = self._get_json(url, "the deployment resource")
        action_id, version, artifact = self._pick(deployment, url)
        sha256 = str(artifact["hashes"]["sha256"]).lower()
        cached = self._cached
        if cached is not None and cached[0] == (action_id, sha256):
            self._action_id = action_id
            return cached[1]
        data = self._download(action_id, artifact)
        target = FirmwareImage(version.encode(), data, bytes.fromhex(sha256))
        self._cached = ((action_id, sha256), target)
        self._action_id = action_id
        return target

    def feedback(
        self,
        action_id: str | int,
        finished: Finished,
        execution: Execution = "closed",
        details: Sequence[str] = (),
    ) -> None:
        """Report on a deployment action: ``finished`` is success, failure or none (still
        running); ``execution`` is e.g. closed (done) or proceeding (in progress)."""
        if finished not in FINISHED:
            raise ValueError(f"hawkBit feedback: finished must be one of {FINISHED}")
        if execution not in EXECUTIONS:
            raise ValueError(f"hawkBit feedback: execution must be one of {EXECUTIONS}")
        if not _ACTION_ID.fullmatch(str(action_id)):
            raise ValueError(f"hawkBit feedback: action id must be digits, got {action_id!r}")
        if isinstance(details, str) or not all(isinstance(d, str) for d in details):
            raise ValueError("hawkBit feedback: details must be a list of strings")
        body = {
            "status": {
                "execution": execution,
                "result": {"finished": finished},
                "details": list(details),
            },
            "timestamp": int(time.time() * 1000),
        }
        url = f"{self.controller_url}/deploymentBase/{action_id}/feedback"
        what = f"feedback for action {action_id}"
        status, payload = self._call("POST", url, json.dumps(body).encode(), JSON_ACCEPT)
        if status == 410:
            self._fail(f"hawkBit refused {what}: the action is no longer active (HTTP 410)")
        if status != 200:
            self._unexpected("POST", url, status, payload, f"HTTP 200 for {what}")

    # -- parsing ------------------------------------------------------------------------------

    def _sleep(self, base: dict[str, Any]) -> int:
        config = base.get("config")
        polling = config.get("polling") if isinstance(config, dict) else None
        sleep = polling.get("sleep") if isinstance(polling, dict) else None
        if sleep is None:
            return DEFAULT_POLL_SECONDS
        if not isinstance(sleep, str):
            self._fail(f"hawkBit polling sleep is not a string: {sleep!r:.40}")
        return parse_sleep(sleep)

    def _pick(self, body: dict[str, Any], url: str) -> tuple[str, str, dict[str, Any]]:
        """(action id, chunk version, artifact) of the first artifact with a sha256 hash."""
        action_id = body.get("id")
        if type(action_id) is int:
            action_id = str(action_id)
        if not isinstance(action_id, str) or not _ACTION_ID.fullmatch(action_id):
            self._fail(f"GET {url}: the deployment's id {action_id!r:.40} is not an action id")
        deployment = body.get("deployment")
        chunks = deployment.get("chunks") if isinstance(deployment, dict) else None
        if not isinstance(chunks, list):
            self._fail(f"GET {url}: deployment {action_id} has no list of chunks")
        for chunk in chunks:
            artifacts = chunk.get("artifacts") if isinstance(chunk, dict) else None
            for artifact in artifacts if isinstance(artifacts, list) else []:
                hashes = artifact.get("hashes") if isinstance(artifact, dict) else None
                if not isinstance(hashes, dict) or "sha256" not in hashes:
                    continue
                sha256, version = hashes["sha256"], chunk.get("version")
                if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
                    self._fail(f"GET {url}: artifact sha256 {sha256!r:.80} is not 64 hex digits")
                if not isinstance(version, str) or not version:
                    self._fail(f"GET {url}: chunk version {version!r:.40} is not a string")
                return action_id, version, artifact
        self._fail(
            f"GET {url}: deployment {action_id} for controller {self.controller_id!r} has no"
            " artifact with a sha256 hash"
        )

    def _download(self, action_id: str, artifact: dict[str, Any]) -> bytes:
        name = str(artifact.get("filename", "?"))[:80]
        what = f"artifact {name!r} of action {action_id}"
        size = artifact.get("size")
        if size is not None and (type(size) is not int or size < 0):
            self._fail(f"hawkBit {what}: size {size!r:.40} is not a byte count")
        if size is not None and size > MAX_ARTIFACT:
            self._fail(f"hawkBit {what} is {size} bytes, over the {MAX_ARTIFACT} byte limit")
        links = artifact.get("_links")
        order = ["download", "download-http"]  # https first, unless hawkBit is on http
        if not self.base_url.startswith("https:"):
            order.reverse()
        hrefs = [h for h in (_href(links, rel) for rel in order) if h is not None]
        if not hrefs:
            self._fail(f"hawkBit {what} has no download or download-http link")
        url = urljoin(self.controller_url, hrefs[0])
        status, data = self._call("GET", url, None, "application/octet-stream, */*", MAX_ARTIFACT)
        if status != 200:
            self._unexpected("GET", url, status, data, f"HTTP 200 with {what}")
        if len(data) > MAX_ARTIFACT:
            self._fail(f"GET {url}: {what} is over the {MAX_ARTIFACT} byte limit")
        digest = hashlib.sha256(data).digest()
        expected = str(artifact["hashes"]["sha256"]).lower()
        if size is not None and len(data) != size:
            self._fail(
                f"GET {url}: {what} is {len(data)} bytes but hawkBit says {size};"
                " refusing to serve it"
            )
        if digest.hex() != expected:
            self._fail(
                f"GET {url}: {what} has sha256 {digest.hex()} but hawkBit says {expected};"
                " refusing to serve it"
            )
        log.info("hawkBit: downloaded %s (%d bytes)", what, len(data))
        return data

    # -- HTTP ---------------------------------------------------------------------------------

    def _url_problem(self, url: str) -> str | None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            return f"refusing to fetch {url[:200]!r}: only http(s) URLs with a host"
        if parts.scheme == "http" and not (self.insecure or is_loopback(host)):
            return (
                f"refusing plain http to {host!r}: the gateway token and firmware would travel"
                " unencrypted; use https, or opt in with insecure=True"
            )
        return None

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        status, payload = self._call("GET", url, None, JSON_ACCEPT)
        if status != 200:
            self._unexpected("GET", url, status, payload, f"HTTP 200 with {what}")
        try:
            data = json.loads(payload)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self._unexpected("GET", url, status, payload, f"{what} as a JSON object")
        return data

    def _call(
        self, method: str, url: str, body: bytes | None, accept: str, limit: int = MAX_JSON
    ) -> tuple[int, bytes]:
        problem = self._url_problem(url)
        if problem is not None:
            self._fail(problem)
        headers = {
            "Authorization": f"GatewayToken {self._token}",
            "Accept": accept,
            "User-Agent": "ajour-delivery",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, body, headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, payload = int(response.status), response.read(limit + 1)
        except urllib.error.HTTPError as exc:
            try:
                status, payload = exc.code, exc.read(MAX_JSON)
            finally:
                exc.close()
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            self._fail(f"{method} {url} failed: {type(exc).__name__}: {reason}")
        log.debug("hawkBit: %s %s -> HTTP %d", method, url, status)
        if len(payload) > limit:
            self._fail(f"{method} {url}: the answer is over the {limit} byte limit")
        if status in (401, 403):
            self._fail(
                f"hawkBit rejected the gateway token (HTTP {status}) at {method} {url}: check"
                f" that gateway token authentication is enabled for tenant {self.tenant!r} and"
                " that the token is that tenant's gateway security token"
            )
        if 300 <= status < 400:
            self._fail(f"{method} {url} answered HTTP {status}: redirects are not followed")
        return status, payload

    def _unexpected(
        self, method: str, url: str, status: int, payload: bytes, expected: str
    ) -> NoReturn:
        excerpt = payload[:EXCERPT].decode("utf-8", "replace")
        self._fail(f"{method} {url}: expected {expected}; got HTTP {status}, body: {excerpt!r}")

    def _fail(self, message: str) -> NoReturn:
        raise HawkbitError(message.replace(self._token, "***"))


def _href(links: object, rel: str) -> str | None:
    link = links.get(rel) if isinstance(links, dict) else None
    href = link.get("href") if isinstance(link, dict) else None
    return href if isinstance(href, str) and href else None
