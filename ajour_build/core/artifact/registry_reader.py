"""A small OCI distribution client for reading (standard library only, for delivery too).

Plain http only for loopback registries or with ``insecure=True``; basic auth, and the
bearer-token challenge registries send with 401. Every blob is checked against its digest.
Redirects (a registry sends blob GETs to its storage or a CDN, often a presigned URL) are
followed by ``redirects.fetch``: the credentials stay on the registry's own origin, https is
never downgraded (except to loopback), and at most five hops are taken.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ajour_build.core.artifact.credentials import Credentials
from ajour_build.core.artifact.format import (
    DOCKER_MANIFEST,
    MANIFEST_MEDIA_TYPE,
    Descriptor,
    FirmwareInfo,
    describe,
    firmware_from_tar,
    sha256_digest,
    verified,
)
from ajour_build.core.artifact.redirects import Fetched, FetchError, Origin, fetch, safe_url
from ajour_build.core.artifact.reference import OciRef
from ajour_build.core.errors import ArtifactError
from ajour_build.core.hosts import is_loopback

ACCEPT = ", ".join((MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST))
MAX_BLOB = 256 * 1024 * 1024
RETRY_STATUS = frozenset({500, 502, 503, 504})
RETRY_PAUSES = (0.25, 0.5)


@dataclass
class RegistryReader:
    host: str
    credentials: Credentials | None = None
    insecure: bool = False
    timeout: float = 10.0  # seconds to connect, and that the registry may stay silent
    deadline: float | None = None  # time.monotonic() after which no request is started
    retries: int = 0  # times a GET or HEAD answered 5xx is tried again (at most 2)
    _token: str | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        scheme = "http" if self.insecure or is_loopback(self.host) else "https"
        return f"{scheme}://{self.host}/v2"

    def _timeout(self) -> float:
        """The request timeout, capped by what is left before the deadline."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ArtifactError(
                f"registry {self.host} is too slow: the deadline for this operation passed;"
                " check the registry's health and the network, then try again"
            )
        return min(self.timeout, left)

    def _auth(self) -> dict[str, str]:
        if self._token:
            return {"Authorization": f"Bearer {self._token}"}
        if self.credentials is not None:
            return {"Authorization": self.credentials.basic()}
        return {}

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        got = self._send(method, path, headers, data)
        return got.status, got.headers, got.body

    def _send(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Fetched:
        """``method`` on the registry; GET and HEAD are tried again ``retries`` times when
        the registry answers a server error (500, 502, 503, 504), never past the deadline."""
        pauses = RETRY_PAUSES[: self.retries] if method in ("GET", "HEAD") else ()
        for pause in pauses:
            got = self._send_once(method, path, headers, data)
            if got.status not in RETRY_STATUS or (
                self.deadline is not None and self.deadline - time.monotonic() <= pause
            ):
                return got
            time.sleep(pause)
        return self._send_once(method, path, headers, data)

    def _send_once(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Fetched:
        """``method`` on the registry; GET and HEAD follow redirects (``redirects.fetch``),
        and the credentials go only to the registry's own origin."""
        url = f"{self.base}/{path}"
        for attempt in (0, 1):
            timeout = self._timeout()
            try:
                got = fetch(
                    method,
                    url,
                    {**(headers or {}), **self._auth()},
                    trusted=Origin.of(url),
                    timeout=timeout,
                    limit=MAX_BLOB,
                    insecure=self.insecure,
                    data=data,
                )
            except FetchError as exc:
                if exc.unreachable and not exc.redirects and "timed out" in exc.reason:
                    raise ArtifactError(
                        f"registry {self.host} did not answer {method} {path} within"
                        f" {timeout:g} s ({exc.reason}); it is stalled or overloaded:"
                        " check it, or the host, and try again"
                    ) from None
                if exc.unreachable and not exc.redirects:
                    raise ArtifactError(
                        f"registry {self.host} is unreachable ({exc.reason});"
                        " is it running, and is the host right?"
                    ) from None
                raise ArtifactError(
                    f"registry {self.host}: {exc}"
                    + (
                        f" (after {exc.redirects} redirect(s) from the registry)"
                        if exc.redirects
                        else ""
                    )
                ) from None
            challenge = _header(got.headers, "WWW-Authenticate")
            if (
                got.status == 401
                and got.trusted
                and attempt == 0
                and challenge.lower().startswith("bearer")
            ):
                self._token = self._fetch_token(challenge)
                continue
            return got
        raise ArtifactError(f"registry {self.host} refused the token it issued")  # pragma: no cover

    def _fetch_token(self, challenge: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise ArtifactError(f"registry {self.host} sent a bearer challenge without a realm")
        url = realm + "?" + urllib.parse.urlencode(params)
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        try:
            # the credentials go to the realm the registry names (that is the protocol), but
            # never further: not over plain http off loopback, not along a redirect elsewhere
            got = fetch(
                "GET",
                url,
                headers,
                trusted=Origin.of(url),
                timeout=self._timeout(),
                limit=65536,
                insecure=self.insecure,
            )
            data: Any = json.loads(got.body) if got.status == 200 else None
        except (ArtifactError, ValueError) as exc:
            raise ArtifactError(
                f"getting a registry token from {safe_url(realm)} failed: {exc}"
            ) from None
        if got.status != 200:
            raise ArtifactError(
                f"the token service at {safe_url(realm)} answered HTTP {got.status}"
                f"{got.location}; expected 200 with a token"
            )
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str):
            raise ArtifactError(f"the token service at {safe_url(realm)} returned no token")
        return token

    def _check(self, got: Fetched, what: str) -> None:
        status, body = got.status, got.body
        if got.redirects and not got.trusted and status >= 300:
            # storage behind a redirect: the registry's credentials were not sent there
            raise ArtifactError(
                f"registry {self.host}: {what} failed with HTTP {status}{got.location}, the"
                " storage the registry redirected to (the registry's credentials are not sent"
                f" there; a presigned URL may have expired): {body[:200]!r}"
            )
        if status in (401, 403):
            how = (
                f"credentials from {self.credentials.source} were refused"
                if self.credentials
                else "no credentials were given"
            )
            raise ArtifactError(
                f"registry {self.host} denied {what} (HTTP {status}): {how}; set"
                " AJOUR_REGISTRY_USERNAME/AJOUR_REGISTRY_PASSWORD or log in (docker config.json)"
            )
        if status == 404:
            raise ArtifactError(f"{what} not found on {self.host}")
        if status >= 300:
            raise ArtifactError(
                f"registry {self.host}: {what} failed with HTTP {status}: {body[:200]!r}"
            )

    def manifest(self, ref: OciRef) -> tuple[bytes, str]:
        """The manifest bytes for ``ref`` and their digest (checked when pinned)."""
        target = ref.digest or ref.tag
        got = self._send("GET", f"{ref.repository}/manifests/{target}", {"Accept": ACCEPT})
        self._check(got, f"manifest {ref.repository}:{target}")
        body = got.body
        digest = sha256_digest(body)
        if ref.digest:
            verified(body, ref.digest, f"manifest {ref.repository}@{ref.digest}")
        return body, digest

    def resolve(self, ref: OciRef) -> str | None:
        """The manifest digest a tag points at (HEAD), or None if the tag does not exist."""
        got = self._send("HEAD", f"{ref.repository}/manifests/{ref.tag}", {"Accept": ACCEPT})
        if got.status == 404 and got.trusted:
            return None
        self._check(got, f"manifest {ref.repository}:{ref.tag}")
        digest = _header(got.headers, "Docker-Content-Digest")
        if digest:
            return digest
        return self.manifest(ref)[1]

    def blob(self, repository: str, desc: Descriptor) -> bytes:
        if desc.size > MAX_BLOB:
            raise ArtifactError(f"blob {desc.digest} is {desc.size} bytes, over the 256 MiB limit")
        got = self._send("GET", f"{repository}/blobs/{desc.digest}")
        self._check(got, f"blob {desc.digest}")
        if len(got.body) > MAX_BLOB:
            raise ArtifactError(f"blob {desc.digest} is over the 256 MiB limit")
        return verified(got.body, desc.digest, f"blob {desc.digest} of {repository}")

    def tags(self, repository: str) -> list[str]:
        got = self._send("GET", f"{repository}/tags/list")
        self._check(got, f"tags of {repository}")
        data = json.loads(got.body)
        return sorted(data.get("tags") or [])

    def inspect(self, ref: OciRef) -> FirmwareInfo:
        body, _ = self.manifest(ref)
        return describe(body, lambda d: self.blob(ref.repository, d), ref.tag)

    def firmware(self, ref: OciRef, info: FirmwareInfo) -> bytes:
        """The firmware bytes, verified against the checksum the metadata claims."""
        if info.firmware is not None:
            data = self.blob(ref.repository, info.firmware)  # verified against its digest
            if info.firmware.digest == info.checksum:
                return data  # the same sha256: hashing it again proves nothing new
        elif info.layer is not None:
            data = firmware_from_tar(info.layer, self.blob(ref.repository, info.layer))
        else:  # pragma: no cover - describe() always sets one
            raise ArtifactError("no firmware blob")
        return verified(data, info.checksum, f"firmware {info.version}")


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), "")
