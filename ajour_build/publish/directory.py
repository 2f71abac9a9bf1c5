"""Publishing to a plain directory in Drogue Ajour's file layout (``dir:///dir/<name>``).

``<name>.bin`` holds the firmware and ``<name>.json`` ``{version, checksum, size}`` (the
checksum as hex, as Drogue's file source reads it). The ``.bin`` is replaced first and the
``.json`` last, each atomically, so a reader that sees the new metadata sees the new bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ajour_build.artifact.reference import DirRef
from ajour_build.errors import PublishError
from ajour_build.publish.base import FirmwareArtifact, Published
from ajour_build.publish.common import conflict, file_digest


def _replace(target: Path, data: bytes | None = None, source: Path | None = None) -> None:
    """Atomically replace ``target`` with ``data`` or a copy of ``source``."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    os.close(fd)
    try:
        if source is not None:
            shutil.copyfile(source, tmp)
        else:
            Path(tmp).write_bytes(data or b"")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class DirPublisher:
    ref: DirRef

    def publish(self, artifact: FirmwareArtifact) -> Published:
        size = artifact.check()
        checksum = file_digest(artifact)
        meta_path = self.ref.path / f"{self.ref.name}.json"
        try:
            self.ref.path.mkdir(parents=True, exist_ok=True)
            if meta_path.exists():
                old = json.loads(meta_path.read_text(encoding="utf-8"))
                old_sum = "sha256:" + str(old.get("checksum", "")).removeprefix("sha256:")
                if old.get("version") == artifact.version and old_sum != checksum:
                    raise PublishError(
                        conflict(artifact.version, str(meta_path), old_sum, checksum)
                    )
            meta = {
                "version": artifact.version,
                "checksum": checksum.removeprefix("sha256:"),
                "size": size,
            }
            _replace(self.ref.path / f"{self.ref.name}.bin", source=artifact.path)
            _replace(meta_path, data=json.dumps(meta, indent=2).encode() + b"\n")
        except OSError as exc:
            raise PublishError(f"cannot write to {self.ref.path}: {exc}") from None
        except ValueError as exc:
            raise PublishError(f"{meta_path} exists but is not valid JSON: {exc}") from None
        return Published(
            target=str(self.ref),
            reference=str(meta_path),
            digest=checksum,
            version=artifact.version,
        )
