"""What a firmware source gives the worker: the target firmware, verified."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from delivery.errors import DeliveryError


class SourceUnavailable(DeliveryError):
    """The source cannot answer now (down, refused, corrupted): devices are told to wait."""


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved firmware: its version, bytes and raw 32-byte sha256."""

    version: bytes
    data: bytes
    checksum: bytes

    @property
    def size(self) -> int:
        return len(self.data)


class FirmwareSource(Protocol):
    def target(self) -> Target:
        """The firmware devices should run now; raise SourceUnavailable if unknown."""

    def invalidate(self) -> None:
        """Forget cached tag resolutions (a publish event said something changed)."""
