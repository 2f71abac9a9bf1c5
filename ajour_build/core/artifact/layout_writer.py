"""Writing an OCI image layout directory: one writer at a time, across threads and processes.

A publish checks whether its version exists and tags it inside one hold of the layout's
lock (``<layout>/.lock``, an ``flock``), so two publishers of one version cannot both win:
the second sees the first's tag. Blobs are written under the same lock, so the holder knows
that any temporary file in the layout belongs to a writer that died mid-write (the kernel
released its lock), and removes it before it writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ajour_build.core.artifact.format import MANIFEST_MEDIA_TYPE
from ajour_build.core.artifact.layout_store import REF_NAME, LayoutStore
from ajour_build.core.errors import ArtifactError
from ajour_build.core.files import atomic_write, exclusive_lock, sweep_temporaries

LOCK_WAIT = 120.0  # seconds a publisher waits for another one to finish with the layout


class LayoutWriter:
    """A layout whose lock is held: made only by :func:`layout_writer`."""

    def __init__(self, store: LayoutStore, swept: list[Path]) -> None:
        self.store = store
        self.swept = swept  # temporary files of dead writers removed when the lock was taken

    def put_bytes(self, data: bytes) -> str:
        return self.store.put_bytes(data)

    def put_file(self, source: Path) -> tuple[str, int]:
        return self.store.put_file(source)

    def tag(self, tag: str, manifest_digest: str, size: int) -> None:
        """Point ``tag`` at a manifest already in the blob store (replacing an older one)."""
        if not self.store.blob_path(manifest_digest).exists():
            raise ArtifactError(f"cannot tag {tag}: manifest {manifest_digest} is not stored")
        entries = [
            m
            for m in self.store.index().get("manifests", [])
            if m.get("annotations", {}).get(REF_NAME) != tag
        ]
        entries.append(
            {
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest_digest,
                "size": size,
                "annotations": {REF_NAME: tag},
            }
        )
        atomic_write(self.store.root / "index.json", self.store.index_bytes(entries))


@contextmanager
def layout_writer(root: Path, wait: float = LOCK_WAIT) -> Iterator[LayoutWriter]:
    """Hold ``root``'s lock (waiting up to ``wait`` s), sweep dead writers' temporary files,
    create the layout if it is new, and yield a writer for it."""
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / ".lock", wait, f"the OCI layout {root}"):
        store = LayoutStore(root)
        swept = sweep_temporaries(root) + sweep_temporaries(root / "blobs" / "sha256")
        store.init()
        yield LayoutWriter(store, swept)
