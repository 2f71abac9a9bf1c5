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
    # the build's ELF, published beside the firmware (OCI targets only) for symbolication
    elf: Path | None = None

    def check(self) -> int:
        """Validate before any network traffic; return the size in bytes."""
        problem = version_problem(self.version)
        if problem is not None:
            raise PublishError(f"not publishable: {problem}")
        for what, path in (("artifact", self.path), ("ELF", self.elf)):
            if path is None:
                continue
            if not path.is_file():
                raise PublishError(f"{what} {str(path)!r} does not exist or is not a file")
            if path.stat().st_size == 0:
                raise PublishError(f"{what} {str(path)!r} is empty; refusing to publish it")
        return self.path.stat().st_size


def elf_beside(firmware: Path) -> Path | None:
    """The ELF a build left next to its firmware (``build/app.bin`` -> ``build/app.elf``),
    the way the local runner keeps it; None if there is none or the firmware is the ELF."""
    elf = firmware.with_suffix(".elf")
    return elf if elf != firmware and elf.is_file() else None


@dataclass(frozen=True)
class Published:
    """Where the artifact now lives."""

    target: str  # the URL it was published to
    reference: str  # a stable reference: image@digest, or hawkBit's distribution set URL
    digest: str  # sha256:<hex> of the OCI manifest, or of the artifact for hawkBit/dir
    version: str
    tags: tuple[str, ...] = ()
    signatures: tuple[str, ...] = ()  # the .sig and .att tags pushed with it (signing.py)


class Publisher(Protocol):
    """One backend: ``oci``, ``oci-layout``, ``dir`` or ``hawkbit``."""

    def publish(self, artifact: FirmwareArtifact) -> Published:
        """Publish, idempotently: the same version and content again changes nothing."""
