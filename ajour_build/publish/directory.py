"""Publishing to a plain directory in Drogue Ajour's file layout (``dir:///dir/<name>``).

``<name>.bin`` holds the firmware and ``<name>.json`` ``{version, checksum, size}`` (the
checksum as hex, as Drogue's file source reads it). The ``.bin`` is replaced first and the
``.json`` last, each atomically, so a reader that sees the new metadata sees the new bytes.
The version check and both writes happen in one hold of ``.<name>.lock`` (an ``flock``), so
two publishers of one version cannot both win, nor leave one's ``.bin`` beside the other's
``.json``; the holder first removes temporary files a killed publisher of ``<name>`` left.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ajour_build.core.artifact.reference import DirRef
from ajour_build.core.errors import PublishError
from ajour_build.core.files import atomic_copy, atomic_write, exclusive_lock, sweep_temporaries
from ajour_build.publish.common import conflict, file_digest
from ajour_build.publish.publisher import FirmwareArtifact, Published

LOCK_WAIT = 120.0  # seconds a publisher waits for another one to finish with ``<name>``


@dataclass
class DirPublisher:
    ref: DirRef
    lock_wait: float = LOCK_WAIT

    def publish(self, artifact: FirmwareArtifact) -> Published:
        size = artifact.check()
        checksum = file_digest(artifact)
        meta_path = self.ref.path / f"{self.ref.name}.json"
        bin_path = self.ref.path / f"{self.ref.name}.bin"
        try:
            self.ref.path.mkdir(parents=True, exist_ok=True)
            lock = self.ref.path / f".{self.ref.name}.lock"
            with exclusive_lock(lock, self.lock_wait, f"{bin_path} and {meta_path.name}"):
                sweep_temporaries(self.ref.path, (bin_path.name, meta_path.name))
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
                atomic_copy(artifact.path, bin_path)
                atomic_write(meta_path, json.dumps(meta, indent=2) + "\n")
        except TimeoutError as exc:
            raise PublishError(str(exc)) from None
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
