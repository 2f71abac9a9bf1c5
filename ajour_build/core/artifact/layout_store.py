"""An OCI image layout directory (the embedded default: no registry server).

``oci-layout`` + ``index.json`` + ``blobs/sha256/<hex>``. Blobs are written to a temporary
file and renamed into place, and ``index.json`` is replaced atomically, so a reader never
sees a half-written blob or index. Writers go through ``layout_writer``, which holds the
layout's lock for the whole publish.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ajour_build.core.artifact.format import (
    Descriptor,
    FirmwareInfo,
    describe,
    firmware_from_tar,
    verified,
)
from ajour_build.core.errors import ArtifactError
from ajour_build.core.files import atomic_copy, atomic_write, sha256_file

REF_NAME = "org.opencontainers.image.ref.name"
_HEX64 = re.compile(r"[0-9a-f]{64}")
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


class LayoutStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- writing -------------------------------------------------------------------------
    def init(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        marker = self.root / "oci-layout"
        if not marker.exists():
            atomic_write(marker, json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        if not (self.root / "index.json").exists():
            atomic_write(self.root / "index.json", self.index_bytes([]))

    def put_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            atomic_write(path, data)
        return digest

    def put_file(self, source: Path) -> tuple[str, int]:
        """Copy a file into the blob store (streamed); return its digest and size."""
        name = "sha256:" + sha256_file(source)
        path = self.blob_path(name)
        if not path.exists():
            copied = atomic_copy(source, path)
            if "sha256:" + copied != name:
                path.unlink(missing_ok=True)
                raise ArtifactError(f"{source} changed while it was copied into {self.root}")
        return name, path.stat().st_size

    @staticmethod
    def index_bytes(entries: list[dict[str, Any]]) -> bytes:
        index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": entries}
        return json.dumps(index, indent=2).encode() + b"\n"

    # -- reading -------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        if algo != "sha256" or not _HEX64.fullmatch(hexdigest):
            raise ArtifactError(f"{digest!r} is not a sha256 digest")
        return self.root / "blobs" / "sha256" / hexdigest

    def index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "index.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactError(f"{self.root} is not an OCI layout (no index.json)") from None
        except ValueError as exc:
            raise ArtifactError(f"{self.root}/index.json is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"{self.root}/index.json is not an OCI index")
        return data

    def tags(self) -> list[str]:
        return sorted(
            m["annotations"][REF_NAME]
            for m in self.index().get("manifests", [])
            if isinstance(m, dict) and REF_NAME in m.get("annotations", {})
        )

    def resolve(self, tag: str) -> str | None:
        for entry in self.index().get("manifests", []):
            if isinstance(entry, dict) and entry.get("annotations", {}).get(REF_NAME) == tag:
                return str(entry["digest"])
        return None

    def read_blob(self, digest: str, size_hint: int | None = None) -> bytes:
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"blob {digest} is missing from {self.root}") from None
        return verified(data, digest, f"blob {digest} in {self.root}")

    def manifest(self, tag: str) -> tuple[bytes, str]:
        digest = self.resolve(tag)
        if digest is None:
            known = ", ".join(self.tags()) or "none"
            raise ArtifactError(f"tag {tag!r} not found in {self.root} (tags: {known})")
        return self.read_blob(digest), digest

    def inspect(self, tag: str) -> FirmwareInfo:
        body, _ = self.manifest(tag)
        return describe(body, lambda d: self.read_blob(d.digest), tag)

    def firmware(self, info: FirmwareInfo) -> bytes:
        if info.firmware is not None:
            data = self.read_blob(info.firmware.digest)  # verified against its digest
            if info.firmware.digest == info.checksum:
                return data
        elif info.layer is not None:
            data = firmware_from_tar(info.layer, self.read_blob(info.layer.digest))
        else:  # pragma: no cover
            raise ArtifactError("no firmware blob")
        return verified(data, info.checksum, f"firmware {info.version}")


def descriptor_of(data: bytes, media_type: str) -> Descriptor:
    return Descriptor.model_validate(
        {
            "mediaType": media_type,
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
    )
