"""What every publisher takes and returns, and the Protocol they implement."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ajour_build.core.errors import PublishError
from ajour_build.core.version import version_problem


@dataclass(frozen=True)
class SourceInfo:
    uri: str = ""
    commit: str = ""
    project: str = ""


@dataclass(frozen=True)
class BuilderInfo:
    image: str = ""
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class FirmwareArtifact:
    """A firmware file to publish, with its metadata."""

    path: Path
    version: str
    source: SourceInfo = field(default_factory=SourceInfo)
    builder: BuilderInfo = field(default_factory=BuilderInfo)

    def check(self) -> int:
        """Validate before any network traffic; return the size in bytes."""
        problem = version_problem(self.version)
        if problem is not None:
            raise PublishError(f"not publishable: {problem}")
        if not self.path.is_file():
            raise PublishError(f"artifact {str(self.path)!r} does not exist or is not a file")
        size = self.path.stat().st_size
        if size == 0:
            raise PublishError(f"artifact {str(self.path)!r} is empty; refusing to publish it")
        return size


@dataclass(frozen=True)
class Published:
    """Where the artifact now lives."""

    target: str  # the URL it was published to
    reference: str  # a stable reference: image@digest, or hawkBit's distribution set URL
    digest: str  # sha256:<hex> of the OCI manifest, or of the artifact for hawkBit/dir
    version: str
    tags: tuple[str, ...] = ()


class Publisher(Protocol):
    """One backend: ``oci``, ``oci-layout``, ``dir`` or ``hawkbit``."""

    def publish(self, artifact: FirmwareArtifact) -> Published:
        """Publish, idempotently: the same version and content again changes nothing."""
