"""Patch layers of a v1 firmware artifact: delta updates from earlier versions.

A v1 manifest may carry, after its firmware layer, layers of media type
``application/vnd.ajour.firmware.patch.v1+detools``: each a detools sequential patch that
rebuilds this artifact's firmware from an earlier version's (docs/artifact-format.md,
"Patch layers"). Publishers write them (``ajour_build.publish.patches``); delivery serves
them to devices that advertise the format (docs/delivery.md, "Delta updates").

A reader picks layers strictly by media type and checks their annotations: a layer it
cannot use (another format, a malformed annotation, a to-checksum that is not this
artifact's firmware) is skipped with a reason, never an error: the firmware layer is
always there to fall back on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ajour_build.core.artifact.format import PATCH_MEDIA_TYPE, TITLE, Descriptor, FirmwareInfo
from ajour_build.core.version import is_version

__all__ = [
    "FORMATS",
    "FROM_CHECKSUM",
    "FROM_VERSION",
    "PATCH_FORMAT",
    "PATCH_MEDIA_TYPE",
    "TO_CHECKSUM",
    "PatchLayer",
    "layer_annotations",
    "patch_layers",
]

FROM_VERSION: Final = "vnd.ajour.patch.from.version"
FROM_CHECKSUM: Final = "vnd.ajour.patch.from.checksum"
TO_CHECKSUM: Final = "vnd.ajour.patch.to.checksum"
PATCH_FORMAT: Final = "vnd.ajour.patch.format"
FORMAT: Final = "detools-sequential-crle"
"""What Ajour publishes: ``detools.create_patch(..., patch_type="sequential",
compression="crle")``."""
FORMATS: Final = frozenset({FORMAT, "detools-sequential-none"})
"""Formats a device advertising ``Status.patch`` bit 0 applies (``delivery/delta.py``)."""
_CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class PatchLayer:
    """One usable patch layer: from which version and image, in which format."""

    descriptor: Descriptor
    from_version: str
    from_checksum: str  # sha256:<hex> of the image the patch applies to
    to_checksum: str  # sha256:<hex> of the image it rebuilds (the artifact's firmware)
    format: str
    title: str


def layer_annotations(
    from_version: str, from_checksum: str, to_checksum: str, title: str, fmt: str = FORMAT
) -> dict[str, str]:
    """The annotations of a patch layer."""
    return {
        FROM_VERSION: from_version,
        FROM_CHECKSUM: from_checksum,
        TO_CHECKSUM: to_checksum,
        PATCH_FORMAT: fmt,
        TITLE: title,
    }


def _problem(layer: Descriptor, info: FirmwareInfo) -> str | None:
    notes = layer.annotations
    version = notes.get(FROM_VERSION, "")
    if not is_version(version):
        return f"{FROM_VERSION} {version!r:.80} is not a version"
    for key in (FROM_CHECKSUM, TO_CHECKSUM):
        if not _CHECKSUM.fullmatch(notes.get(key, "")):
            return f"{key} {notes.get(key, '')!r:.80} is not sha256:<64 lowercase hex digits>"
    if notes[TO_CHECKSUM] != info.checksum:
        return f"{TO_CHECKSUM} {notes[TO_CHECKSUM]} is not the firmware's {info.checksum}"
    if notes.get(PATCH_FORMAT) not in FORMATS:
        return f"format {notes.get(PATCH_FORMAT)!r:.80} is not one of {sorted(FORMATS)}"
    if version == info.version:
        return f"it patches from {version}, the artifact's own version"
    if layer.size == 0:
        return "it is empty"
    return None


def patch_layers(info: FirmwareInfo) -> tuple[list[PatchLayer], list[str]]:
    """The usable patch layers of ``info`` (one per from-version, the first wins), and why
    the others are skipped (one line each, naming the layer's digest)."""
    usable: dict[str, PatchLayer] = {}
    skipped: list[str] = []
    for layer in info.patches:
        if layer.media_type != PATCH_MEDIA_TYPE:
            continue
        problem = _problem(layer, info)
        if problem is None and layer.annotations[FROM_VERSION] in usable:
            problem = f"a patch from {layer.annotations[FROM_VERSION]} came before it"
        if problem is not None:
            skipped.append(f"patch layer {layer.digest} of {info.version} skipped: {problem}")
            continue
        notes = layer.annotations
        usable[notes[FROM_VERSION]] = PatchLayer(
            layer,
            notes[FROM_VERSION],
            notes[FROM_CHECKSUM],
            notes[TO_CHECKSUM],
            notes[PATCH_FORMAT],
            notes.get(TITLE, ""),
        )
    return list(usable.values()), skipped
