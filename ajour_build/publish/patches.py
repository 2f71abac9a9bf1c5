"""Delta patches at publish time: from the last few versions in the repository to the new one.

When an OCI publisher (registry or layout) pushes a new version, it asks this module for
patches from the ``count`` most recently created earlier versions that the repository
holds under their version tags (every publish tags its artifact with its version), and adds
them to the new version's manifest as extra layers (docs/artifact-format.md, "Patch
layers"). Each patch is ``detools.create_patch(old, new, patch_type="sequential",
compression="crle")``, checked by applying it with detools before it is kept.

Best effort: a publish never fails for a patch. An earlier version that cannot be read or
is not format v1 is skipped, and so is a patch that is
not at least ``MIN_SAVING`` times smaller than the image (a device would gain too little);
each skip is logged with its reason. Without detools installed (the ``oci`` extra) there
are no patches, with a warning.

``count`` comes from ``AJOUR_PUBLISH_PATCHES`` (default 3, 0 turns patches off); the
``ajour-build publish --patches N`` option sets it. Finding the earlier versions reads one
manifest per tag of the repository.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ajour_build.core.artifact.format import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    PATCH_MEDIA_TYPE,
    Descriptor,
    FirmwareInfo,
    canonical,
    describe,
    sha256_digest,
)
from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.patches import FORMAT, layer_annotations
from ajour_build.core.artifact.reference import OciRef
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.artifact.signature import is_cosign_tag
from ajour_build.core.errors import ArtifactError, PublishError
from ajour_build.core.version import is_version
from ajour_build.publish.common import V1Parts
from ajour_build.publish.publisher import FirmwareArtifact

log = logging.getLogger(__name__)

PATCHES_ENV: Final = "AJOUR_PUBLISH_PATCHES"
DEFAULT_PATCHES: Final = 3
MAX_PATCHES: Final = 16
MIN_SAVING: Final = 2
"""A patch is kept only if the image is at least this many times its size."""
VERSION_ANNOTATION: Final = "org.opencontainers.image.version"
CREATED_ANNOTATION: Final = "org.opencontainers.image.created"


@dataclass(frozen=True)
class PatchBlob:
    """A patch and its layer descriptor (media type, digest, size, annotations)."""

    data: bytes
    layer: dict[str, Any]


class History(Protocol):
    """Read access to the repository a version is published to."""

    def tags(self) -> list[str]: ...
    def manifest(self, tag: str) -> bytes: ...
    def blob(self, descriptor: Descriptor) -> bytes: ...
    def firmware(self, info: FirmwareInfo) -> bytes: ...


@dataclass
class RegistryHistory:
    reader: RegistryReader
    ref: OciRef

    def tags(self) -> list[str]:
        return self.reader.tags(self.ref.repository)

    def manifest(self, tag: str) -> bytes:
        return self.reader.manifest(OciRef(self.ref.host, self.ref.repository, tag))[0]

    def blob(self, descriptor: Descriptor) -> bytes:
        return self.reader.blob(self.ref.repository, descriptor)

    def firmware(self, info: FirmwareInfo) -> bytes:
        return self.reader.firmware(self.ref, info)


@dataclass
class LayoutHistory:
    store: LayoutStore

    def tags(self) -> list[str]:
        return self.store.tags()

    def manifest(self, tag: str) -> bytes:
        return self.store.manifest(tag)[0]

    def blob(self, descriptor: Descriptor) -> bytes:
        return self.store.read_blob(descriptor.digest)

    def firmware(self, info: FirmwareInfo) -> bytes:
        return self.store.firmware(info)


def count_from(env: Mapping[str, str]) -> int:
    """How many patches to make, from ``AJOUR_PUBLISH_PATCHES`` (default 3)."""
    raw = env.get(PATCHES_ENV, "").strip()
    if not raw:
        return DEFAULT_PATCHES
    if not raw.isdigit() or int(raw) > MAX_PATCHES:
        raise PublishError(
            f"{PATCHES_ENV}={raw[:40]!r}: expected how many earlier versions get a patch to the"
            f" new one, 0 (no patches) to {MAX_PATCHES}"
        )
    return int(raw)


def _earlier(history: History, version: str, count: int) -> list[str]:
    """The ``count`` most recently created v1 versions under their own tags, newest first."""
    try:
        tags = history.tags()
    except ArtifactError as exc:
        log.info("no patches for %s: cannot list the earlier versions (%s)", version, exc)
        return []
    found: list[tuple[str, str]] = []
    for tag in tags:
        if tag == version or not is_version(tag) or is_cosign_tag(tag):
            continue
        try:
            manifest = json.loads(history.manifest(tag))
        except (ArtifactError, ValueError) as exc:
            log.warning("no patch from %s: its manifest cannot be read (%s)", tag, exc)
            continue
        notes = manifest.get("annotations") if isinstance(manifest, dict) else None
        config = manifest.get("config") if isinstance(manifest, dict) else None
        if (
            isinstance(notes, dict)
            and notes.get(VERSION_ANNOTATION) == tag
            and manifest.get("artifactType") == ARTIFACT_TYPE
            and isinstance(config, dict)
            and config.get("mediaType") == CONFIG_MEDIA_TYPE
        ):
            found.append((str(notes.get(CREATED_ANNOTATION, "")), tag))
    return [tag for _, tag in sorted(found, reverse=True)[:count]]


def make_patches(
    history: History, artifact: FirmwareArtifact, parts: V1Parts, count: int
) -> list[PatchBlob]:
    """Patches from up to ``count`` earlier versions in ``history`` to ``artifact``."""
    if count <= 0:
        return []
    try:
        import detools
    except ImportError:
        log.warning("no patches for %s: detools is not installed (ajour[oci])", artifact.version)
        return []
    new = artifact.path.read_bytes()
    if sha256_digest(new) != parts.checksum:
        raise PublishError(f"{artifact.path} changed while it was being published")
    blobs: list[PatchBlob] = []
    for tag in _earlier(history, artifact.version, count):
        try:
            info = describe(history.manifest(tag), history.blob, tag)
            old = history.firmware(info)
        except ArtifactError as exc:
            log.warning("no patch from %s: %s", tag, exc)
            continue
        out = io.BytesIO()
        detools.create_patch(
            io.BytesIO(old), io.BytesIO(new), out, compression="crle", patch_type="sequential"
        )
        patch = out.getvalue()
        check = io.BytesIO()
        detools.apply_patch(io.BytesIO(old), io.BytesIO(patch), check)
        if check.getvalue() != new:  # pragma: no cover - detools' own round trip
            log.error("no patch from %s: detools' patch does not rebuild the image", tag)
            continue
        if len(patch) * MIN_SAVING > len(new):
            log.info(
                "no patch from %s to %s: it is %d bytes, not at least %dx smaller than the"
                " %d-byte image",
                tag, artifact.version, len(patch), MIN_SAVING, len(new),
            )  # fmt: skip
            continue
        title = f"{artifact.path.stem}-{tag}-to-{artifact.version}.patch"
        layer = {
            "mediaType": PATCH_MEDIA_TYPE,
            "digest": sha256_digest(patch),
            "size": len(patch),
            "annotations": layer_annotations(tag, info.checksum, parts.checksum, title, FORMAT),
        }
        log.info(
            "patch from %s to %s: %d bytes for a %d-byte image",
            tag, artifact.version, len(patch), len(new),
        )  # fmt: skip
        blobs.append(PatchBlob(patch, layer))
    return blobs


def attach(parts: V1Parts, blobs: list[PatchBlob]) -> None:
    """Add the patches' layers to ``parts``' manifest (after its firmware layer)."""
    if not blobs:
        return
    parts.manifest["layers"].extend(blob.layer for blob in blobs)
    parts.manifest_bytes = canonical(parts.manifest)
    parts.digest = sha256_digest(parts.manifest_bytes)
