"""What a firmware source gives the worker: the target firmware (a ``decision.FirmwareImage``)."""

from __future__ import annotations

from typing import Protocol

from delivery.decision import FirmwareImage
from delivery.errors import DeliveryError


class SourceUnavailable(DeliveryError):
    """The source cannot answer now (down, refused, corrupted): devices are told to wait."""


class FirmwareSource(Protocol):
    def target(self) -> FirmwareImage:
        """The firmware devices should run now; raise SourceUnavailable if unknown."""

    def invalidate(self) -> None:
        """Forget cached tag resolutions (a publish event said something changed)."""
