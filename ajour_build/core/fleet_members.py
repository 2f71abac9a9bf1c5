"""The members of a fleet: its Applications and Devices, and where each was defined."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import NamedTuple, cast

from pydantic import JsonValue

from ajour_build.core.spec.firmware import Firmware
from ajour_build.core.spec.rollout import RolloutPolicy


@dataclass(frozen=True, slots=True)
class Origin:
    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


def _thaw(stored: str | None) -> JsonValue:
    """Credentials as they were in the spec: a new copy of the JSON value each time."""
    return None if stored is None else cast(JsonValue, json.loads(stored))


@dataclass(frozen=True, slots=True)
class Application:
    """An Application. ``credentials`` are kept as compact JSON text, never in ``repr``."""

    name: str
    firmware: Firmware | None
    stored_credentials: str | None = field(repr=False)
    origin: Origin
    rollout: RolloutPolicy | None = None

    @property
    def credentials(self) -> JsonValue:
        return _thaw(self.stored_credentials)


class Device(NamedTuple):
    """A Device: small and quick to build, as a fleet holds a million of them.

    ``firmware`` is its own spec (None: it inherits the Application's), one object shared
    by every device with an equal spec. ``credentials`` are kept as compact JSON text and
    given out as the JSON value they were (a new copy on each access); they are never part
    of ``repr``. See docs/performance.md, "Fleet scale benchmark".
    """

    application: str
    name: str
    firmware: Firmware | None
    stored_credentials: str | None
    file: str
    line: int | None

    @property
    def credentials(self) -> JsonValue:
        return _thaw(self.stored_credentials)

    @property
    def origin(self) -> Origin:
        return Origin(self.file, self.line)

    def __repr__(self) -> str:
        return (
            f"Device(application={self.application!r}, name={self.name!r},"
            f" firmware={self.firmware!r}, origin={self.origin})"
        )
