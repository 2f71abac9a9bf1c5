"""The JSON shapes of the service's REST API (they make its OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ajour_build.core.version import VERSION, check_version
from ajour_build.lifecycle import Build, BuildState
from ajour_build.service.scheduler import Outcome


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class GitInfo(_Out):
    url: str
    revision: str
    commit: str | None


class BuildOut(_Out):
    id: str
    name: str
    spec_hash: str = Field(alias="specHash")
    application: str
    consumers: list[str]
    state: BuildState
    backend: str
    backend_ref: str = Field(alias="backendRef")
    reason: str
    git: GitInfo
    version: str | None
    image: str
    publish_to: str = Field(alias="publishTo")
    digest: str | None
    reference: str | None
    cached: bool
    failure: str | None
    attempt: int
    retry_of: str | None = Field(alias="retryOf")
    created: datetime
    started: datetime | None
    finished: datetime | None
    duration: float | None

    @classmethod
    def of(cls, b: Build) -> BuildOut:
        return cls(
            id=b.id,
            name=b.name,
            spec_hash=b.spec_hash,
            application=b.application,
            consumers=list(b.consumers),
            state=b.state,
            backend=b.backend,
            backend_ref=b.backend_ref,
            reason=b.reason,
            git=GitInfo(url=b.git_url, revision=b.revision, commit=b.commit),
            version=b.version,
            image=b.image,
            publish_to=b.publish_to,
            digest=b.digest,
            reference=b.reference,
            cached=b.cached,
            failure=b.failure,
            attempt=b.attempt,
            retry_of=b.retry_of,
            created=b.created,
            started=b.started,
            finished=b.finished,
            duration=b.duration,
        )


class BuildList(_Out):
    items: list[BuildOut]
    count: int = Field(description="Number of items in this page.")


class LogPage(_Out):
    build: str
    state: BuildState
    lines: list[str]
    next: int = Field(description="Pass as ?after= to get the lines after these.")


class TriggerRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str | None = Field(
        default=None,
        json_schema_extra={"pattern": f"^{VERSION.pattern}$", "maxLength": 128},
        description="Firmware version to stamp (an OCI tag); default: the VERSION file, else"
        " the commit.",
    )

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        return None if value is None else check_version(value)


class TriggerOut(_Out):
    triggered: list[BuildOut]
    already_queued: list[BuildOut] = Field(alias="alreadyQueued")
    refused: list[str]
    explanation: str


class WebhookOut(_Out):
    event: str
    delivery: str | None = None
    duplicate: bool = False
    triggered: list[BuildOut] = []
    already_queued: list[BuildOut] = Field(default=[], alias="alreadyQueued")
    refused: list[str] = []
    explanation: str


class ErrorOut(_Out):
    error: str
    status: int


class Health(_Out):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


class DrogueBuildInfo(BaseModel):
    """Drogue Ajour's ``BuildInfo`` (``GET /api/build/v1alpha1``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app: str
    device: str | None = None
    started: str | None = None
    completed: str | None = None
    status: str | None = None


def outcome_out(outcome: Outcome) -> TriggerOut:
    return TriggerOut(
        triggered=[BuildOut.of(b) for b in outcome.queued],
        already_queued=[BuildOut.of(b) for b in outcome.joined],
        refused=list(outcome.refused),
        explanation=outcome.explanation,
    )
