"""Publishing to an OCI image layout directory (``oci-layout:///dir:tag``): no server."""

from __future__ import annotations

from dataclasses import dataclass

from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.reference import LayoutRef
from ajour_build.core.errors import ArtifactError, PublishError
from ajour_build.publish.common import V1Parts, conflict
from ajour_build.publish.publisher import FirmwareArtifact, Published


@dataclass
class LayoutPublisher:
    ref: LayoutRef

    def publish(self, artifact: FirmwareArtifact) -> Published:
        parts = V1Parts(artifact)
        store = LayoutStore(self.ref.path)
        try:
            store.init()
            existing = store.resolve(artifact.version)
            if existing is not None:
                info = store.inspect(artifact.version)
                if info.checksum != parts.checksum:
                    where = f"{self.ref.path}:{artifact.version}"
                    raise PublishError(
                        conflict(artifact.version, where, info.checksum, parts.checksum)
                    )
                digest = existing
                size = len(store.read_blob(existing))
            else:
                store.put_bytes(parts.config_bytes)
                stored, _ = store.put_file(artifact.path)
                if stored != parts.checksum:
                    raise PublishError(f"{artifact.path} changed while it was being published")
                digest = store.put_bytes(parts.manifest_bytes)
                size = len(parts.manifest_bytes)
                store.tag(artifact.version, digest, size)
            if self.ref.tag != artifact.version:
                store.tag(self.ref.tag, digest, size)
        except ArtifactError as exc:
            raise PublishError(str(exc)) from None
        except OSError as exc:
            raise PublishError(f"cannot write the layout at {self.ref.path}: {exc}") from None
        return Published(
            target=str(self.ref),
            reference=f"oci-layout://{self.ref.path}@{digest}",
            digest=digest,
            version=artifact.version,
            tags=tuple(dict.fromkeys((artifact.version, self.ref.tag))),
        )
