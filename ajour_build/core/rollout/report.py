"""The rollout JSON the two sides exchange (contract 3 of docs/architecture.md, like
``core.wire``).

* ``GET /v1/rollouts`` on the delivery worker answers a list of :class:`RolloutReport` (the
  current rollout of each application with ``spec.rollout``), ``GET /v1/rollouts/<app>``
  one of them (``?history=1``: every rollout of it, newest first). Bearer: the status token.
* ``POST /v1/rollouts/<app>/<action>`` with a :class:`RolloutRequest` body runs an operation
  (:class:`RolloutAction`; ``start`` begins a new rollout to a published version) and
  answers the new :class:`RolloutReport`. Bearer: the operator
  token (``AJOUR_DELIVERY_OPERATOR_TOKEN``), never the read-only status token.

Keys are camelCase. Reading is tolerant like ``core.wire``: a report that does not parse is
dropped by :func:`read_rollouts`, never raised, so an older worker cannot break the console.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ajour_build.core.rollout.model import Rollout
from ajour_build.core.wire import read_models

OPERATOR_TOKEN_ENV = "AJOUR_DELIVERY_OPERATOR_TOKEN"
VERSION_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
"""A version as publishers tag it (an OCI tag): what ``start`` takes."""

OUTCOMES: tuple[str, ...] = ("swapped", "confirmed", "reverted", "failed_download", "timed_out")
"""The outcome keys of :attr:`WaveReport.outcomes`, in the order a console shows them."""


class RolloutAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"
    PROMOTE = "promote"
    RETRY = "retry"  # needs ``device``
    START = "start"  # needs ``version``; ``supersede`` replaces a running or paused rollout


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class WaveReport(_Wire):
    """One wave of a rollout: who is in it and how far they got."""

    number: int = Field(ge=1, description="1-based, as the console and reasons count")
    open: bool = False
    opened_at: float | None = Field(default=None, alias="openedAt")
    approval: str = "auto"  # "manual": opens only on promote
    devices: int = Field(default=0, ge=0, description="devices of the cohort in this wave")
    downloading: int = Field(default=0, ge=0, description="receiving to_version right now")
    outcomes: dict[str, int] = Field(default_factory=dict, description="keys: OUTCOMES")
    held_back: list[str] = Field(
        default_factory=list,
        alias="heldBack",
        description="the wave's devices that reverted or failed (the first 100, by name)",
    )

    @property
    def pending(self) -> int:
        """Devices of the wave with no outcome yet and not downloading: ``devices`` is
        ``pending + downloading`` plus the outcomes."""
        return max(0, self.devices - self.downloading - sum(self.outcomes.values()))

    @property
    def failed(self) -> int:
        return sum(self.outcomes.get(k, 0) for k in ("reverted", "failed_download", "timed_out"))


class RolloutReport(_Wire):
    """A rollout as the API and the console show it."""

    application: str = Field(min_length=1, max_length=253)
    seq: int = Field(ge=1)
    from_version: str = Field(default="", alias="fromVersion")
    to_version: str = Field(alias="toVersion")
    state: str  # core.rollout.model.State values
    reason: str = ""
    created: float = 0.0
    revision: int = 0
    waves: list[WaveReport] = Field(default_factory=list)
    held_back: list[str] = Field(
        default_factory=list,
        alias="heldBack",
        description="devices that reverted or failed: not offered to_version until retried"
        " (the first 100, by name; the waves' outcomes count them all)",
    )

    @property
    def open_waves(self) -> int:
        return sum(1 for w in self.waves if w.open)

    @property
    def target_version(self) -> str:
        """The version the rollout takes its devices to: ``from_version`` once rolled back
        (when there is one), else ``to_version``."""
        if self.state == "rolled_back" and self.from_version:
            return self.from_version
        return self.to_version

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class RolloutRequest(_Wire):
    """The body of ``POST /v1/rollouts/<app>/<action>`` (may be empty: ``{}``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    device: str | None = Field(default=None, min_length=1, max_length=253)
    reason: str | None = Field(default=None, max_length=512)
    version: str | None = Field(
        default=None, description="start: the version to roll out (its version tag)"
    )
    supersede: bool | None = Field(
        default=None, strict=True, description="start: replace a running or paused rollout"
    )

    @field_validator("version")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        if value is not None and not VERSION_TAG.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a version tag: 1 to 128 ASCII letters, digits, '_', '.' or"
                " '-', not starting with '.' or '-' (e.g. 1.4.2)"
            )
        return value


def report_of(rollout: Rollout, waves: list[WaveReport], held_back: list[str]) -> RolloutReport:
    """The report of ``rollout`` with its ``waves`` and ``held_back`` devices."""
    return RolloutReport(
        application=rollout.application,
        seq=rollout.seq,
        from_version=rollout.from_version,
        to_version=rollout.to_version,
        state=rollout.state.value,
        reason=rollout.reason,
        created=rollout.created,
        revision=rollout.revision,
        waves=waves,
        held_back=held_back,
    )


def read_rollouts(data: Any) -> list[RolloutReport]:
    """The reports in ``GET /v1/rollouts`` JSON (a list); entries that are none are dropped."""
    return read_models(RolloutReport, data, "rollouts")
