"""Firmware artifact format v1 (docs/artifact-format.md), and the two older Drogue layouts.

v1: an OCI image manifest with ``artifactType: application/vnd.ajour.firmware.v1``, a JSON
config blob (``application/vnd.ajour.firmware.config.v1+json``) with the metadata, one
``application/octet-stream`` layer holding the firmware, titled with its file name, and
optionally a second layer, the build's ELF (``application/vnd.ajour.firmware.elf.v1``), for
symbolicating crashes later. Readers pick layers by media type, never by position.

Read back as well:

* ``drogue-octet``: a manifest whose layer is ``application/octet-stream`` and whose config
  is not Ajour's; the version is the tag it was pulled by.
* ``drogue-scratch``: a ``FROM scratch`` image with ``/firmware`` in its (gzipped) tar layer
  and the label ``io.drogue.metadata`` = ``{version, size, checksum}`` in its image config.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ajour_build.core.errors import ArtifactError

ARTIFACT_TYPE = "application/vnd.ajour.firmware.v1"
CONFIG_MEDIA_TYPE = "application/vnd.ajour.firmware.config.v1+json"
LAYER_MEDIA_TYPE = "application/octet-stream"
ELF_MEDIA_TYPE = "application/vnd.ajour.firmware.elf.v1"  # the optional debug layer
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
IMAGE_CONFIG_TYPES = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)
TAR_LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar",
)
TITLE = "org.opencontainers.image.title"
DROGUE_LABEL = "io.drogue.metadata"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_FIRMWARE_BYTES = 256 * 1024 * 1024

Layout = Literal["v1", "drogue-octet", "drogue-scratch", "drogue-file"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Source(_Model):
    uri: str = ""
    commit: str = ""
    project: str = ""


class Builder(_Model):
    image: str = ""
    args: tuple[str, ...] = ()


class FirmwareConfig(_Model):
    """The v1 config blob."""

    version: str
    size: int = Field(ge=1)
    checksum: str  # "sha256:<hex>"
    source: Source = Source()
    builder: Builder = Builder()
    created: str = ""


class Descriptor(_Model):
    media_type: str = Field(alias="mediaType")
    digest: str
    size: int = Field(ge=0)
    annotations: dict[str, str] = Field(default_factory=dict)


class FirmwareInfo(_Model):
    """What a reader learns about a published firmware."""

    version: str
    size: int
    checksum: str
    layout: Layout
    manifest_digest: str
    firmware: Descriptor | None = None  # the blob holding the bytes (v1, drogue-octet)
    layer: Descriptor | None = None  # the tar layer (drogue-scratch)
    source: Source = Source()
    builder: Builder = Builder()
    created: str = ""
    title: str = ""
    elf: Descriptor | None = None  # the optional ELF layer (v1); delivery never reads it


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj: Any) -> bytes:
    """The exact bytes pushed for a JSON document (sorted keys, compact)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def config_blob(config: FirmwareConfig) -> bytes:
    return canonical(config.model_dump(mode="json"))


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_manifest(
    config: FirmwareConfig, config_bytes: bytes, title: str, elf: Descriptor | None = None
) -> dict[str, Any]:
    """The v1 manifest for ``config`` (its blob is ``config_bytes``) and the firmware layer,
    then the ELF layer if ``elf`` (titled by its annotation) is given."""
    annotations = {
        "org.opencontainers.image.version": config.version,
        "org.opencontainers.image.created": config.created or now_rfc3339(),
    }
    if config.source.commit:
        annotations["org.opencontainers.image.revision"] = config.source.commit
    if config.source.uri:
        annotations["org.opencontainers.image.source"] = config.source.uri
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": sha256_digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": config.checksum,
                "size": config.size,
                "annotations": {TITLE: title},
            },
            *([elf.model_dump(by_alias=True)] if elf is not None else []),
        ],
        "annotations": annotations,
    }


def _descriptor(raw: Any, where: str) -> Descriptor:
    try:
        return Descriptor.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{where}: not an OCI descriptor ({exc.errors()[0]['msg']})") from None


