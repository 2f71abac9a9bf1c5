"""An OCI registry source: tag → digest (cached with a TTL), blobs cached by digest."""

from __future__ import annotations

from dataclasses import dataclass, field

from ajour_build.core.artifact.format import FirmwareInfo, describe
from ajour_build.core.artifact.reference import OciRef
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.errors import ArtifactError
from delivery.cache import ByteLru, TtlCache
from delivery.decision import FirmwareImage
from delivery.sources.firmware_source import SourceUnavailable

DEFAULT_TTL = 30.0


@dataclass
class OciSource:
    reader: RegistryReader
    ref: OciRef
    tags: TtlCache[str, str] = field(default_factory=lambda: TtlCache(DEFAULT_TTL))
    blobs: ByteLru[str] = field(default_factory=lambda: ByteLru(64 * 1024 * 1024))
    _infos: dict[str, FirmwareInfo] = field(default_factory=dict)

    def _key(self) -> str:
        return f"{self.ref.host}/{self.ref.repository}:{self.ref.tag}"

    def invalidate(self) -> None:
        self.tags.invalidate(self._key())

    def target(self) -> FirmwareImage:
        try:
            digest = self.tags.get(self._key())
            if digest is None:
                digest = self.reader.resolve(self.ref)
                if digest is None:
                    raise SourceUnavailable(f"{self._key()} does not exist in the registry")
                self.tags.put(self._key(), digest)
            info = self._infos.get(digest)
            if info is None:
                pinned = OciRef(self.ref.host, self.ref.repository, self.ref.tag, digest)
                body, _ = self.reader.manifest(pinned)
                info = describe(
                    body, lambda d: self.reader.blob(self.ref.repository, d), self.ref.tag
                )
                self._infos[digest] = info
            data = self.blobs.get(info.checksum)
            if data is None:
                data = self.reader.firmware(self.ref, info)
                self.blobs.put(info.checksum, data)
        except ArtifactError as exc:
            raise SourceUnavailable(str(exc)) from None
        return FirmwareImage(info.version.encode(), data, bytes.fromhex(info.checksum[7:]))
