"""An OCI image layout directory source (the embedded default, no server)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.errors import ArtifactError
from delivery.cache import ByteLru
from delivery.decision import FirmwareImage
from delivery.sources.firmware_source import SourceUnavailable
from delivery.sources.patches import load_patches
from delivery.sources.trust import Verifier

RECHECK_S = 0.05
"""How long a layout source trusts its last look at ``index.json`` (a stat costs ~2.5 µs
here, a third of answering a status). A publish with ``--notify`` invalidates at once."""


@dataclass
class LayoutSource:
    store: LayoutStore
    tag: str
    blobs: ByteLru[str] = field(default_factory=lambda: ByteLru(64 * 1024 * 1024))
    recheck: float = RECHECK_S

    # (index.json's stamp, its target, when that stamp was last confirmed): one tuple, read
    # and replaced whole, so a handler thread never pairs a fresh time with an old target
    _cached: tuple[tuple[int, int, int], FirmwareImage, float] | None = field(
        default=None, repr=False
    )

    verifier: Verifier | None = None  # the application's trust policy (sources/trust.py)

    def __post_init__(self) -> None:
        self._index = str(self.store.root / "index.json")

    def invalidate(self) -> None:
        self._cached = None
        if self.verifier is not None:
            self.verifier.forget_refusals(self._index)

    def _manifest_of(self, tag: str) -> bytes | None:
        digest = self.store.resolve(tag)
        return None if digest is None else self.store.read_blob(digest)

    def target(self) -> FirmwareImage:
        """The tag's firmware; re-read only when ``index.json`` changed, which is checked at
        most every ``recheck`` seconds."""
        cached = self._cached
        now = time.time()
        if cached is not None and 0.0 <= now - cached[2] < self.recheck:
            return cached[1]
        try:
            stat = os.stat(self._index)
        except OSError:
            stat = None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino) if stat else None
        if stamp is not None and cached is not None and cached[0] == stamp:
            self._cached = (stamp, cached[1], now)
            return cached[1]
        try:
            info = self.store.inspect(self.tag)
            if self.verifier is not None:  # once per digest and index (sources/trust.py)
                fetch = lambda d: self.store.read_blob(d.digest)  # noqa: E731
                digest = info.manifest_digest
                self.verifier.check(digest, self._manifest_of, fetch, stamp, self._index)
            data = self.blobs.get(info.checksum)
            if data is None:
                data = self.store.firmware(info)
                self.blobs.put(info.checksum, data)
            patches = load_patches(info, lambda d: self.store.read_blob(d.digest), self.blobs)
        except ArtifactError as exc:
            raise SourceUnavailable(str(exc)) from None
        target = FirmwareImage(
            info.version.encode(), data, bytes.fromhex(info.checksum[7:]), patches
        )
        if stamp is not None:
            self._cached = (stamp, target, now)
        return target
