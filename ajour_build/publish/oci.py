"""Publishing to an OCI registry with oras-py (format v1).

oras-py uploads the blobs (with its auth handling); the manifest is PUT as the exact
canonical bytes through oras's authenticated request, because ``push()`` cannot set
``artifactType`` and the digest must be known before the tags move. Order: blobs, the
immutable version tag, then the moving tag, so a moving tag never points at nothing.

A registry has no conditional PUT of a tag, so immutability under a race is kept by
checking the version tag right before tagging it and reading it back ``settle`` seconds
after (at least three times as long as check and PUT took): of two publishers of one
version with different firmware the one whose manifest the tag holds wins, the other gets
the conflict error, and only the winner moves the moving tag. Every request is bounded
(``registry_client``): a connect and a read timeout, and a deadline for the whole publish.
"""

from __future__ import annotations

import functools
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from oras.container import Container

from ajour_build.core.artifact.credentials import Credentials
from ajour_build.core.artifact.format import (
    CONFIG_MEDIA_TYPE,
    DOCKER_MANIFEST,
    LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    Descriptor,
)
from ajour_build.core.artifact.reference import OciRef
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.artifact.signature import ArtifactBlob
from ajour_build.core.errors import ArtifactError, PublishError
from ajour_build.core.hosts import is_loopback
from ajour_build.publish.common import V1Parts, conflict
from ajour_build.publish.cosign_merge import MissingBlob, holds, merged
from ajour_build.publish.patches import (
    DEFAULT_PATCHES,
    PatchBlob,
    RegistryHistory,
    attach,
    make_patches,
)
from ajour_build.publish.publisher import FirmwareArtifact, Published
from ajour_build.publish.registry_client import (
    RETRY_PAUSES,
    BoundedRegistry,
    Bounds,
    DeadlineError,
)
from ajour_build.publish.signing import Signer

