"""Publishing to an OCI registry with oras-py (format v1).

oras-py uploads the blobs (with its auth handling); the manifest is PUT as the exact
canonical bytes through oras's authenticated request, because ``push()`` cannot set
``artifactType`` and the digest must be known before the tags move. Order: blobs, the
immutable version tag, then the moving tag, so a moving tag never points at nothing.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oras.provider
import requests

from ajour_build.core.artifact.credentials import Credentials
from ajour_build.core.artifact.format import (
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
)
from ajour_build.core.artifact.reference import OciRef
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.errors import ArtifactError, PublishError
from ajour_build.core.hosts import is_loopback
from ajour_build.publish.common import V1Parts, conflict
from ajour_build.publish.publisher import FirmwareArtifact, Published


@dataclass
class OciPublisher:
    ref: OciRef
    credentials: Credentials | None = None
    insecure: bool = False

    @property
    def plain_http(self) -> bool:
        return self.insecure or is_loopback(self.ref.host)

    def _registry(self) -> Any:
        registry = oras.provider.Registry(
            hostname=self.ref.host, insecure=self.plain_http, auth_backend="basic"
        )
        if self.credentials is not None:
            registry.auth.set_basic_auth(self.credentials.username, self.credentials.password)
        return registry

    def _reader(self) -> RegistryReader:
        return RegistryReader(self.ref.host, self.credentials, self.insecure)

    def publish(self, artifact: FirmwareArtifact) -> Published:
        parts = V1Parts(artifact)
        reader = self._reader()
        registry = self._registry()  # one client (and connection pool) for the whole publish
        version_ref = OciRef(self.ref.host, self.ref.repository, artifact.version)
        try:
            existing = reader.resolve(version_ref)
            if existing is not None:
                info = reader.inspect(version_ref)
                if info.checksum != parts.checksum:
                    raise PublishError(
                        conflict(artifact.version, str(version_ref), info.checksum, parts.checksum)
                    )
                digest, body = existing, reader.manifest(version_ref)[0]
            else:
                self._push(registry, artifact, parts)
                digest, body = parts.digest, parts.manifest_bytes
            if self.ref.tag != artifact.version:
                self._put_manifest(registry, body, self.ref.tag, digest)
        except ArtifactError as exc:
            raise PublishError(str(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise PublishError(f"registry {self.ref.host} is unreachable: {exc}") from None
        tags = tuple(dict.fromkeys((artifact.version, self.ref.tag)))
        return Published(
            target=str(self.ref),
            reference=f"{self.ref.image}@{digest}",
            digest=digest,
            version=artifact.version,
            tags=tags,
        )

    def _push(self, registry: Any, artifact: FirmwareArtifact, parts: V1Parts) -> None:
        container = registry.get_container(f"{self.ref.image}:{artifact.version}")
        with tempfile.TemporaryDirectory(prefix="ajour-oci-") as tmp:
            config_path = Path(tmp) / "config.json"
            config_path.write_bytes(parts.config_bytes)
            blobs = [
                (
                    config_path,
                    {
                        "mediaType": CONFIG_MEDIA_TYPE,
                        "digest": parts.manifest["config"]["digest"],
                        "size": len(parts.config_bytes),
                    },
                ),
                (
                    artifact.path,
                    {
                        "mediaType": LAYER_MEDIA_TYPE,
                        "digest": parts.checksum,
                        "size": parts.config.size,
                    },
                ),
            ]
            for path, layer in blobs:
                response = registry.upload_blob(str(path), container, layer)
                self._ok(response, f"uploading blob {layer['digest']}")
        self._put_manifest(registry, parts.manifest_bytes, artifact.version, parts.digest)

    def _put_manifest(self, registry: Any, body: bytes, tag: str, digest: str) -> None:
        container = registry.get_container(f"{self.ref.image}:{tag}")
        response = registry.do_request(
            f"{registry.prefix}://{container.manifest_url()}",
            "PUT",
            data=body,
            headers={"Content-Type": MANIFEST_MEDIA_TYPE},
        )
        self._ok(response, f"tagging {self.ref.repository}:{tag}")
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise PublishError(
                f"registry {self.ref.host} stored manifest {stored} for {tag}, expected {digest}"
            )

    def _ok(self, response: requests.Response, what: str) -> None:
        status = response.status_code
        if status in (401, 403):
            how = (
                f"credentials from {self.credentials.source} were refused"
                if self.credentials
                else "no credentials were given"
            )
            raise PublishError(
                f"registry {self.ref.host} denied {what} (HTTP {status}): {how}; set"
                " AJOUR_REGISTRY_USERNAME/AJOUR_REGISTRY_PASSWORD or log in (docker config.json)"
            )
        if status >= 300:
            raise PublishError(
                f"registry {self.ref.host}: {what} failed with HTTP {status}: {response.text[:200]}"
            )
