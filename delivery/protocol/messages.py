"""The embedded-update messages and the wire format they travel in.

Status goes device → server, a Command (Wait, Sync, Write, Swap; WritePatch) server → device. On the
wire both are CBOR, byte-compatible with Rust ``serde_cbor`` 0.11 as used by drogue's
embedded-update crate:

- *packed* form (``ser::to_vec_packed``, what devices send and what we emit): struct fields and
  enum variants are map keys holding their index;
- *named* form (``ser::to_vec``, what the drgdfu gateway sends): the keys are the Rust field
  and variant names as text.

Every field is written, ``None`` as CBOR null. An enum value is a one-entry map
``{variant: struct}``. Integers use the shortest CBOR encoding. Fields and variants are
numbered in the order they are declared here, which is the Rust crate's order.

Ajour's one extension (docs/delivery.md, "Delta updates"): ``Status.patch`` (key 4) and the
``WritePatch`` command (variant 4). ``patch`` is written only when it is set, so every
status and command of the embedded-update crate keeps its exact bytes; a device that does
not set it never gets a ``WritePatch``.

The codec checks only the wire format: u32 ranges and types. Policy (clamping ``mtu``,
offsets past the end) belongs to the decision layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

from delivery.errors import DeliveryError

MAX_STATUS_BYTES: Final = 4096
"""A status larger than this is rejected before any decoding."""

MAX_DEPTH: Final = 4
"""Nesting limit promised by the codec (valid messages nest 2 deep; see ``protocol.reader``)."""

U32_MAX: Final = 0xFFFF_FFFF

PATCH_DETOOLS: Final = 1
"""``Status.patch`` bit 0: the device applies detools sequential patches, compression none or
crle (``delivery/delta.py``; docs/delivery.md, "Delta updates")."""


class ProtocolError(DeliveryError):
    """A message that is not a valid embedded-update Status or Command."""


@dataclass(frozen=True, slots=True)
class UpdateStatus:
    """A device's partly written update: the version being written and the bytes it has."""

    version: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class Status:
    """What a device reports: its running version, its largest chunk, its progress."""

    version: bytes
    mtu: int | None = None
    correlation_id: int | None = None
    update: UpdateStatus | None = None
    patch: int | None = None
    """Ajour's extension: the patch formats the device applies, a bitmask
    (:data:`PATCH_DETOOLS`). Key 4 (``patch``), written only when not None, so a status
    without it is byte for byte what embedded-update devices send."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do now: ask again in ``poll`` seconds."""

    correlation_id: int | None
    poll: int | None


@dataclass(frozen=True, slots=True)
class Sync:
    """The device runs the target ``version``: in sync."""

    version: bytes
    correlation_id: int | None
    poll: int | None


@dataclass(frozen=True, slots=True)
class Write:
    """Write ``data`` at ``offset`` of the update to ``version``."""

    version: bytes
    correlation_id: int | None
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class WritePatch:
    """Ajour's extension, variant 4: write ``data``, bytes of a patch from the device's
    running version to ``version``, at ``offset`` of that patch. Sent only to a device whose
    status advertises the patch's format; the ``Swap`` after it carries the checksum of the
    whole new image."""

    version: bytes
    correlation_id: int | None
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Swap:
    """All of ``version`` is written: check it against ``checksum`` (SHA-256) and boot it."""

    version: bytes
    correlation_id: int | None
    checksum: bytes


Command: TypeAlias = Wait | Sync | Write | Swap | WritePatch