def parse_manifest(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"manifest is {len(data)} bytes; refusing more than 4 MiB")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ArtifactError(f"manifest is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
        raise ArtifactError("not an OCI/Docker schema 2 image manifest (an index or list?)")
    return manifest


Fetch = Callable[[Descriptor], bytes]


def describe(manifest_bytes: bytes, fetch: Fetch, tag: str = "") -> FirmwareInfo:
    """Read firmware metadata from a manifest; ``fetch`` returns a verified blob."""
    manifest = parse_manifest(manifest_bytes)
    digest = sha256_digest(manifest_bytes)
    config = _descriptor(manifest.get("config"), "manifest config")
    layers = [_descriptor(raw, f"layer {i}") for i, raw in enumerate(manifest.get("layers") or [])]
    octets = [layer for layer in layers if layer.media_type == LAYER_MEDIA_TYPE]
    if config.media_type == CONFIG_MEDIA_TYPE:
        if len(octets) != 1:
            raise ArtifactError(
                f"an Ajour v1 manifest must have exactly one {LAYER_MEDIA_TYPE} layer;"
                f" found {len(octets)}"
            )
        try:
            meta = FirmwareConfig.model_validate_json(fetch(config))
        except ValidationError as exc:
            raise ArtifactError(f"the firmware config blob is invalid: {exc.errors()[0]}") from None
        if meta.checksum != octets[0].digest or meta.size != octets[0].size:
            raise ArtifactError(
                "the firmware config disagrees with its layer (checksum or size); the"
                " artifact is inconsistent"
            )
        return FirmwareInfo(
            version=meta.version,
            size=meta.size,
            checksum=meta.checksum,
            layout="v1",
            manifest_digest=digest,
            firmware=octets[0],
            source=meta.source,
            builder=meta.builder,
            created=meta.created,
            title=octets[0].annotations.get(TITLE, ""),
            elf=next((layer for layer in layers if layer.media_type == ELF_MEDIA_TYPE), None),
        )
    if octets:
        if not tag:
            raise ArtifactError("an older Drogue artifact carries its version only in the tag")
        layer = octets[0]
        return FirmwareInfo(
            version=tag,
            size=layer.size,
            checksum=layer.digest,
            layout="drogue-octet",
            manifest_digest=digest,
            firmware=layer,
            title=layer.annotations.get(TITLE, ""),
        )
    if config.media_type in IMAGE_CONFIG_TYPES and layers:
        return _scratch(config, layers, fetch, digest)
    raise ArtifactError(
        "the manifest has no firmware: no application/octet-stream layer and no"
        f" {DROGUE_LABEL} label (config media type {config.media_type!r})"
    )


def _scratch(
    config: Descriptor, layers: list[Descriptor], fetch: Fetch, digest: str
) -> FirmwareInfo:
    try:
        image = json.loads(fetch(config))
        label = image["config"]["Labels"][DROGUE_LABEL]
        meta = json.loads(label)
        version, size, checksum = str(meta["version"]), int(meta["size"]), str(meta["checksum"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"the image has no usable {DROGUE_LABEL} label ({type(exc).__name__}: {exc})"
        ) from None
    tar_layers = [layer for layer in layers if layer.media_type in TAR_LAYER_TYPES]
    if not tar_layers:
        raise ArtifactError("the Drogue image has no tar layer holding /firmware")
    if not checksum.startswith("sha256:"):
        checksum = "sha256:" + checksum
    return FirmwareInfo(
        version=version,
        size=size,
        checksum=checksum,
        layout="drogue-scratch",
        manifest_digest=digest,
        layer=tar_layers[-1],
        title="firmware",
    )


def firmware_from_tar(layer: Descriptor, blob: bytes) -> bytes:
    """The ``/firmware`` file of a Drogue ``FROM scratch`` image layer."""
    data = gzip.decompress(blob) if layer.media_type.endswith("gzip") else blob
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.name.lstrip("./") == "firmware" and member.isfile():
                if member.size > MAX_FIRMWARE_BYTES:
                    raise ArtifactError("the /firmware file is larger than 256 MiB")
                handle = tar.extractfile(member)
                if handle is not None:
                    return handle.read()
    raise ArtifactError("the Drogue image layer has no /firmware file")


def verified(data: bytes, digest: str, what: str) -> bytes:
    """``data`` if it hashes to ``digest``; a corrupted blob is an error, never served."""
    actual = sha256_digest(data)
    if actual != digest:
        raise ArtifactError(f"{what} is corrupted: expected digest {digest}, got {actual}")
    return data
