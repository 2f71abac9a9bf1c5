"""Garbage collection of an OCI image layout: blobs no tag reaches are removed.

Reachable: every descriptor in ``index.json``, and what those manifests (and nested
indexes) name: their config, layers and subject. Everything else in ``blobs/sha256`` is
garbage, such as the blobs of a publish that failed after writing them.

Safe beside publishers: the collector holds the layout's lock (``<layout>/.lock``, the one
every publish holds from its first blob to its last tag), so it never sees a blob that a
running publish has written but not tagged yet. A grace period (``min_age``, by mtime)
keeps young blobs anyway, for writers of older Ajour versions or other tools that do not
take the lock, and for readers that read ``index.json`` just before a tag moved.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ajour_build.core.artifact.layout_store import _HEX64, LayoutStore
from ajour_build.core.artifact.layout_writer import LOCK_WAIT
from ajour_build.core.errors import ArtifactError
from ajour_build.core.files import exclusive_lock, sweep_temporaries

MIN_AGE = 3600.0  # seconds a blob stays whatever references it


@dataclass(frozen=True)
class Collected:
    """What a collection removed (or, on a dry run, would remove)."""

    root: Path
    removed: tuple[str, ...]  # digests
    freed: int  # bytes
    reachable: int
    young: int  # unreachable blobs kept because they are younger than the grace period
    dry_run: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "layout": str(self.root),
            "dryRun": self.dry_run,
            "removed": list(self.removed),
            "freedBytes": self.freed,
            "reachable": self.reachable,
            "keptYoung": self.young,
        }


def reachable(store: LayoutStore) -> set[str]:
    """Digests reachable from ``index.json``; raises if a reachable manifest is unreadable
    (collecting then could delete what it names)."""
    seen: set[str] = set()
    todo = [_digest(m, "index.json") for m in _list(store.index(), "manifests", "index.json")]
    while todo:
        digest = todo.pop()
        if digest in seen:
            continue
        seen.add(digest)
        path = store.blob_path(digest)
        if not path.exists():
            continue  # a dangling reference: nothing to keep, nothing to walk
        if path.stat().st_size > 4 * 1024 * 1024:
            continue  # a layer, not a manifest
        try:
            doc = json.loads(path.read_bytes())
        except ValueError:
            continue  # not JSON: a layer or a config that names nothing
        if not isinstance(doc, dict):
            continue
        where = f"blob {digest}"
        children = [*_list(doc, "manifests", where), *_list(doc, "layers", where)]
        for key in ("config", "subject"):
            if isinstance(doc.get(key), dict):
                children.append(doc[key])
        todo.extend(_digest(c, where) for c in children)
    return seen


def _list(doc: dict[str, object], key: str, where: str) -> list[dict[str, object]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ArtifactError(f"{where}: {key} is not a list of descriptors; nothing was collected")
    return value


def _digest(descriptor: dict[str, object], where: str) -> str:
    digest = descriptor.get("digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise ArtifactError(
            f"{where}: a descriptor has no sha256 digest ({digest!r}); nothing was collected"
        )
    return digest


def collect(
    root: Path, dry_run: bool = False, min_age: float = MIN_AGE, wait: float = LOCK_WAIT
) -> Collected:
    """Remove the unreachable blobs of the layout at ``root`` older than ``min_age`` s."""
    if not (root / "index.json").is_file() or not (root / "oci-layout").is_file():
        raise ArtifactError(
            f"{root} is not an OCI layout (no oci-layout and index.json); give the directory"
            " a publish wrote, as oci-layout:///path"
        )
    with exclusive_lock(root / ".lock", wait, f"the OCI layout {root}"):
        store = LayoutStore(root)
        if not dry_run:  # dead writers' temporaries, as a publisher would sweep them
            sweep_temporaries(root)
            sweep_temporaries(root / "blobs" / "sha256")
        keep = {d.removeprefix("sha256:") for d in reachable(store)}
        cutoff = time.time() - min_age
        removed: list[str] = []
        freed = young = 0
        for entry in os.scandir(root / "blobs" / "sha256"):
            if not _HEX64.fullmatch(entry.name) or entry.name in keep:
                continue
            info = entry.stat(follow_symlinks=False)
            if info.st_mtime > cutoff:
                young += 1
                continue
            if not dry_run:
                Path(entry.path).unlink(missing_ok=True)
            removed.append("sha256:" + entry.name)
            freed += info.st_size
    return Collected(root, tuple(sorted(removed)), freed, len(keep), young, dry_run)