CONNECT_TIMEOUT = 5.0  # seconds to open a connection to the registry
READ_TIMEOUT = 30.0  # seconds the registry may stay silent within one request
DEADLINE = 300.0  # seconds for the whole publish
SETTLE = 0.5  # seconds between tagging the version and reading the tag back (at least)
SIGNATURE_ACCEPT = ", ".join(
    (
        MANIFEST_MEDIA_TYPE,
        DOCKER_MANIFEST,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


@dataclass
class OciPublisher:
    ref: OciRef
    credentials: Credentials | None = None
    insecure: bool = False
    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT
    deadline: float = DEADLINE
    settle: float = SETTLE
    patch_count: int = DEFAULT_PATCHES  # earlier versions that get a patch (publish/patches.py)
    signer: Signer | None = None  # signs each manifest before a tag points at it (signing.py)

    @property
    def plain_http(self) -> bool:
        return self.insecure or is_loopback(self.ref.host)

    def _registry(self, bounds: Bounds) -> BoundedRegistry:
        registry = BoundedRegistry(self.ref.host, self.plain_http, bounds)
        if self.credentials is not None:
            registry.auth.set_basic_auth(self.credentials.username, self.credentials.password)
        return registry

    def publish(self, artifact: FirmwareArtifact) -> Published:
        parts = V1Parts(artifact)
        bounds = Bounds(self.connect_timeout, self.read_timeout, time.monotonic() + self.deadline)
        reader = RegistryReader(
            self.ref.host,
            self.credentials,
            self.insecure,
            self.read_timeout,
            bounds.deadline,
            retries=len(RETRY_PAUSES),
        )
        registry = self._registry(bounds)  # one client (and connection pool) for the publish
        version_ref = OciRef(self.ref.host, self.ref.repository, artifact.version)
        signed = ""
        try:
            found = self._existing(reader, version_ref, parts)
            if found is None:
                history = RegistryHistory(reader, self.ref)
                patches = make_patches(history, artifact, parts, self.patch_count)
                attach(parts, patches)
                self._push_blobs(registry, artifact, parts)
                self._push_patches(registry, artifact, patches)
                signed = self._sign(reader, registry, parts.digest, artifact)  # before any tag
                found = self._tag_version(reader, registry, version_ref, parts)
            digest, body = found
            if digest != signed:  # published before (or by a racing publisher)
                self._sign(reader, registry, digest, artifact)
            if self.ref.tag != artifact.version:
                self._put_manifest(registry, body, self.ref.tag, digest)
        except ArtifactError as exc:
            raise PublishError(str(exc)) from None
        except requests.exceptions.Timeout as exc:
            raise PublishError(self._slow(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise PublishError(
                f"registry {self.ref.host} is unreachable ({_reason(exc)}); is it running, and"
                " is the host right?"
            ) from None
        except ValueError as exc:  # oras-py's own complaints about an answer
            raise PublishError(f"registry {self.ref.host}: {exc}") from None
        tags = tuple(dict.fromkeys((artifact.version, self.ref.tag)))
        return Published(
            target=str(self.ref),
            reference=f"{self.ref.image}@{digest}",
            digest=digest,
            version=artifact.version,
            tags=tags,
            signatures=self.signer.tags(digest) if self.signer else (),
        )

    def _slow(self, exc: requests.exceptions.Timeout) -> str:
        return (
            f"registry {self.ref.host} did not answer in time ({_reason(exc)}; at most"
            f" {self.connect_timeout:g} s to connect, {self.read_timeout:g} s of silence,"
            f" {self.deadline:g} s for the whole publish): it is stalled or overloaded; check"
            " it, or the host, and publish again"
        )

    def _existing(
        self, reader: RegistryReader, version_ref: OciRef, parts: V1Parts
    ) -> tuple[str, bytes] | None:
        """The manifest the version tag holds if it has our firmware, None if there is none;
        the conflict error if it holds other firmware."""
        existing = reader.resolve(version_ref)
        if existing is None:
            return None
        if existing == parts.digest:  # our own manifest (read back after tagging)
            return existing, parts.manifest_bytes
        pinned = OciRef(version_ref.host, version_ref.repository, version_ref.tag, existing)
        info = reader.inspect(pinned)
        if info.checksum != parts.checksum:
            raise PublishError(
                conflict(version_ref.tag, str(version_ref), info.checksum, parts.checksum)
            )
        return existing, reader.manifest(pinned)[0]

    def _tag_version(
        self, reader: RegistryReader, registry: BoundedRegistry, version_ref: OciRef, parts: V1Parts
    ) -> tuple[str, bytes]:
        """Check, tag, wait, read back: the digest and manifest the version tag holds."""
        started = time.monotonic()
        found = self._existing(reader, version_ref, parts)  # another publisher since the start?
        if found is not None:
            return found
        self._put_manifest(registry, parts.manifest_bytes, version_ref.tag, parts.digest)
        time.sleep(max(self.settle, 3 * (time.monotonic() - started)))
        found = self._existing(reader, version_ref, parts)
        if found is None:
            raise PublishError(
                f"registry {self.ref.host}: the tag {version_ref.repository}:{version_ref.tag}"
                " vanished right after it was pushed (deleted by someone else?); publish again"
            )
        return found

    def _push_blobs(
        self, registry: BoundedRegistry, artifact: FirmwareArtifact, parts: V1Parts
    ) -> None:
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
            if artifact.elf is not None and parts.elf is not None:
                blobs.append((artifact.elf, parts.elf.model_dump(by_alias=True)))
            for path, layer in blobs:
                response = registry.upload_blob(str(path), container, layer)
                self._ok(response, f"uploading blob {layer['digest']}")

    def _sign(
        self,
        reader: RegistryReader,
        registry: BoundedRegistry,
        digest: str,
        artifact: FirmwareArtifact,
    ) -> str:
        """Add the signature and provenance of ``digest`` to the manifests cosign's tags
        hold (``cosign_merge``); the digest, "" unsigned. A tag has no compare-and-set, so
        of two publishers signing one digest at once, one may write over the manifest the
        other just wrote: the tag is read back after the PUT and, if our layer is not in
        it, merged and written once more (a PUT by tag is idempotent)."""
        if self.signer is None:
            return ""
        key = self.signer.public
        lookup = functools.partial(self._signatures, reader)
        fetch = functools.partial(self._signature_blob, reader)
        container = registry.get_container(f"{self.ref.image}:{artifact.version}")
        for tag, layer in self.signer.layers(self.ref.image, digest, artifact):
            where = (self.ref.image, f"e.g. `oras manifest delete {self.ref.image}:{tag}`")
            for _ in range(2):
                merge = merged(tag, layer, key, lookup, fetch, where)
                if merge.artifact is None:
                    break  # signed with this key already
                self._push_signature_blobs(registry, container, merge.upload)
                made = merge.artifact
                self._put_manifest(registry, made.manifest_bytes, tag, made.digest)
                if holds(tag, layer, key, lookup, where):
                    break
            else:
                raise PublishError(
                    f"registry {self.ref.host}: {self.ref.repository}:{tag} lost our signature"
                    " twice to other publishers writing it at the same time; publish again"
                )
        return digest

    def _push_signature_blobs(
        self, registry: BoundedRegistry, container: Container, blobs: tuple[ArtifactBlob, ...]
    ) -> None:
        with tempfile.TemporaryDirectory(prefix="ajour-oci-") as tmp:
            for blob in blobs:
                path = Path(tmp) / "blob"
                path.write_bytes(blob.data)
                response = registry.upload_blob(str(path), container, blob.descriptor)
                self._ok(response, f"uploading blob {blob.descriptor['digest']}")

    def _signatures(self, reader: RegistryReader, tag: str) -> bytes | None:
        """The manifest at a signature tag, of any type (an index there is refused by
        ``cosign_merge``, never taken for "no tag"); None if there is no such tag."""
        path = f"{self.ref.repository}/manifests/{tag}"
        status, _, body = reader.request("GET", path, {"Accept": SIGNATURE_ACCEPT})
        if status == 404:
            return None
        if status != 200:
            raise PublishError(
                f"registry {self.ref.host}: reading {self.ref.repository}:{tag} failed with"
                f" HTTP {status}: {body[:200]!r}"
            )
        return body

    def _signature_blob(self, reader: RegistryReader, descriptor: Descriptor) -> bytes:
        """A layer of a signature manifest; ``MissingBlob`` if the repository has none."""
        try:
            return reader.blob(self.ref.repository, descriptor)
        except ArtifactError:
            path = f"{self.ref.repository}/blobs/{descriptor.digest}"
            if reader.request("HEAD", path)[0] == 404:
                raise MissingBlob(f"blob {descriptor.digest} is not in {path}") from None
            raise

    def _push_patches(
        self, registry: BoundedRegistry, artifact: FirmwareArtifact, patches: list[PatchBlob]
    ) -> None:
        container = registry.get_container(f"{self.ref.image}:{artifact.version}")
        with tempfile.TemporaryDirectory(prefix="ajour-oci-") as tmp:
            for patch in patches:
                path = Path(tmp) / "patch"
                path.write_bytes(patch.data)
                response = registry.upload_blob(str(path), container, patch.layer)
                self._ok(response, f"uploading patch {patch.layer['digest']}")

    def _put_manifest(self, registry: BoundedRegistry, body: bytes, tag: str, digest: str) -> None:
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


def _reason(exc: requests.exceptions.RequestException) -> str:
    """What went wrong, in a few words (requests' messages nest urllib3's)."""
    if isinstance(exc, DeadlineError):
        return str(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "no connection within the connect timeout"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "no answer within the read timeout"
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return match.group(1) if match else type(exc).__name__
