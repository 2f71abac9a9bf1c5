"""The JSON the two sides exchange: delivery's device status and the publish event.

* ``GET /v1/status[/<app>[/<device>]]`` on the delivery worker answers a list of
  :class:`DeviceReport` (camelCase ``lastSeen``); the console reads it.
* A publish (``ajour-build publish --notify``, the service, the Tekton publish step) sends a
  :class:`PublishEvent` to the worker's ``POST /v1/events``, or as an MQTT message.

Both sides use these models, so a field or a state is defined once. Reading is tolerant
where the other side may be older or wrong: a report with a bad field keeps its place with
that field empty (the console still lists the device), and only a report without an
application or device is dropped.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# The bearer tokens of the worker's GET /v1/status and POST /v1/events, from the environment
# (each side also reads them from the installation config's ``delivery`` section).
_M = TypeVar("_M", bound=BaseModel)

STATUS_TOKEN_ENV = "AJOUR_DELIVERY_STATUS_TOKEN"
EVENTS_TOKEN_ENV = "AJOUR_DELIVERY_EVENTS_TOKEN"


class DeliveryState(StrEnum):
    """Where a device stands, as delivery last saw it."""

    SYNCED = "Synced"  # runs the target version
    UPDATING = "Updating"  # downloading or swapping to the target
    WAITING = "Waiting"  # told to wait (no target yet, or the source is down)
    FAILED = "Failed"  # its status could not be answered
    UNKNOWN = "Unknown"  # never seen


DELIVERY_STATES: tuple[DeliveryState, ...] = tuple(DeliveryState)


def _text(limit: int) -> Any:
    def clip(value: Any) -> str:
        return value[:limit] if isinstance(value, str) else ""

    return clip


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


class DeviceReport(BaseModel):
    """One device in delivery's status (one entry of ``GET /v1/status``)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    application: str = Field(min_length=1, max_length=253)
    device: str = Field(min_length=1, max_length=253)
    current: str = ""
    target: str | None = None
    offset: int | None = None
    size: int | None = None
    state: DeliveryState = DeliveryState.UNKNOWN
    source: str = ""
    detail: str = ""
    last_seen: float = Field(default=0.0, alias="lastSeen")

    _clip_names = field_validator("application", "device", mode="before")(_text(253))
    _clip_current = field_validator("current", mode="before")(_text(512))
    _clip_source = field_validator("source", mode="before")(_text(64))
    _clip_detail = field_validator("detail", mode="before")(_text(2048))
    _counts = field_validator("offset", "size", mode="before")(_count)

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> str | None:
        return value[:512] if isinstance(value, str) else None

    @field_validator("state", mode="before")
    @classmethod
    def _state(cls, value: Any) -> DeliveryState:
        try:
            return DeliveryState(value)
        except ValueError:
            return DeliveryState.UNKNOWN

    @field_validator("last_seen", mode="before")
    @classmethod
    def _seen(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return 0.0
        return max(0.0, float(value)) if math.isfinite(value) else 0.0

    @property
    def percent(self) -> int | None:
        """How far the download got, 0 to 100; None when not downloading."""
        if self.offset is None or not self.size:
            return None
        return max(0, min(100, math.floor(100 * self.offset / self.size)))

    @property
    def key(self) -> tuple[str, str]:
        return self.application, self.device

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def read_models(model: type[_M], data: Any, what: str) -> list[_M]:
    """The entries of a JSON list that are ``model``s; the others are dropped, not raised."""
    if not isinstance(data, list):
        raise ValueError(f"delivery's {what} is not a list")
    found = []
    for item in data:
        try:
            found.append(model.model_validate(item))
        except ValidationError:
            continue
    return found


def read_reports(data: Any) -> list[DeviceReport]:
    """The reports in delivery's status JSON (a list); entries that are no report are dropped."""
    return read_models(DeviceReport, data, "status")


class PublishEvent(BaseModel):
    """A new firmware is out: which image and tag changed, and what they now hold."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    image: str = Field(min_length=1, description="The repository, without tag or digest.")
    tag: str = Field(default="", description="The moving tag (or the version) published.")
    digest: str = ""
    version: str = ""
    target: str = Field(default="", description="The publish target as it was given.")
