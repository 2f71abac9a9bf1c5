"""The delivery decision (contract 4): which command a device gets for the status it sent.

Contract 4 is in docs/architecture.md, the details in docs/delivery.md.

``decide()`` is pure and stateless. Everything it needs is in the device's status, the
target firmware and the policy, so any worker can answer any device, in any order, any
number of times. Its rules follow Drogue Ajour's updater, with its flaws fixed:

- No target (none configured, or the firmware source is unavailable): ``Wait``, polling
  again after ``policy.poll_wait`` seconds.
- The device runs the target version: ``Sync``, polling again after ``policy.poll_synced``.
- Otherwise the device resumes at ``update.offset`` only when its update is for the target
  version and ``0 <= offset <= size``. Any other update (another version, or an offset past
  the end, which the original answered with a ``Swap`` of a half-written image) restarts
  at 0.
- At ``offset == size``: ``Swap`` with the raw 32-byte SHA-256 of the image.
- Otherwise: ``Write`` of ``data[offset:offset + min(mtu, size - offset)]``, with the mtu
  clamped by ``effective_mtu()``. A ``Write`` is never empty and never leaves the image.
- Every command echoes the status's ``correlation_id``.
- Delta updates (docs/delivery.md, "Delta updates"): when the status advertises
  ``PATCH_DETOOLS`` and the target has a patch from the device's version, the same rules
  run over the patch's bytes instead of the image's, with ``WritePatch`` for ``Write``;
  the ``Swap`` at its end carries the checksum of the whole target image.

An empty image is refused where it is made: ``FirmwareImage`` raises ``InvalidFirmware`` for it,
so the firmware source treats it as "no target" and devices get ``Wait``. Swapping to an
empty image (whose checksum a device would accept) would brick the device; writing it
would loop forever.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from delivery.errors import DeliveryError
from delivery.protocol import PATCH_DETOOLS, Command, Status, Swap, Sync, Wait, Write, WritePatch

__all__ = [
    "DEFAULT_POLICY",
    "FirmwareImage",
    "InvalidFirmware",
    "InvalidPolicy",
    "Patch",
    "Policy",
    "decide",
    "effective_mtu",
]

CHECKSUM_SIZE = 32
"""Size of the raw SHA-256 digest that ``Swap`` carries."""

U32_MAX = 0xFFFF_FFFF
"""Offsets, sizes and poll intervals are u32 on the wire."""


class InvalidFirmware(DeliveryError, ValueError):
    """A firmware image that must never be delivered (empty, or a malformed checksum)."""


class InvalidPolicy(DeliveryError, ValueError):
    """A delivery policy whose limits contradict each other."""


@dataclass(frozen=True, slots=True)
class Patch:
    """A patch from the image of ``from_version`` (SHA-256 ``from_checksum``, raw) to the
    image it belongs to, in detools' sequential format (``delivery/delta.py``)."""

    from_version: bytes
    from_checksum: bytes
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.data or len(self.data) > U32_MAX:
            raise InvalidFirmware(
                f"patch from {self.from_version!r} is {len(self.data)} bytes: expected 1 to"
                f" {U32_MAX}"
            )


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """A target firmware image: its version, its bytes and their raw SHA-256, and the patches
    that rebuild it from earlier versions (at most one per version).

    Construction checks only what is cheap: the image is not empty, it fits the u32 offsets
    of the wire, and the checksum is 32 raw bytes (not hex). It does not hash the image;
    ``from_image()`` does, for callers that have no trusted checksum.
    """

    version: bytes
    data: bytes = field(repr=False)
    checksum: bytes
    patches: tuple[Patch, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.data:
            raise InvalidFirmware(f"firmware {self.version!r} is empty: refusing to deliver it")
        if len(self.data) > U32_MAX:
            raise InvalidFirmware(
                f"firmware {self.version!r} is {len(self.data)} bytes: "
                f"more than the protocol's u32 offsets can address"
            )
        if len(self.checksum) != CHECKSUM_SIZE:
            raise InvalidFirmware(
                f"firmware {self.version!r}: checksum must be the raw {CHECKSUM_SIZE}-byte "
                f"SHA-256, got {len(self.checksum)} bytes"
            )

    @classmethod
    def from_image(cls, version: bytes, data: bytes) -> FirmwareImage:
        """The firmware for ``data``, with its SHA-256 computed here."""
        return cls(version, data, hashlib.sha256(data).digest())

    @property
    def size(self) -> int:
        return len(self.data)

    def patch_from(self, version: bytes) -> Patch | None:
        """The patch from ``version`` to this image, if there is one."""
        for patch in self.patches:
            if patch.from_version == version:
                return patch
        return None


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-application delivery settings. Poll intervals are in seconds.

    - ``default_mtu``: block size for devices that report no mtu, or mtu 0.
    - ``max_mtu``: larger reported mtus (up to 2**32 - 1 on the wire) are clamped to this.
    - ``min_mtu``: smaller non-zero mtus are raised to this, so a device reporting mtu 1
      does not need one round trip per byte.
    - ``poll_synced``: sent with ``Sync``; ``None`` lets the device choose.
    - ``poll_wait``: sent with ``Wait`` when there is no target.
    """

    default_mtu: int = 512
    max_mtu: int = 16384
    min_mtu: int = 16
    poll_synced: int | None = 300
    poll_wait: int = 30

    def __post_init__(self) -> None:
        if not 1 <= self.min_mtu <= self.default_mtu <= self.max_mtu:
            raise InvalidPolicy(
                "need 1 <= min_mtu <= default_mtu <= max_mtu, got "
                f"min_mtu={self.min_mtu}, default_mtu={self.default_mtu}, "
                f"max_mtu={self.max_mtu}"
            )
        for name, poll in (("poll_synced", self.poll_synced), ("poll_wait", self.poll_wait)):
            if poll is not None and not 0 <= poll <= U32_MAX:
                raise InvalidPolicy(f"{name} must be between 0 and {U32_MAX} seconds, got {poll}")


DEFAULT_POLICY = Policy()


def effective_mtu(status: Status, policy: Policy = DEFAULT_POLICY) -> int:
    """The block size for this device: its mtu, clamped to ``[min_mtu, max_mtu]``.

    No mtu, or an mtu of 0 or less (a u32 on the wire, so 0 is the only such value a
    device can send), means "unknown": ``default_mtu``.
    """
    mtu = status.mtu
    if mtu is None or mtu <= 0:
        return policy.default_mtu
    if mtu < policy.min_mtu:
        return policy.min_mtu
    if mtu > policy.max_mtu:
        return policy.max_mtu
    return mtu


def decide(
    status: Status, target: FirmwareImage | None, policy: Policy = DEFAULT_POLICY
) -> Command:
    """The command for a device that sent ``status``, when it should run ``target``."""
    correlation_id = status.correlation_id
    if target is None:
        return Wait(correlation_id=correlation_id, poll=policy.poll_wait)
    version = target.version
    if status.version == version:
        return Sync(version=version, correlation_id=correlation_id, poll=policy.poll_synced)
    data = target.data
    write: type[Write | WritePatch] = Write
    if status.patch is not None and status.patch & PATCH_DETOOLS and target.patches:
        patch = target.patch_from(status.version)
        if patch is not None:  # offsets count the patch's bytes
            data, write = patch.data, WritePatch
    size = len(data)
    offset = 0
    update = status.update
    if update is not None and update.version == version and 0 <= update.offset <= size:
        offset = update.offset
    if offset == size:
        return Swap(version=version, correlation_id=correlation_id, checksum=target.checksum)
    end = offset + effective_mtu(status, policy)
    return write(
        version=version, correlation_id=correlation_id, offset=offset, data=data[offset:end]
    )
