"""A hawkBit source: this worker polls hawkBit's Direct Device Integration API for one device.

The worker acts as a gateway for one controller (hawkBit's *target*), authenticated with the
tenant's gateway security token (``Authorization: GatewayToken <token>``). ``target()``
reads the controller base resource (``getControllerBase``), remembers its suggested polling
sleep as ``poll_seconds``, follows the ``deploymentBase`` link if hawkBit offers one
(``getControllerDeploymentBaseAction``) and downloads the first artifact that carries a
sha256 (``downloadArtifact``, via the ``download-http``/``download`` link), checking its size
and sha256 before serving it. ``feedback()`` reports progress and results on the
deployment's feedback channel (``postDeploymentBaseActionFeedback``).

Caching. Those two lookups are cached for ``ttl`` seconds (default 10, never longer than
hawkBit's polling sleep), so a device downloading an image in a few hundred statuses costs
hawkBit two requests per TTL, not two per status. Concurrent statuses for one controller
share one lookup. "No deployment" is an answer and is cached too; an error (hawkBit down,
refused, an unusable answer, a download that fails its checks) drops the cached lookup, and
so do ``invalidate()`` (a publish event) and ``feedback()``. The download is cached per
action and sha256, so polling again does not fetch the artifact again.

Credentials. The gateway token goes only to the configured hawkBit origin (scheme, host and
port). API links (``deploymentBase``) on another origin are refused: the token would be
needed there. An artifact link on another origin (a CDN, a file server) is fetched without
the token; if it is plain http off loopback it is refused unless ``insecure=True`` (the
sha256 from hawkBit guards the bytes, but not their confidentiality). The requests, and the
rest of what they guard (redirects, plain http, TLS, the token kept out of logs, errors and
``repr``), are :class:`delivery.sources.ddi_client.DdiClient`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn, get_args
from urllib.parse import urljoin

from ajour_build.core.artifact.redirects import safe_url
from delivery.decision import FirmwareImage
from delivery.errors import DeliveryError
from delivery.sources.ddi_client import JSON_ACCEPT, DdiClient, HawkbitError, link_href

log = logging.getLogger(__name__)

MAX_ARTIFACT: Final = 64 * 1024 * 1024
DEFAULT_POLL_SECONDS: Final = 300
LOOKUP_TTL: Final = 10.0
_SLEEP = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_ACTION_ID = re.compile(r"[0-9]{1,18}")

Finished = Literal["success", "failure", "none"]
Execution = Literal[
    "closed", "proceeding", "canceled", "scheduled", "rejected", "resumed", "downloaded", "download"
]
FINISHED: Final[tuple[str, ...]] = get_args(Finished)
EXECUTIONS: Final[tuple[str, ...]] = get_args(Execution)


class NoDeployment(HawkbitError):
    """hawkBit answered, and has no deployment for the controller: an answer, not a failure."""


@dataclass(frozen=True)
class _Lookup:
    """What the controller base and deployment resources said, and until when to trust it."""

    poll_seconds: int
    pick: tuple[str, str, dict[str, Any]] | None  # (action id, version, artifact); None: none
    expires: float


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
        ttl: float = LOOKUP_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ddi = DdiClient(base_url, tenant, controller_id, gateway_token, timeout, insecure)
        if ttl < 0:
            raise DeliveryError(f"hawkBit DDI: the lookup TTL must be 0 or more, got {ttl}")
        self.base_url, self.controller_url = self._ddi.base_url, self._ddi.controller_url
        self.tenant, self.controller_id = tenant, controller_id
        self.timeout, self.insecure = timeout, insecure
        self.ttl, self._clock = ttl, clock
        self._lock = threading.Lock()  # one lookup at a time per controller
        self._lookup: _Lookup | None = None
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
        """Forget the cached lookup: the next ``target()`` asks hawkBit again. (The artifact
        cache is keyed by action and sha256, so it cannot serve a stale firmware.)"""
        with self._lock:
            self._lookup = None

    def target(self) -> FirmwareImage:
        with self._lock:
            try:
                return self._target()
            except NoDeployment:
                raise  # an answer, cached until it expires
            except HawkbitError:
                self._lookup = None  # an error: the next status asks hawkBit again
                raise

    def _target(self) -> FirmwareImage:
        now = self._clock()
        lookup = self._lookup
        if lookup is None or now >= lookup.expires:
            lookup = self._ask(now)
            self._lookup = lookup
        if lookup.pick is None:
            raise NoDeployment(
                f"no deployment for controller {self.controller_id!r} on tenant"
                f" {self.tenant!r}: hawkBit offers no deploymentBase link"
            )
        action_id, version, artifact = lookup.pick
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

    def _ask(self, now: float) -> _Lookup:
        """Two requests: the controller base resource, then its deployment (if linked)."""
        base = self._ddi.get_json(self.controller_url, "the controller base resource")
        self._poll_seconds = poll = self._sleep(base)
        expires = now + min(self.ttl, poll)
        href = link_href(base.get("_links"), "deploymentBase")
        if href is None:
            return _Lookup(poll, None, expires)
        url = urljoin(self.controller_url, href)
        deployment = self._ddi.get_json(url, "the deployment resource")
        return _Lookup(poll, self._pick(deployment, url), expires)

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
        try:
            status, payload = self._ddi.call("POST", url, json.dumps(body).encode(), JSON_ACCEPT)
        finally:
            with self._lock:
                self._lookup = None  # the action's state changed (or may have)
        if status == 410:
            self._fail(f"hawkBit refused {what}: the action is no longer active (HTTP 410)")
        if status != 200:
            self._ddi.unexpected("POST", url, status, payload, f"HTTP 200 for {what}")

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
        where = safe_url(url)
        action_id = body.get("id")
        if type(action_id) is int:
            action_id = str(action_id)
        if not isinstance(action_id, str) or not _ACTION_ID.fullmatch(action_id):
            self._fail(f"GET {where}: the deployment's id {action_id!r:.40} is not an action id")
        deployment = body.get("deployment")
        chunks = deployment.get("chunks") if isinstance(deployment, dict) else None
        if not isinstance(chunks, list):
            self._fail(f"GET {where}: deployment {action_id} has no list of chunks")
        for chunk in chunks:
            artifacts = chunk.get("artifacts") if isinstance(chunk, dict) else None
            for artifact in artifacts if isinstance(artifacts, list) else []:
                hashes = artifact.get("hashes") if isinstance(artifact, dict) else None
                if not isinstance(hashes, dict) or "sha256" not in hashes:
                    continue
                sha256, version = hashes["sha256"], chunk.get("version")
                if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
                    self._fail(f"GET {where}: artifact sha256 {sha256!r:.80} is not 64 hex digits")
                if not isinstance(version, str) or not version:
                    self._fail(f"GET {where}: chunk version {version!r:.40} is not a string")
                return action_id, version, artifact
        self._fail(
            f"GET {where}: deployment {action_id} for controller {self.controller_id!r} has no"
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
        hrefs = [h for h in (link_href(links, rel) for rel in order) if h is not None]
        if not hrefs:
            self._fail(f"hawkBit {what} has no download or download-http link")
        url = urljoin(self.controller_url, hrefs[0])
        where = safe_url(url)
        accept = "application/octet-stream, */*"
        status, data = self._ddi.call("GET", url, None, accept, MAX_ARTIFACT, download=True)
        if status != 200:
            self._ddi.unexpected("GET", url, status, data, f"HTTP 200 with {what}")
        if len(data) > MAX_ARTIFACT:
            self._fail(f"GET {where}: {what} is over the {MAX_ARTIFACT} byte limit")
        digest = hashlib.sha256(data).digest()
        expected = str(artifact["hashes"]["sha256"]).lower()
        if size is not None and len(data) != size:
            self._fail(
                f"GET {where}: {what} is {len(data)} bytes but hawkBit says {size};"
                " refusing to serve it"
            )
        if digest.hex() != expected:
            self._fail(
                f"GET {where}: {what} has sha256 {digest.hex()} but hawkBit says {expected};"
                " refusing to serve it"
            )
        log.info("hawkBit: downloaded %s (%d bytes) from %s", what, len(data), where)
        return data

    def _fail(self, message: str) -> NoReturn:
        self._ddi.fail(message)
