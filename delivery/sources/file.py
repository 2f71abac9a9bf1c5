"""Drogue Ajour's file layout: ``<dir>/<name>.json`` ``{version, checksum, size}`` + ``.bin``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from delivery.decision import FirmwareImage
from delivery.sources.firmware_source import SourceUnavailable


@dataclass
class FileSource:
    directory: Path
    name: str
    _cached: tuple[tuple[int, int], FirmwareImage] | None = field(default=None, repr=False)

    def invalidate(self) -> None:
        self._cached = None

    def target(self) -> FirmwareImage:
        meta_path = self.directory / f"{self.name}.json"
        bin_path = self.directory / f"{self.name}.bin"
        try:
            stat = meta_path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if self._cached is not None and self._cached[0] == stamp:
                return self._cached[1]
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            data = bin_path.read_bytes()
        except FileNotFoundError as exc:
            raise SourceUnavailable(f"firmware file {exc.filename} does not exist") from None
        except (OSError, ValueError) as exc:
            raise SourceUnavailable(f"cannot read firmware {self.name}: {exc}") from None
        try:
            version, size = str(meta["version"]), int(meta["size"])
            expected = str(meta["checksum"]).removeprefix("sha256:")
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceUnavailable(
                f"{meta_path} is not {{version, checksum, size}}: {exc}"
            ) from None
        digest = hashlib.sha256(data).digest()
        if len(data) != size or digest.hex() != expected.lower():
            raise SourceUnavailable(
                f"{bin_path} does not match {meta_path} (size or checksum): refusing to serve it"
            )
        target = FirmwareImage(version.encode(), data, digest)
        self._cached = (stamp, target)
        return target
