"""A small OCI distribution client for reading (standard library only, for delivery too).

Plain http only for loopback registries or with ``insecure=True``; basic auth, and the
bearer-token challenge registries send with 401. Every blob is checked against its digest.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
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
from ajour_build.core.artifact.reference import OciRef
from ajour_build.core.errors import ArtifactError
from ajour_build.core.hosts import is_loopback

ACCEPT = ", ".join((MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST))
MAX_BLOB = 256 * 1024 * 1024


@dataclass
class RegistryReader:
    host: str
    credentials: Credentials | None = None
    insecure: bool = False
    timeout: float = 10.0
    _token: str | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        scheme = "http" if self.insecure or is_loopback(self.host) else "https"
        return f"{scheme}://{self.host}/v2"

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
        url = f"{self.base}/{path}"
        for attempt in (0, 1):
            req = urllib.request.Request(
                url, method=method, data=data, headers={**(headers or {}), **self._auth()}
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return resp.status, dict(resp.headers.items()), resp.read(MAX_BLOB + 1)
            except urllib.error.HTTPError as exc:
                body = exc.read(4096)
                challenge = exc.headers.get("WWW-Authenticate", "")
                exc.close()
                if exc.code == 401 and attempt == 0 and challenge.lower().startswith("bearer"):
                    self._token = self._fetch_token(challenge)
                    continue
                return exc.code, dict(exc.headers.items()), body
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ArtifactError(
                    f"registry {self.host} is unreachable ({reason}); is it running, and is"
                    " the host right?"
                ) from None
        raise ArtifactError(f"registry {self.host} refused the token it issued")  # pragma: no cover

    def _fetch_token(self, challenge: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise ArtifactError(f"registry {self.host} sent a bearer challenge without a realm")
        url = realm + "?" + urllib.parse.urlencode(params)
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=self.timeout
            ) as resp:
                data: Any = json.loads(resp.read(65536))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ArtifactError(f"getting a registry token from {realm} failed: {exc}") from None
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str):
            raise ArtifactError(f"the token service at {realm} returned no token")
        return token

    def _check(self, status: int, body: bytes, what: str) -> None:
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
        status, _, body = self.request(
            "GET", f"{ref.repository}/manifests/{target}", {"Accept": ACCEPT}
        )
        self._check(status, body, f"manifest {ref.repository}:{target}")
        digest = sha256_digest(body)
        if ref.digest:
            verified(body, ref.digest, f"manifest {ref.repository}@{ref.digest}")
        return body, digest

    def resolve(self, ref: OciRef) -> str | None:
        """The manifest digest a tag points at (HEAD), or None if the tag does not exist."""
        status, headers, body = self.request(
            "HEAD", f"{ref.repository}/manifests/{ref.tag}", {"Accept": ACCEPT}
        )
        if status == 404:
            return None
        self._check(status, body, f"manifest {ref.repository}:{ref.tag}")
        lowered = {k.lower(): v for k, v in headers.items()}
        digest = lowered.get("docker-content-digest")
        if digest:
            return digest
        return self.manifest(ref)[1]

    def blob(self, repository: str, desc: Descriptor) -> bytes:
        if desc.size > MAX_BLOB:
            raise ArtifactError(f"blob {desc.digest} is {desc.size} bytes, over the 256 MiB limit")
        status, _, body = self.request("GET", f"{repository}/blobs/{desc.digest}")
        self._check(status, body, f"blob {desc.digest}")
        return verified(body, desc.digest, f"blob {desc.digest} of {repository}")

    def tags(self, repository: str) -> list[str]:
        status, _, body = self.request("GET", f"{repository}/tags/list")
        self._check(status, body, f"tags of {repository}")
        data = json.loads(body)
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
