"""An OCI image layout directory source (the embedded default, no server)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.errors import ArtifactError
from delivery.cache import ByteLru
from delivery.decision import FirmwareImage
from delivery.sources.firmware_source import SourceUnavailable


@dataclass
class LayoutSource:
    store: LayoutStore
    tag: str
    blobs: ByteLru[str] = field(default_factory=lambda: ByteLru(64 * 1024 * 1024))

    _cached: tuple[tuple[int, int, int], FirmwareImage] | None = field(default=None, repr=False)

    def invalidate(self) -> None:
        self._cached = None

    def target(self) -> FirmwareImage:
        """The tag's firmware; re-read only when ``index.json`` changed (stat is cheap)."""
        try:
            stat = (self.store.root / "index.json").stat()
        except OSError:
            stat = None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino) if stat else None
        if stamp is not None and self._cached is not None and self._cached[0] == stamp:
            return self._cached[1]
        try:
            info = self.store.inspect(self.tag)
            data = self.blobs.get(info.checksum)
            if data is None:
                data = self.store.firmware(info)
                self.blobs.put(info.checksum, data)
        except ArtifactError as exc:
            raise SourceUnavailable(str(exc)) from None
        target = FirmwareImage(info.version.encode(), data, bytes.fromhex(info.checksum[7:]))
        if stamp is not None:
            self._cached = (stamp, target)
        return target
