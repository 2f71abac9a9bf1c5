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
from delivery.sources.patches import load_patches
from delivery.sources.trust import Verifier

DEFAULT_TTL = 30.0


@dataclass
class OciSource:
    reader: RegistryReader
    ref: OciRef
    tags: TtlCache[str, str] = field(default_factory=lambda: TtlCache(DEFAULT_TTL))
    blobs: ByteLru[str] = field(default_factory=lambda: ByteLru(64 * 1024 * 1024))
    _infos: dict[str, FirmwareInfo] = field(default_factory=dict)
    # the last manifest digest and its image: one object per manifest, so the reply memo
    # (keyed by the target's identity) holds across statuses, and covers its patch set
    _image: tuple[str, FirmwareImage] | None = field(default=None, repr=False)
    verifier: Verifier | None = None  # the application's trust policy (sources/trust.py)

    def _key(self) -> str:
        return f"{self.ref.host}/{self.ref.repository}:{self.ref.tag}"

    def invalidate(self) -> None:
        self.tags.invalidate(self._key())
        self.forget_refusals()

    def forget_refusals(self) -> None:
        """Something was pushed to this repository (a signature, perhaps): check the digests
        the trust policy refused here again at their next status."""
        if self.verifier is not None:
            self.verifier.forget_refusals(self.ref.image)

    def _manifest_of(self, tag: str) -> bytes | None:
        """The manifest a tag of this repository holds; None if there is no such tag."""
        ref = OciRef(self.ref.host, self.ref.repository, tag)
        digest = self.reader.resolve(ref)
        if digest is None:
            return None
        return self.reader.manifest(OciRef(ref.host, ref.repository, tag, digest))[0]

    def target(self) -> FirmwareImage:
        try:
            digest = self.tags.get(self._key())
            if digest is None:
                since = self.tags.generation()  # a publish event during the lookup wins
                digest = self.reader.resolve(self.ref)
                if digest is None:
                    raise SourceUnavailable(f"{self._key()} does not exist in the registry")
                self.tags.put(self._key(), digest, since)
            image = self._image
            if image is not None and image[0] == digest:
                return image[1]
            if self.verifier is not None:  # once per digest (sources/trust.py)
                fetch = lambda d: self.reader.blob(self.ref.repository, d)  # noqa: E731
                self.verifier.check(digest, self._manifest_of, fetch, scope=self.ref.image)
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
            patches = load_patches(
                info, lambda d: self.reader.blob(self.ref.repository, d), self.blobs
            )
        except ArtifactError as exc:
            raise SourceUnavailable(str(exc)) from None
        target = FirmwareImage(
            info.version.encode(), data, bytes.fromhex(info.checksum[7:]), patches
        )
        self._image = (digest, target)
        return target
