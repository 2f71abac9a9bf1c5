"""An OCI image layout directory source (the embedded default, no server)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ajour_build.artifact.layout import LayoutStore
from ajour_build.errors import ArtifactError
from delivery.cache import ByteLru
from delivery.sources.base import SourceUnavailable, Target


@dataclass
class LayoutSource:
    store: LayoutStore
    tag: str
    blobs: ByteLru[str] = field(default_factory=lambda: ByteLru(64 * 1024 * 1024))

    def invalidate(self) -> None:
        """Nothing to drop: the index is read on every call (a small local file)."""

    def target(self) -> Target:
        try:
            info = self.store.inspect(self.tag)
            data = self.blobs.get(info.checksum)
            if data is None:
                data = self.store.firmware(info)
                self.blobs.put(info.checksum, data)
        except ArtifactError as exc:
            raise SourceUnavailable(str(exc)) from None
        return Target(info.version.encode(), data, bytes.fromhex(info.checksum[7:]))
