"""The patches of a v1 artifact, read for the worker (docs/artifact-format.md, "Patch layers").

A patch layer that cannot be used (``core.artifact.patches`` says why) or read is skipped with
a warning: the device then gets the full image, which is always there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ajour_build.core.artifact.format import Descriptor, FirmwareInfo
from ajour_build.core.artifact.patches import patch_layers
from ajour_build.core.errors import ArtifactError
from delivery.cache import ByteLru
from delivery.decision import InvalidFirmware, Patch

log = logging.getLogger("delivery.sources")


def load_patches(
    info: FirmwareInfo, fetch: Callable[[Descriptor], bytes], blobs: ByteLru[str]
) -> tuple[Patch, ...]:
    """The usable patches of ``info``; ``fetch`` returns a blob verified against its digest."""
    if not info.patches:
        return ()
    layers, skipped = patch_layers(info)
    for line in skipped:
        log.warning("%s", line)
    found: list[Patch] = []
    for layer in layers:
        digest = layer.descriptor.digest
        data = blobs.get(digest)
        try:
            if data is None:
                data = fetch(layer.descriptor)
                blobs.put(digest, data)
            found.append(
                Patch(layer.from_version.encode(), bytes.fromhex(layer.from_checksum[7:]), data)
            )
        except (ArtifactError, InvalidFirmware) as exc:
            log.warning(
                "patch layer %s of %s skipped: cannot read it: %s", digest, info.version, exc
            )
    return tuple(found)
