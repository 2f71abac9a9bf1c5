"""Publishing to an OCI image layout directory (``oci-layout:///dir:tag``): no server.

The version check, the blobs and the tags are written in one hold of the layout's lock
(``layout_writer``), so of two publishers of one version with different firmware, threads
or processes, exactly one wins and the other gets the conflict error.
"""

from __future__ import annotations

from dataclasses import dataclass

from ajour_build.core.artifact.layout_writer import LOCK_WAIT, LayoutWriter, layout_writer
from ajour_build.core.artifact.reference import LayoutRef
from ajour_build.core.errors import ArtifactError, PublishError
from ajour_build.publish.common import V1Parts, conflict
from ajour_build.publish.cosign_merge import MissingBlob, merged
from ajour_build.publish.patches import DEFAULT_PATCHES, LayoutHistory, attach, make_patches
from ajour_build.publish.publisher import FirmwareArtifact, Published
from ajour_build.publish.signing import Signer


@dataclass
class LayoutPublisher:
    ref: LayoutRef
    lock_wait: float = LOCK_WAIT  # seconds to wait for another publisher to finish
    patch_count: int = DEFAULT_PATCHES  # earlier versions that get a patch (publish/patches.py)
    signer: Signer | None = None  # signs each manifest before a tag points at it (signing.py)

    def publish(self, artifact: FirmwareArtifact) -> Published:
        parts = V1Parts(artifact)
        try:
            with layout_writer(self.ref.path, self.lock_wait) as writer:
                store = writer.store
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
                    self._sign(writer, digest, artifact)
                else:
                    patches = make_patches(LayoutHistory(store), artifact, parts, self.patch_count)
                    attach(parts, patches)
                    for patch in patches:
                        writer.put_bytes(patch.data)
                    writer.put_bytes(parts.config_bytes)
                    stored, _ = writer.put_file(artifact.path)
                    if stored != parts.checksum:
                        raise PublishError(f"{artifact.path} changed while it was being published")
                    if artifact.elf is not None and parts.elf is not None:
                        elf, _ = writer.put_file(artifact.elf)
                        if elf != parts.elf.digest:
                            raise PublishError(f"{artifact.elf} changed while it was published")
                    digest = writer.put_bytes(parts.manifest_bytes)
                    size = len(parts.manifest_bytes)
                    self._sign(writer, digest, artifact)  # before any tag
                    writer.tag(artifact.version, digest, size)
                if self.ref.tag != artifact.version:
                    writer.tag(self.ref.tag, digest, size)
        except ArtifactError as exc:
            raise PublishError(str(exc)) from None
        except TimeoutError as exc:
            raise PublishError(str(exc)) from None
        except OSError as exc:
            raise PublishError(f"cannot write the layout at {self.ref.path}: {exc}") from None
        return Published(
            target=str(self.ref),
            reference=f"oci-layout://{self.ref.path}@{digest}",
            digest=digest,
            version=artifact.version,
            tags=tuple(dict.fromkeys((artifact.version, self.ref.tag))),
            signatures=self.signer.tags(digest) if self.signer else (),
        )

    def _sign(self, writer: LayoutWriter, digest: str, artifact: FirmwareArtifact) -> None:
        """Add the signature and provenance of ``digest`` to the manifests cosign's tags
        hold (``cosign_merge``); the layout's lock is held, so no other writer interleaves."""
        if self.signer is None:
            return
        store, key = writer.store, self.signer.public

        def lookup(tag: str) -> bytes | None:
            found = store.resolve(tag)
            return None if found is None else fetch_digest(found)

        def fetch_digest(digest: str) -> bytes:
            if not store.blob_path(digest).exists():
                raise MissingBlob(f"blob {digest} is missing from {self.ref.path}")
            return store.read_blob(digest)

        for tag, layer in self.signer.layers(str(self.ref.path), digest, artifact):
            where = (str(self.ref.path), f"remove its entry from {self.ref.path}/index.json")
            merge = merged(tag, layer, key, lookup, lambda d: fetch_digest(d.digest), where)
            if merge.artifact is None:
                continue  # signed with this key already
            for blob in merge.upload:
                writer.put_bytes(blob.data)
            body = merge.artifact.manifest_bytes
            writer.tag(tag, writer.put_bytes(body), len(body))
