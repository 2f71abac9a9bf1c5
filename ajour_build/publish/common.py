"""What the OCI-shaped publishers (registry and layout) share: the v1 metadata."""

from __future__ import annotations

from ajour_build.core.artifact.format import (
    ELF_MEDIA_TYPE,
    TITLE,
    Builder,
    Descriptor,
    FirmwareConfig,
    Source,
    build_manifest,
    canonical,
    config_blob,
    now_rfc3339,
    sha256_digest,
)
from ajour_build.core.files import sha256_file
from ajour_build.publish.publisher import FirmwareArtifact


def file_digest(artifact: FirmwareArtifact) -> str:
    """The artifact's ``sha256:<hex>`` digest."""
    return "sha256:" + sha256_file(artifact.path)


class V1Parts:
    """The config blob, manifest bytes and digests for one artifact (format v1)."""

    def __init__(self, artifact: FirmwareArtifact) -> None:
        size = artifact.check()
        self.checksum = file_digest(artifact)
        self.config = FirmwareConfig(
            version=artifact.version,
            size=size,
            checksum=self.checksum,
            source=Source(**vars(artifact.source)),
            builder=Builder(image=artifact.builder.image, args=artifact.builder.args),
            created=now_rfc3339(),
        )
        self.config_bytes = config_blob(self.config)
        self.elf: Descriptor | None = None
        if artifact.elf is not None:
            self.elf = Descriptor.model_validate(
                {
                    "mediaType": ELF_MEDIA_TYPE,
                    "digest": "sha256:" + sha256_file(artifact.elf),
                    "size": artifact.elf.stat().st_size,
                    "annotations": {TITLE: artifact.elf.name},
                }
            )
        self.manifest = build_manifest(self.config, self.config_bytes, artifact.path.name, self.elf)
        self.manifest_bytes = canonical(self.manifest)
        self.digest = sha256_digest(self.manifest_bytes)


def conflict(version: str, where: str, existing: str, ours: str) -> str:
    return (
        f"version {version} is already published at {where} with different firmware"
        f" (published {existing}, this build {ours}); versions are immutable: bump the"
        " version instead of overwriting it"
    )
