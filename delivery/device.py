"""A simulated device that follows commands as the ``embedded-update`` device does.

It writes each block at the offset given, reports ``update{version, offset}`` with its
progress, verifies the image's sha256 before it swaps, reboots into the new version, and
stops on ``Sync``. The simulator and the tests drive it.

Failing devices for rollouts: ``revert`` makes its bootloader roll back after a swap (it
reports the old version again); ``vanish`` makes it never come back after a swap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from delivery.protocol import Command, Status, Swap, Sync, UpdateStatus, Wait, Write


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

    def status(self) -> Status:
        update = (
            UpdateStatus(self.updating, self.next_offset) if self.updating is not None else None
        )
        return Status(self.version, self.mtu, self.correlation_id, update)

    def apply(self, command: Command) -> None:
        self.synced = False
        if isinstance(command, Sync):
            self.synced = True
        elif isinstance(command, Wait):
            self.waits += 1
        elif isinstance(command, Write):
            if command.version != self.updating or command.offset == 0:
                self.updating, self.image = command.version, bytearray()
            del self.image[command.offset :]
            self.image[command.offset : command.offset] = command.data
            self.next_offset = command.offset + len(command.data)
            self.bytes_received += len(command.data)
        elif isinstance(command, Swap):
            self.swaps += 1
            if hashlib.sha256(self.image).digest() == command.checksum:
                if not self.revert:  # a reverting bootloader boots the old version again
                    self.version = command.version  # reboot into the new firmware
                self.vanished = self.vanish
            else:
                self.swaps_rejected += 1
            self.updating, self.image, self.next_offset = None, bytearray(), 0
