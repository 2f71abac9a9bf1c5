"""A simulated device that follows commands as the ``embedded-update`` device does.

It writes each block at the offset given, reports ``update{version, offset}`` with its
progress, verifies the image's sha256 before it swaps, reboots into the new version, and
stops on ``Sync``. The simulator and the tests drive it.

Delta updates (``delta=True``, docs/delivery.md): it advertises ``PATCH_DETOOLS`` in its
status and applies ``WritePatch`` data to the image it runs (``firmware``) with
``delivery/delta.py`` as the data arrives; its ``update.offset`` then counts patch bytes.
A patch that does not apply, or whose result fails the ``Swap``'s checksum, makes it stop
advertising, so the worker sends the full image (``patch_failed``).

Failing devices for rollouts: ``revert`` makes its bootloader roll back after a swap (it
reports the old version again); ``vanish`` makes it never come back after a swap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from delivery.delta import PatchApplier, PatchError
from delivery.protocol import (
    PATCH_DETOOLS,
    Command,
    Status,
    Swap,
    Sync,
    UpdateStatus,
    Wait,
    Write,
    WritePatch,
)


@dataclass
class SimulatedDevice:
    version: bytes
    mtu: int | None = 512
    correlation_id: int | None = None
    image: bytearray = field(default_factory=bytearray)
    updating: bytes | None = None
    next_offset: int = 0
    synced: bool = False
    waits: int = 0
    swaps_rejected: int = 0
    bytes_received: int = 0
    revert: bool = False
    vanish: bool = False
    vanished: bool = False
    swaps: int = 0
    firmware: bytes = field(default=b"", repr=False)  # the running image (patches apply to it)
    delta: bool = False  # advertise PATCH_DETOOLS and apply WritePatch
    patch_failed: bool = False  # a patch failed: the device stopped advertising
    patch_bytes: int = 0  # WritePatch data received (also counted in bytes_received)
    _applier: PatchApplier | None = field(default=None, repr=False)

    def status(self) -> Status:
        update = (
            UpdateStatus(self.updating, self.next_offset) if self.updating is not None else None
        )
        patch = PATCH_DETOOLS if self.delta and not self.patch_failed else None
        return Status(self.version, self.mtu, self.correlation_id, update, patch)

    def apply(self, command: Command) -> None:
        self.synced = False
        if isinstance(command, Sync):
            self.synced = True
        elif isinstance(command, Wait):
            self.waits += 1
        elif isinstance(command, Write):
            if self._applier is not None:  # a full image instead of the patch: start over
                self._reset()
                if command.offset != 0:
                    return
            if command.version != self.updating or command.offset == 0:
                self.updating, self.image = command.version, bytearray()
            del self.image[command.offset :]
            self.image[command.offset : command.offset] = command.data
            self.next_offset = command.offset + len(command.data)
            self.bytes_received += len(command.data)
        elif isinstance(command, WritePatch):
            self._write_patch(command)
        elif isinstance(command, Swap):
            self._swap(command)

    def _write_patch(self, command: WritePatch) -> None:
        if command.offset == 0 or self._applier is None or command.version != self.updating:
            self._reset()
            if command.offset != 0:
                return  # cannot resume a patch it did not start: the status asks for byte 0
            self.updating = command.version
            self._applier = PatchApplier(self.firmware, self.image.extend)
        if command.offset != self.next_offset:
            return  # the status asks for next_offset again
        self.bytes_received += len(command.data)
        self.patch_bytes += len(command.data)
        try:
            self._applier.feed(command.data)
        except PatchError:
            self.patch_failed = True
            self._reset()
            return
        self.next_offset += len(command.data)

    def _swap(self, command: Swap) -> None:
        self.swaps += 1
        ok = True
        if self._applier is not None:
            try:
                self._applier.finish()
            except PatchError:
                ok = False
        if ok and hashlib.sha256(self.image).digest() == command.checksum:
            if not self.revert:  # a reverting bootloader boots the old version again
                self.version = command.version  # reboot into the new firmware
                self.firmware = bytes(self.image)
            self.vanished = self.vanish
        else:
            self.swaps_rejected += 1
            if self._applier is not None:
                self.patch_failed = True  # fall back: the next status asks for the image
        self._reset()

    def _reset(self) -> None:
        self.updating, self.image, self.next_offset, self._applier = None, bytearray(), 0, None
